"""Hypothesis strategies for network and network port models libvirt would accept.

Used by the round-trip properties of test_conf_network.py and
test_conf_network_port.py; the tests here check that what they build formats.
"""

from __future__ import annotations

import string
from ipaddress import IPv4Address, IPv6Address

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.conf.macaddr import format_mac
from shared.conf.netdev_bandwidth import Bandwidth, BandwidthRate
from shared.conf.netdev_vlan import NativeVlanMode, Vlan
from shared.conf.netdev_vport import VirtualPort, VPortType
from shared.conf.network import BridgeDef, MacTableManager, NetworkDef, format_network
from shared.conf.network_dns import DnsDef, DnsForwarder, DnsHost, DnsSrv, DnsTxt
from shared.conf.network_forward import (
    FORWARD_MODES,
    DevicePool,
    ForwardDef,
    ForwardDriver,
    ForwardInterface,
    ForwardMode,
    ForwardNat,
)
from shared.conf.network_ip import DhcpHost, DhcpLease, DhcpRange, IPDef, LeaseUnit
from shared.conf.network_port import (
    MacvlanMode,
    NetworkPortDef,
    PlugType,
    PortPlug,
    format_network_port,
)
from shared.conf.network_portgroup import PortGroupDef
from shared.conf.network_route import RouteDef
from shared.conf.pci_address import PciAddress
from shared.conf.xml_metadata import parse_metadata
from shared.conf.xmlsafe import parse_xml

idents = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
# printable text that survives an attribute round trip (no tab/newline normalisation)
texts = st.text(
    alphabet=st.sampled_from(string.ascii_letters + string.digits + " <>&'\"=,.-_/é€"),
    max_size=16,
)
uuids = st.uuids().map(str)
small = st.integers(min_value=1, max_value=10**12)


@st.composite
def macs(draw: st.DrawFn) -> str:
    octets = draw(st.binary(min_size=6, max_size=6))
    return format_mac(bytes([octets[0] & 0xFE, *octets[1:]]))


leases = st.one_of(
    st.none(),
    st.builds(DhcpLease, expiry=st.just(0)),
    st.builds(DhcpLease, expiry=st.integers(120, 10**6), unit=st.just(LeaseUnit.SECONDS)),
    st.builds(DhcpLease, expiry=st.integers(2, 10**5), unit=st.just(LeaseUnit.MINUTES)),
    st.builds(DhcpLease, expiry=st.integers(1, 10**4), unit=st.just(LeaseUnit.HOURS)),
)


@st.composite
def ipv4_defs(draw: st.DrawFn, subnet: int) -> IPDef:
    base = f"10.{subnet // 256}.{subnet % 256}"
    bounds = draw(st.lists(st.tuples(st.integers(2, 254), st.integers(2, 254)), max_size=2))
    ranges = tuple(
        DhcpRange(
            start=IPv4Address(f"{base}.{min(a, b)}"),
            end=IPv4Address(f"{base}.{max(a, b)}"),
            lease=draw(leases),
        )
        for a, b in bounds
    )
    hosts = []
    for _ in range(draw(st.integers(0, 2))):
        mac = draw(st.one_of(st.none(), macs()))
        name = draw(idents) if mac is None else draw(st.one_of(st.none(), idents))
        ip = IPv4Address(f"{base}.{draw(st.integers(2, 254))}")
        hosts.append(DhcpHost(mac=mac, name=name, ip=ip, lease=draw(leases)))
    use_netmask = draw(st.booleans())
    has_dhcp = bool(ranges or hosts)
    return IPDef(
        family=draw(st.sampled_from([None, "ipv4"])),
        address=IPv4Address(f"{base}.1"),
        netmask=IPv4Address("255.255.255.0") if use_netmask else None,
        prefix=0 if use_netmask else 24,
        local_ptr=draw(st.sampled_from([None, True, False])),
        tftp_root=draw(st.one_of(st.none(), st.just("/srv/tftp"))),
        ranges=ranges,
        hosts=tuple(hosts),
        bootp_file=draw(st.one_of(st.none(), idents)) if has_dhcp else None,
    )


