"""A real QEMU domain for agent tests: a qcow2-on-raw chain with known data, a
``qemu-system-x86_64 -S`` (TCG, no guest) with the disk attached, its domain XML,
and a second QMP monitor for the test itself (QEMU serves one client per monitor;
the agent holds the first)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from agents.qemu.qmp_client import QmpClient, QmpEvent

ALIAS = "virtio-disk0"
TARGET = "vda"
SIZE = 8 * 1024 * 1024
QEMU = shutil.which("qemu-system-x86_64")

DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='KiB'>131072</memory>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{top}'/>
      <target dev='{target}' bus='virtio'/>
      <alias name='{alias}'/>
    </disk>
  </devices>
</domain>
"""

#: What the chain holds before a test writes: (pattern, offset, length) per layer.
BASE_WRITES = [(0x11, 0, 1024 * 1024), (0x12, 4 * 1024 * 1024, 512 * 1024)]
TOP_WRITES = [(0x22, 1024 * 1024, 1024 * 1024), (0x23, 4 * 1024 * 1024, 64 * 1024)]


def run(*argv: str) -> str:
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return done.stdout


def qemu_io(image: Path, fmt: str, writes: list[tuple[int, int, int]]) -> None:
    commands: list[str] = []
    for pattern, offset, length in writes:
        commands += ["-c", f"write -P {pattern:#x} {offset} {length}"]
    run("qemu-io", "-f", fmt, *commands, str(image))


@dataclass
class QemuFixture:
    """One domain: images, QEMU process, domain XML, the test's own QMP client."""

    name: str
    images: Path
    domains: Path
    proc: subprocess.Popen[bytes] | None = None
    qmp: QmpClient = field(default_factory=lambda: QmpClient("test"))
    writes: list[tuple[int, int, int]] = field(default_factory=list)
    seen: list[QmpEvent] = field(default_factory=list)

    @property
    def base(self) -> Path:
        return self.images / "base.raw"

    @property
    def top(self) -> Path:
        return self.images / "top.qcow2"

    @property
    def xml_path(self) -> Path:
        return self.domains / f"{self.name}.xml"

    def make_chain(self, size: int = SIZE) -> None:
        self.images.mkdir(parents=True, exist_ok=True)
        run("qemu-img", "create", "-q", "-f", "raw", str(self.base), str(size))
        qemu_io(self.base, "raw", BASE_WRITES)
        run(
            "qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.base), "-F", "raw",
            str(self.top),
        )  # fmt: skip
        qemu_io(self.top, "qcow2", TOP_WRITES)

    async def start(self, *, daemon: bool = False) -> None:
        """Start qemu-system-x86_64, or with ``daemon`` qemu-storage-daemon (whose
        disk is then named by its node, ``top-fmt``)."""
        assert QEMU is not None
        self.domains.mkdir(parents=True, exist_ok=True)
        agent_qmp = self.domains / f"{self.name}.qmp"
        test_qmp = self.images / "test.qmp"
        blockdevs = [
            f"driver=file,filename={self.base},node-name=base-file",
            "driver=raw,file=base-file,node-name=base-fmt",
            f"driver=file,filename={self.top},node-name=top-file",
            "driver=qcow2,file=top-file,backing=base-fmt,node-name=top-fmt",
        ]
        if daemon:
            argv = ["qemu-storage-daemon"]
            for i, path in enumerate((agent_qmp, test_qmp)):
                argv += ["--chardev", f"socket,path={path},server=on,wait=off,id=m{i}"]
                argv += ["--monitor", f"chardev=m{i}"]
            for blockdev in blockdevs:
                argv += ["--blockdev", blockdev]
        else:
            argv = [
                QEMU, "-S", "-machine", "q35,accel=tcg", "-nodefaults", "-display", "none",
                "-m", "128",
                "-qmp", f"unix:{agent_qmp},server=on,wait=off",
                "-qmp", f"unix:{test_qmp},server=on,wait=off",
                "-device", f"virtio-blk-pci,drive=top-fmt,id={ALIAS}",
            ]  # fmt: skip
            for blockdev in blockdevs:
                argv += ["-blockdev", blockdev]
        log = open(self.images / "qemu.log", "wb")  # noqa: SIM115 - kept for the process
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(200):
            if agent_qmp.exists() and test_qmp.exists():
                break
            if self.proc.poll() is not None:
                raise AssertionError((self.images / "qemu.log").read_text())
            await asyncio.sleep(0.05)
        await self.qmp.connect(str(test_qmp))
        alias = "top-fmt" if daemon else ALIAS
        self.xml_path.write_text(
            DOMAIN_XML.format(name=self.name, top=self.top, target=TARGET, alias=alias)
        )

    async def stop(self) -> None:
        await self.qmp.disconnect()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    async def guest_write(self, pattern: int, offset: int, length: int) -> None:
        """Write through the device, as the guest would (so a running mirror sees it)."""
        device = f"/machine/peripheral/{ALIAS}/virtio-backend"
        line = f'qemu-io -d {device} "write -P {pattern:#x} {offset} {length}"'
        out = await self.qmp.execute("human-monitor-command", {"command-line": line})
        assert "error" not in str(out).lower(), out
        self.writes.append((pattern, offset, length))

    async def flush(self) -> None:
        """Flush the disk as a guest would, so that qemu-img reads what QEMU wrote
        (QEMU keeps qcow2 metadata in its cache until a flush)."""
        device = f"/machine/peripheral/{ALIAS}/virtio-backend"
        await self.qmp.execute(
            "human-monitor-command", {"command-line": f'qemu-io -d {device} "flush"'}
        )

    def event_time(self, name: str, device: str) -> float:
        """QEMU's timestamp of the first event ``name`` about ``device`` seen so far
        (QEMU sends every event to each monitor, the test's included)."""
        while not self.qmp.events.empty():
            event = self.qmp.events.get_nowait()
            if event is not None:
                self.seen.append(event)
        for event in self.seen:
            if event.name == name and event.data.get("device") == device:
                return event.timestamp
        raise AssertionError(f"no {name} for {device}")

    def reference(self, path: Path) -> Path:
        """A raw image holding what the disk should hold now (chain + guest writes)."""
        run("qemu-img", "convert", "-U", "-O", "raw", str(self.top_reference()), str(path))
        qemu_io(path, "raw", self.writes)
        return path

    def top_reference(self) -> Path:
        return self.images / "reference.qcow2"

    def snapshot_reference(self) -> None:
        """Keep the chain's initial content (before QEMU changes any file)."""
        run("qemu-img", "convert", "-O", "qcow2", str(self.top), str(self.top_reference()))


def identical(a: Path, a_fmt: str, b: Path, b_fmt: str) -> bool:
    done = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", a_fmt, "-F", b_fmt, str(a), str(b)],
        capture_output=True,
        text=True,
    )
    return done.returncode == 0
