"""The network service end to end, in network namespaces the tests create.

Real parts only: nats-server, the service as a process, Linux bridges,
dnsmasq, nftables, and udhcpc as the guests' DHCP client.  A guest is a
namespace plugged into the network's bridge by a veth; the "outside" is a
namespace on another link of the lab's host namespace.
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from shared.util.subjects import event_filter
from tests.integration.netns import (
    LAB_ADDR,
    OUTSIDE_ADDR,
    NetLab,
    cli,
    guest_addr,
    lab_client,
    lab_fixture,  # noqa: F401  (the ``lab`` fixture)
    network_xml,
    seen_from_outside,
    skip_reason,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

_SKIP = skip_reason()
if _SKIP:
    pytestmark.append(pytest.mark.skip(reason=_SKIP))


def assert_gone(lab: NetLab, bridge: str) -> None:
    """No bridge, no dnsmasq and no virtbus rule left in the lab's namespace."""
    assert not lab.run(lab.ns, "ip", "-br", "link", "show", "dev", bridge, check=False)
    assert "virtbus" not in lab.run(lab.ns, "nft", "list", "ruleset")
    assert lab.dnsmasq_pids() == []


async def test_nat_with_dhcp(lab: NetLab) -> None:
    net = lab_client(lab)
    assert lab.nc is not None
    events = await lab.nc.jetstream().subscribe(
        event_filter("network", lab.host, "lease"), ordered_consumer=True
    )
    await net.define(network_xml("natnet", "vbn" + lab.tag, "nat", "192.168.150"))
    await net.start("natnet")
    bridge = "vbn" + lab.tag
    outside = lab.outside(LAB_ADDR, OUTSIDE_ADDR)
    guest, iface = lab.guest(bridge)
    lab.dhcp(guest, iface)
    addr = guest_addr(lab, guest, iface)
    assert addr.startswith("192.168.150.")
    lab.run(guest, "busybox", "ping", "-c", "1", "-W", "2", "192.168.150.1")
    # the outside has no route to the guest subnet: only NAT gets the guest there
    assert seen_from_outside(lab, outside, guest) == LAB_ADDR

    leases = cli(lab, "net-dhcp-leases", "natnet")
    assert f"{addr}/24" in leases and "ipv4" in leases
    assert leases.startswith(" Expiry Time ")
    message = await events.next_msg(timeout=10)
    data = json.loads(message.data)["data"]
    assert (data["event"], data["detail"], data["extra"]["ipaddr"]) == ("dhcp-lease", "Added", addr)

    assert lab.dnsmasq_daemons("natnet.conf")
    assert "masquerade" in lab.run(lab.ns, "nft", "list", "table", "inet", "virtbus_" + bridge)
    assert "Network natnet destroyed" in cli(lab, "net-destroy", "natnet")
    assert_gone(lab, bridge)
    listed = cli(lab, "net-list", "--all")
    assert listed.splitlines()[2].split() == ["natnet", "inactive", "no", "yes"]


async def test_route_mode_forwards_without_translation(lab: NetLab) -> None:
    net = lab_client(lab)
    bridge = "vbr" + lab.tag
    await net.define(network_xml("routed", bridge, "route", "192.168.151"))
    await net.start("routed")
    outside = lab.outside(LAB_ADDR, OUTSIDE_ADDR)
    lab.run(outside, "ip", "route", "add", "192.168.151.0/24", "via", LAB_ADDR)
    guest, iface = lab.guest(bridge)
    lab.dhcp(guest, iface)
    addr = guest_addr(lab, guest, iface)
    lab.run(guest, "busybox", "ping", "-c", "1", "-W", "2", "192.168.151.1")
    assert seen_from_outside(lab, outside, guest) == addr
    assert "masquerade" not in lab.run(lab.ns, "nft", "list", "ruleset")
    await net.destroy("routed")
    assert_gone(lab, bridge)


async def test_isolated_network_does_not_forward(lab: NetLab) -> None:
    net = lab_client(lab)
    bridge = "vbi" + lab.tag
    await net.create(network_xml("isol", bridge, None, "192.168.152"))
    outside = lab.outside(LAB_ADDR, OUTSIDE_ADDR)
    lab.run(outside, "ip", "route", "add", "192.168.152.0/24", "via", LAB_ADDR)
    guest, iface = lab.guest(bridge)
    lab.dhcp(guest, iface)
    lab.run(guest, "busybox", "ping", "-c", "1", "-W", "2", "192.168.152.1")
    # no default route is offered (dhcp-option=3); even with one, nothing is forwarded
    assert "default" not in lab.run(guest, "ip", "route")
    lab.run(guest, "ip", "route", "add", "default", "via", "192.168.152.1")
    lost = lab.run(guest, "busybox", "ping", "-c", "1", "-W", "1", OUTSIDE_ADDR, check=False)
    assert "0 packets received" in lost
    await net.destroy("isol")  # a transient network: gone with its destroy
    assert await net.list_all() == []
    assert_gone(lab, bridge)


async def test_kill9_restart_adopts_running_networks(lab: NetLab) -> None:
    net = lab_client(lab)
    bridge = "vbk" + lab.tag
    await net.define(network_xml("keep", bridge, "nat", "192.168.153"))
    await net.set_autostart("keep", True)
    await net.start("keep")
    guest, iface = lab.guest(bridge)
    lab.dhcp(guest, iface)
    table = lab.run(lab.ns, "nft", "list", "table", "inet", "virtbus_" + bridge)
    [daemon] = lab.dnsmasq_daemons("keep.conf")

    # a guest pings the gateway all through the kill and the restart
    ping = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            guest,
            "busybox",
            "ping",
            "-c",
            "40",
            "-i",
            "0.05",
            "-W",
            "1",
            "192.168.153.1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    await asyncio.sleep(0.3)
    lab.kill9_service()
    await lab.start_service()
    out, _ = ping.communicate(timeout=30)
    assert "40 packets received" in out, out

    assert [(n.name, n.active) for n in await net.list_all()] == [("keep", True)]
    assert lab.dnsmasq_daemons("keep.conf") == [daemon]
    assert lab.run(lab.ns, "nft", "list", "table", "inet", "virtbus_" + bridge) == table
    assert lab.run(lab.ns, "nft", "list", "ruleset").count("table inet virtbus_") == 1

    # a dnsmasq that dies is started again
    lab.run(lab.ns, "kill", "-9", str(daemon))
    for _ in range(100):
        restarted = lab.dnsmasq_daemons("keep.conf")
        if restarted and restarted != [daemon]:
            break
        await asyncio.sleep(0.05)
    assert len(restarted) == 1 and restarted != [daemon]

    # a host firewall reload drops our table; the check restores it, others' stay
    lab.run(lab.ns, "nft", "flush", "ruleset")
    lab.run(lab.ns, "nft", "add", "table", "inet", "hostfw")
    lab.run(lab.ns, "nft", "add", "chain", "inet", "hostfw", "keepme")
    for _ in range(100):
        if "virtbus_" in lab.run(lab.ns, "nft", "list", "ruleset"):
            break
        await asyncio.sleep(0.05)
    ruleset = lab.run(lab.ns, "nft", "list", "ruleset")
    assert lab.run(lab.ns, "nft", "list", "table", "inet", "virtbus_" + bridge) == table
    assert "chain keepme" in ruleset

    await net.destroy("keep")
    assert_gone(lab, bridge)
    assert "chain keepme" in lab.run(lab.ns, "nft", "list", "ruleset")
