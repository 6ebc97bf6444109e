"""The network service's other duties, in namespaces the tests create: net-update on a
running dnsmasq, ports, lifecycle events, and the iptables backend."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest

from shared.util.errors import VirtError
from shared.util.natsserver import free_port
from shared.util.subjects import event_filter
from tests.integration.netns import (
    LAB_ADDR,
    OUTSIDE_ADDR,
    NetLab,
    cli,
    guest_addr,
    inside,
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

# inbound shaping only: outbound policing needs the kernel's act_police, which
# the test machines may lack
PORT = """<networkport>
  <uuid>5d1c1e3a-8d5f-4a4e-9d7e-0c5a4f1b2a77</uuid>
  <owner><name>vm1</name><uuid>0c8b1a7e-3d2f-4f1a-9e6b-2a4c5d6e7f80</uuid></owner>
  <mac address='52:54:00:12:34:56'/>
  <bandwidth><inbound average='1000' peak='2000' burst='256'/></bandwidth>
</networkport>"""


async def _events(lab: NetLab, kind: str, count: int) -> list[tuple[str, str | None]]:
    assert lab.nc is not None
    sub = await lab.nc.jetstream().subscribe(
        event_filter("network", lab.host, kind), ordered_consumer=True
    )
    seen = []
    for _ in range(count):
        data = json.loads((await sub.next_msg(timeout=10)).data)["data"]
        seen.append((data["name"], data["detail"]))
    await sub.unsubscribe()
    return seen


async def test_lifecycle_events_and_update_of_a_running_dnsmasq(lab: NetLab) -> None:
    net = lab_client(lab)
    bridge = "vbu" + lab.tag
    await net.define(network_xml("upd", bridge, "nat", "192.168.160"))
    await net.start("upd")
    guest, iface = lab.guest(bridge)
    mac = json.loads(lab.run(guest, "ip", "-j", "link", "show", "dev", iface))[0]["address"]
    [daemon] = lab.dnsmasq_daemons("upd.conf")

    # a static host added to the live network only: dnsmasq rereads its hosts file
    host = f"<host mac='{mac}' name='fixed' ip='192.168.160.50'/>"
    said = cli(lab, "net-update", "upd", "add-last", "ip-dhcp-host", host, "--live")
    assert said == "Updated network upd live state\n\n"
    lab.dhcp(guest, iface)
    assert guest_addr(lab, guest, iface) == "192.168.160.50"
    assert lab.dnsmasq_daemons("upd.conf") == [daemon]  # reloaded, not restarted
    assert "fixed" in await net.dumpxml("upd")
    assert "fixed" not in await net.dumpxml("upd", inactive=True)
    with pytest.raises(VirtError, match="there is an existing dhcp host entry"):
        await net.update("upd", 3, 4, host, flags=1)

    # a new range changes the configuration: dnsmasq restarts with it
    await net.update("upd", 3, 5, "<range start='192.168.160.200' end='192.168.160.210'/>", flags=3)
    for _ in range(100):
        now = lab.dnsmasq_daemons("upd.conf")
        if now and now != [daemon]:
            break
        await asyncio.sleep(0.05)
    assert len(now) == 1 and now != [daemon]
    conf = (lab.run_dir / "upd.conf").read_text()
    assert "dhcp-range=192.168.160.200,192.168.160.210,255.255.255.0" in conf
    assert "192.168.160.200" in await net.dumpxml("upd", inactive=True)

    # a forward device named live: the firewall table now forwards only through it
    await net.update("upd", 4, 7, "<interface dev='vbout0'/>", flags=1)
    table = lab.run(lab.ns, "nft", "list", "table", "inet", "virtbus_" + bridge)
    assert 'oifname "vbout0"' in table

    await net.destroy("upd")
    await net.undefine("upd")
    assert await _events(lab, "network", 4) == [
        ("upd", "Defined"),
        ("upd", "Started"),
        ("upd", "Stopped"),
        ("upd", "Undefined"),
    ]


async def test_ports_are_plugged_shaped_and_survive_a_restart(lab: NetLab) -> None:
    net = lab_client(lab)
    bridge = "vbp" + lab.tag
    await net.define(network_xml("ports", bridge, "nat", "192.168.161"))
    await net.start("ports")
    port_file = lab.tmp / "port.xml"
    port_file.write_text(PORT)
    created = cli(lab, "net-port-create", "ports", str(port_file))
    uuid = "5d1c1e3a-8d5f-4a4e-9d7e-0c5a4f1b2a77"
    assert created == f"Network port {uuid} created from {port_file}\n\n"
    [port] = await net.port_list("ports")
    assert port.dev is not None
    link = json.loads(lab.run(lab.ns, "ip", "-j", "link", "show", "dev", port.dev))[0]
    assert (link["master"], link["address"]) == (bridge, "52:54:00:12:34:56")
    assert "htb" in lab.run(lab.ns, "tc", "qdisc", "show", "dev", port.dev)
    xml = await net.port_dumpxml("ports", uuid)
    assert f"<plug type='network' bridge='{bridge}'/>" in xml

    lab.kill9_service()
    lab.run(lab.ns, "ip", "link", "del", "dev", port.dev)  # lost while the service was away
    await lab.start_service()
    assert [p.uuid for p in await net.port_list("ports")] == [uuid]
    link = json.loads(lab.run(lab.ns, "ip", "-j", "link", "show", "dev", port.dev))[0]
    assert link["master"] == bridge

    assert cli(lab, "net-port-list", "ports", "--uuid") == f"{uuid}\n\n"
    await net.port_delete("ports", uuid)
    assert not lab.run(lab.ns, "ip", "-br", "link", "show", "dev", port.dev, check=False)
    assert await _events(lab, "port", 2) == [(uuid, "Created"), (uuid, "Deleted")]
    await net.destroy("ports")


async def test_iptables_backend_puts_libvirts_rules_and_takes_them_away(tmp_path: Path) -> None:
    if not any(Path(d, "iptables").exists() for d in ("/usr/sbin", "/sbin")):
        pytest.skip("iptables is not installed")
    lab = NetLab(tmp_path, ("--firewall-backend", "iptables"))
    try:
        await lab.start()
        net = lab_client(lab)
        bridge = "vbt" + lab.tag
        await net.create(network_xml("ipt", bridge, "nat", "192.168.162"))
        rules = lab.run(lab.ns, "iptables", "-w", "-t", "nat", "-S", "LIBVIRT_PRT")
        assert "-A LIBVIRT_PRT -s 192.168.162.0/24 ! -d 192.168.162.0/24 -j MASQUERADE" in rules
        assert "-A FORWARD -j LIBVIRT_FWI" in lab.run(lab.ns, "iptables", "-w", "-S", "FORWARD")
        outside = lab.outside(LAB_ADDR, OUTSIDE_ADDR)
        guest, iface = lab.guest(bridge)
        lab.dhcp(guest, iface)
        assert seen_from_outside(lab, outside, guest) == LAB_ADDR
        # a firewall reload that dropped the nat rules: the check puts them back once
        lab.run(lab.ns, "iptables", "-w", "-t", "nat", "-F", "LIBVIRT_PRT")
        for _ in range(100):
            rules = lab.run(lab.ns, "iptables", "-w", "-t", "nat", "-S", "LIBVIRT_PRT")
            if "MASQUERADE" in rules:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.7)  # two more checks: nothing is added twice
        rules = lab.run(lab.ns, "iptables", "-w", "-t", "nat", "-S", "LIBVIRT_PRT")
        assert rules.count("-j MASQUERADE") == 3, rules
        await net.destroy("ipt")
        for table in ("filter", "nat", "mangle"):
            assert bridge not in lab.run(lab.ns, "iptables", "-w", "-t", table, "-S")
            assert "192.168.162" not in lab.run(lab.ns, "iptables", "-w", "-t", table, "-S")
    finally:
        await lab.close()


async def test_bridge_mode_uses_the_hosts_bridge_and_leaves_it_alone(lab: NetLab) -> None:
    net = lab_client(lab)
    bridge = "vbh" + lab.tag
    lab.run(lab.ns, "ip", "link", "add", bridge, "type", "bridge")
    await net.define(
        f"<network><name>hostbr</name><forward mode='bridge'/><bridge name='{bridge}'/></network>"
    )
    await net.start("hostbr")
    assert lab.dnsmasq_pids() == []  # nothing of libvirt's runs on a host bridge
    port_file = lab.tmp / "port.xml"
    port_file.write_text(PORT.replace("<bandwidth>", "<!--").replace("</bandwidth>", "-->"))
    cli(lab, "net-port-create", "hostbr", str(port_file))
    xml = await net.port_dumpxml("hostbr", "5d1c1e3a-8d5f-4a4e-9d7e-0c5a4f1b2a77")
    assert f"<plug type='bridge' bridge='{bridge}'/>" in xml
    assert "connections='1'" in await net.dumpxml("hostbr")
    await net.destroy("hostbr")
    assert lab.run(lab.ns, "ip", "-br", "link", "show", "dev", bridge).startswith(bridge)


def _scrape(ns: str, port: int) -> str:
    """The service's /metrics, fetched from inside the lab's namespace."""
    with inside(ns), urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


async def test_autostart_networks_start_with_the_service_and_metrics(tmp_path: Path) -> None:
    port = free_port()  # in the test's namespace; the lab's has nothing listening either
    lab = NetLab(tmp_path, ("--http-port", str(port)))
    try:
        await lab.start()
        net = lab_client(lab)
        bridge = "vba" + lab.tag
        await net.define(network_xml("auto", bridge, "nat", "192.168.163"))
        assert cli(lab, "net-autostart", "auto") == "Network auto marked as autostarted\n\n"
        lab.kill9_service()
        await lab.start_service()
        [info] = await net.list_all()
        assert (info.name, info.active, info.autostart) == ("auto", True, True)
        assert lab.run(lab.ns, "ip", "-br", "link", "show", "dev", bridge).startswith(bridge)
        metrics = ""
        for _ in range(50):  # refreshed with the firewall check (--check-interval 0.3)
            metrics = _scrape(lab.ns, port)
            if 'virtbus_network_networks{state="active"} 1.0' in metrics:
                break
            await asyncio.sleep(0.1)
        assert 'virtbus_network_networks{state="active"} 1.0' in metrics
        assert 'virtbus_network_bridge_bytes{direction="rx",network="auto"}' in metrics
        await net.destroy("auto")
    finally:
        await lab.close()
