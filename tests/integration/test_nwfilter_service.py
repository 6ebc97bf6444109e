"""The nwfilter service on a real nats-server, its bindings on ports in test namespaces."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from client.nwfilter import NWFilterClient
from services.nwfilter.service import NWFilterService, NWFilterSettings
from shared.util.errors import ErrorCode, VirtError
from shared.util.subjects import event_subject
from tests.conftest import ConnectAs
from tests.integration.nwfilter_topology import (
    GUEST_IP,
    GUEST_MAC,
    Topology,
    missing_requirements,
    topology_fixture,  # noqa: F401  (the ``topo`` fixture)
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements())),
]
HOST = "h1"
OWNER = "<owner><name>vm1</name><uuid>d1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b</uuid></owner>"


def binding(filter_name: str, *params: tuple[str, str], port: str = "vnet0") -> str:
    parameters = "".join(f"<parameter name='{n}' value='{v}'/>" for n, v in params)
    return (
        f"<filterbinding>{OWNER}<portdev name='{port}'/><mac address='{GUEST_MAC}'/>"
        f"<filterref filter='{filter_name}'>{parameters}</filterref></filterbinding>"
    )


MINE = """<filter name='mine'>
  <filterref filter='clean-traffic'/>
</filter>"""
MINE_NO_PING = """<filter name='mine'>
  <filterref filter='clean-traffic'/>
  <rule action='drop' direction='out' priority='100'><icmp/></rule>
</filter>"""


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 20.0) -> None:
    """Wait (bounded) for ``check`` to hold."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@pytest.fixture(params=["nftables", "ebiptables"])
async def service(
    request: pytest.FixtureRequest, nats_url: str, tmp_path: Path, topo: Topology
) -> AsyncIterator[NWFilterService]:
    settings = NWFilterSettings(
        nats_url=nats_url,
        state_dir=tmp_path / "nwfilter",
        host=HOST,
        firewall_backend=request.param,
        netns=topo.host,
        reconcile_interval=0.5,
    )
    async with NWFilterService(settings) as svc:
        yield svc


@pytest.fixture
async def events(nc: NATS) -> AsyncIterator[list[dict[str, object]]]:
    seen: list[dict[str, object]] = []

    async def on(msg: Msg) -> None:
        seen.append(json.loads(msg.data)["data"])

    # Clients read events through consumers of the event stream.
    sub = await nc.jetstream().subscribe(
        "virtbus.event.nwfilter.>", stream="VIRTBUS_EVENTS", ordered_consumer=True, cb=on
    )
    yield seen
    await sub.unsubscribe()


async def test_filters_bindings_and_rules_follow_libvirt(
    service: NWFilterService, nc: NATS, topo: Topology, events: list[dict[str, object]]
) -> None:
    client = NWFilterClient(nc)
    names = {f.name for f in await client.list()}
    assert {"clean-traffic", "no-arp-spoofing", "allow-dhcp-server", "no-ipv6-spoofing"} <= names

    mine = await client.define(MINE)
    created = await client.binding_create(HOST, binding("mine", ("IP", GUEST_IP)))
    assert created.status == "applied" and created.rules > 0
    assert await topo.ping()
    assert "<filterref filter='mine'>" in await client.binding_dumpxml(HOST, "vnet0")
    assert [b.portdev for b in await client.binding_list(HOST)] == ["vnet0"]

    # In use, directly or through a reference: refused with libvirt's error.
    for name in ("mine", "clean-traffic", "no-mac-spoofing"):
        with pytest.raises(VirtError) as refused:
            await client.undefine(name=name)
        assert refused.value.code is ErrorCode.OPERATION_INVALID
        assert refused.value.message == "Requested operation is not valid: nwfilter is in use"
    with pytest.raises(VirtError, match="filter would introduce a loop"):
        await client.define("<filter name='clean-traffic'><filterref filter='mine'/></filter>")

    # Redefinition keeps the UUID and re-instantiates the binding.
    again = await client.define(MINE_NO_PING)
    assert again.uuid == mine.uuid

    async def redone() -> bool:
        return (await client.binding_lookup(HOST, "vnet0")).rules > created.rules

    await until(redone, "the binding instantiated again")
    assert not await topo.ping(seconds=1.0), "the redefined filter does not block ping"
    # A definition the binding could not be instantiated with is refused; the
    # binding keeps its rules.
    with pytest.raises(VirtError, match="referenced filter 'nope' is missing"):
        await client.define(
            f"<filter name='mine'><uuid>{mine.uuid}</uuid><filterref filter='nope'/></filter>"
        )
    assert (await client.binding_lookup(HOST, "vnet0")).status == "applied"
    assert not await topo.ping(seconds=0.5)
    if service.backend.name == "nftables":
        # the dropped pings are counted per binding (nft counters)

        def dropped() -> float:
            prefix = 'virtbus_nwfilter_binding_dropped_packets{port="vnet0"}'
            for line in service.metrics.render().decode().splitlines():
                if line.startswith(prefix):
                    return float(line.split()[-1])
            return 0.0

        await until(lambda: _true(dropped() > 0), "the binding's drop counter")

    # Rules flushed by someone else are restored by reconciliation.
    _flush(topo.host, service.backend.name)
    await until(lambda: _not(topo.ping(seconds=0.5)), "the flushed rules to come back")

    await client.binding_delete(HOST, "vnet0")
    assert await topo.ping(), "traffic not restored after binding-delete"
    await client.undefine(name="mine")
    with pytest.raises(VirtError) as gone:
        await client.binding_delete(HOST, "vnet0")
    assert gone.value.code is ErrorCode.NO_NWFILTER_BINDING

    await until(lambda: _true(any(e["event"] == "rules" for e in events)), "rules events")
    # The last change's event comes through the event stream's consumer.
    undefined = ("nwfilter", "lifecycle", "Undefined")
    await until(
        lambda: _true(any((e["object"], e["event"], e["detail"]) == undefined for e in events)),
        "the filter's Undefined event",
    )
    kinds = {(e["object"], e["event"], e["detail"]) for e in events}
    assert ("nwfilter", "lifecycle", "Defined") in kinds
    assert ("nwfilter", "lifecycle", "Undefined") in kinds
    assert ("binding", "lifecycle", "Created") in kinds
    assert ("binding", "lifecycle", "Deleted") in kinds
    assert ("binding", "rules", "Applied") in kinds
    metrics = service.metrics.render().decode()
    assert "virtbus_nwfilter_apply_seconds_count" in metrics
    assert "virtbus_nwfilter_reconcile_repairs_total 1.0" in metrics


