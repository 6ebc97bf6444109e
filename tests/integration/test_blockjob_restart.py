"""The storage service killed (SIGKILL) mid-copy and started again: the job still
reaches ready and pivots, each status is applied once and each command sent once.

The copy becomes ready while the service is down, so the pivot it accepts
afterwards proves that the READY status reached it through its durable
consumer.  The agent's SIGKILL and nats-server's restart mid-copy are covered
by tests/integration/test_agent_qemu.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from client.events import subscribe
from services.storage.disk_store import JobRecord
from services.storage.registry import BUCKET
from shared.api.blockjob import BLOCK_JOB_2, Phase
from shared.util.events import CloudEvent
from shared.util.natsserver import EmbeddedNats
from shared.util.subjects import BLOCKJOB_KIND, agent_domain_subject, event_filter
from tests.integration.blockjob_stack import DOMAIN, Cli, eventually, qemu_domain
from tests.integration.procs import kill9, start_service, terminate, wait_for_service
from tests.integration.qemu_domain import QEMU, TARGET, identical

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
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _phases(events: Collected, job_id: str) -> list[str]:
    return [
        e.data.extra["phase"]
        for e in events.items
        if e.data.event == BLOCK_JOB_2 and e.data.extra.get("job_id") == job_id
    ]


async def test_storage_service_killed_mid_copy(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path
) -> None:
    url = nats_server.url
    cli = Cli(url)
    domains = tmp_path / "domains"
    for name in ("agent", "storage"):
        (tmp_path / name).mkdir()
    agent_args = ["--host", HOST, "--domains-dir", str(domains), "--poll-interval", "0.1"]
    storage_args = ["--host", HOST]

    def storage() -> subprocess.Popen[bytes]:
        log = tmp_path / "storage.log"
        return start_service("services.storage", url, tmp_path / "storage", log, extra=storage_args)

    async with qemu_domain(tmp_path / "images", domains) as domain:
        agent = start_service(
            "agents.qemu", url, tmp_path / "agent", tmp_path / "agent.log", extra=agent_args
        )
        service = storage()
        try:
            await wait_for_service(nc, "agent-qemu", agent)
            await wait_for_service(nc, "storage", service)

            async def listed() -> bool:
                r = await cli.run("--host", HOST, "domblklist", DOMAIN)
                return r.rc == 0 and str(domain.top) in r.out

            await eventually(listed, timeout=60)
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
                kill9(service)
                await domain.guest_write(0x66, 5 * 1024 * 1024, 64 * 1024)

                async def ready() -> bool:
                    return Phase.READY.value in _phases(statuses, job_id)

                await eventually(ready, timeout=60)  # while the service is down
                service = storage()
                await wait_for_service(nc, "storage", service)

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
                entry = await (await nc.jetstream().key_value(BUCKET)).get(
                    f"blockjob.{HOST}.{job_id}"
                )
                assert entry.value is not None
                record = JobRecord.model_validate_json(entry.value)
                assert record.phases == [Phase.READY, Phase.PIVOTED]
                assert not record.active and record.phase is Phase.PIVOTED

            await domain.flush()
            assert identical(copy, "qcow2", domain.reference(tmp_path / "reference.raw"), "raw")
        finally:
            terminate(service)
            terminate(agent)
