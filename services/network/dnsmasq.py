"""One network's dnsmasq: its files, the process, and a watch that reports its death.

dnsmasq runs as libvirt runs it: ``dnsmasq --conf-file=NAME.conf
--leasefile-ro --dhcp-script=HELPER``, daemonized, with its pid in a pid
file.  It is deliberately not a child the service must keep: when the
service dies, dnsmasq goes on serving, and the next service finds it by its
pid file (``running_pid`` checks that the pid is a dnsmasq reading this
network's configuration) and adopts it.  ``watch`` waits on a pidfd for the
process to end, so a death is seen at once and the service restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path

from services.network import leasehelper
from services.network.dnsmasq_conf import DnsmasqFiles, file_paths
from services.network.host import run
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_STOP_SECONDS = 5.0


def dnsmasq_binary() -> str:
    return shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


class Dnsmasq:
    """The dnsmasq of network ``name`` with its files in ``run_dir``."""

    def __init__(self, name: str, bridge: str, run_dir: Path) -> None:
        self.name = name
        self.run_dir = run_dir
        self.conf = run_dir / f"{name}.conf"
        self.pidfile = run_dir / f"{name}.pid"
        self.helper = run_dir / f"{name}.leasehelper"
        #: the lease status file, named after the bridge as libvirt names it
        self.status = run_dir / f"{bridge}.status"

    def write_files(self, files: DnsmasqFiles) -> None:
        """Write the configuration, both hosts files and the lease helper's wrapper.

        dnsmasq reads the hosts files again after dropping its privileges (on
        SIGHUP), so they are world-readable, as libvirt's are.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o755)
        _write(self.conf, files.conf, 0o644)
        self.write_hosts(files)
        # dnsmasq waits for "init" when it starts: with no lease recorded there is
        # nothing to tell it, and no interpreter needs to start
        script = (
            "#!/bin/sh\n"
            f'[ "$1" = init ] && [ ! -s {self.status} ] && exit 0\n'
            f'exec {sys.executable} -S -E {leasehelper.__file__} {self.status} "$@"\n'
        )
        _write(self.helper, script, 0o755)

    def write_hosts(self, files: DnsmasqFiles) -> None:
        """Rewrite only the hosts files (what a SIGHUP makes dnsmasq read again)."""
        _write(Path(files.hostsfile_path), files.hostsfile or "", 0o644)
        _write(Path(files.addnhosts_path), files.addnhosts, 0o644)

    def current_conf(self) -> str | None:
        """The configuration file as written last, None when there is none."""
        try:
            return self.conf.read_text()
        except FileNotFoundError:
            return None

    def running_pid(self) -> int | None:
        """The pid of this network's running dnsmasq, None when there is none."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        if f"--conf-file={self.conf}".encode() not in cmdline:
            return None  # the pid was reused by another process
        return pid

    async def start(self) -> int:
        """Start dnsmasq (the files written); returns its pid once it serves."""
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        argv = [
            dnsmasq_binary(),
            f"--conf-file={self.conf}",
            "--leasefile-ro",
            f"--dhcp-script={self.helper}",
        ]
        # dnsmasq's parent exits once the daemon is ready (or failed to start)
        await run(argv)
        pid = self.running_pid()
        if pid is None:
            raise VirtError(
                ErrorCode.SYSTEM_ERROR,
                f"dnsmasq of network '{self.name}' did not start",
                ErrorDomain.NETWORK,
            )
        return pid

    def reload(self) -> None:
        """SIGHUP: dnsmasq reads its hosts files again."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGHUP)

    async def stop(self) -> None:
        """Stop dnsmasq and wait until it is gone; nothing when it is not running."""
        pid = self.running_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(wait_exit(pid), _STOP_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                await wait_exit(pid)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()

    def remove_files(self, *, leases: bool = False) -> None:
        """Remove every file of this network's dnsmasq (after a stop); with
        ``leases``, the lease status file and its lock too."""
        paths = [self.conf, self.pidfile, self.helper]
        paths += [Path(p) for p in file_paths(str(self.run_dir), self.name)]
        if leases:
            paths += [self.status, leasehelper.lock_path(self.status)]
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


async def wait_exit(pid: int) -> None:
    """Return when process ``pid`` has ended (a pidfd turns readable then)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await gone
    finally:
        loop.remove_reader(fd)
        os.close(fd)
