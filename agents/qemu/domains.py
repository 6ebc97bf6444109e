"""The domains folder: each domain is ``NAME.xml`` (libvirt domain XML whose disks carry
``<alias name=...>``) beside ``NAME.qmp`` (its QEMU's QMP socket).  ``scan`` tells
what appeared, changed or went since the last look; ``Domain`` holds one domain's
XML, its parsed disks and, while connected, its hypervisor."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from agents.qemu.hypervisor import Hypervisor
from agents.qemu.inventory import domain_disks
from shared.conf.disk_model import DiskDef
from shared.util.errors import VirtError

log = logging.getLogger(__name__)


@dataclass
class Domain:
    """One domain of the folder.

    ``lock`` serialises everything that talks to the domain's QEMU about jobs or
    rewrites its XML file, so that a job event, a command and a reconcile never
    interleave on one domain.
    """

    name: str
    folder: Path
    stamp: tuple[int, int] = (0, 0)
    xml: str = ""
    disks: list[DiskDef] = field(default_factory=list)
    error: str | None = None
    hypervisor: Hypervisor | None = None
    next_connect: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: one inventory computed and published at a time, so generations never collide
    publish_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def xml_path(self) -> Path:
        return self.folder / f"{self.name}.xml"

    @property
    def qmp_path(self) -> Path:
        return self.folder / f"{self.name}.qmp"

    @property
    def live(self) -> bool:
        return self.hypervisor is not None and self.hypervisor.connected

    def load(self, stamp: tuple[int, int]) -> None:
        """Re-read the XML file; a document libvirt would refuse leaves no disks."""
        self.stamp = stamp
        try:
            self.xml = self.xml_path.read_text()
            self.disks = [disk for _, disk in domain_disks(self.xml)]
            self.error = None
        except (OSError, VirtError) as err:
            self.disks = []
            self.error = str(err)
            log.warning("domain XML not usable", extra={"domain": self.name, "error": str(err)})

    def disk_by_target(self, target: str) -> DiskDef | None:
        for disk in self.disks:
            if disk.target.dev == target:
                return disk
        return None

    def write_xml(self, text: str) -> None:
        """Replace the XML file atomically and remember the new content as read."""
        tmp = self.xml_path.with_name(f".{self.name}.xml.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.xml_path)
        st = self.xml_path.stat()
        self.load((st.st_mtime_ns, st.st_size))


def scan(folder: Path) -> dict[str, tuple[int, int]]:
    """Every ``NAME.xml`` of ``folder`` with its (mtime, size) stamp."""
    out: dict[str, tuple[int, int]] = {}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return out
    for entry in entries:
        if not entry.name.endswith(".xml") or entry.name.startswith("."):
            continue
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        out[entry.name[: -len(".xml")]] = (st.st_mtime_ns, st.st_size)
    return out
