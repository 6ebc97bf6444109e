"""The CPU time of a benchmark's three processes (this client, the service
and nats-server), and waiting until the last two are idle: work a phase
leaves behind (the ledger's event forwarder catching up) is that phase's, and
must not be charged to, or slow down, the next one."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from shared.util.natsserver import EmbeddedNats

#: A process is idle when it used less than this share of a CPU over ``_SETTLE`` seconds.
_IDLE = 0.02
_SETTLE = 0.2


def cpu_of(pid: int) -> float:
    """CPU seconds of process ``pid``, every thread: the scheduler's figures
    (nanoseconds; ``/proc/PID/stat`` counts in 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total / 1e9


class Meter:
    """CPU seconds of this process, the service and nats-server."""

    def __init__(self) -> None:
        self.service = 0
        self.server = 0

    def started(self, server: EmbeddedNats, proc: asyncio.subprocess.Process) -> None:
        assert server.proc is not None
        self.service, self.server = proc.pid, server.proc.pid

    def read(self) -> tuple[float, float, float]:
        return cpu_of(os.getpid()), cpu_of(self.service), cpu_of(self.server)

    async def settle(self) -> tuple[float, float, float]:
        """The figures once the service and the server are idle again."""
        last = self.read()
        while True:
            await asyncio.sleep(_SETTLE)
            now = self.read()
            if now[1] - last[1] < _IDLE * _SETTLE and now[2] - last[2] < _IDLE * _SETTLE:
                return now
            last = now
