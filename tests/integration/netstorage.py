"""Helpers of the netfs, iscsi and rbd pool tests: skip reasons that name the missing
kernel feature or tool precisely, and a runner that records the commands a backend
would run instead of running them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence

from services.storage.pools.runner import DEFAULT_TIMEOUT, CommandRunner, find_tool

#: Present only when the kernel can load modules (CONFIG_MODULES).
MODPROBE_HOOK = "/proc/sys/kernel/modprobe"

#: What a test needs installed: (what to name, its Debian package, whether it is there).
Need = tuple[str, str, bool]


def kernel_filesystems() -> set[str]:
    """The file system types the running kernel knows (/proc/filesystems)."""
    try:
        with open("/proc/filesystems", encoding="utf-8") as f:
            return {line.split()[-1] for line in f if line.strip()}
    except OSError:
        return set()


def _load_module(module: str) -> str | None:
    """Load ``module`` with modprobe; None when it loaded, else why it could not."""
    if not os.path.exists(MODPROBE_HOOK):
        return f"the kernel cannot load modules (no {MODPROBE_HOOK})"
    modprobe = find_tool("modprobe")
    if modprobe is None:
        return "modprobe is unavailable (Debian: apt-get install kmod)"
    proc = subprocess.run([modprobe, module], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"'modprobe {module}' failed: {proc.stderr.strip()}"
    return None


def kernel_feature(lacking: Callable[[], str | None], module: str) -> str | None:
    """None when the kernel has a feature, loading ``module`` first if need be.

    ``lacking()`` says what is absent and how that shows ("the kernel has no
    NFS client: 'nfs' is not in /proc/filesystems"), or None when present; the
    reason returned adds why the module could not provide it.
    """
    absent = lacking()
    if absent is None:
        return None
    why = _load_module(module)
    if why is None:
        absent = lacking()
        if absent is None:
            return None
        why = f"'modprobe {module}' did not provide it"
    return f"{absent}, and {why}"


def tool(name: str, package: str) -> Need:
    """A program the test runs, looked up as the storage service looks it up."""
    return (name, package, find_tool(name) is not None)


def not_installed(needs: Sequence[Need]) -> str | None:
    """None when everything needed is there, else what is missing and the install command."""
    absent = [(name, package) for name, package, present in needs if not present]
    if not absent:
        return None
    packages = " ".join(dict.fromkeys(package for _, package in absent))
    names = ", ".join(name for name, _ in absent)
    return f"not installed: {names} (Debian: apt-get install {packages})"


def skip_reason(*parts: str | None) -> str | None:
    """The reasons found, the kernel's first, in one line; None when there are none."""
    found = [p for p in parts if p]
    return "; ".join(found) or None


class RecordingRunner(CommandRunner):
    """Records each command a backend runs instead of running it; ``answer(argv)``
    is the command's standard output."""

    def __init__(self, answer: Callable[[list[str]], str] | None = None) -> None:
        super().__init__()
        self.commands: list[list[str]] = []
        self._answer = answer

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ok_codes: Sequence[int] = (0,),
    ) -> tuple[int, str]:
        self.commands.append(list(argv))
        return 0, self._answer(list(argv)) if self._answer else ""