async def test_ip_learning_from_first_packets_and_from_leases(
    service: NWFilterService, nc: NATS, topo: Topology, connect_as: ConnectAs
) -> None:
    client = NWFilterClient(nc)
    learning = await client.binding_create(HOST, binding("clean-traffic"))
    assert learning.status == "learning" and learning.ip is None

    async def learned() -> bool:
        await topo.ping(seconds=0.3)  # the guest's first packets
        info = await client.binding_lookup(HOST, "vnet0")
        return info.status == "applied" and info.ip == GUEST_IP

    await until(learned, "the guest's address learned from its packets")
    await client.binding_delete(HOST, "vnet0")

    dhcp = await client.binding_create(HOST, binding("clean-traffic", ("CTRL_IP_LEARNING", "dhcp")))
    assert dhcp.status == "learning"
    lease = {
        "data": {
            "object": "lease",
            "name": "default",
            "event": "dhcp-lease",
            "detail": "Added",
            "extra": {"mac": GUEST_MAC, "ipaddr": GUEST_IP, "type": "ipv4", "prefix": 24},
        }
    }
    # As the network service of the host publishes it.
    network = await connect_as("network")
    subject = event_subject("network", HOST, "lease", "default")
    await network.publish(subject, json.dumps(lease).encode())

    async def leased() -> bool:
        return (await client.binding_lookup(HOST, "vnet0")).ip == GUEST_IP

    await until(leased, "the address from the lease event")
    assert await topo.ping()

    with pytest.raises(VirtError, match="unresolvable variables"):
        await client.binding_create(
            HOST, binding("clean-traffic", ("CTRL_IP_LEARNING", "none"), port="vnet1")
        )


def _flush(netns: str, backend: str) -> None:
    commands = (
        [["nft", "flush", "ruleset"]]
        if backend == "nftables"
        else [["ebtables", "-t", "nat", "-F"], ["iptables", "-F"], ["ip6tables", "-F"]]
    )
    for argv in commands:
        subprocess.run(["ip", "netns", "exec", netns, *argv], check=True, capture_output=True)


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def _true(value: bool) -> bool:
    return value


async def test_a_restarted_service_puts_the_rules_back(
    nats_url: str, tmp_path: Path, topo: Topology, nc: NATS
) -> None:
    settings = NWFilterSettings(
        nats_url=nats_url, state_dir=tmp_path / "s", host=HOST, netns=topo.host
    )
    client = NWFilterClient(nc)
    async with NWFilterService(settings):
        await client.define(MINE_NO_PING)
        await client.binding_create(HOST, binding("mine", ("IP", GUEST_IP)))
        assert not await topo.ping(seconds=1.0)
    _flush(topo.host, "nftables")  # the host's rules are gone while the service is down
    assert await topo.ping()
    async with NWFilterService(settings) as again:
        assert [b.portdev for b in await client.binding_list(HOST)] == ["vnet0"]
        await until(lambda: _not(topo.ping(seconds=0.5)), "the binding's rules restored at start")
        assert "vnet0" in await again.backend.ports()


async def test_a_filters_only_replica_defines_filters_and_refuses_bindings(
    nats_url: str, tmp_path: Path, nc: NATS
) -> None:
    settings = NWFilterSettings(
        nats_url=nats_url, state_dir=tmp_path / "f", host="filters-1", firewall_backend="none"
    )
    client = NWFilterClient(nc)
    async with NWFilterService(settings):
        assert (await client.define(MINE)).name == "mine"
        assert "clean-traffic" in {f.name for f in await client.list()}
        with pytest.raises(VirtError) as refused:
            await client.binding_create("filters-1", binding("mine", ("IP", GUEST_IP)))
        assert refused.value.code is ErrorCode.OPERATION_UNSUPPORTED
        assert await client.binding_list("filters-1") == []
