"""The disks half of the storage service, wired together: the inventory (index.py),
its ledger copy (store.py), the jobs (blockjobs.py) and the agent's events
(events.py), with the endpoints of shared.api.storage_jobs.

``StorageService`` makes one ``DiskService`` with the volumes half's side of
``services.storage.interface`` (``Volumes``), calls ``start`` from its set-up
(after the volumes are loaded) and serves ``endpoints()``; the volumes half
reads volume users from the same ``DiskUsers``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from services.storage.disks.blockjobs import BlockJobs
from services.storage.disks.events import DiskEvents
from services.storage.disks.store import DiskStore, JobRecord
from services.storage.disks.users import DiskUsers
from services.storage.interface import Volumes
from shared.api import storage_jobs as api
from shared.api.blockjob import DiskInventory
from shared.util.api import Bound, Empty
from shared.util.ledger_state import LedgerPublisher, LedgerState
from shared.util.process import Spawn

log = logging.getLogger(__name__)


class DiskService:
    """This host's disk inventory and block jobs."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        users: DiskUsers,
        state: LedgerState,
        volumes: Volumes,
        publisher: LedgerPublisher,
        *,
        ended: Callable[[JobRecord], None],
        reconcile_interval: float = 60.0,
    ) -> None:
        host = self.host = users.host
        self.index = users.index
        self.store = DiskStore(state, host)
        self.jobs = BlockJobs(users, self.store, volumes, publisher, ended)
        self.events = DiskEvents(nc, js, host, self.index, self.store, self.jobs)
        self._reconcile_interval = reconcile_interval

    async def start(self, spawn: Spawn) -> None:
        """Load what is stored, make the consumer (before reconciling, so nothing
        published in between is missed), reconcile, then consume."""
        await self.events.load()
        await self.jobs.load()
        subscription = await self.events.subscribe()
        await self.events.reconcile()
        spawn(self.events.consume(subscription), "disk-events")
        spawn(self._reconcile_forever(), "disk-reconcile")

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self._reconcile_interval)
            try:
                await self.events.reconcile()
            except Exception:
                log.exception("disk inventory reconcile failed")

    # -- endpoints -------------------------------------------------------------------------

    def endpoints(self) -> tuple[Bound[Any, Any], ...]:
        """``shared.api.storage_jobs.ENDPOINTS`` bound to their methods."""
        return (
            api.DOMAIN_LIST.bind(self.domain_list),
            api.DOMAIN_DISKS.bind(self.domain_disks),
            api.DISK_DUMPXML.bind(self.disk_dumpxml),
            api.BLOCK_COPY.bind(self.jobs.copy),
            api.BLOCK_COMMIT.bind(self.jobs.commit),
            api.BLOCK_PULL.bind(self.jobs.pull),
            api.BLOCK_JOB_ABORT.bind(self.job_abort),
            api.BLOCK_JOB_SPEED.bind(self.jobs.set_speed),
            api.BLOCK_JOB_INFO.bind(self.job_info),
            api.BLOCK_JOB_LIST.bind(self.job_list),
        )

    async def domain_list(self, _: Empty) -> api.DomainListReply:
        return api.DomainListReply(
            domains=[
                api.DomainSummary(
                    name=d.name,
                    disks=len(d.disks),
                    live=d.inventory.live,
                    generation=d.inventory.generation,
                )
                for d in self.index
            ]
        )

    async def domain_disks(self, req: api.DomainRef) -> DiskInventory:
        return self.index.get(req.domain).inventory

    async def disk_dumpxml(self, req: api.DiskRef) -> api.DiskXmlReply:
        entry = self.index.get(req.domain)
        target, xml = entry.disk_xml(req.disk)
        return api.DiskXmlReply(target=target, xml=xml, generation=entry.inventory.generation)

    async def job_info(self, req: api.DiskRef) -> api.BlockJobInfoReply:
        reply = self.jobs.info(req)
        if reply.job is not None:
            # virsh polls this every half second: cur/end as QEMU has them now
            await self.events.refresh_jobs(req.domain)
            reply = self.jobs.info(req)
        return reply

    async def job_abort(self, req: api.BlockJobAbortRequest) -> api.BlockJobInfo:
        if req.pivot:
            # a job whose READY event is still on its way here is ready all the same
            await self.events.refresh_jobs(req.domain)
        return await self.jobs.abort(req)

    async def job_list(self, req: api.BlockJobListRequest) -> api.BlockJobListReply:
        return api.BlockJobListReply(
            jobs=[r.info() for r in self.jobs.jobs(req.domain, finished=req.all)]
        )
