"""The QEMU host agent against a real qemu-system-x86_64 (TCG, ``-S``) and nats-server.

Block-job commands are published as the storage service publishes them; the
test reads the agent's events (inventory, block-job-2) from the stream and the
data from the images with qemu-img.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from nats.aio.client import Client as NATS

from client.events import subscribe
from shared.api import agent as agent_api
from shared.api.blockjob import (
    BLOCK_JOB_2,
    INVENTORY,
    AbortCommand,
    BlockJobStatus,
    Command,
    CommitCommand,
    CopyCommand,
    DiskInventory,
    Phase,
    PivotCommand,
    PullCommand,
    SetSpeedCommand,
)
from shared.util.api import Empty, call
from shared.util.events import CONTENT_TYPE, CloudEvent, cloud_event
from shared.util.natsserver import EmbeddedNats
from shared.util.subjects import (
    AGENT,
    BLOCKJOB_KIND,
    DOMAIN_KIND,
    agent_domain_subject,
    event_subject,
)
from shared.util.tasks import cancel_until_done
from tests.conftest import ConnectAs
from tests.integration.procs import kill9, start_service, terminate, wait_for_service
from tests.integration.qemu_domain import QEMU, TARGET, QemuFixture, identical

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed"),
]

HOST = "testhost"
DOMAIN = "web1"


class Events:
    """Every event of the domain's agent subject, from the start of the stream."""

    def __init__(self) -> None:
        self.items: list[CloudEvent] = []
        self.arrived: list[float] = []
        self._changed = asyncio.Condition()

    async def pump(self, nc: NATS) -> None:
        async with subscribe(nc, agent_domain_subject(HOST, DOMAIN), replay=True) as events:
            async for event in events:
                async with self._changed:
                    self.items.append(event)
                    self.arrived.append(time.time())
                    self._changed.notify_all()

    async def wait(self, match: Callable[[CloudEvent], bool], timeout: float = 30.0) -> CloudEvent:
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for event in self.items:
                    if match(event):
                        return event
                await self._changed.wait()

    async def barrier(self, nc: NATS) -> None:
        """Until everything published on the subject before now has arrived: a
        marker is published after it, and the stream delivers in order."""
        marker = f"barrier-{uuid.uuid4().hex}"
        await publish_event(nc, marker, AGENT, DOMAIN_KIND, DOMAIN, "test-barrier")
        await self.wait(lambda e: e.id == marker)

    def inventories(self) -> list[DiskInventory]:
        return [
            DiskInventory.model_validate(e.data.extra)
            for e in self.items
            if e.data.event == INVENTORY
        ]

    def statuses(self, job_id: str) -> list[BlockJobStatus]:
        return [
            BlockJobStatus.model_validate(e.data.extra)
            for e in self.items
            if e.data.event == BLOCK_JOB_2 and e.data.extra.get("job_id") == job_id
        ]

    async def inventory(self, match: Callable[[etree._Element], bool]) -> etree._Element:
        """The first inventory whose disk matches."""
        event = await self.wait(lambda e: e.data.event == INVENTORY and match(_disk(e)), timeout=30)
        return _disk(event)

    async def phase(self, job_id: str, phase: Phase, timeout: float = 60.0) -> CloudEvent:
        return await self.wait(
            lambda e: (
                e.data.event == BLOCK_JOB_2
                and e.data.extra.get("job_id") == job_id
                and e.data.extra.get("phase") == phase.value
            ),
            timeout,
        )


def _disk(event: CloudEvent) -> etree._Element:
    inventory = DiskInventory.model_validate(event.data.extra)
    return etree.fromstring(inventory.disks[0])


def _source(disk: etree._Element) -> str | None:
    node = disk.find("source")
    return None if node is None else node.get("file")


def _chain_ends(disk: etree._Element) -> bool:
    """The disk has no backing image: its ``<backingStore/>`` is the terminator."""
    store = disk.find("backingStore")
    return store is not None and len(store) == 0