@st.composite
def ipv6_defs(draw: st.DrawFn, subnet: int) -> IPDef:
    base = f"fd00:{subnet:x}::"
    lo, hi = sorted(draw(st.tuples(st.integers(1, 0xFFFF), st.integers(1, 0xFFFF))))
    ranges = (
        (DhcpRange(start=IPv6Address(f"{base}9:{lo:x}"), end=IPv6Address(f"{base}9:{hi:x}")),)
        if draw(st.booleans())
        else ()
    )
    hosts = tuple(
        DhcpHost(
            id=draw(st.one_of(st.none(), st.just("0:3:0:1:52:54:0:aa:bb:2"))),
            name=draw(idents),
            ip=IPv6Address(f"{base}{draw(st.integers(2, 0xFFFF)):x}"),
        )
        for _ in range(draw(st.integers(0, 2)))
    )
    return IPDef(
        family="ipv6", address=IPv6Address(f"{base}1"), prefix=64, ranges=ranges, hosts=hosts
    )


@st.composite
def dns_defs(draw: st.DrawFn) -> DnsDef:
    if draw(st.booleans()):
        return DnsDef(enable=draw(st.sampled_from([None, False, True])))
    srvs = []
    for _ in range(draw(st.integers(0, 2))):
        target = draw(st.one_of(st.none(), idents))
        numbers = (
            {
                "port": draw(st.integers(0, 65535)) or 1,
                "priority": draw(st.integers(0, 65535)),
                "weight": draw(st.integers(0, 65535)),
            }
            if target is not None
            else {}
        )
        service = draw(st.from_regex(r"[a-z_][a-z0-9_+*-]{0,8}", fullmatch=True))
        protocol = draw(st.sampled_from(["tcp", "udp", "sctp"]))
        srvs.append(
            DnsSrv(
                service=service,
                protocol=protocol,
                domain=draw(st.one_of(st.none(), idents)),
                target=target,
                **numbers,
            )
        )
    return DnsDef(
        enable=draw(st.sampled_from([None, True])),
        forward_plain_names=draw(st.sampled_from([None, True, False])),
        forwarders=tuple(
            draw(
                st.lists(
                    st.one_of(
                        st.builds(DnsForwarder, addr=st.ip_addresses(v=4)),
                        st.builds(DnsForwarder, domain=idents),
                        st.builds(DnsForwarder, domain=idents, addr=st.ip_addresses(v=6)),
                    ),
                    max_size=2,
                )
            )
        ),
        txts=tuple(draw(st.lists(st.builds(DnsTxt, name=idents, value=texts), max_size=2))),
        srvs=tuple(srvs),
        hosts=tuple(
            draw(
                st.lists(
                    st.builds(
                        DnsHost,
                        ip=st.ip_addresses(),
                        hostnames=st.lists(idents, min_size=1, max_size=2).map(tuple),
                    ),
                    max_size=2,
                )
            )
        ),
    )


@st.composite
def rates(draw: st.DrawFn, *, floor: bool) -> BandwidthRate:
    if floor and draw(st.booleans()):
        return BandwidthRate(floor=draw(small))
    return BandwidthRate(
        average=draw(small),
        peak=draw(st.one_of(st.just(0), small)),
        burst=draw(st.one_of(st.just(0), small)),
        floor=draw(st.one_of(st.just(0), small)) if floor else 0,
    )


@st.composite
def bandwidths(draw: st.DrawFn, *, floor: bool = False) -> Bandwidth | None:
    inbound = draw(st.one_of(st.none(), rates(floor=floor)))
    outbound = draw(st.one_of(st.none(), rates(floor=False)))
    if inbound is None and outbound is None:
        return None
    return Bandwidth(inbound=inbound, outbound=outbound)


@st.composite
def vlans(draw: st.DrawFn) -> Vlan | None:
    if draw(st.booleans()):
        return None
    tags = draw(st.lists(st.integers(0, 4095), min_size=1, max_size=3, unique=True))
    mode = draw(st.sampled_from([None, NativeVlanMode.TAGGED, NativeVlanMode.UNTAGGED]))
    trunk = len(tags) > 1 or draw(st.booleans())
    native = draw(st.sampled_from(tags)) if mode is not None else 0
    return Vlan(tags=tuple(tags), trunk=trunk, native_mode=mode, native_tag=native)


