"""The storage service's side of the agent's events: the disk inventory and block-job
statuses of this host, read with a durable JetStream consumer, plus the
reconciliation with the agent's own endpoints on start and periodically.

The consumer is ``storage-disks-<host>`` on ``virtbus.event.agent.<host>.domain.>``
(explicit acks, redelivery after 2, 5, 10, 30 and 60 s, 20 deliveries at most),
so what the agent published while the service was down is applied when it is
back.  An inventory is applied only when its generation is newer than the one
held, so a late event never undoes a reconcile.  A lost connection ends the
fetch loop's subscription, which is made again (a consumer the server lost
is created again, delivering from then on, and a reconcile follows).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from pydantic import ValidationError

from services.storage.disks.blockjobs import BlockJobs
from services.storage.disks.index import DiskIndex
from services.storage.disks.store import DiskStore
from shared.api import agent as agent_api
from shared.api.blockjob import (
    BLOCK_JOB_2,
    BLOCK_JOB_PROGRESS,
    INVENTORY,
    UNDEFINED,
    BlockJobStatus,
    DiskInventory,
    DomainUndefined,
)
from shared.util.api import Empty, call
from shared.util.errors import ErrorCode, VirtError
from shared.util.events import STREAM, CloudEvent
from shared.util.subjects import agent_domain_filter, token

log = logging.getLogger(__name__)

BACKOFF = [2.0, 5.0, 10.0, 30.0, 60.0]
MAX_DELIVER = 20
_AGENT_TIMEOUT = 5.0
#: Empty one-second fetches after which the consumer's existence is checked.
_CHECK_IDLE_FETCHES = 30

Changed = Callable[[], Awaitable[None]]


def durable_name(host: str) -> str:
    return f"storage-disks-{token(host)}"


class DiskEvents:
    """Applies the agent's events of one host to the inventory and the jobs."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        host: str,
        index: DiskIndex,
        store: DiskStore,
        jobs: BlockJobs,
    ) -> None:
        self._nc = nc
        self._js = js
        self.host = host
        self._index = index
        self._store = store
        self._jobs = jobs
        #: serialises inventory changes between the consumer and a reconcile
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """The inventory as last stored, before anything new is read."""
        for inventory in await self._store.inventories():
            self._index.put(inventory)

    # -- applying -------------------------------------------------------------------------

    async def apply_inventory(self, inventory: DiskInventory, *, same_ok: bool = False) -> None:
        async with self._lock:
            held = self._index.domains.get(inventory.domain)
            if held is not None:
                newer = inventory.generation > held.inventory.generation or (
                    same_ok and inventory.generation == held.inventory.generation
                )
                if not newer:
                    return
            if await self._store.save_inventory(inventory, same_ok=same_ok):
                self._index.put(inventory)

    async def apply_undefined(self, gone: DomainUndefined) -> None:
        async with self._lock:
            if self._index.generation(gone.domain) > gone.generation:
                return
            if await self._store.delete_inventory(gone.domain, gone.generation):
                self._index.remove(gone.domain)

    async def apply(self, event: CloudEvent) -> None:
        """One agent event; raises ``ValidationError`` for one it cannot read."""
        data = event.data
        if data.event == INVENTORY:
            inventory = DiskInventory.model_validate(data.extra)
            if inventory.host == self.host:
                await self.apply_inventory(inventory)
        elif data.event == UNDEFINED:
            await self.apply_undefined(DomainUndefined.model_validate(data.extra))
        elif data.event in (BLOCK_JOB_2, BLOCK_JOB_PROGRESS):
            await self._jobs.on_status(BlockJobStatus.model_validate(data.extra))

    # -- the consumer -----------------------------------------------------------------------

    def _config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=durable_name(self.host),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW,
            ack_wait=BACKOFF[0],
            backoff=BACKOFF,
            max_deliver=MAX_DELIVER,
            filter_subject=agent_domain_filter(self.host),
        )

    async def subscribe(self) -> JetStreamContext.PullSubscription:
        """The durable pull subscription (the consumer is made when missing)."""
        return await self._js.pull_subscribe(
            agent_domain_filter(self.host),
            durable=durable_name(self.host),
            stream=STREAM,
            config=self._config(),
        )

    async def consume(self, subscription: JetStreamContext.PullSubscription) -> None:
        """Fetch and apply until cancelled; the subscription is made again after
        repeated failures (a server that lost the consumer, a lost connection)."""
        # The subscription goes with the loop: a pull subscription left for the
        # connection's drain holds it up (its queue is never marked done).
        failures = 0
        idle = 0
        try:
            while True:
                try:
                    messages = await subscription.fetch(batch=32, timeout=1.0)
                except TimeoutError:  # no message yet (nats-py raises its own or asyncio's)
                    failures = 0
                    idle += 1
                    if idle >= _CHECK_IDLE_FETCHES:
                        # quiet for a while: make sure the consumer still exists (a server
                        # that lost it answers pulls with nothing, never an error)
                        idle = 0
                        if not await self._consumer_exists(subscription):
                            subscription = await self._resubscribe(subscription)
                    continue
                except Exception as err:
                    failures += 1
                    log.warning("disk event fetch failed", extra={"error": repr(err)})
                    await asyncio.sleep(min(0.5 * failures, 5.0))
                    if failures >= 3:
                        subscription = await self._resubscribe(subscription)
                        failures = 0
                    continue
                failures = idle = 0
                for msg in messages:
                    await self._handle(msg)
        finally:
            await _drop(subscription)

    async def _consumer_exists(self, subscription: JetStreamContext.PullSubscription) -> bool:
        try:
            await subscription.consumer_info()
        except nats.js.errors.NotFoundError:
            log.warning("disk event consumer lost", extra={"durable": durable_name(self.host)})
            return False
        except Exception as err:
            log.debug("disk event consumer not checked", extra={"error": str(err)})
        return True

    async def _resubscribe(
        self, old: JetStreamContext.PullSubscription
    ) -> JetStreamContext.PullSubscription:
        try:
            await old.unsubscribe()
        except Exception as err:
            log.debug("old disk event subscription not closed", extra={"error": str(err)})
        try:
            fresh = await self.subscribe()
        except Exception as err:
            log.warning("disk event subscription not made again", extra={"error": str(err)})
            return old
        log.info("disk event subscription made again")
        # whatever a lost consumer would have delivered is read from the agent
        await self.reconcile()
        return fresh

    async def _handle(self, msg: Msg) -> None:
        try:
            event = CloudEvent.model_validate_json(msg.data)
        except ValidationError as err:
            log.error("malformed agent event", extra={"subject": msg.subject, "error": str(err)})
            await _settle(msg.term())
            return
        try:
            await self.apply(event)
        except ValidationError as err:
            log.error("agent event not understood", extra={"id": event.id, "error": str(err)})
            await _settle(msg.term())
            return
        except Exception:
            # the ledger or NATS away mid-step: every step is idempotent, so deliver again
            log.exception("agent event not applied", extra={"id": event.id})
            await _settle(msg.nak(delay=2.0))
            return
        await _settle(msg.ack())

    # -- reconciling ------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Read every domain and running job from the agent of this host; domains it
        no longer has go.  Without an agent answering, nothing changes."""
        try:
            listing = await call(
                self._nc, agent_api.DOMAIN_LIST, Empty(), host=self.host, timeout=_AGENT_TIMEOUT
            )
        except VirtError as err:
            if err.code not in (ErrorCode.NO_SERVER, ErrorCode.OPERATION_TIMEOUT):
                log.warning("agent domain list failed", extra={"error": str(err)})
            return
        names = {d.name for d in listing.domains}
        for name in sorted(names):
            try:
                inventory = await call(
                    self._nc,
                    agent_api.DOMAIN_DISKS,
                    agent_api.DomainRef(domain=name),
                    host=self.host,
                    timeout=_AGENT_TIMEOUT,
                )
            except VirtError as err:
                log.info("agent disks not read", extra={"domain": name, "error": str(err)})
                continue
            await self.apply_inventory(inventory, same_ok=True)
        for entry in list(self._index):
            if entry.name not in names:
                await self.apply_undefined(
                    DomainUndefined(
                        host=self.host, domain=entry.name, generation=entry.inventory.generation
                    )
                )
        await self.refresh_jobs()

    async def refresh_jobs(self, domain: str | None = None) -> None:
        """cur/end of the running jobs as the agent sees them now."""
        try:
            running = await call(
                self._nc,
                agent_api.JOB_LIST,
                agent_api.JobListRequest(domain=domain),
                host=self.host,
                timeout=_AGENT_TIMEOUT,
            )
        except VirtError as err:
            log.debug("agent job list not read", extra={"error": str(err)})
            return
        for status in running.jobs:
            self._jobs.note_progress(status)


async def _drop(subscription: JetStreamContext.PullSubscription) -> None:
    try:
        await subscription.unsubscribe()
    except nats.errors.Error as err:  # the connection went first
        log.debug("disk event subscription not dropped", extra={"error": repr(err)})


async def _settle(step: Awaitable[None]) -> None:
    """Ack, nak or term; one lost with the connection is delivered again later."""
    try:
        await step
    except Exception as err:
        log.warning("disk event not settled", extra={"error": str(err)})
