"""Where a learning binding's address comes from: the guest's packets, or a lease event.

``PacketLearners`` runs one ``services.nwfilter.learn`` process per port
(inside the ports' network namespace when there is one) and hands the first
address it prints to ``learned``.  ``lease_address`` reads the network
service's lease events (shared.api.network: object ``lease``, detail
``Added``/``Renewed``, the lease in ``extra``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable


class PacketLearners:
    """One learning process per port, until it reports or is stopped."""

    def __init__(
        self,
        argv: Callable[[list[str]], list[str]],
        spawn: Callable[[Awaitable[None], str], None],
        learned: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self._argv = argv
        self._spawn = spawn
        self._learned = learned
        #: port -> its process (None while it starts)
        self._procs: dict[str, asyncio.subprocess.Process | None] = {}

    def start(self, port: str, mac: str) -> None:
        if port not in self._procs:
            self._procs[port] = None
            self._spawn(self._run(port, mac), f"learn-{port}")

    def stop(self, port: str) -> None:
        proc = self._procs.pop(port, None)
        if proc is not None and proc.returncode is None:
            proc.kill()

    async def _run(self, port: str, mac: str) -> None:
        argv = self._argv([sys.executable, "-m", "services.nwfilter.learn", port, mac])
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
        if port not in self._procs:  # stopped while it started
            proc.kill()
        self._procs[port] = proc
        try:
            assert proc.stdout is not None
            await proc.stdout.readline()  # "ready": the port is watched
            line = (await proc.stdout.readline()).decode().strip()
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        if self._procs.get(port) is proc:
            del self._procs[port]
            if line:
                await self._learned(port, line)


def lease_address(body: bytes) -> tuple[str, str] | None:
    """(MAC, IPv4 address) of a lease event that hands out an address, else None."""
    try:
        data = json.loads(body).get("data") or {}
    except (ValueError, AttributeError):
        return None
    lease = data.get("extra") or {}
    if data.get("detail") not in ("Added", "Renewed") or lease.get("type", "ipv4") != "ipv4":
        return None
    mac, ip = lease.get("mac"), lease.get("ipaddr")
    return (mac, ip) if isinstance(mac, str) and isinstance(ip, str) else None