@st.composite
def virtualports(draw: st.DrawFn, *, typed: bool) -> VirtualPort | None:
    if draw(st.booleans()):
        return None
    types = [t for t in VPortType if t is not VPortType.NONE or not typed]
    vtype = draw(st.sampled_from(types))
    maybe = st.booleans()
    fields: dict[str, object] = {}
    if vtype in (VPortType.QBG, VPortType.NONE):
        if draw(maybe):
            fields["managerid"] = draw(st.integers(0, 255))
        if draw(maybe):
            fields["typeid"] = draw(st.integers(0, 0xFFFFFF))
        if draw(maybe):
            fields["typeidversion"] = draw(st.integers(0, 255))
        if draw(maybe):
            fields["instanceid"] = draw(uuids)
    if vtype in (VPortType.OPENVSWITCH, VPortType.MIDONET, VPortType.NONE) and draw(maybe):
        fields["interfaceid"] = draw(uuids)
    if vtype in (VPortType.QBH, VPortType.OPENVSWITCH, VPortType.NONE) and draw(maybe):
        fields["profileid"] = draw(idents)
    return VirtualPort.model_validate({"type": vtype, **fields})


@st.composite
def forwards(draw: st.DrawFn, mode: ForwardMode) -> ForwardDef:
    info = FORWARD_MODES[mode]
    if mode is ForwardMode.NONE:
        return ForwardDef()
    devices = draw(st.lists(idents, max_size=1 if info.layer3 else 3, unique=True))
    interfaces: tuple[ForwardInterface, ...] = ()
    pf = None
    if info.pool is DevicePool.PCI:
        addrs = draw(
            st.lists(
                st.builds(
                    PciAddress,
                    domain=st.integers(0, 0xFFFF),
                    bus=st.integers(1, 0xFF),
                    slot=st.integers(0, 0x1F),
                    function=st.integers(0, 7),
                ),
                max_size=3,
                unique=True,
            )
        )
        interfaces = tuple(ForwardInterface(pci=a) for a in addrs)
    elif info.forward_dev:
        interfaces = tuple(ForwardInterface(dev=d) for d in devices)
    if not info.libvirt_bridge and not interfaces and draw(st.booleans()):
        pf = draw(idents)
    nat = ForwardNat()
    if info.nat:
        low = draw(st.integers(1, 200))
        nat = ForwardNat(
            ipv6=draw(st.sampled_from([None, True, False])),
            address_start=IPv4Address(f"198.51.100.{low}") if draw(st.booleans()) else None,
            address_end=IPv4Address(f"198.51.100.{low + 10}"),
            port_start=1024,
            port_end=draw(st.integers(1024, 65535)),
        )
        if nat.address_start is None:
            nat = nat.model_copy(update={"address_end": None})
        if draw(st.booleans()):
            nat = nat.model_copy(update={"port_start": 0, "port_end": 0})
    return ForwardDef(
        mode=mode,
        managed=draw(st.booleans()) if mode is ForwardMode.HOSTDEV else False,
        driver=draw(st.sampled_from([None, ForwardDriver.KVM, ForwardDriver.VFIO])),
        interfaces=interfaces,
        pf=pf,
        nat=nat,
    )


@st.composite
def metadata(draw: st.DrawFn) -> str | None:
    count = draw(st.integers(0, 3))
    if count == 0:
        return None
    items = "".join(
        f"<m{i}:item xmlns:m{i}='urn:example:{i}' n='{i}'>"
        f"{draw(texts).replace('&', '&amp;').replace('<', '&lt;')}</m{i}:item>"
        for i in range(count)
    )
    return parse_metadata(parse_xml(f"<metadata>{items}</metadata>"))


