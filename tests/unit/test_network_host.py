"""The network service's host-side builders and its lease helper, without touching the host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.network import leasehelper
from services.network.host import bridge_commands
from services.network.ports import port_device, tc_commands
from services.network.runtime import needs_dnsmasq
from shared.conf.netdev_bandwidth import Bandwidth, BandwidthRate
from shared.conf.network import parse_network

NET = """<network><name>n</name><forward mode='nat'/><bridge name='vb0' stp='on' delay='3'/>
<mtu size='9000'/><ip address='10.9.0.1' prefix='24'/>
<ip family='ipv6' address='fd00::1' prefix='64'/>
<route address='10.20.0.0' prefix='16' gateway='10.9.0.7' metric='5'/></network>"""


def test_bridge_batch_sets_mac_stp_delay_mtu_addresses_then_routes() -> None:
    lines = bridge_commands(parse_network(NET), "52:54:00:01:02:03")
    assert lines == [
        "link add name vb0 address 52:54:00:01:02:03 mtu 9000 type bridge stp_state 1 "
        "forward_delay 300",
        "address add 10.9.0.1/24 dev vb0",
        "address add fd00::1/64 dev vb0 nodad",
        "link set dev vb0 up",
        "route add 10.20.0.0/16 via 10.9.0.7 dev vb0 metric 5",
    ]


def test_dnsmasq_only_where_it_has_work() -> None:
    assert needs_dnsmasq(parse_network(NET))
    no_ip = "<network><name>x</name><bridge name='b'/></network>"
    assert not needs_dnsmasq(parse_network(no_ip))
    bridged = "<network><name>y</name><forward mode='bridge'/><bridge name='br0'/></network>"
    assert not needs_dnsmasq(parse_network(bridged))


def test_port_shaping_as_libvirt_sets_it() -> None:
    bw = Bandwidth(
        inbound=BandwidthRate(average=1000, peak=2000, burst=512),
        outbound=BandwidthRate(average=500),
    )
    dev = port_device("c8d4d0a5-0c5d-4f5e-9b7a-2f4ab2e54a11")
    assert dev == "vbpc8d4d0a50c5d" and len(dev) <= 15
    cmds = tc_commands(dev, bw)
    assert ["tc", "qdisc", "add", "dev", dev, "ingress"] in cmds
    assert any("ceil" in c and "2000kbps" in c and "512kb" in c for c in cmds)
    assert any("police" in c and "500kbps" in c for c in cmds)
    assert tc_commands(dev, None) == []


def _helper(status: Path, *args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-S", "-E", leasehelper.__file__, str(status), *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout


def test_lease_helper_records_renews_releases_and_replays(tmp_path: Path) -> None:
    status = tmp_path / "vb0.status"
    env = {"DNSMASQ_LEASE_EXPIRES": "4102444800", "DNSMASQ_CLIENT_ID": "01:aa"}
    _helper(status, "add", "52:54:00:aa:bb:cc", "10.9.0.50", "guest", env=env)
    _helper(
        status,
        "old",
        "52:54:00:aa:bb:cc",
        "10.9.0.50",
        env=env | {"DNSMASQ_LEASE_EXPIRES": "4102444900"},
    )
    [lease] = json.loads(status.read_text())
    assert lease == {
        "ip-address": "10.9.0.50",
        "expiry-time": 4102444900,
        "client-id": "01:aa",
        "mac-address": "52:54:00:aa:bb:cc",
    }
    init = _helper(status, "init", env={})
    assert init == "4102444900 52:54:00:aa:bb:cc 10.9.0.50 * 01:aa\n"
    _helper(status, "del", "52:54:00:aa:bb:cc", "10.9.0.50", env=env)
    assert json.loads(status.read_text()) == []


def test_lease_helper_drops_expired_leases(tmp_path: Path) -> None:
    status = tmp_path / "s.status"
    status.write_text(json.dumps([{"ip-address": "10.0.0.5", "expiry-time": 1}]))
    assert _helper(status, "init", env={}) == ""


@pytest.mark.parametrize("action", ["tftp", "arp-add"])
def test_lease_helper_ignores_other_actions(tmp_path: Path, action: str) -> None:
    status = tmp_path / "s.status"
    _helper(status, action, "x", "y", env={})
    assert not status.exists()
