"""The QEMU host agent process (micro service ``agent-qemu``, one per host): watches the
domains folder, keeps a QMP connection to each domain's QEMU, publishes disk
inventories, and runs the block-job commands the storage service sends this host.

Tasks it owns: the folder watcher (every ``poll_interval``), the command
consumer (durable JetStream pull consumer ``agent-qemu-<host>``), a progress
ticker, and per connected domain a pump of QEMU's job events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import Field, ValidationError

from agents.qemu.domains import Domain, scan
from agents.qemu.hypervisor import Hypervisor
from agents.qemu.inventory import live_disk
from agents.qemu.jobs import JobController, Retry
from agents.qemu.qemu_domain import QemuDomain
from agents.qemu.qmp_client import QmpClient, QmpConnectionError, QmpError
from agents.qemu.records import AgentStore, InventoryMark, digest, status_event
from shared.api import agent as api
from shared.api.blockjob import (
    INVENTORY,
    START_KINDS,
    UNDEFINED,
    BlockJobStatus,
    CommitCommand,
    CopyCommand,
    DiskInventory,
    DomainUndefined,
    PullCommand,
    parse_command,
)
from shared.conf.disk import format_disk
from shared.util.api import Bound, Empty
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.events import STREAM, CloudEvent
from shared.util.ledger import Event
from shared.util.process import ServiceProcess, Teardown
from shared.util.settings import ProcessSettings
from shared.util.subjects import AGENT, DOMAIN_KIND, blockjob_command_filter, token

log = logging.getLogger(__name__)

#: Deliveries of a command whose domain never shows up before it is given up.
MAX_DELIVER = 8
_BACKOFF = [5.0, 10.0, 30.0, 60.0]
_CONNECT_RETRY = 1.0
_REFRESH_SECONDS = 5.0
_PROGRESS_SECONDS = 1.0


class AgentSettings(ProcessSettings):
    """Settings of the QEMU host agent."""

    domains_dir: Path | None = Field(
        None, description="folder of NAME.xml and NAME.qmp (default STATE_DIR/domains)"
    )
    poll_interval: float = Field(0.5, gt=0, description="seconds between looks at the folder")


def durable_name(host: str) -> str:
    return f"agent-qemu-{token(host)}"


class QemuAgent(ServiceProcess[AgentSettings]):
    """One host's QEMU domains: inventory and block jobs."""

    name = "agent-qemu"
    description = "QEMU host agent: disk inventory and block jobs over QMP"
    host_scoped = True
    endpoint_table = api.ENDPOINTS

    def __init__(self, settings: AgentSettings, nc: NATS | None = None) -> None:
        super().__init__(settings, nc)
        self.folder = settings.domains_dir or settings.state_dir / "domains"
        self.domains: dict[str, Domain] = {}
        self._store: AgentStore | None = None
        self._jobs: JobController | None = None
        self._marks: dict[str, InventoryMark] = {}
        self._commands = self.metrics.counter("commands", "Block-job commands", ["kind", "outcome"])
        self._domain_gauge = self.metrics.gauge("domains", "Domains in the folder", ["live"])

    @property
    def jobs(self) -> JobController:
        assert self._jobs is not None, "agent not started"
        return self._jobs

    # -- lifecycle ------------------------------------------------------------------------

    async def setup(self, stack: Teardown) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        host = self.settings.host
        # The agent's events are on subjects of service "agent", whatever its kind.
        self._store = AgentStore(await self.open_ledger(AGENT))
        self._jobs = JobController(
            self._store, self.domains, self._publish_status, self.publish_inventory
        )
        await self._jobs.load()
        subscription = await self.js.pull_subscribe(
            blockjob_command_filter(host),
            durable=durable_name(host),
            stream=STREAM,
            config=ConsumerConfig(
                durable_name=durable_name(host),
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=_BACKOFF[0],
                backoff=_BACKOFF,
                max_deliver=MAX_DELIVER,
                filter_subject=blockjob_command_filter(host),
            ),
        )
        stack.push_async_callback(self._disconnect_all)
        self.spawn(self._watch(), "watch-domains")
        self.spawn(self._consume(subscription), "consume-commands")
        self.spawn(self._tick(), "progress")

    async def _disconnect_all(self) -> None:
        for domain in list(self.domains.values()):
            await self._disconnect(domain)

    def endpoints(self) -> Sequence[Bound[Any, Any]]:
        return (
            api.DOMAIN_LIST.bind(self._domain_list),
            api.DOMAIN_DISKS.bind(self._domain_disks),
            api.JOB_LIST.bind(self._job_list),
        )

    # -- endpoints ------------------------------------------------------------------------

    async def _domain_list(self, _: Empty) -> api.DomainList:
        return api.DomainList(
            domains=[
                api.DomainSummary(
                    name=d.name, live=d.live, disks=len(d.disks), jobs=len(self.jobs.active(d.name))
                )
                for d in sorted(self.domains.values(), key=lambda d: d.name)
            ]
        )

    async def _domain_disks(self, request: api.DomainRef) -> DiskInventory:
        domain = self._domain(request.domain)
        inventory = await self.inventory(domain)
        mark = self._marks.get(domain.name, InventoryMark())
        return inventory.model_copy(update={"generation": mark.generation})

    async def _job_list(self, request: api.JobListRequest) -> api.JobList:
        if request.domain is not None:
            self._domain(request.domain)
        return api.JobList(jobs=self.jobs.running(request.domain))

    def _domain(self, name: str) -> Domain:
        domain = self.domains.get(name)
        if domain is None:
            raise VirtError(
                ErrorCode.NO_DOMAIN,
                f"Domain not found: no domain with matching name '{name}'",
                ErrorDomain.QEMU,
            )
        return domain

    # -- inventory ------------------------------------------------------------------------

    async def inventory(self, domain: Domain) -> DiskInventory:
        """The domain's disks now: its XML with the live chains and running jobs' mirrors."""
        live_disks = {}
        live = domain.live
        if domain.hypervisor is not None and live:
            try:
                live_disks = await domain.hypervisor.disks()
            except QmpError:
                live = False
        disks = []
        for disk in domain.disks:
            alias = disk.info.alias
            found = live_disks.get(alias) if alias else None
            mirror = self.jobs.mirror_for(domain.name, alias) if alias else None
            disks.append(format_disk(live_disk(disk, found, mirror), active=True))
        return DiskInventory(host=self.settings.host, domain=domain.name, disks=disks, live=live)

    async def publish_inventory(self, domain: Domain) -> None:
        """Publish the domain's inventory when it differs from the last one published."""
        assert self._store is not None
        async with domain.publish_lock:
            inventory = await self.inventory(domain)
            mark = await self._mark(domain.name)
            content = digest(inventory.disks, inventory.live)
            if content == mark.digest:
                return
            generation = mark.generation + 1
            inventory = inventory.model_copy(update={"generation": generation})
            event = Event(
                DOMAIN_KIND, domain.name, INVENTORY, extra=inventory.model_dump(mode="json")
            )
            await self._save_mark(
                domain.name, InventoryMark(generation=generation, digest=content), [event]
            )

    async def _publish_undefined(self, name: str) -> None:
        mark = await self._mark(name)
        generation = mark.generation + 1
        undefined = DomainUndefined(host=self.settings.host, domain=name, generation=generation)
        event = Event(DOMAIN_KIND, name, UNDEFINED, extra=undefined.model_dump(mode="json"))
        await self._save_mark(name, InventoryMark(generation=generation), [event])

    async def _mark(self, name: str) -> InventoryMark:
        assert self._store is not None
        if name not in self._marks:
            self._marks[name] = self._store.mark(name)
        return self._marks[name]

    async def _save_mark(self, name: str, mark: InventoryMark, events: list[Event]) -> None:
        assert self._store is not None
        await self._store.save_mark(name, mark, events)
        self._marks[name] = mark

    async def _publish_status(self, status: BlockJobStatus) -> None:
        """A status no record change carries (progress): an event-only change."""
        assert self._store is not None
        await self._store.ledger.announce([status_event(status)], what="block job progress")

    # -- the domains folder ---------------------------------------------------------------

    async def _watch(self) -> None:
        refreshed = 0.0
        while True:
            try:
                await self._look(refresh=time.monotonic() - refreshed > _REFRESH_SECONDS)
            except Exception:
                log.exception("domains folder scan failed")
            if time.monotonic() - refreshed > _REFRESH_SECONDS:
                refreshed = time.monotonic()
            await asyncio.sleep(self.settings.poll_interval)

    async def _look(self, *, refresh: bool) -> None:
        """One pass over the folder: new, changed and removed domains, connections."""
        seen = scan(self.folder)
        for name in [n for n in self.domains if n not in seen]:
            domain = self.domains.pop(name)
            await self._disconnect(domain)
            await self._publish_undefined(name)
        for name, stamp in seen.items():
            changed = False
            if name not in self.domains:
                self.domains[name] = Domain(name, self.folder)
                self.domains[name].load(stamp)
                changed = True
            domain = self.domains[name]
            if domain.stamp != stamp:
                domain.load(stamp)
                changed = True
            if domain.hypervisor is None and time.monotonic() >= domain.next_connect:
                changed = await self._connect(domain) or changed
            elif refresh and domain.live and self.jobs.active(name):
                # Catches up whatever a failed step left undone (NATS away while
                # QEMU reported a job's end): every step of reconcile is idempotent.
                await self._reconcile(domain)
            if changed or refresh:
                await self.publish_inventory(domain)
        live = sum(1 for d in self.domains.values() if d.live)
        self._domain_gauge.labels(live="yes").set(live)
        self._domain_gauge.labels(live="no").set(len(self.domains) - live)

    async def _connect(self, domain: Domain) -> bool:
        """Connect to the domain's QMP socket and reconcile its jobs; False if not there."""
        if not domain.qmp_path.exists():
            return False
        qmp = QmpClient(domain.name)
        try:
            await qmp.connect(str(domain.qmp_path), timeout=2.0)
        except (QmpError, TimeoutError) as err:
            domain.next_connect = time.monotonic() + _CONNECT_RETRY
            log.debug("QMP not reachable", extra={"domain": domain.name, "error": str(err)})
            return False
        hv: Hypervisor = QemuDomain(qmp)
        domain.hypervisor = hv
        log.info("domain connected", extra={"domain": domain.name, "qemu": qmp.greeting})
        domain.tasks.append(self.spawn(self._pump(domain, hv), f"pump-{domain.name}"))
        await self._reconcile(domain)
        return True

    async def _reconcile(self, domain: Domain) -> None:
        try:
            await self.jobs.reconcile(domain)
        except Exception as err:
            log.error("reconcile failed", extra={"domain": domain.name, "error": str(err)})

    async def _disconnect(self, domain: Domain) -> None:
        tasks, domain.tasks = domain.tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        hv, domain.hypervisor = domain.hypervisor, None
        if hv is not None:
            await hv.close()

    async def _pump(self, domain: Domain, hv: Hypervisor) -> None:
        """QEMU's job events for one domain, until its connection ends."""
        async for event in hv.job_events():
            if event is None:
                break
            try:
                await self.jobs.on_job_state(domain, event.job_id, event.state)
            except Exception:
                log.exception("job event not handled", extra={"job": event.job_id})
        log.info("domain disconnected", extra={"domain": domain.name})
        if domain.hypervisor is hv:
            domain.hypervisor = None
            domain.next_connect = time.monotonic() + _CONNECT_RETRY
            await hv.close()
            with contextlib.suppress(QmpError, VirtError):
                await self.publish_inventory(domain)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(_PROGRESS_SECONDS)
            for domain in list(self.domains.values()):
                if not domain.live:
                    continue
                try:
                    await self.jobs.refresh_progress(domain)
                except Exception as err:
                    log.debug("progress not read", extra={"domain": domain.name, "error": str(err)})

    # -- commands -------------------------------------------------------------------------

    async def _consume(self, subscription: nats.js.JetStreamContext.PullSubscription) -> None:
        # The subscription goes with the loop: a pull subscription left for the
        # connection's drain holds it up (its queue is never marked done).
        try:
            while True:
                try:
                    messages = await subscription.fetch(batch=10, timeout=1.0)
                except TimeoutError:  # no message yet (nats-py raises its own or asyncio's)
                    continue
                except Exception as err:
                    log.warning("command fetch failed", extra={"error": repr(err)})
                    await asyncio.sleep(1.0)
                    continue
                for msg in messages:
                    try:
                        await self._on_command(msg)
                    except Exception as err:
                        # an ack or nak lost with the connection: the command comes again
                        log.warning("command not settled", extra={"error": repr(err)})
        finally:
            try:
                await subscription.unsubscribe()
            except NatsError as err:  # the connection went first
                log.debug("command subscription not dropped", extra={"error": repr(err)})

    async def _on_command(self, msg: Msg) -> None:
        try:
            event = CloudEvent.model_validate_json(msg.data)
            command = parse_command(event.data.extra)
        except ValidationError as err:
            log.error(
                "malformed block-job command", extra={"subject": msg.subject, "error": str(err)}
            )
            await msg.term()
            return
        kind = command.kind.value
        try:
            await msg.in_progress()
            await self.jobs.handle(command)
        except Retry as err:
            delivered = msg.metadata.num_delivered
            if delivered < MAX_DELIVER - 1:
                self._commands.labels(kind=kind, outcome="retry").inc()
                await msg.nak(delay=min(2.0**delivered, 30.0))
                return
            self._commands.labels(kind=kind, outcome="dropped").inc()
            if command.kind in START_KINDS:
                assert isinstance(command, CopyCommand | CommitCommand | PullCommand)
                await self.jobs.fail(command, str(err))
            log.error("command dropped", extra={"job": command.job_id, "reason": str(err)})
            await msg.term()
            return
        except QmpConnectionError as err:
            # QEMU went away mid-command; the next delivery finds where it stopped.
            self._commands.labels(kind=kind, outcome="retry").inc()
            log.warning("command interrupted", extra={"job": command.job_id, "reason": str(err)})
            await msg.nak(delay=1.0)
            return
        except (QmpError, VirtError) as err:
            # A control command QEMU refused (pivot of a job that is not ready...):
            # the job goes on, and its events say how.
            self._commands.labels(kind=kind, outcome="refused").inc()
            log.warning("command refused", extra={"job": command.job_id, "reason": str(err)})
        except Exception:
            # NATS or the ledger away mid-step: every step is idempotent, so deliver again.
            self._commands.labels(kind=kind, outcome="retry").inc()
            log.exception("command failed", extra={"job": command.job_id})
            try:
                await msg.nak(delay=2.0)
            except NatsError as err:  # lost with the connection: redelivered after ack_wait
                log.warning("command not settled", extra={"error": repr(err)})
            return
        else:
            self._commands.labels(kind=kind, outcome="ok").inc()
        await msg.ack()
