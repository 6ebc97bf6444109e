"""Disks and block jobs (libvirt's virDomainBlockCopy, BlockCommit, BlockPull,
BlockJobAbort, BlockJobSetSpeed, GetBlockJobInfo) as typed async methods, and
``JobWatch``, which follows a domain's job events the way virsh waits for them.

A ``BlockJobClient`` talks to the storage service of one host, which controls
the jobs of that host's domains; the job itself runs in the host's agent,
whose ``block-job-2`` events say when it is ready or over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from lxml import etree
from nats.aio.client import Client as NATS

from client.events import subscribe
from shared.api import storage_jobs as api
from shared.api.blockjob import (
    BLOCK_JOB_2,
    INVENTORY,
    BlockJobStatus,
    DiskInventory,
    JobStatus,
)
from shared.conf.xmlsafe import parse_xml
from shared.util.api import Empty, call
from shared.util.errors import ErrorDomain
from shared.util.events import CloudEvent
from shared.util.subjects import agent_domain_subject
from shared.util.tasks import cancel_until_done


class BlockJobClient:
    """Calls one host's storage service; every method raises ``VirtError`` as libvirt would."""

    def __init__(self, nc: NATS, host: str) -> None:
        self._nc = nc
        self.host = host

    @property
    def nc(self) -> NATS:
        return self._nc

    async def domains(self) -> list[api.DomainSummary]:
        return (await call(self._nc, api.DOMAIN_LIST, Empty(), host=self.host)).domains

    async def domain_disks(self, domain: str) -> DiskInventory:
        request = api.DomainRef(domain=domain)
        return await call(self._nc, api.DOMAIN_DISKS, request, host=self.host)

    async def disk_dumpxml(self, domain: str, disk: str) -> api.DiskXmlReply:
        request = api.DiskRef(domain=domain, disk=disk)
        return await call(self._nc, api.DISK_DUMPXML, request, host=self.host)

    async def copy(self, request: api.BlockCopyRequest) -> api.BlockJobInfo:
        return await call(self._nc, api.BLOCK_COPY, request, host=self.host, timeout=3600)

    async def commit(self, request: api.BlockCommitRequest) -> api.BlockJobInfo:
        return await call(self._nc, api.BLOCK_COMMIT, request, host=self.host)

    async def pull(self, request: api.BlockPullRequest) -> api.BlockJobInfo:
        return await call(self._nc, api.BLOCK_PULL, request, host=self.host)

    async def abort(self, domain: str, disk: str, *, pivot: bool = False) -> api.BlockJobInfo:
        request = api.BlockJobAbortRequest(domain=domain, disk=disk, pivot=pivot)
        return await call(self._nc, api.BLOCK_JOB_ABORT, request, host=self.host)

    async def set_speed(self, domain: str, disk: str, bandwidth: int) -> api.BlockJobInfo:
        request = api.BlockJobSpeedRequest(domain=domain, disk=disk, bandwidth=bandwidth)
        return await call(self._nc, api.BLOCK_JOB_SPEED, request, host=self.host)

    async def info(self, domain: str, disk: str) -> api.BlockJobInfo | None:
        request = api.DiskRef(domain=domain, disk=disk)
        return (await call(self._nc, api.BLOCK_JOB_INFO, request, host=self.host)).job

    async def jobs(
        self, domain: str | None = None, *, finished: bool = False
    ) -> list[api.BlockJobInfo]:
        request = api.BlockJobListRequest(domain=domain, all=finished)
        return (await call(self._nc, api.BLOCK_JOB_LIST, request, host=self.host)).jobs

    async def job(self, domain: str, job_id: str) -> api.BlockJobInfo | None:
        """One job by id, running or ended."""
        for job in await self.jobs(domain, finished=True):
            if job.job_id == job_id:
                return job
        return None


def _mirror_state(xml: str, target: str) -> str | None:
    """For the ``<disk>`` with ``target``: ``"none"`` without a ``<mirror>``, else
    its ``ready`` attribute (``""`` when absent); None for another disk."""
    node = parse_xml(xml, "disk", domain=ErrorDomain.DOMAIN)
    found = node.find("target")
    if found is None or found.get("dev") != target:
        return None
    mirror = node.find("mirror")
    return "none" if mirror is None else mirror.get("ready", "")