@st.composite
def networks(draw: st.DrawFn) -> NetworkDef:
    mode = draw(st.sampled_from(list(ForwardMode)))
    info = FORWARD_MODES[mode]
    subnets = draw(st.lists(st.integers(0, 65535), max_size=3, unique=True))
    ips = [draw(st.one_of(ipv4_defs(s), ipv6_defs(s))) for s in subnets]
    if info.layer3 and not ips:
        ips.append(draw(ipv4_defs(7)))
    routes = []
    for ip in ips[:1]:
        if ip.is_ipv4:
            gateway = IPv4Address(int(ip.address) + 200)
            routes.append(RouteDef(address=IPv4Address("192.168.77.0"), prefix=24, gateway=gateway))
        else:
            gateway6 = IPv6Address(int(ip.address) + 200)
            routes.append(
                RouteDef(family="ipv6", address=IPv6Address("fd99::"), prefix=64, gateway=gateway6)
            )
    forward = draw(forwards(mode))
    bridge = BridgeDef()
    if info.libvirt_bridge:
        bridge = BridgeDef(
            name=draw(st.one_of(st.none(), idents)),
            zone=draw(st.one_of(st.none(), idents)),
            stp=draw(st.booleans()),
            delay=draw(st.integers(0, 30)),
            mac_table_manager=draw(st.sampled_from([None, *list(MacTableManager)[1:]])),
        )
    elif info.bridge_name:
        bridge = BridgeDef(
            name=draw(idents) if not (forward.interfaces or forward.pf) else None,
            mac_table_manager=draw(st.sampled_from([None, MacTableManager.LIBVIRT])),
        )
    groups = draw(
        st.lists(
            st.builds(
                PortGroupDef,
                name=idents,
                default=st.booleans(),
                trust_guest_rx_filters=st.sampled_from([None, True, False]),
                virtualport=virtualports(typed=False),
                bandwidth=bandwidths(),
                vlan=vlans(),
            ),
            max_size=2,
        )
    )
    return NetworkDef(
        name=draw(idents),
        uuid=draw(uuids),
        metadata=draw(metadata()),
        ipv6=draw(st.booleans()),
        trust_guest_rx_filters=draw(st.sampled_from([None, True, False])),
        forward=forward,
        bridge=bridge,
        mtu=draw(st.integers(0, 9000)) if info.libvirt_bridge else 0,
        mac=draw(st.one_of(st.none(), macs())),
        domain=draw(st.one_of(st.none(), idents)),
        domain_local_only=draw(st.sampled_from([None, True, False])),
        dns=draw(dns_defs()),
        vlan=draw(vlans()),
        bandwidth=draw(bandwidths()),
        isolated_port=draw(st.sampled_from([None, True, False])),
        ips=tuple(ips),
        routes=tuple(routes),
        virtualport=draw(virtualports(typed=True)),
        portgroups=tuple(groups),
        dnsmasq_options=tuple(draw(st.lists(texts, max_size=2))),
    )


@st.composite
def plugs(draw: st.DrawFn) -> PortPlug:
    plug_type = draw(st.sampled_from(list(PlugType)))
    if plug_type in (PlugType.NETWORK, PlugType.BRIDGE):
        manager = draw(st.sampled_from([None, MacTableManager.KERNEL, MacTableManager.LIBVIRT]))
        return PortPlug(type=plug_type, bridge=draw(idents), mac_table_manager=manager)
    if plug_type is PlugType.DIRECT:
        return PortPlug(type=plug_type, dev=draw(idents), mode=draw(st.sampled_from(MacvlanMode)))
    if plug_type is PlugType.HOSTDEV_PCI:
        return PortPlug(
            type=plug_type,
            managed=draw(st.sampled_from([None, True, False])),
            driver=draw(st.sampled_from([None, ForwardDriver.KVM, ForwardDriver.VFIO])),
            address=PciAddress(domain=draw(st.integers(0, 0xFFFF)), bus=draw(st.integers(1, 255))),
        )
    return PortPlug()


@st.composite
def network_ports(draw: st.DrawFn) -> NetworkPortDef:
    bandwidth = draw(bandwidths(floor=True))
    return NetworkPortDef(
        uuid=draw(uuids),
        owner_name=draw(texts.filter(lambda t: t.strip() != "" and t == t.strip())),
        owner_uuid=draw(uuids),
        group=draw(st.one_of(st.none(), idents)),
        mac=draw(macs()),
        virtualport=draw(virtualports(typed=False)),
        bandwidth=bandwidth,
        class_id=draw(st.integers(0, 2**32 - 1)) if bandwidth is not None else 0,
        vlan=draw(vlans()),
        isolated_port=draw(st.sampled_from([None, True, False])),
        trust_guest_rx_filters=draw(st.sampled_from([None, True, False])),
        plug=draw(plugs()),
    )


@given(networks())
@settings(max_examples=20, deadline=None)
def test_generated_networks_format(net: NetworkDef) -> None:
    assert format_network(net).startswith("<network")


@given(network_ports())
@settings(max_examples=20, deadline=None)
def test_generated_ports_format(port: NetworkPortDef) -> None:
    assert format_network_port(port).startswith("<networkport>\n")
