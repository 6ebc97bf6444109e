"""Filter bindings proven with traffic, for both backends, in namespaces the tests create.

Guest ``g1`` sits behind bridge port ``vnet0``; its peer ``g2`` behind
``vnet1``.  The binding's rules go on ``vnet0`` in the host namespace.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.nwfilter.backends import Backend, make_backend
from services.nwfilter.resolve import binding_variables, instantiate
from services.nwfilter.stdfilters import standard_filters
from shared.conf.nwfilter import NWFilterDef, parse_nwfilter
from tests.integration.nwfilter_topology import (
    GUEST_IP,
    GUEST_MAC,
    PEER_IP,
    Topology,
    arp_request,
    missing_requirements,
    topology_fixture,  # noqa: F401  (the ``topo`` fixture)
    udp_frame,
)

pytestmark = pytest.mark.skipif(
    missing_requirements() is not None, reason=str(missing_requirements())
)

BACKENDS = ["nftables", "ebiptables"]
NO_PING = """<filter name='no-ping'>
  <filterref filter='clean-traffic'/>
  <rule action='drop' direction='out' priority='100'><icmp/></rule>
</filter>"""


def _filters(*extra: str) -> dict[str, NWFilterDef]:
    filters = {f.name: f for f in standard_filters()}
    for doc in extra:
        parsed = parse_nwfilter(doc)
        filters[parsed.name] = parsed
    return filters


async def _bind(backend: Backend, filters: dict[str, NWFilterDef], name: str) -> None:
    inst = instantiate(filters[name], binding_variables({}, GUEST_MAC, GUEST_IP), filters.get)
    await backend.apply("vnet0", inst.rules)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, topo: Topology) -> AsyncIterator[Backend]:
    chosen = make_backend(request.param, netns=topo.host)
    await chosen.prepare()
    yield chosen


async def test_clean_traffic_passes_own_and_blocks_spoofing(
    topo: Topology, backend: Backend
) -> None:
    filters = _filters()
    await _bind(backend, filters, "clean-traffic")
    assert await topo.ping(), "the guest's own MAC and IP must pass"

    # Spoofed source IP: neighbours set by hand, so only the IP check decides.
    topo.ip(topo.g1, "addr", "add", "10.99.0.3/32", "dev", "eth0")
    topo.ip(topo.g2, "route", "add", "10.99.0.3/32", "dev", "eth0")
    topo.ip(topo.g2, "neigh", "replace", "10.99.0.3", "lladdr", GUEST_MAC, "dev", "eth0")
    assert not await topo.ping(src="10.99.0.3", seconds=1.0), "spoofed source IP passed"

    # ARP naming another IP address than the guest's is dropped; its own passes.
    topo.flush_neighbours()
    assert not await topo.delivered(
        arp_request(GUEST_MAC, "10.99.0.77", PEER_IP), bytes([10, 99, 0, 77])
    )
    assert await topo.delivered(arp_request(GUEST_MAC, GUEST_IP, PEER_IP), bytes([10, 99, 0, 2]))

    # DHCP: a request from 0.0.0.0 port 68 passes; the same from a foreign address does not.
    dhcp = udp_frame(GUEST_MAC, "0.0.0.0", "255.255.255.255", 68, 67, b"dhcp-ok")
    assert await topo.delivered(dhcp, b"dhcp-ok")
    spoofed = udp_frame(GUEST_MAC, "10.99.0.9", "255.255.255.255", 68, 67, b"dhcp-spoof")
    assert not await topo.delivered(spoofed, b"dhcp-spoof")

    # Spoofed source MAC, neighbour caches flushed so that ARP runs again.
    topo.ip(topo.g1, "link", "set", "eth0", "address", "52:54:00:00:00:99")
    topo.flush_neighbours()
    assert not await topo.ping(seconds=1.0), "spoofed source MAC passed"

    # Deleting the binding restores traffic, spoofed or not.
    await backend.remove("vnet0")
    assert "vnet0" not in await backend.ports()
    topo.flush_neighbours()
    assert await topo.ping(), "traffic not restored after the binding was deleted"
    topo.ip(topo.g2, "neigh", "replace", "10.99.0.3", "lladdr", "52:54:00:00:00:99", "dev", "eth0")
    assert await topo.ping(src="10.99.0.3")


async def test_own_filter_referencing_clean_traffic_blocks_ping(
    topo: Topology, backend: Backend
) -> None:
    filters = _filters(NO_PING)
    await _bind(backend, filters, "no-ping")
    assert not await topo.ping(seconds=1.0), "ICMP from the guest passed a filter dropping it"
    assert await topo.delivered(
        udp_frame(GUEST_MAC, GUEST_IP, PEER_IP, 4000, 4000, b"udp-ok"), b"udp-ok"
    ), "UDP was dropped though the filter drops ICMP only"
    await _bind(backend, filters, "clean-traffic")
    assert await topo.ping(), "ping still blocked after the binding moved to clean-traffic"
    # A backend that starts afresh (a restarted service) finds the port's rules.
    fresh = make_backend(backend.name, netns=topo.host)
    await fresh.prepare()
    assert "vnet0" in await fresh.ports()
    assert await fresh.snapshots(["vnet0"]) == await backend.snapshots(["vnet0"])
    await fresh.remove("vnet0")
    assert "vnet0" not in await backend.ports()


async def test_redefinition_while_traffic_flows_accepts_nothing_both_drop(
    topo: Topology, backend: Backend
) -> None:
    """Rules replaced repeatedly while the guest sends: what both the old and
    the new filter drop never arrives; what both accept keeps arriving."""
    old = "<filter name='swap'><filterref filter='clean-traffic'/></filter>"
    new = """<filter name='swap'><filterref filter='clean-traffic'/>
      <rule action='drop' direction='out' priority='100'><udp dstportstart='6000'/></rule>
    </filter>"""
    versions = [_filters(old), _filters(new)]
    await _bind(backend, versions[0], "swap")
    spoofed = udp_frame(GUEST_MAC, "10.99.0.66", PEER_IP, 5000, 5000, b"spoof-flow")
    legit = udp_frame(GUEST_MAC, GUEST_IP, PEER_IP, 5000, 5000, b"legit-flow")
    counter = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", topo.g2, *_pkt(), "count", "eth0", "300",
        b"spoof-flow".hex(), b"legit-flow".hex(),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert counter.stdout is not None
    await counter.stdout.readline()
    switching = asyncio.Event()

    async def flow(frame: str) -> None:
        """Bursts from the guest for as long as the rules are being replaced."""
        while not switching.is_set():
            await topo.tool(topo.g1, "send", "eth0", frame, "20")

    senders = [asyncio.create_task(flow(frame)) for frame in (spoofed, legit)]
    for round_ in range(6):
        await _bind(backend, versions[round_ % 2], "swap")
    switching.set()
    await asyncio.gather(*senders)
    await asyncio.sleep(0.3)  # the last frames on the wire
    counter.terminate()
    out, _ = await counter.communicate()
    spoof_seen, legit_seen = (int(n) for n in out.split())
    assert spoof_seen == 0, f"{spoof_seen} spoofed packets got through during the switches"
    assert legit_seen > 0


async def test_connection_state_lets_replies_in_and_keeps_new_connections_out(
    topo: Topology, backend: Backend
) -> None:
    """libvirt's state matching: what the guest starts may be answered, what
    the peer starts is dropped (accept out with state, drop everything else)."""
    outgoing_only = """<filter name='outgoing-only'>
      <rule action='accept' direction='out' priority='100'><all/></rule>
      <rule action='accept' direction='inout' priority='200'><mac protocolid='arp'/></rule>
      <rule action='drop' direction='inout' priority='1000'><all/></rule>
    </filter>"""
    await _bind(backend, _filters(outgoing_only), "outgoing-only")
    assert await topo.ping(), "the reply to the guest's own ping was dropped"
    assert not await topo.ping(src=PEER_IP, dst=GUEST_IP, seconds=1.0, ns=topo.g2), (
        "a connection the peer started reached the guest"
    )


def _pkt() -> list[str]:
    import sys

    from tests.integration.nwfilter_topology import PKT

    return [sys.executable, PKT]
