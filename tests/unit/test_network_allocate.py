"""Port allocation per forward mode, as libvirt's networkAllocatePort does it."""

from __future__ import annotations

import pytest

from services.network.allocate import allocate_port, connections
from shared.conf.network import format_network, parse_network
from shared.conf.network_port import MacvlanMode, NetworkPortDef, PlugType, parse_network_port
from shared.util.errors import VirtError


def port(n: int, extra: str = "") -> NetworkPortDef:
    return parse_network_port(
        f"<networkport><uuid>5d1c1e3a-8d5f-4a4e-9d7e-0c5a4f1b2a{n:02d}</uuid>"
        "<owner><name>vm</name><uuid>0c8b1a7e-3d2f-4f1a-9e6b-2a4c5d6e7f80</uuid></owner>"
        f"<mac address='52:54:00:00:00:{n:02x}'/>{extra}</networkport>"
    )


def test_a_libvirt_bridge_port_takes_the_portgroup_bandwidth() -> None:
    net = parse_network(
        "<network><name>n</name><forward mode='nat'/><bridge name='virbr7'/>"
        "<ip address='10.0.0.1' prefix='24'/>"
        "<portgroup name='slow'><bandwidth><inbound average='100'/></bandwidth></portgroup>"
        "</network>"
    )
    got = allocate_port(net, port(1, "<group>slow</group>"), [])
    assert (got.plug.type, got.plug.bridge) == (PlugType.NETWORK, "virbr7")
    assert got.bandwidth is not None and got.bandwidth.inbound is not None
    assert got.bandwidth.inbound.average == 100
    with pytest.raises(VirtError, match="Port group 'fast' not found"):
        allocate_port(net, port(2, "<group>fast</group>"), [])


def test_host_bridge_mode_plugs_into_that_bridge() -> None:
    net = parse_network(
        "<network><name>b</name><forward mode='bridge'/><bridge name='br0'/></network>"
    )
    assert allocate_port(net, port(1), []).plug.type is PlugType.BRIDGE


def test_macvtap_takes_the_least_used_device_and_passthrough_an_unused_one() -> None:
    xml = (
        "<network><name>m</name><forward mode='{mode}'>"
        "<interface dev='eth1'/><interface dev='eth2'/></forward></network>"
    )
    vepa = parse_network(xml.format(mode="vepa"))
    first = allocate_port(vepa, port(1), [])
    second = allocate_port(vepa, port(2), [first])
    assert (first.plug.dev, second.plug.dev) == ("eth1", "eth2")
    assert second.plug.mode is MacvlanMode.VEPA
    live = connections([first, second, allocate_port(vepa, port(3), [first, second])])
    assert live.interface_connections == {"eth1": 2, "eth2": 1}
    assert "<interface dev='eth1' connections='2'/>" in format_network(vepa, live=live)

    passthrough = parse_network(xml.format(mode="passthrough"))
    a = allocate_port(passthrough, port(1), [])
    b = allocate_port(passthrough, port(2), [a])
    with pytest.raises(VirtError, match="requires exclusive access"):
        allocate_port(passthrough, port(3), [a, b])


def test_hostdev_takes_a_free_pci_device() -> None:
    net = parse_network(
        "<network><name>h</name><forward mode='hostdev' managed='yes'>"
        "<address type='pci' domain='0' bus='4' slot='0' function='1'/></forward></network>"
    )
    first = allocate_port(net, port(1), [])
    assert first.plug.type is PlugType.HOSTDEV_PCI and first.plug.managed is True
    with pytest.raises(VirtError, match="none are available"):
        allocate_port(net, port(2), [first])


def test_direct_mode_without_devices_is_refused() -> None:
    net = parse_network("<network><name>x</name><forward mode='private'/></network>")
    with pytest.raises(VirtError, match="has no forward dev"):
        allocate_port(net, port(1), [])


def test_vlan_only_where_libvirt_can_tag() -> None:
    bridged = parse_network(
        "<network><name>n</name><forward mode='nat'/><bridge name='virbr7'/>"
        "<ip address='10.0.0.1' prefix='24'/></network>"
    )
    with pytest.raises(VirtError, match="requesting a vlan tag"):
        allocate_port(bridged, port(1, "<vlan><tag id='42'/></vlan>"), [])
    ovs = parse_network(
        "<network><name>o</name><forward mode='bridge'/><bridge name='ovsbr'/>"
        "<virtualport type='openvswitch'/></network>"
    )
    tagged = allocate_port(ovs, port(2, "<vlan><tag id='42'/></vlan>"), [])
    assert tagged.vlan is not None and tagged.vlan.tags == (42,)
