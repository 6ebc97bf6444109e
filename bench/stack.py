"""One virtbus service under measurement: an embedded nats-server and the
service as a process of its own, both in a folder of the benchmark's."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from nats.aio.client import Client as NATS

from shared.util import bus
from shared.util.errors import ErrorCode, VirtError
from shared.util.natsserver import EmbeddedNats

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0

Probe = Callable[[NATS], Awaitable[object]]


@asynccontextmanager
async def service_stack(
    folder: Path,
    service: str,
    probe: Probe,
    extra: Sequence[str] = (),
    *,
    host: str | None = None,
    command: Sequence[str] | None = None,
    started: Callable[[EmbeddedNats, asyncio.subprocess.Process], None] | None = None,
) -> AsyncIterator[tuple[str, NATS]]:
    """Start nats-server and ``python -m services.<service>`` (or ``python
    <command>``) under ``folder``; yields the URL (carrying the admin's
    credentials, as a command line would be given them) and a connection as
    admin once ``probe`` succeeds against the service.  A host-scoped service
    serves ``host`` (the server's users are made for it).  ``started`` is told
    the server and the service's process (``bench.meter.Meter`` reads their CPU time)."""
    server = EmbeddedNats(folder / "nats", hosts=[host] if host else ())
    await server.start()
    log_path = folder / f"{service}.log"
    try:
        log = await asyncio.to_thread(log_path.open, "wb")
        with log:  # the child keeps its own descriptor
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *(command or ["-m", f"services.{service}"]),
                *["--nats-url", server.url],
                *["--state-dir", str(folder / service), "--http-port", "0"],
                *["--log-level", "WARNING", *extra],
                *(["--host", host] if host else []),
                *["--creds", str(server.credentials.path(service))],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if started is not None:
            started(server, proc)
        admin = server.role_url("admin")
        nc = await bus.connect(admin, "virtbus-bench")
        try:
            await _wait_ready(service, nc, probe, proc, log_path)
            yield admin, nc
        finally:
            await bus.close(nc)
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    finally:
        await server.stop()


async def _wait_ready(
    service: str, nc: NATS, probe: Probe, proc: asyncio.subprocess.Process, log: Path
) -> None:
    """Until ``probe`` succeeds; ``RuntimeError`` when the service dies or is late."""
    end = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < end:
        if proc.returncode is not None:
            text = await asyncio.to_thread(log.read_text)
            raise RuntimeError(f"the {service} service exited; its log:\n{text}")
        try:
            await probe(nc)
            return
        except VirtError as err:
            if err.code not in (ErrorCode.NO_SERVER, ErrorCode.OPERATION_TIMEOUT):
                raise
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the {service} service did not answer within {READY_TIMEOUT:.0f}s")