def _mirror_ready(disk: etree._Element) -> str | None:
    mirror = disk.find("mirror")
    return None if mirror is None else mirror.get("ready", "")


class Agent:
    def __init__(self, url: str, state: Path, domains: Path, log: Path) -> None:
        self.url, self.state, self.domains, self.log = url, state, domains, log
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, nc: NATS) -> None:
        args = ["--host", HOST, "--domains-dir", str(self.domains), "--poll-interval", "0.1"]
        args += ["--log-level", "DEBUG"]
        self.proc = start_service("agents.qemu", self.url, self.state, self.log, extra=args)
        await wait_for_service(nc, "agent-qemu", self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        kill9(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)


@pytest.fixture
async def nc(connect_as: ConnectAs) -> NATS:
    """The tests play the storage service: they send its commands and call the agent."""
    return await connect_as("storage")


@pytest.fixture
async def domain(tmp_path: Path) -> AsyncIterator[QemuFixture]:
    fixture = QemuFixture(DOMAIN, tmp_path / "images", tmp_path / "domains")
    fixture.make_chain()
    fixture.snapshot_reference()
    await fixture.start()
    try:
        yield fixture
    finally:
        await fixture.stop()


@pytest.fixture
async def agent(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path, domain: QemuFixture
) -> AsyncIterator[Agent]:
    state = tmp_path / "agent"
    state.mkdir()
    process = Agent(nats_server.url, state, domain.domains, tmp_path / "agent.log")
    await process.start(nc)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def events(nc: NATS, agent: Agent) -> AsyncIterator[Events]:
    collected = Events()
    task = asyncio.create_task(collected.pump(nc))
    try:
        yield collected
    finally:
        await cancel_until_done({task})


async def publish_event(
    nc: NATS,
    event_id: str,
    service: str,
    kind: str,
    name: str,
    event: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Store one event in the event stream, as a service's ledger forwarder does."""
    cloud = cloud_event(event_id, service, HOST, kind, name, event, None, extra)
    await nc.jetstream().publish(
        event_subject(service, HOST, kind, name),
        cloud.model_dump_json().encode(),
        headers={"Nats-Msg-Id": cloud.id, "Content-Type": CONTENT_TYPE},
    )


async def send(nc: NATS, command: Command) -> None:
    """Publish ``command`` as the storage service does."""
    await publish_event(
        nc,
        uuid.uuid4().hex,
        "storage",
        BLOCKJOB_KIND,
        command.domain,
        command.kind.value,
        command.model_dump(mode="json"),
    )


def copy_command(job_id: str, dest: Path, **options: object) -> CopyCommand:
    xml = f"<disk type='file'><driver type='qcow2'/><source file='{dest}'/></disk>"
    return CopyCommand.model_validate(
        {"job_id": job_id, "domain": DOMAIN, "disk": TARGET, "destination": xml, **options}
    )


# --- inventory --------------------------------------------------------------------------------


async def test_inventory_has_the_live_backing_chain(
    nc: NATS, domain: QemuFixture, events: Events
) -> None:
    disk = await events.inventory(lambda d: _source(d) == str(domain.top))
    assert disk.find("alias").get("name") == "virtio-disk0"  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert disk.find("source").get("index") == "2"  # type: ignore[union-attr]
    backing = disk.find("backingStore")
    assert backing is not None and backing.get("type") == "file" and backing.get("index") == "1"
    assert backing.find("format").get("type") == "raw"  # type: ignore[union-attr]
    assert backing.find("source").get("file") == str(domain.base)  # type: ignore[union-attr]
    terminator = backing.find("backingStore")
    assert terminator is not None and len(terminator) == 0 and not terminator.attrib

    listing = await call(nc, agent_api.DOMAIN_LIST, Empty(), host=HOST)
    assert [(d.name, d.live, d.disks) for d in listing.domains] == [(DOMAIN, True, 1)]
    current = await call(nc, agent_api.DOMAIN_DISKS, agent_api.DomainRef(domain=DOMAIN), host=HOST)
    assert current.disks == events.inventories()[-1].disks

    domain.xml_path.unlink()
    gone = await events.wait(lambda e: e.data.event == "undefined")
    assert gone.data.extra["domain"] == DOMAIN


# --- copy ---------------------------------------------------------------------------------------


async def test_copy_ready_write_pivot(
    nc: NATS, domain: QemuFixture, events: Events, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.qcow2"
    await events.inventory(lambda d: _source(d) == str(domain.top))
    await send(nc, copy_command("copy1", copy))
    running = await events.inventory(lambda d: d.find("mirror") is not None)
    assert _mirror_ready(running) == ""
    ready = await events.phase("copy1", Phase.READY)
    arrived = events.arrived[events.items.index(ready)]
    latency = arrived - domain.event_time("BLOCK_JOB_READY", "vbj-copy1")
    print(f"BLOCK_JOB_READY -> subscriber: {latency * 1000:.1f} ms")
    assert 0 < latency < 2.0
    assert ready.data.detail == "Block Copy for vda ready"
    assert ready.data.extra["type"] == "COPY" and ready.data.extra["status"] == "READY"
    disk = await events.inventory(lambda d: _mirror_ready(d) == "yes")
    mirror = disk.find("mirror")
    assert mirror is not None and mirror.get("job") == "copy"
    assert mirror.find("source").get("file") == str(copy)  # type: ignore[union-attr]

    await domain.guest_write(0x44, 2 * 1024 * 1024, 256 * 1024)
    await domain.guest_write(0x45, 7 * 1024 * 1024, 64 * 1024)
    await send(nc, PivotCommand(job_id="copy1", domain=DOMAIN, disk=TARGET))
    done = await events.phase("copy1", Phase.PIVOTED)
    assert done.data.detail == "Block Copy for vda completed"
    assert done.data.extra["status"] == "COMPLETED" and done.data.extra["status_code"] == 0

    disk = await events.inventory(lambda d: _source(d) == str(copy) and d.find("mirror") is None)
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert str(copy) in domain.xml_path.read_text()
    assert str(domain.top) not in domain.xml_path.read_text()
    await domain.flush()
    reference = domain.reference(tmp_path / "reference.raw")
    assert identical(copy, "qcow2", reference, "raw")
    # each outcome once
    phases = [s.phase for s in events.statuses("copy1")]
    assert phases == [Phase.READY, Phase.PIVOTED]


async def test_abort_leaves_the_source_untouched(
    nc: NATS, domain: QemuFixture, events: Events, tmp_path: Path
) -> None:
    before = domain.xml_path.read_text()
    await events.inventory(lambda d: _source(d) == str(domain.top))
    await send(nc, copy_command("copy2", tmp_path / "abandoned.qcow2"))
    await events.phase("copy2", Phase.READY)
    await send(nc, AbortCommand(job_id="copy2", domain=DOMAIN, disk=TARGET))
    cancelled = await events.phase("copy2", Phase.CANCELLED)
    assert cancelled.data.detail == "Block Copy for vda canceled"
    disk = await events.inventory(
        lambda d: d.find("mirror") is None and _source(d) == str(domain.top)
    )
    assert disk.find("backingStore/source").get("file") == str(domain.base)  # type: ignore[union-attr]
    assert domain.xml_path.read_text() == before
    await domain.flush()
    reference = domain.reference(tmp_path / "reference.raw")
    assert identical(domain.top, "qcow2", reference, "raw")


# --- commit and pull ------------------------------------------------------------------------


async def test_active_commit_with_pivot(
    nc: NATS, domain: QemuFixture, events: Events, tmp_path: Path
) -> None:
    await events.inventory(lambda d: _source(d) == str(domain.top))
    await domain.guest_write(0x55, 3 * 1024 * 1024, 128 * 1024)
    await send(nc, CommitCommand(job_id="commit1", domain=DOMAIN, disk=TARGET, active=True))
    ready = await events.phase("commit1", Phase.READY)
    assert ready.data.detail == "Active Block Commit for vda ready"
    disk = await events.inventory(lambda d: _mirror_ready(d) == "yes")
    mirror = disk.find("mirror")
    assert mirror is not None and mirror.get("job") == "active-commit"
    assert mirror.find("source").get("file") == str(domain.base)  # type: ignore[union-attr]
    await send(nc, PivotCommand(job_id="commit1", domain=DOMAIN, disk=TARGET))
    await events.phase("commit1", Phase.PIVOTED)
    disk = await events.inventory(lambda d: _source(d) == str(domain.base))
    assert disk.find("driver").get("type") == "raw"  # type: ignore[union-attr]
    assert _chain_ends(disk)
    assert f"file='{domain.base}'" in domain.xml_path.read_text()
    await domain.flush()
    reference = domain.reference(tmp_path / "reference.raw")
    assert identical(domain.base, "raw", reference, "raw")


async def test_pull(nc: NATS, domain: QemuFixture, events: Events, tmp_path: Path) -> None:
    await events.inventory(lambda d: _source(d) == str(domain.top))
    await send(nc, PullCommand(job_id="pull1", domain=DOMAIN, disk=TARGET))
    done = await events.phase("pull1", Phase.COMPLETED)
    assert done.data.detail == "Block Pull for vda completed"
    disk = await events.inventory(lambda d: _source(d) == str(domain.top) and _chain_ends(d))
    assert disk.find("mirror") is None
    await domain.flush()
    reference = domain.reference(tmp_path / "reference.raw")
    assert identical(domain.top, "qcow2", reference, "raw")
    info = subprocess.run(
        ["qemu-img", "info", "-U", str(domain.top)], capture_output=True, text=True, check=True
    )
    assert "backing file" not in info.stdout


async def test_bad_commands_fail_as_events(nc: NATS, domain: QemuFixture, events: Events) -> None:
    await events.inventory(lambda d: _source(d) == str(domain.top))
    await send(nc, CommitCommand(job_id="commit2", domain=DOMAIN, disk=TARGET))
    failed = await events.phase("commit2", Phase.FAILED)
    assert "active" in failed.data.extra["error"]
    await send(nc, PullCommand(job_id="pull2", domain=DOMAIN, disk="vdz"))
    failed = await events.phase("pull2", Phase.FAILED)
    assert failed.data.extra["error"] == "invalid argument: disk 'vdz' not found in domain 'web1'"


async def test_storage_daemon_disk_named_by_its_node(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path
) -> None:
    daemon = QemuFixture(DOMAIN, tmp_path / "images", tmp_path / "domains")
    daemon.make_chain()
    await daemon.start(daemon=True)
    (tmp_path / "agent").mkdir()
    agent = Agent(nats_server.url, tmp_path / "agent", daemon.domains, tmp_path / "agent.log")
    collected = Events()
    await agent.start(nc)
    pump = asyncio.create_task(collected.pump(nc))  # the agent made the stream
    try:
        disk = await collected.inventory(lambda d: _source(d) == str(daemon.top))
        assert disk.find("alias").get("name") == "top-fmt"  # type: ignore[union-attr]
        assert disk.find("backingStore/source").get("file") == str(daemon.base)  # type: ignore[union-attr]
        await send(nc, PullCommand(job_id="qsd-pull", domain=DOMAIN, disk=TARGET))
        await collected.phase("qsd-pull", Phase.COMPLETED)
        await collected.inventory(lambda d: _source(d) == str(daemon.top) and _chain_ends(d))
        copy = tmp_path / "copy.qcow2"
        await send(nc, copy_command("qsd-copy", copy))
        await send(nc, PivotCommand(job_id="qsd-copy", domain=DOMAIN, disk=TARGET))
        await collected.phase("qsd-copy", Phase.PIVOTED)
        disk = await collected.inventory(lambda d: _source(d) == str(copy))
        alias = disk.find("alias").get("name")  # type: ignore[union-attr]
        assert alias != "top-fmt" and f"<alias name='{alias}'/>" in daemon.xml_path.read_text()
    finally:
        await cancel_until_done({pump})
        agent.stop()
        await daemon.stop()


# --- restart ---------------------------------------------------------------------------------


async def test_agent_sigkill_mid_copy(
    nc: NATS,
    domain: QemuFixture,
    agent: Agent,
    events: Events,
    tmp_path: Path,
    connect_as: ConnectAs,
) -> None:
    copy = tmp_path / "copy.qcow2"
    await events.inventory(lambda d: _source(d) == str(domain.top))
    # 1 MiB/s over 8 MiB of chain: still copying when the agent dies
    await send(nc, copy_command("slow1", copy, bandwidth=1024 * 1024))
    await events.wait(
        lambda e: e.data.event == "block-job-progress" and e.data.extra["cur"] > 0, timeout=20
    )
    agent.kill()
    assert events.statuses("slow1") == []  # killed while copying
    await domain.guest_write(0x66, 5 * 1024 * 1024, 64 * 1024)
    await agent.start(nc)
    await send(nc, SetSpeedCommand(job_id="slow1", domain=DOMAIN, disk=TARGET, bandwidth=0))
    await events.phase("slow1", Phase.READY)
    await events.inventory(lambda d: _mirror_ready(d) == "yes")
    # killed again once ready; the pivot waits in the stream for the next agent
    agent.kill()
    await send(nc, PivotCommand(job_id="slow1", domain=DOMAIN, disk=TARGET))
    await agent.start(nc)
    await events.phase("slow1", Phase.PIVOTED)
    await events.inventory(lambda d: _source(d) == str(copy) and d.find("mirror") is None)
    # The marker goes where the agent publishes: as the agent of the host.
    await events.barrier(await connect_as(f"agent@{HOST}"))  # anything doubled came before it
    assert [s.phase for s in events.statuses("slow1")] == [Phase.READY, Phase.PIVOTED]
    generations = [i.generation for i in events.inventories()]
    assert generations == list(range(1, len(generations) + 1))
    disks = [i.disks for i in events.inventories()]
    assert all(a != b for a, b in itertools.pairwise(disks))
    await domain.flush()
    reference = domain.reference(tmp_path / "reference.raw")
    assert identical(copy, "qcow2", reference, "raw")


async def test_nats_restart_mid_copy(
    nats_server: EmbeddedNats,
    nc: NATS,
    domain: QemuFixture,
    events: Events,
    tmp_path: Path,
    connect_as: ConnectAs,
) -> None:
    copy = tmp_path / "copy.qcow2"
    await events.inventory(lambda d: _source(d) == str(domain.top))
    # 2 MiB/s over 8 MiB: ready while the server is away
    await send(nc, copy_command("outage1", copy, bandwidth=2 * 1024 * 1024))
    await events.wait(lambda e: e.data.event == "block-job-progress", timeout=20)
    nats_server.kill()
    await asyncio.sleep(6.0)
    await nats_server.start()
    await events.phase("outage1", Phase.READY, timeout=60)
    await send(nc, PivotCommand(job_id="outage1", domain=DOMAIN, disk=TARGET))
    await events.phase("outage1", Phase.PIVOTED)
    await events.inventory(lambda d: _source(d) == str(copy) and d.find("mirror") is None)
    await events.barrier(await connect_as(f"agent@{HOST}"))
    assert [s.phase for s in events.statuses("outage1")] == [Phase.READY, Phase.PIVOTED]
    generations = [i.generation for i in events.inventories()]
    assert generations == list(range(1, len(generations) + 1))
    await domain.flush()
    reference = domain.reference(tmp_path / "reference.raw")
    assert identical(copy, "qcow2", reference, "raw")
