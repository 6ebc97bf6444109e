"""Reaching libvirt for the comparison figures: the system interpreter's binding and virsh.

``Libvirt.find`` decides once whether this machine can give libvirt's figures;
when it cannot, ``reason`` says why and every libvirt cell shows it.  As root it
starts ``libvirtd -d`` when the binding is there but no daemon answers (and says
so in ``started``); it never stops a daemon, which others on the machine may use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.table import NO_LIBVIRT

SYSTEM_PYTHON = "/usr/bin/python3"
URI = "qemu:///system"
WORKER = Path(__file__).with_name("secret_libvirt.py")
#: Usage names of the benchmark's own secrets start with this; the worker removes only those.
PREFIX = "virtbus-bench-"

_NO_BINDING = 3
_NO_DAEMON = 4
_DAEMON_WAIT = 10.0


class WorkerError(Exception):
    """The libvirt worker failed; the message is its last error line."""


@dataclass
class Libvirt:
    """What the machine offers: ``version`` when usable, else ``reason``."""

    version: str | None = None
    reason: str | None = None
    started: bool = False

    @classmethod
    def find(cls) -> Libvirt:
        if not Path(SYSTEM_PYTHON).is_file():
            return cls(reason=NO_LIBVIRT)
        code, out, err = _worker("probe")
        if code == _NO_DAEMON and os.geteuid() == 0 and shutil.which("libvirtd"):
            subprocess.run(["libvirtd", "-d"], check=False, timeout=30)
            end = time.monotonic() + _DAEMON_WAIT
            while code == _NO_DAEMON and time.monotonic() < end:
                time.sleep(0.2)
                code, out, err = _worker("probe")
            if code == 0:
                return cls(version=json.loads(out)["version"], started=True)
        if code == 0:
            return cls(version=json.loads(out)["version"])
        if code == _NO_BINDING:
            return cls(reason=NO_LIBVIRT)
        return cls(reason=f"n/a (libvirtd not reachable: {err})")

    @property
    def label(self) -> str:
        """The column heading: ``libvirt 9.0.0`` or just ``libvirt``."""
        return f"libvirt {self.version}" if self.version else "libvirt"

    def call(self, command: str, *args: str, timeout: float = 600) -> dict[str, Any]:
        """Run the worker's ``command``; its JSON reply.  Raises ``WorkerError``."""
        code, out, err = _worker(command, *args, timeout=timeout)
        if code != 0:
            raise WorkerError(err or f"libvirt worker exited with status {code}")
        reply: dict[str, Any] = json.loads(out)
        return reply

    def virsh(self, *args: str) -> list[str] | None:
        """The argv of a virsh command on our URI, or None without virsh."""
        found = shutil.which("virsh")
        return [found, "-c", URI, *args] if found else None


def _worker(command: str, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """(exit status, stdout, last stderr line) of one worker run."""
    argv = [SYSTEM_PYTHON, str(WORKER), command, "--uri", URI, "--prefix", PREFIX, *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 1, "", f"libvirt worker '{command}' took more than {timeout:.0f}s"
    lines = done.stderr.strip().splitlines()
    return done.returncode, done.stdout, lines[-1] if lines else ""