@dataclass
class JobWatch:
    """The agent events of one domain, from before a job is started.

    ``status(job_id)`` is the job's last BLOCK_JOB_2 status; ``settled`` waits
    until the storage service's inventory shows the disk as the agent did after
    the job's end (so that what the caller reads next is already the new state).
    """

    client: BlockJobClient
    domain: str
    events: list[CloudEvent] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def __aenter__(self) -> Self:
        subject = agent_domain_subject(self.client.host, self.domain)
        async with contextlib.AsyncExitStack() as stack:
            stream = await stack.enter_async_context(subscribe(self.client.nc, subject))
            self._task = asyncio.create_task(self._pump(stream), name=f"watch-{self.domain}")
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Cancel the pump and wait for it (a caller cancelled meanwhile stays
        cancelled), drop the subscription, raise what the pump raised."""
        task, self._task = self._task, None
        try:
            if task is not None:
                await cancel_until_done({task})
        finally:
            await self._stack.aclose()
        if task is not None and not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"event watch of {self.domain} failed") from task.exception()

    async def _pump(self, stream: AsyncIterator[CloudEvent]) -> None:
        async for event in stream:
            self.events.append(event)
            self._changed.set()

    async def changed(self, timeout: float) -> None:
        """Until an event arrives or ``timeout`` seconds pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()

    def _status_events(self, job_id: str) -> list[tuple[int, BlockJobStatus]]:
        found = []
        for position, event in enumerate(self.events):
            if event.data.event == BLOCK_JOB_2 and event.data.extra.get("job_id") == job_id:
                found.append((position, BlockJobStatus.model_validate(event.data.extra)))
        return found

    def status(self, job_id: str, *, after: JobStatus | None = None) -> BlockJobStatus | None:
        """The job's latest BLOCK_JOB_2 status (one other than ``after``)."""
        found = [s for _, s in self._status_events(job_id) if s.status is not after]
        return found[-1] if found else None

    def _inventory(self, since: int, accept: Callable[[str], bool]) -> int | None:
        """The generation of the first inventory from event ``since`` on with a
        disk that ``accept`` takes."""
        for event in self.events[since:]:
            if event.data.event != INVENTORY:
                continue
            inventory = DiskInventory.model_validate(event.data.extra)
            if any(accept(xml) for xml in inventory.disks):
                return inventory.generation
        return None

    def inventory_after_end(self, job_id: str, target: str) -> int | None:
        """The generation of the first inventory published after the job's end in
        which the disk carries no ``<mirror>``."""
        ends = [p for p, s in self._status_events(job_id) if s.status is not JobStatus.READY]
        if not ends:
            return None
        return self._inventory(ends[-1] + 1, lambda xml: _mirror_state(xml, target) == "none")

    def inventory_when_ready(self, job_id: str, target: str) -> int | None:
        """The generation of the first inventory in which the disk's ``<mirror>``
        is ready (the watch starts before the job, so it is this job's)."""
        if not any(s.status is JobStatus.READY for _, s in self._status_events(job_id)):
            return None
        return self._inventory(0, lambda xml: _mirror_state(xml, target) == "yes")

    async def settled(
        self, job_id: str, target: str, timeout: float = 15.0, *, ready: bool = False
    ) -> None:
        """Until the storage service holds the inventory the agent published after
        the job ended (with ``ready``: once its mirror was ready), so that what
        the caller reads next shows it (best effort: returns at ``timeout``
        regardless)."""
        find = self.inventory_when_ready if ready else self.inventory_after_end
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            generation = find(job_id, target)
            if generation is not None:
                held = await self.client.domain_disks(self.domain)
                if held.generation >= generation:
                    return
                await asyncio.sleep(0.02)
                continue
            await self.changed(min(0.5, max(0.0, deadline - loop.time())))


def disk_rows(inventory: DiskInventory) -> list[dict[str, str]]:
    """What ``domblklist`` shows of each disk, read as virsh reads the domain XML:
    ``type``, ``device``, ``target`` and the first of the source's ``file``,
    ``dev``, ``dir``, ``name``, ``volume`` or ``path`` attributes (``-`` if none;
    an NVMe source as ``nvme://DDDD:BB:SS.F/NS``)."""
    rows = []
    for xml in inventory.disks:
        node = parse_xml(xml, "disk", domain=ErrorDomain.DOMAIN)
        target = node.find("target")
        source = node.find("source")
        rows.append(
            {
                "type": node.get("type", ""),
                "device": node.get("device", "disk"),
                "target": "" if target is None else target.get("dev", ""),
                "source": _source_text(node.get("type"), source),
            }
        )
    return rows


_SOURCE_ATTRS = ("file", "dev", "dir", "name", "volume", "path")


def _source_text(kind: str | None, source: etree._Element | None) -> str:
    if source is None:
        return "-"
    if kind == "nvme":
        address = source.find("address")
        namespace = source.get("namespace")
        if address is None or namespace is None:
            return "-"
        parts = [int(address.get(k, "0"), 0) for k in ("domain", "bus", "slot", "function")]
        return f"nvme://{parts[0]:04x}:{parts[1]:02x}:{parts[2]:02x}.{parts[3]}/{namespace}"
    for name in source.attrib:
        if name in _SOURCE_ATTRS:
            return str(source.get(name))
    return "-"
