"""The storage service killed (SIGKILL) mid-copy and started again: the job still
reaches ready and pivots, each status is applied once and each command sent once.

The copy becomes ready while the service is down, so the pivot it accepts
afterwards proves that the READY status reached it through its durable
consumer.  The agent's SIGKILL and nats-server's restart mid-copy are covered
by tests/integration/test_agent_qemu.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from client.events import subscribe
from services.storage.disks.store import JobRecord
from shared.api.blockjob import BLOCK_JOB_2, Phase
from shared.util.events import CloudEvent
from shared.util.natsserver import EmbeddedNats
from shared.util.subjects import (
    BLOCKJOB_KIND,
    LEDGER_PREFIX,
    agent_domain_subject,
    event_filter,
    ledger_name,
)
from shared.util.tasks import cancel_until_done
from tests.conftest import ConnectAs
from tests.integration.blockjob_stack import DOMAIN, Cli, eventually, qemu_domain
from tests.integration.procs import kill9, start_service, terminate, wait_for_service
from tests.integration.qemu_domain import QEMU, TARGET, QemuFixture, identical

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed"),
]
HOST = "jobhost"


class Collected:
    """Every event on one subject filter, from the start of the stream."""

    def __init__(self) -> None:
        self.items: list[CloudEvent] = []

    async def pump(self, nc: NATS, subject: str) -> None:
        async with subscribe(nc, subject, replay=True) as events:
            async for event in events:
                self.items.append(event)


@contextlib.asynccontextmanager
async def collecting(nc: NATS, subject: str) -> AsyncIterator[Collected]:
    collected = Collected()
    task = asyncio.create_task(collected.pump(nc, subject))
    try:
        yield collected
    finally:
        await cancel_until_done({task})


def _phases(events: Collected, job_id: str) -> list[str]:
    return [
        e.data.extra["phase"]
        for e in events.items
        if e.data.event == BLOCK_JOB_2 and e.data.extra.get("job_id") == job_id
    ]


@dataclass
class Processes:
    """The agent and the storage service of ``HOST`` as processes, and a QEMU domain."""

    url: str
    folder: Path
    domain: QemuFixture
    agent: subprocess.Popen[bytes] | None = None
    storage: subprocess.Popen[bytes] | None = None

    def start_storage(self) -> subprocess.Popen[bytes]:
        log = self.folder / "storage.log"
        self.storage = start_service(
            "services.storage", self.url, self.folder / "storage", log, extra=["--host", HOST]
        )
        return self.storage


@contextlib.asynccontextmanager
async def processes(url: str, nc: NATS, folder: Path) -> AsyncIterator[Processes]:
    domains = folder / "domains"
    for name in ("agent", "storage"):
        (folder / name).mkdir()
    agent_args = ["--host", HOST, "--domains-dir", str(domains), "--poll-interval", "0.1"]
    async with qemu_domain(folder / "images", domains) as domain:
        running = Processes(url, folder, domain)
        running.agent = start_service(
            "agents.qemu", url, folder / "agent", folder / "agent.log", extra=agent_args
        )
        try:
            await wait_for_service(nc, "agent-qemu", running.agent)
            await wait_for_service(nc, "storage", running.start_storage())
            cli = Cli(url)

            async def listed() -> bool:
                r = await cli.run("--host", HOST, "domblklist", DOMAIN)
                return r.rc == 0 and str(domain.top) in r.out

            await eventually(listed, timeout=60)
            yield running
        finally:
            for proc in (running.storage, running.agent):
                if proc is not None:
                    terminate(proc)


async def test_storage_service_killed_mid_copy(
    nats_server: EmbeddedNats, nc: NATS, connect_as: ConnectAs, tmp_path: Path
) -> None:
    cli = Cli(nats_server.url)
    async with processes(nats_server.url, nc, tmp_path) as running:
        domain = running.domain
        assert running.storage is not None
        agent_subject = agent_domain_subject(HOST, DOMAIN)
        commands_subject = event_filter("storage", HOST, BLOCKJOB_KIND)
        async with (
            collecting(nc, agent_subject) as statuses,
            collecting(nc, commands_subject) as commands,
        ):
            copy = tmp_path / "copy.qcow2"
            started = await cli.ok(
                "--host", HOST, "--json", "blockcopy", DOMAIN, TARGET, str(copy),
                "--format", "qcow2", "--bandwidth", "1",
            )  # fmt: skip
            job_id = json.loads(started.out)["job_id"]

            async def copying() -> bool:
                return any(
                    e.data.event == "block-job-progress" and e.data.extra["cur"] > 0
                    for e in statuses.items
                )

            await eventually(copying)
            kill9(running.storage)
            await domain.guest_write(0x66, 5 * 1024 * 1024, 64 * 1024)

            async def ready() -> bool:
                return Phase.READY.value in _phases(statuses, job_id)

            await eventually(ready, timeout=60)  # while the service is down
            await wait_for_service(nc, "storage", running.start_storage())

            shown = await cli.ok("--host", HOST, "blockjob", DOMAIN, TARGET, "--info")
            assert shown.err == "\rBlock Copy: [100 %]"
            assert "Bandwidth limit: 1048576 bytes/s (1.000 MiB/s)" in shown.out
            await cli.ok("--host", HOST, "blockjob", DOMAIN, TARGET, "--pivot")
            listing = await cli.ok("--host", HOST, "domblklist", DOMAIN)
            assert str(copy) in listing.out and str(domain.top) not in listing.out
            await asyncio.sleep(1.0)  # let anything doubled arrive

            assert _phases(statuses, job_id) == ["ready", "pivoted"]
            sent = [e.data.event for e in commands.items]
            assert sent == ["copy", "pivot"]
            # The storage service's ledger is its own to read.
            as_storage = await connect_as("storage")
            stored = await as_storage.request(
                f"$JS.API.STREAM.MSG.GET.{ledger_name('storage', HOST)}",
                json.dumps(
                    {"last_by_subj": f"{LEDGER_PREFIX}.storage.{HOST}.blockjob.{HOST}.{job_id}"}
                ).encode(),
                timeout=5,
            )
            message = json.loads(stored.data)["message"]
            record = JobRecord.model_validate_json(base64.b64decode(message["data"]))
            assert record.phases == [Phase.READY, Phase.PIVOTED]
            assert not record.active and record.phase is Phase.PIVOTED

        await domain.flush()
        assert identical(copy, "qcow2", domain.reference(tmp_path / "reference.raw"), "raw")


async def test_storage_service_follows_the_agent_after_a_nats_restart(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path
) -> None:
    """The storage service's own consumer of the agent's events carries on after
    nats-server was SIGKILLed and started again (the agent's side is in
    test_agent_qemu.py): a pull started afterwards completes in its inventory."""
    cli = Cli(nats_server.url)
    async with processes(nats_server.url, nc, tmp_path) as running:
        nats_server.kill()
        await asyncio.sleep(3.0)
        await nats_server.start()
        # Until both are back on the bus (each reconnects on its own): a command
        # sent before then finds no service, as it should.
        assert running.agent is not None and running.storage is not None
        await wait_for_service(nc, "agent-qemu", running.agent)
        await wait_for_service(nc, "storage", running.storage)
        done = await cli.ok("--host", HOST, "blockpull", DOMAIN, TARGET, "--wait")
        assert done.out == "\nPull complete\n"
        disk = (await cli.ok("--host", HOST, "disk-dumpxml", DOMAIN, TARGET)).out
        assert "<backingStore/>" in disk and str(running.domain.base) not in disk
