"""`virtbus up` for the soak: started with a domains folder, its processes found by
pid so that any of them can be killed with SIGKILL, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client as NATS

from shared.util.credentials import read_file
from shared.util.subjects import service_subject

#: The processes a soak kills: each service and the agent by module, and nats-server.
SERVICES = {
    "secret": "services.secret",
    "storage": "services.storage",
    "network": "services.network",
    "nwfilter": "services.nwfilter",
    "agent-qemu": "agents.qemu",
}
TARGETS = (*SERVICES, "nats-server")


@dataclass
class SoakStack:
    url: str
    proc: asyncio.subprocess.Process
    state: Path
    #: `virtbus up`'s log (its children's too)
    log: Path

    def pid_of(self, target: str) -> int | None:
        """The pid of ``target`` among `virtbus up`'s children, if it runs now."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            if ppid != self.proc.pid or not argv or stat.rpartition(")")[2].split()[0] == "Z":
                continue
            if target == "nats-server":
                if argv[0].endswith(b"nats-server"):
                    return int(entry.name)
            elif SERVICES[target].encode() in argv:
                return int(entry.name)
        return None

    def kill9(self, target: str) -> bool:
        """SIGKILL ``target``; False when it was not running (being restarted)."""
        pid = self.pid_of(target)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            return True
        return False


async def wait_all_answer(nc: NATS, log: Path, timeout: float = 180) -> None:
    """Until every service and the agent answers ``$SRV.PING`` again; raises
    ``RuntimeError`` naming the first that does not, with the end of the log."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    for name in SERVICES:
        while True:
            try:
                await nc.request(service_subject("PING", name), b"", timeout=1)
                break
            except Exception as err:
                if loop.time() > end:
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                    raise RuntimeError(f"{name} does not answer ({err!r}); log:\n{tail}") from err
                await asyncio.sleep(0.3)


@asynccontextmanager
async def soak_stack(port: int, state: Path, domains: Path) -> AsyncIterator[SoakStack]:
    """Run `virtbus up` until the block ends, then stop it with SIGTERM."""
    state.mkdir(parents=True, exist_ok=True)
    log = state.parent / "up.log"
    with open(log, "ab") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "client.cli.main", "up",
            "--nats-port", str(port), "--state-dir", str(state), "--domains-dir", str(domains),
            stdout=asyncio.subprocess.PIPE, stderr=log_file,
        )  # fmt: skip
    stack = SoakStack(f"nats://127.0.0.1:{port}", proc, state, log)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(120):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("virtbus up ended before it was up")
                if "virtbus is up" in line:
                    break
        # The stack is authenticated: the soak works as its admin.
        stack.url = read_file(state / "creds" / "admin.creds").url(stack.url)
        yield stack
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
