"""The network service process: libvirt's network driver for one host, on the bus.

One instance per host serves ``virtbus.v1.network.<host>.<endpoint>``.
Definitions live in the ledger (``registry.py``); what runs lives on the host
(``runtime.py``), which stays the truth: at start the service adopts the
networks a previous process left running (never starting them twice),
marks inactive those whose bridge is gone, then starts the autostart ones.
A background loop reports lease changes as events, restores firewall rules
a host firewall reload removed, and refreshes the metrics.  Changes run
one at a time (one lock): they are rare and each touches the host.

The module is longer than most because it holds the fifteen endpoints of
libvirt's network API; what they do on the host lives in ``runtime``,
``ports``, ``firewall`` and ``dnsmasq``, and what they decide from the XML
alone in ``update`` and ``allocate``.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from pydantic import Field

from services.network import host, ports
from services.network.allocate import allocate_port, connections
from services.network.firewall import FirewallBackend, choose_backend
from services.network.registry import (
    NetworkRecord,
    PortRecord,
    Registry,
    definition,
    port_definition,
)
from services.network.runtime import RunningNetwork, needs_dnsmasq
from services.network.update import (
    SECTIONS,
    UpdateFlags,
    UpdateSection,
    update_network,
)
from shared.api import network as api
from shared.conf.network import NetworkDef, NetworkXMLFlags, format_network, parse_network
from shared.conf.network_forward import FORWARD_MODES
from shared.conf.network_port import (
    NetworkPortDef,
    PlugType,
    format_network_port,
    parse_network_port,
)
from shared.util.api import Bound, Empty
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.ledger import Event
from shared.util.process import ServiceProcess, Teardown
from shared.util.settings import ProcessSettings
from shared.util.tasks import cancel_until_done

log = logging.getLogger(__name__)
_DOMAIN = ErrorDomain.NETWORK
_INACTIVE = NetworkXMLFlags.INACTIVE
#: how often lease files are looked at (a lease event follows a change within this)
_LEASE_POLL_SECONDS = 0.25


class NetworkSettings(ProcessSettings):
    """Settings of the network service."""

    firewall_backend: str = Field(
        "auto", description="nftables, iptables or auto (nftables where nft exists)"
    )
    run_dir: Path | None = Field(
        None,
        description="dnsmasq files and lease status (default /run/virtbus/network for root, "
        "else STATE_DIR/network)",
    )
    check_interval: float = Field(
        5.0, gt=0, description="seconds between checks of the firewall rules"
    )


def default_run_dir(state_dir: Path) -> Path:
    """Where dnsmasq's files go: ``/run/virtbus/network`` for root (dnsmasq rereads
    them as an unprivileged user, and the state folder may be private), else
    ``STATE_DIR/network``."""
    return Path("/run/virtbus/network") if os.geteuid() == 0 else state_dir / "network"


def _no_network(what: str) -> VirtError:
    return VirtError(ErrorCode.NO_NETWORK, f"no network with matching {what}", _DOMAIN)


def _invalid(message: str) -> VirtError:
    return VirtError(ErrorCode.OPERATION_INVALID, message, _DOMAIN)


def _random_mac() -> str:
    """virMacAddrGenerate with libvirt's (QEMU's) 52:54:00 prefix."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


