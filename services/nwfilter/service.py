"""The nwfilter service process: filters cluster-wide, bindings and their rules on this host.

One process runs per host.  Filter endpoints (``virtbus.v1.nwfilter.*``) are
answered by any replica from the cluster ledger ``VIRTBUS_LEDGER_nwfilter``;
binding endpoints (``virtbus.v1.nwfilter.<host>.*``) by this host's process,
whose bindings are in its own ledger.  Every change is one ledger message
with its events.

Rules follow the definitions: when a filter changes (on any replica), every
binding of this host whose filter tree holds it is instantiated again, one
binding at a time, each replaced in one transaction; a failure keeps the
binding's old rules and is reported (status ``failed``, a ``rules`` event with
detail ``Failed``).  On start and every ``reconcile_interval`` seconds the
installed rules are compared with what was applied: a binding whose rules
are missing or changed (a flush by someone else) is applied again, and rules
of ports without a binding are removed.  One lock serialises all firewall
work of the host.  (The module is long because the endpoints,
re-instantiation and reconciliation all change the same bindings under that
one lock; the pure parts live in ``bindings``, ``registry`` and ``watchers``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence
from functools import partial
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import Field

from services.nwfilter import bindings as b
from services.nwfilter.backends import Backend, make_backend
from services.nwfilter.learning import Learning, learning_mode
from services.nwfilter.registry import FilterRegistry
from services.nwfilter.watchers import PacketLearners, lease_address
from shared.api import nwfilter as api
from shared.conf.nwfilter import NWFilterDef, format_nwfilter, parse_nwfilter
from shared.conf.nwfilter_binding import (
    NWFilterBindingDef,
    format_nwfilter_binding,
    parse_nwfilter_binding,
)
from shared.util.api import Bound, Empty
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.ledger import Ledger, Record
from shared.util.process import ServiceProcess, Teardown
from shared.util.settings import ProcessSettings
from shared.util.subjects import LEDGER_PREFIX, event_filter, ledger_name, untoken

log = logging.getLogger(__name__)
_D = ErrorDomain.NWFILTER
#: The network service's lease events (shared.api.network names them).
LEASE_KIND = "lease"


class NWFilterSettings(ProcessSettings):
    """Settings of the nwfilter service."""

    firewall_backend: str = Field(
        "auto",
        description="nftables, ebiptables (libvirt's commands), auto (nftables if nft exists) "
        "or none (a replica that serves filter definitions only, no bindings)",
    )
    netns: str | None = Field(None, description="network namespace of the guest ports")
    reconcile_interval: float = Field(30.0, gt=0, description="seconds between rule checks")


def no_binding(portdev: str) -> VirtError:
    return VirtError(
        ErrorCode.NO_NWFILTER_BINDING, f"no nwfilter binding for port dev '{portdev}'", _D
    )


class NWFilterService(ServiceProcess[NWFilterSettings]):
    """libvirt's nwfilter driver: filters for the cluster, rules on this host."""

    name = "nwfilter"
    host_scoped = True
    endpoint_table = api.ENDPOINTS
    description = "libvirt network filters and their bindings, compiled to firewall rules"

    def __init__(self, settings: NWFilterSettings, nc: NATS | None = None) -> None:
        super().__init__(settings, nc)
        self._filters: FilterRegistry | None = None
        self._ledger: Ledger | None = None
        self._backend: Backend | None = None
        # Every firewall change of this host runs under this lock, so that a
        # binding's rules are never written by two tasks at once.
        self._lock = asyncio.Lock()
        self._records: dict[str, b.BindingRecord] = {}
        self._trees: dict[str, set[str]] = {}
        self._snapshots: dict[str, str] = {}
        #: Ports applied since their installed rules were last recorded (one
        #: listing covers a whole batch of re-instantiations).
        self._unrecorded: set[str] = set()
        self._packets = PacketLearners(
            lambda argv: self.backend.runner.argv(argv), self._run_guarded, self._learned
        )
        self._pending: set[str] = set()
        m = self.metrics
        self._filter_count = m.gauge("filters", "Filters defined (cluster-wide)")
        self._binding_count = m.gauge("bindings", "Filter bindings on this host")
        self._rule_count = m.gauge("binding_rules", "Rules of a binding", ["port"])
        self._drops = m.gauge(
            "binding_dropped_packets", "Packets a binding's rules dropped", ["port"]
        )
        self._apply_time = m.histogram("apply_seconds", "Time to write one binding's rules")
        self._failures = m.counter("apply_failures_total", "Binding rule writes that failed")
        self._repairs = m.counter("reconcile_repairs_total", "Bindings whose rules were restored")

    # -- set-up ----------------------------------------------------------------------

    @property
    def filters(self) -> FilterRegistry:
        assert self._filters is not None, "service not started"
        return self._filters

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise VirtError(
                ErrorCode.OPERATION_UNSUPPORTED,
                f"the nwfilter service on '{self.settings.host}' serves filter definitions "
                "only (firewall backend 'none'): it has no bindings",
                _D,
            )
        return self._backend

    @property
    def ledger(self) -> Ledger:
        assert self._ledger is not None, "service not started"
        return self._ledger

    async def setup(self, stack: Teardown) -> None:
        self._filters = FilterRegistry(await self.open_ledger(cluster=True))
        await self._filters.install_standard()
        self._ledger = await self.open_ledger()
        for record in self._ledger.items(b.PREFIX):
            self._on_binding_change(record.key, record)
        self._ledger.on_change(self._on_binding_change)
        self._filters.on_change(self._on_filter_change)
        self._count()
        if self.settings.firewall_backend == "none":
            return  # a filters-only replica (no firewall, no bindings)
        self._backend = make_backend(self.settings.firewall_backend, self.settings.netns)
        await self._backend.prepare()
        # Every binding is instantiated again in the background (as libvirtd
        # does on start); requests meanwhile wait for the host's lock.
        self.spawn(self._reconcile_forever(), "reconcile")
        subscription = await self.nc.subscribe(
            event_filter("network", self.settings.host, LEASE_KIND), cb=self._on_lease
        )
        stack.push_async_callback(subscription.unsubscribe)

    def _run_guarded(self, work: Awaitable[None], name: str) -> None:
        """Run ``work`` as a task of the process; its failure is logged, never
        allowed to end the process (a binding's trouble is reported, not fatal)."""

        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("nwfilter task %s failed", name)

        self.spawn(guarded(), name)

    def _count(self) -> None:
        self._filter_count.set(len(self.filters.all()))
        self._binding_count.set(len(self._records))

    def endpoints(self) -> Sequence[Bound[Any, Any]]:
        return (
            api.DEFINE.bind(self.define),
            api.UNDEFINE.bind(self.undefine),
            api.LIST.bind(self.list),
            api.LOOKUP.bind(self.lookup),
            api.DUMPXML.bind(self.dumpxml),
            api.BINDING_CREATE.bind(self.binding_create),
            api.BINDING_DELETE.bind(self.binding_delete),
            api.BINDING_LIST.bind(self.binding_list),
            api.BINDING_LOOKUP.bind(self.binding_lookup),
            api.BINDING_DUMPXML.bind(self.binding_dumpxml),
        )

    # -- filters -------------------------------------------------------------------

    async def define(self, req: api.DefineRequest) -> api.FilterInfo:
        stored = await self.filters.define(parse_nwfilter(req.xml), self._check_bindings)
        self._count()
        return api.FilterInfo(name=stored.name, uuid=stored.uuid)

    def _check_bindings(self, new: NWFilterDef) -> None:
        """libvirt refuses a definition its bindings could not be instantiated
        with; this host's bindings are checked before the change is stored."""
        lookup = b.overlay(self.filters.lookup, new)
        for port, record in self._records.items():
            if new.name in self._trees.get(port, set()) | {record.definition.filter}:
                b.plan(record.definition, record.ip, lookup)

    async def undefine(self, req: api.FilterRequest) -> Empty:
        d = self.filters.get(req.name, req.uuid)
        users = await self._all_bindings()
        lookup = self.filters.lookup

        def in_use(name: str) -> bool:
            return any(name in b.reachable(binding.filter, lookup) for binding in users)

        await self.filters.undefine(d, in_use)
        self._count()
        return Empty()

    async def _all_bindings(self) -> list[NWFilterBindingDef]:
        """The bindings of every host (theirs read from their ledgers)."""
        found = [r.definition for r in self._records.values()]
        mine = ledger_name(self.name, self.settings.host)
        async for host in self._binding_hosts():
            if ledger_name(self.name, host) == mine:
                continue
            other = Ledger(self.nc, self.js, self.name, host)
            await other.open()
            for stored in other.items(b.PREFIX):
                # A malformed binding is its own host's to log and count (its
                # service reads it through Ledger.decode); here it is skipped.
                with contextlib.suppress(Exception):
                    found.append(b.decode(stored.key, stored.value).definition)
        return found

    async def _binding_hosts(self) -> Any:
        prefix = f"{LEDGER_PREFIX}.{self.name}."
        for info in await self.js.streams_info():
            for subject in info.config.subjects or []:
                if subject.startswith(prefix) and subject.endswith(".>"):
                    host = untoken(subject[len(prefix) : -2])
                    if info.config.name == ledger_name(self.name, host):
                        yield host

    async def list(self, req: Empty) -> api.FilterListReply:
        return api.FilterListReply(
            filters=[api.FilterInfo(name=d.name, uuid=d.uuid) for d in self.filters.all()]
        )

    async def lookup(self, req: api.FilterRequest) -> api.FilterInfo:
        d = self.filters.get(req.name, req.uuid)
        return api.FilterInfo(name=d.name, uuid=d.uuid)

    async def dumpxml(self, req: api.FilterRequest) -> api.XmlReply:
        return api.XmlReply(xml=format_nwfilter(self.filters.get(req.name, req.uuid)))

    # -- bindings ------------------------------------------------------------------

    def _record(self, portdev: str) -> b.BindingRecord:
        record = self._records.get(portdev)
        if record is None:
            raise no_binding(portdev)
        return record

    def _on_binding_change(self, key: str, record: Record | None) -> None:
        if not key.startswith(b.PREFIX):
            return
        parsed = None if record is None else self.ledger.decode(record, partial(b.decode, key))
        if parsed is None:
            # Deleted, or malformed: skipped as absent (reconciliation leaves its rules).
            port = next((p for p in self._records if b.key(p) == key), None)
            if port is not None:
                self._records.pop(port)
        else:
            self._records[parsed.definition.portdev] = parsed
        self._count()

    async def binding_create(self, req: api.BindingCreateRequest) -> api.BindingInfo:
        d = parse_nwfilter_binding(req.xml)
        self.backend  # noqa: B018 - refuses at once on a filters-only replica
        b.check_portdev(d.portdev)
        async with self._lock:
            if d.portdev in self._records:
                raise VirtError(
                    ErrorCode.OPERATION_FAILED,
                    f"filter binding for portdev '{d.portdev}' already exists",
                    _D,
                )
            plan = b.plan(d, None, self.filters.lookup)
            record = b.BindingRecord(xml=format_nwfilter_binding(d), status=plan.status)
            record.rules = await self._apply(d.portdev, plan)
            events = [b.lifecycle(d, "Created"), b.rules_event(d, record, self.backend.name)]
            try:
                await self.ledger.write(
                    b.key(d.portdev), record.model_dump_json().encode(), events,
                    what=f"nwfilter binding '{d.portdev}'",
                )  # fmt: skip
            except BaseException:
                await self.backend.remove(d.portdev)
                raise
            self._records[d.portdev] = record
            self._trees[d.portdev] = set(plan.filters)
            self._start_learning(d, plan.learning)
            await self._record_installed()
        return record.info()

    async def _apply(self, port: str, plan: b.Plan) -> int:
        """Write the plan's rules; times it and counts failures."""
        started = time.perf_counter()
        try:
            count = await self.backend.apply(port, plan.rules)
        except VirtError:
            self._failures.inc()
            raise
        finally:
            self._apply_time.observe(time.perf_counter() - started)
        self._rule_count.labels(port=port).set(count)
        self._unrecorded.add(port)
        return count

    async def _record_installed(self) -> None:
        """Remember what the kernel holds for the ports applied since last time
        (the reference reconciliation compares with)."""
        if self._unrecorded:
            ports = sorted(self._unrecorded & set(self._records))
            self._unrecorded.clear()
            self._snapshots.update(await self.backend.snapshots(ports))

    async def binding_delete(self, req: api.PortRequest) -> Empty:
        async with self._lock:
            record = self._record(req.portdev)
            self._packets.stop(req.portdev)
            await self.backend.remove(req.portdev)
            d = record.definition
            await self.ledger.write(
                b.key(req.portdev), None, [b.lifecycle(d, "Deleted")],
                what=f"nwfilter binding '{req.portdev}'",
            )  # fmt: skip
            self._forget(req.portdev)
        return Empty()

    def _forget(self, port: str) -> None:
        self._records.pop(port, None)
        self._trees.pop(port, None)
        self._snapshots.pop(port, None)
        with contextlib.suppress(KeyError):
            self._rule_count.remove(port)
        with contextlib.suppress(KeyError):
            self._drops.remove(port)
        self._count()

    async def binding_list(self, req: Empty) -> api.BindingListReply:
        infos = [r.info() for r in self._records.values()]
        return api.BindingListReply(bindings=sorted(infos, key=lambda i: i.portdev))

    async def binding_lookup(self, req: api.PortRequest) -> api.BindingInfo:
        return self._record(req.portdev).info()

    async def binding_dumpxml(self, req: api.PortRequest) -> api.XmlReply:
        return api.XmlReply(xml=self._record(req.portdev).xml)

    # -- re-instantiation ------------------------------------------------------------

    def _on_filter_change(
        self, name: str, old: NWFilterDef | None, new: NWFilterDef | None
    ) -> None:
        self._count()
        if self._backend is None:
            return
        for port, record in self._records.items():
            uses = name in self._trees.get(port, set()) or name == record.definition.filter
            if uses and port not in self._pending:
                self._pending.add(port)
                self._run_guarded(self._reinstantiate(port), f"reinstantiate-{port}")

    async def _reinstantiate(self, port: str, *, repair: bool = False) -> None:
        """Instantiate a binding again with the current filters; a failure keeps
        its old rules and is recorded and announced."""
        async with self._lock:
            self._pending.discard(port)
            await self._refresh(port, repair=repair)
            if not self._pending:
                await self._record_installed()

    async def _refresh(self, port: str, *, repair: bool = False) -> None:
        record = self._records.get(port)
        if record is None:
            return
        d = record.definition
        updated = record.model_copy()
        try:
            plan = b.plan(d, record.ip, self.filters.lookup)
            updated.rules = await self._apply(port, plan)
            updated.status, updated.error = plan.status, None
            self._trees[port] = set(plan.filters)
            self._start_learning(d, plan.learning)
        except VirtError as err:
            updated.status, updated.error = b.FAILED, err.message
            log.warning("binding rules failed", extra={"port": port, "error": err.message})
        if repair:
            self._repairs.inc()
        if updated == record and not repair:
            return
        events = [b.rules_event(d, updated, self.backend.name)]
        try:
            await self.ledger.write(
                b.key(port), updated.model_dump_json().encode(), events,
                what=f"nwfilter binding '{port}'",
            )  # fmt: skip
            self._records[port] = updated
        except VirtError as err:
            log.warning("binding record not written", extra={"port": port, "error": err.message})

    # -- reconciliation --------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        initial = True
        while True:
            try:
                await self._reconcile(initial=initial)
                initial = False
            except Exception:
                log.exception("reconciliation failed")
            await asyncio.sleep(self.settings.reconcile_interval)

    async def _reconcile(self, *, initial: bool = False) -> None:
        """Every binding's rules present and exact; no rules without a binding."""
        async with self._lock:
            installed = await self.backend.ports()
            for port in sorted(installed - set(self._records)):
                if b.key(port) in self.ledger.bad_keys:
                    # Its binding is unknown, not absent: its rules stay.
                    continue
                log.info("removing rules of a port without binding", extra={"port": port})
                await self.backend.remove(port)
            ports = sorted(self._records)
            current = await self.backend.snapshots(ports)
            for port in ports:
                if (
                    initial
                    or port not in installed
                    or current.get(port) != self._snapshots.get(port)
                ):
                    if not initial:
                        log.warning(
                            "binding rules changed outside: restoring", extra={"port": port}
                        )
                    await self._refresh(port, repair=not initial)
            await self._record_installed()
            for port, dropped in (await self.backend.drops(ports)).items():
                self._drops.labels(port=port).set(dropped)

    # -- IP address learning ---------------------------------------------------------

    def _start_learning(self, d: NWFilterBindingDef, mode: Learning | None) -> None:
        if mode is None:
            self._packets.stop(d.portdev)
        elif mode is Learning.ANY:
            self._packets.start(d.portdev, d.mac)

    async def _learned(self, port: str, ip: str) -> None:
        async with self._lock:
            record = self._records.get(port)
            if record is None or record.ip == ip:
                return
            self._records[port] = record.model_copy(update={"ip": ip})
            await self._refresh(port)
            await self._record_installed()

    async def _on_lease(self, msg: Msg) -> None:
        """A DHCP lease of the network service: the IP of a binding learning by dhcp."""
        found = lease_address(msg.data)
        if found is None:
            return
        mac, ip = found
        for port, record in list(self._records.items()):
            d = record.definition
            dhcp = learning_mode(d.parameters) is Learning.DHCP
            if record.status == b.LEARNING and d.mac == mac and dhcp:
                self._run_guarded(self._learned(port, ip), f"lease-{port}")
