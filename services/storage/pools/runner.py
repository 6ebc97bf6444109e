"""Running the external tools (qemu-img, mount, mkfs, vgchange...) without blocking the loop.

A failed command raises ``VirtError`` worded as libvirt's virCommandRun
("Child process (CMD) unexpected exit status N: STDERR"); a missing tool
raises before anything runs.  Every run's duration is reported to the
``observe`` callback (the service's per-tool histogram).  Cancelling a run
kills the child and waits for it before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Sequence

from services.storage.pools.command import shell_quote
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE
#: Where system tools live even when the service's PATH lacks the sbin folders.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
)
DEFAULT_TIMEOUT = 3600.0

Observe = Callable[[str, float], None]


_ENV = {**os.environ, "LC_ALL": "C", "PATH": _SEARCH_PATH}
_found: dict[str, str] = {}


def find_tool(name: str) -> str | None:
    """The full path of ``name``, searching the sbin folders too; None when absent.

    A tool once found is remembered; ``CommandRunner.run`` looks again if it vanished."""
    path = _found.get(name)
    if path is None:
        path = shutil.which(name, path=_SEARCH_PATH)
        if path is not None:
            _found[name] = path
    return path


def command_text(argv: Sequence[str]) -> str:
    """The command on one line, shell-quoted, as libvirt's error messages show it."""
    return " ".join(shell_quote(a) for a in argv)


class CommandRunner:
    """Runs commands for the backends and times them per tool."""

    def __init__(self, observe: Observe | None = None) -> None:
        self._observe = observe

    def require(self, name: str) -> str:
        """The path of tool ``name``; raises ``VirtError`` naming it when it is missing."""
        path = find_tool(name)
        if path is None:
            raise VirtError(
                ErrorCode.SYSTEM_ERROR,
                f"Cannot find '{name}' in path: No such file or directory",
                _D,
            )
        return path

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ok_codes: Sequence[int] = (0,),
    ) -> tuple[int, str]:
        """Run ``argv`` (program resolved on the search path); its exit code and stdout.

        Raises ``VirtError`` when the program is missing, exits with a code not
        in ``ok_codes``, or outlives ``timeout``.
        """
        tool = os.path.basename(argv[0])
        started = time.perf_counter()
        try:
            proc = await self._spawn(argv)
        except FileNotFoundError:
            _found.pop(argv[0], None)  # the remembered tool went away: look again
            proc = await self._spawn(argv)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except BaseException as exc:
            # Cancelled or timed out: never leave the child running.
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            if isinstance(exc, TimeoutError):
                raise VirtError(
                    ErrorCode.OPERATION_TIMEOUT,
                    f"Child process ({command_text(argv)}) ran longer than {timeout:.0f}s",
                    _D,
                ) from exc
            raise
        finally:
            if self._observe is not None:
                self._observe(tool, time.perf_counter() - started)
        code = proc.returncode if proc.returncode is not None else -1
        if code not in ok_codes:
            detail = err.decode("utf-8", "replace").strip() or out.decode("utf-8", "replace")
            raise VirtError(
                ErrorCode.INTERNAL_ERROR,
                f"Child process ({command_text(argv)}) unexpected exit status {code}: "
                f"{detail.strip()}",
                _D,
            )
        return code, out.decode("utf-8", "replace")

    async def _spawn(self, argv: Sequence[str]) -> asyncio.subprocess.Process:
        program = argv[0] if os.path.isabs(argv[0]) else self.require(argv[0])
        return await asyncio.create_subprocess_exec(
            program,
            *argv[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_ENV,
            # Python opens every descriptor non-inheritable (PEP 446), so nothing
            # leaks; not closing them lets subprocess use posix_spawn, several
            # times cheaper than fork+exec in a large process.
            close_fds=False,
        )

    async def output(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Run ``argv``, which must succeed; its stdout."""
        return (await self.run(argv, timeout=timeout))[1]