class NetworkService(ServiceProcess[NetworkSettings]):
    """libvirt's network driver semantics for this host."""

    name = "network"
    host_scoped = True
    endpoint_table = api.ENDPOINTS
    description = "libvirt virtual networks: bridges, dnsmasq, firewall rules, ports, leases"

    def __init__(self, settings: NetworkSettings, nc: NATS | None = None) -> None:
        super().__init__(settings, nc)
        self._registry: Registry | None = None
        self._firewall: FirewallBackend = choose_backend(settings.firewall_backend)
        self._run_dir = settings.run_dir or default_run_dir(settings.state_dir)
        self._records: dict[str, NetworkRecord] = {}
        self._running: dict[str, RunningNetwork] = {}
        self._ports: dict[tuple[str, str], PortRecord] = {}
        self._seen_leases: dict[str, dict[str, api.Lease]] = {}
        # one change at a time: each touches the host and the ledger record together
        self._lock = asyncio.Lock()
        self._gauge_networks = self.metrics.gauge("networks", "Networks by state", ["state"])
        self._gauge_ports = self.metrics.gauge("ports", "Ports per network", ["network"])
        self._gauge_leases = self.metrics.gauge("leases", "DHCP leases per network", ["network"])
        self._gauge_range = self.metrics.gauge(
            "dhcp_range_use_ratio", "Leases over DHCP range size", ["network"]
        )
        self._gauge_bytes = self.metrics.gauge(
            "bridge_bytes", "Bytes through the bridge", ["network", "direction"]
        )
        self._restarts = self.metrics.counter(
            "dnsmasq_restarts_total", "dnsmasq restarted after it died", ["network"]
        )

    @property
    def registry(self) -> Registry:
        assert self._registry is not None, "service not started"
        return self._registry

    # -- start-up ------------------------------------------------------------------

    async def setup(self, stack: Teardown) -> None:
        self._run_dir.mkdir(parents=True, exist_ok=True)
        hidden = [
            p for p in (self._run_dir, *self._run_dir.parents) if not p.stat().st_mode & 0o001
        ]
        if hidden:
            # dnsmasq rereads its hosts files (net-update) after dropping root
            log.warning(
                "dnsmasq's unprivileged user cannot reach %s (%s is not searchable): "
                "net-update of DHCP or DNS hosts will not reach a running dnsmasq",
                self._run_dir,
                hidden[-1],
            )
        self._registry = Registry(await self.open_ledger())
        self._records = self.registry.networks()
        self._ports = self.registry.ports()
        for name, record in sorted(self._records.items()):
            if record.active:
                await self._adopt(name, record)
        for name, record in sorted(self._records.items()):
            if record.autostart and not record.active:
                try:
                    await self._start(name)
                except VirtError as err:
                    log.error("autostart of network %s failed: %s", name, err)
        self.spawn(self._watch(), "network-watch")
        # the networks keep running: a service restart must not cut guests off
        stack.callback(self._running.clear)

    async def _adopt(self, name: str, record: NetworkRecord) -> None:
        live = definition(record.live_xml or record.xml)
        running = RunningNetwork(live, live.mac or _random_mac(), self._run_dir, self._firewall)
        try:
            adopted = await running.adopt()
        except VirtError as err:
            log.error("adopting network %s failed: %s", name, err)
            adopted = False
        if not adopted:
            # the bridge is gone (a host reboot): the network is not running
            log.warning("network %s was active but its bridge is gone", name)
            await running.stop()
            await self._set_inactive(name, record)
            return
        self._running[name] = running
        self._seen_leases[name] = {lease.ipaddr: lease for lease in running.leases()}
        running.leases_changed()
        self.spawn(self._supervise(running), f"dnsmasq-{name}")
        await self._replug(name, running)
        log.info("adopted running network", extra={"network": name})

    # -- background ----------------------------------------------------------------

    async def _supervise(self, running: RunningNetwork) -> None:
        before = running.restarts
        task = asyncio.create_task(running.supervise())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=1.0)
                if running.restarts != before:
                    self._restarts.labels(network=running.net.name).inc(running.restarts - before)
                    before = running.restarts
        finally:
            await cancel_until_done({task})

    async def _watch(self) -> None:
        """Lease events, firewall checks and metrics, for as long as the service runs."""
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self.settings.check_interval
        while True:
            await asyncio.sleep(_LEASE_POLL_SECONDS)
            for name, running in list(self._running.items()):
                if running.leases_changed():
                    try:
                        await self._publish_leases(name, running)
                    except VirtError as err:
                        # the bus is away: the next look reports the change again
                        log.error("lease event not stored: %s", err)
                        running.forget_leases_seen()
            if loop.time() >= next_check:
                next_check = loop.time() + self.settings.check_interval
                async with self._lock:
                    for running in list(self._running.values()):
                        try:
                            await running.reconcile()
                        except VirtError as err:
                            log.error("restoring firewall rules failed: %s", err)
                self._refresh_metrics()

    async def _publish_leases(self, name: str, running: RunningNetwork) -> None:
        now = {lease.ipaddr: lease for lease in running.leases()}
        before = self._seen_leases.get(name, {})
        for ip, lease in now.items():
            old = before.get(ip)
            if old == lease:
                continue
            detail = "Added" if old is None or old.mac != lease.mac else "Renewed"
            await self._lease_event(name, detail, lease)
        for ip, lease in before.items():
            if ip not in now:
                await self._lease_event(name, "Released", lease)
        self._seen_leases[name] = now

    async def _lease_event(self, name: str, detail: str, lease: api.Lease) -> None:
        event = Event(api.LEASE_KIND, name, api.LEASE_EVENT, detail, extra=lease.model_dump())
        await self.registry.announce([event])

    def _refresh_metrics(self) -> None:
        active = len(self._running)
        self._gauge_networks.labels(state="active").set(active)
        self._gauge_networks.labels(state="inactive").set(len(self._records) - active)
        for name in self._records:
            count = sum(1 for network, _ in self._ports if network == name)
            self._gauge_ports.labels(network=name).set(count)
        for name, running in self._running.items():
            leases = len(self._seen_leases.get(name, {}))
            self._gauge_leases.labels(network=name).set(leases)
            size = running.files().lease_max if needs_dnsmasq(running.net) else 0
            self._gauge_range.labels(network=name).set(leases / size if size else 0)
            rx, tx = host.link_stats(running.bridge)
            self._gauge_bytes.labels(network=name, direction="rx").set(rx)
            self._gauge_bytes.labels(network=name, direction="tx").set(tx)

    # -- helpers -------------------------------------------------------------------

    def _record(self, name: str) -> NetworkRecord:
        record = self._records.get(name)
        if record is None:
            raise _no_network(f"name '{name}'")
        return record

    def _info(self, name: str) -> api.NetworkInfo:
        record = self._record(name)
        net = definition(record.live_xml if record.active and record.live_xml else record.xml)
        return api.NetworkInfo(
            name=name,
            uuid=net.uuid,
            active=record.active,
            persistent=record.persistent,
            autostart=record.autostart,
            bridge=net.bridge.name,
        )

    async def _save(
        self, name: str, record: NetworkRecord | None, detail: str | None = None
    ) -> None:
        """Store network ``name`` (None: remove it) with its lifecycle event ``detail``."""
        events = [Event(api.NETWORK_KIND, name, "lifecycle", detail)] if detail else []
        await self.registry.save_network(name, record, events)
        if record is None:
            self._records.pop(name, None)
        else:
            self._records[name] = record

    async def _set_inactive(self, name: str, record: NetworkRecord) -> None:
        stopped = record.model_copy(update={"active": False, "live_xml": None})
        # a transient network is gone once it stops
        await self._save(name, stopped if record.persistent else None, "Stopped")
        self._running.pop(name, None)
        self._seen_leases.pop(name, None)

    def _bridges_in_use(self, but: str) -> set[str]:
        used = set()
        for other, record in self._records.items():
            if other != but:
                for xml in (record.xml, record.live_xml):
                    if xml:
                        bridge = definition(xml).bridge.name
                        if bridge:
                            used.add(bridge)
        return used

    def _complete(self, net: NetworkDef) -> NetworkDef:
        """Name the bridge (virbrN) and give it a MAC when the definition has none."""
        if not FORWARD_MODES[net.forward.mode].libvirt_bridge:
            return net
        used = self._bridges_in_use(net.name)
        name = net.bridge.name
        if name and "%d" not in name and name in used:
            raise VirtError(
                ErrorCode.INTERNAL_ERROR, f"bridge name '{name}' already in use.", _DOMAIN
            )
        if not name or "%d" in name:
            template = name or "virbr%d"
            old = self._records.get(net.name)
            old_bridge = definition(old.xml).bridge.name if old else None
            if old_bridge and not name:
                name = old_bridge
            else:
                index = 0
                while template.replace("%d", str(index)) in used or host.link_exists(
                    template.replace("%d", str(index))
                ):
                    index += 1
                name = template.replace("%d", str(index))
        mac = net.mac
        if mac is None:
            old = self._records.get(net.name)
            mac = definition(old.xml).mac if old else None
        bridge = net.bridge.model_copy(update={"name": name})
        return net.model_copy(update={"bridge": bridge, "mac": mac or _random_mac()})

    def _check_identity(self, net: NetworkDef) -> NetworkRecord | None:
        """virNetworkObjAssignDef's checks: one name per UUID and one UUID per name."""
        for other, record in self._records.items():
            uuid = definition(record.xml).uuid
            if other == net.name and uuid != net.uuid:
                raise VirtError(
                    ErrorCode.OPERATION_FAILED,
                    f"network '{other}' already exists with uuid {uuid}",
                    _DOMAIN,
                )
            if other != net.name and uuid == net.uuid:
                raise VirtError(
                    ErrorCode.OPERATION_FAILED,
                    f"network '{other}' is already defined with uuid {uuid}",
                    _DOMAIN,
                )
        return self._records.get(net.name)

    # -- endpoints -------------------------------------------------------------------

    def endpoints(self) -> Sequence[Bound[Any, Any]]:
        return (
            api.DEFINE.bind(self.define),
            api.CREATE.bind(self.create),
            api.START.bind(self.start_network),
            api.DESTROY.bind(self.destroy),
            api.UNDEFINE.bind(self.undefine),
            api.AUTOSTART.bind(self.autostart),
            api.LIST.bind(self.list),
            api.LOOKUP.bind(self.lookup),
            api.DUMPXML.bind(self.dumpxml),
            api.UPDATE.bind(self.update),
            api.DHCP_LEASES.bind(self.dhcp_leases),
            api.PORT_CREATE.bind(self.port_create),
            api.PORT_LIST.bind(self.port_list),
            api.PORT_DUMPXML.bind(self.port_dumpxml),
            api.PORT_DELETE.bind(self.port_delete),
        )

    async def define(self, req: api.XmlRequest) -> api.NetworkInfo:
        async with self._lock:
            net = parse_network(req.xml)
            old = self._check_identity(net)
            net = self._complete(net)
            xml = format_network(net, _INACTIVE)
            if old is not None:
                record = old.model_copy(update={"xml": xml, "persistent": True})
            else:
                record = NetworkRecord(xml=xml)
            await self._save(net.name, record, "Defined")
            return self._info(net.name)

    async def create(self, req: api.XmlRequest) -> api.NetworkInfo:
        async with self._lock:
            net = parse_network(req.xml)
            old = self._check_identity(net)
            if old is not None:
                if old.active:
                    raise _invalid(f"network '{net.name}' is already active")
                raise VirtError(
                    ErrorCode.OPERATION_FAILED,
                    f"network '{net.name}' already exists with uuid {net.uuid}",
                    _DOMAIN,
                )
            net = self._complete(net)
            self._records[net.name] = NetworkRecord(
                xml=format_network(net, _INACTIVE), persistent=False
            )
            try:
                await self._start(net.name)
            except BaseException:
                self._records.pop(net.name, None)
                raise
            return self._info(net.name)

    async def start_network(self, req: api.NameRequest) -> Empty:
        async with self._lock:
            await self._start(req.name)
        return Empty()

    async def _start(self, name: str) -> None:
        record = self._record(name)
        if record.active:
            raise _invalid("network is already active")
        net = definition(record.xml)
        running = RunningNetwork(net, net.mac or _random_mac(), self._run_dir, self._firewall)
        await running.start()
        try:
            # the stored definition is already format_network(net, _INACTIVE)
            live = record.model_copy(update={"active": True, "live_xml": record.xml})
            await self._save(name, live, "Started")
        except BaseException:
            await running.stop()
            raise
        self._running[name] = running
        self._seen_leases[name] = {}
        self.spawn(self._supervise(running), f"dnsmasq-{name}")
        await self._replug(name, running)

    async def _replug(self, name: str, running: RunningNetwork) -> None:
        """Plug the ports of ``name`` again (after a restart of the network or service)."""
        for (network, _), port in self._ports.items():
            if network == name and port.dev is not None:
                await ports.plug(port_definition(port.xml), running.bridge)

    async def destroy(self, req: api.NameRequest) -> Empty:
        async with self._lock:
            record = self._record(req.name)
            running = self._running.get(req.name)
            if not record.active:
                raise _invalid("network is not active")
            if running is not None:
                await running.stop()
            for (network, _uuid), port in list(self._ports.items()):
                if network == req.name and port.dev is not None:
                    await ports.unplug(port.dev)
            await self._set_inactive(req.name, record)
        return Empty()

    async def undefine(self, req: api.NameRequest) -> Empty:
        async with self._lock:
            record = self._record(req.name)
            if not record.persistent:
                raise _invalid("cannot undefine transient network")
            if record.active:
                # an active network stays up as a transient one
                transient = record.model_copy(update={"persistent": False, "autostart": False})
                await self._save(req.name, transient, "Undefined")
            else:
                await self._save(req.name, None, "Undefined")
        return Empty()

    async def autostart(self, req: api.AutostartRequest) -> Empty:
        async with self._lock:
            record = self._record(req.name)
            if not record.persistent:
                raise _invalid("cannot set autostart for transient network")
            if record.autostart != req.autostart:
                await self._save(req.name, record.model_copy(update={"autostart": req.autostart}))
        return Empty()

    async def list(self, req: Empty) -> api.ListReply:
        return api.ListReply(networks=[self._info(name) for name in sorted(self._records)])

    async def lookup(self, req: api.LookupRequest) -> api.NetworkInfo:
        if req.name is not None:
            return self._info(req.name)
        for name, record in self._records.items():
            if definition(record.xml).uuid == req.uuid:
                return self._info(name)
        raise _no_network(f"uuid '{req.uuid}'")

    async def dumpxml(self, req: api.DumpXmlRequest) -> api.XmlReply:
        record = self._record(req.name)
        if record.active and record.live_xml and not req.inactive:
            live = connections(self._port_defs(req.name))
            return api.XmlReply(xml=format_network(definition(record.live_xml), live=live))
        return api.XmlReply(xml=format_network(definition(record.xml), _INACTIVE))

    async def update(self, req: api.UpdateRequest) -> api.UpdateReply:
        async with self._lock:
            record = self._record(req.name)
            flags = UpdateFlags(req.flags)
            live = UpdateFlags.AFFECT_LIVE in flags
            config = UpdateFlags.AFFECT_CONFIG in flags
            if not live and not config:
                live, config = record.active, not record.active
            if live and not record.active:
                raise _invalid("network is not running")
            if config and not record.persistent:
                raise _invalid("cannot change persistent config of a transient network")
            changes: dict[str, object] = {}
            if config:
                new = update_network(
                    definition(record.xml), req.command, req.section, req.xml, req.parent_index
                )
                changes["xml"] = format_network(new, _INACTIVE)
            new_live: NetworkDef | None = None
            if live:
                assert record.live_xml is not None
                new_live = update_network(
                    definition(record.live_xml),
                    req.command,
                    req.section,
                    req.xml,
                    req.parent_index,
                )
                changes["live_xml"] = format_network(new_live, _INACTIVE)
            await self._save(req.name, record.model_copy(update=changes))
            running = self._running.get(req.name)
            if new_live is not None and running is not None:
                await self._apply_live(running, new_live, UpdateSection(req.section))
            return api.UpdateReply(live=live, config=config)

    async def _apply_live(
        self, running: RunningNetwork, net: NetworkDef, section: UpdateSection
    ) -> None:
        """What libvirt does to a running network after an update of ``section``."""
        old, running.net = running.net, net
        if section in (UpdateSection.IP_DHCP_HOST, UpdateSection.DNS_HOST):
            # only the hosts files changed: dnsmasq reads them again on SIGHUP
            running.dnsmasq.write_hosts(running.files())
            running.dnsmasq.reload()
        elif SECTIONS[section].dnsmasq:
            # ranges and records are in the configuration: dnsmasq restarts (the
            # supervisor starts it again with the new files)
            running.dnsmasq.write_files(running.files())
            await running.dnsmasq.stop()
        elif section in (UpdateSection.FORWARD_INTERFACE, UpdateSection.FORWARD) and running.owned:
            # the rules name the forward device
            await self._firewall.replace(old, net)

    async def dhcp_leases(self, req: api.LeasesRequest) -> api.LeasesReply:
        self._record(req.name)
        running = self._running.get(req.name)
        leases = running.leases() if running is not None else []
        if req.mac is not None:
            leases = [x for x in leases if (x.mac or "").lower() == req.mac.lower()]
        return api.LeasesReply(leases=leases)

    async def port_create(self, req: api.PortCreateRequest) -> api.PortInfo:
        async with self._lock:
            record = self._record(req.network)
            running = self._running.get(req.network)
            if not record.active or running is None:
                raise _invalid(f"network '{req.network}' is not active")
            port = parse_network_port(req.xml)
            if (req.network, port.uuid) in self._ports:
                raise VirtError(
                    ErrorCode.OPERATION_INVALID,
                    f"Network port with UUID {port.uuid} already exists",
                    _DOMAIN,
                )
            net = running.net
            port = allocate_port(net, port, self._port_defs(req.network))
            dev: str | None = None
            if port.plug.type is PlugType.NETWORK:
                dev = await ports.plug(port, running.bridge)
            stored = PortRecord(xml=format_network_port(port), dev=dev)
            event = Event(
                api.PORT_KIND, port.uuid, "lifecycle", "Created", extra={"network": req.network}
            )
            await self.registry.save_port(req.network, port.uuid, stored, [event])
            self._ports[(req.network, port.uuid)] = stored
            return api.PortInfo(uuid=port.uuid, dev=dev)

    def _port_defs(self, network: str) -> builtins.list[NetworkPortDef]:
        return [
            port_definition(port.xml)
            for (name, _), port in sorted(self._ports.items())
            if name == network
        ]

    def _port(self, network: str, uuid: str) -> PortRecord:
        self._record(network)
        port = self._ports.get((network, uuid))
        if port is None:
            raise VirtError(
                ErrorCode.NO_NETWORK,
                f"Network port with UUID {uuid} does not exist",
                _DOMAIN,
            )
        return port

    async def port_list(self, req: api.PortListRequest) -> api.PortListReply:
        self._record(req.network)
        found = [
            api.PortInfo(uuid=uuid, dev=port.dev)
            for (network, uuid), port in sorted(self._ports.items())
            if network == req.network
        ]
        return api.PortListReply(ports=found)

    async def port_dumpxml(self, req: api.PortRequest) -> api.XmlReply:
        return api.XmlReply(xml=self._port(req.network, req.uuid).xml)

    async def port_delete(self, req: api.PortRequest) -> Empty:
        async with self._lock:
            port = self._port(req.network, req.uuid)
            if port.dev is not None:
                await ports.unplug(port.dev)
            event = Event(
                api.PORT_KIND, req.uuid, "lifecycle", "Deleted", extra={"network": req.network}
            )
            await self.registry.save_port(req.network, req.uuid, None, [event])
            self._ports.pop((req.network, req.uuid), None)
        return Empty()
