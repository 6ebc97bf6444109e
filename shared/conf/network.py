"""The virtual network kind: libvirt's ``<network>`` XML (network_conf.c) <-> ``NetworkDef``.

The parts live in their own modules (``network_ip``, ``network_dns``,
``network_forward`` with the forward-mode table, ``network_route``,
``network_portgroup`` and the ``netdev_*`` elements shared with network
ports); this module holds the document itself, the checks that tie the
parts together and the ``dnsmasq:options`` namespace the network driver
registers.  As in libvirt 9.0.0, ``<title>`` and ``<description>`` are not
part of a network and are dropped.  A few values libvirt prints without
escaping (a DHCP host's name, the domain name, a portgroup's name) are
escaped here: for them libvirt would write a document that does not parse.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.conf.macaddr import format_mac, is_multicast, parse_mac
from shared.conf.netdev_bandwidth import Bandwidth, format_bandwidth, parse_bandwidth
from shared.conf.netdev_vlan import Vlan, format_vlan, parse_vlan
from shared.conf.netdev_vport import VirtualPort, format_virtualport, parse_virtualport
from shared.conf.network_dns import DnsDef, format_dns, parse_dns
from shared.conf.network_forward import (
    FORWARD_MODES,
    ForwardDef,
    format_forward,
    parse_forward,
)
from shared.conf.network_ip import IPDef, format_ip_element, parse_ip_element
from shared.conf.network_portgroup import PortGroupDef, format_portgroup, parse_portgroup
from shared.conf.network_route import RouteDef, format_route, parse_route, unreachable_gateway
from shared.conf.socketaddr import mask_by_prefix, same_family
from shared.conf.uuid import generate_uuid, parse_uuid
from shared.conf.xml_metadata import canonical_metadata, format_metadata, parse_metadata
from shared.conf.xmlprops import (
    UINT_MAX,
    ULONG_MAX,
    c_unsigned,
    every,
    first_children,
    prop,
    prop_tristate,
    string_of,
    xpath_attr,
)
from shared.conf.xmlsafe import parse_xml
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, xml_detail, xml_error

_DOMAIN = ErrorDomain.NETWORK

#: The namespace of the network driver's ``<dnsmasq:options>`` (always written
#: with the ``dnsmasq`` prefix, whatever prefix the input used).
DNSMASQ_NS = "http://libvirt.org/schemas/network/dnsmasq/1.0"


class NetworkXMLFlags(enum.IntFlag):
    """virNetworkXMLFlags."""

    INACTIVE = 1 << 0  # the persistent form: no live connection counts, no pf's VFs


NO_FLAGS = NetworkXMLFlags(0)


class MacTableManager(enum.StrEnum):
    """virNetworkBridgeMACTableManager; DEFAULT is refused in XML and never written."""

    DEFAULT = "default"
    KERNEL = "kernel"
    LIBVIRT = "libvirt"


class BridgeDef(BaseModel):
    """``<bridge>``: the bridge device and how libvirt runs it."""

    model_config = ConfigDict(frozen=True)

    name: str | None = None
    zone: str | None = None
    stp: bool = True
    delay: int = 0
    mac_table_manager: MacTableManager | None = None


class NetworkLive(BaseModel):
    """Runtime counts the live (not INACTIVE) XML shows; kept by the network service."""

    connections: int = 0
    interface_connections: dict[str, int] = Field(default_factory=dict)


class NetworkDef(BaseModel):
    """What a ``<network>`` document says, as libvirt keeps it.

    Absent optional values are None (or 0 where libvirt uses 0 for "unset":
    ``mtu``); ``uuid`` is generated when the document has none, as libvirt does.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    uuid: str
    metadata: str | None = None
    ipv6: bool = False
    trust_guest_rx_filters: bool | None = None
    forward: ForwardDef = ForwardDef()
    bridge: BridgeDef = BridgeDef()
    mtu: int = 0
    mac: str | None = None
    domain: str | None = None
    domain_local_only: bool | None = None
    dns: DnsDef = DnsDef()
    vlan: Vlan | None = None
    bandwidth: Bandwidth | None = None
    isolated_port: bool | None = None
    ips: tuple[IPDef, ...] = ()
    routes: tuple[RouteDef, ...] = ()
    virtualport: VirtualPort | None = None
    portgroups: tuple[PortGroupDef, ...] = ()
    dnsmasq_options: tuple[str, ...] = ()

    @field_validator("metadata")
    @classmethod
    def _canonical_metadata(cls, value: str | None) -> str | None:
        # kept in the form parse_network gives it, whoever builds the model
        return None if value is None else canonical_metadata(value)

    def ips_of(self, *, ipv6: bool) -> list[IPDef]:
        """The ``<ip>`` elements of one family, in document order."""
        return [ip for ip in self.ips if ip.is_ipv6 == ipv6]

    def portgroup(self, name: str | None) -> PortGroupDef | None:
        """virPortGroupFindByName: the named portgroup, or the default one for None."""
        for group in self.portgroups:
            if (group.name == name) if name is not None else group.default:
                return group
        return None


def _parse_bridge(network: str, node: etree._Element | None) -> tuple[BridgeDef, bool]:
    """The bridge and whether ``stp`` was written (libvirt refuses it in some modes)."""
    stp_text = xpath_attr(node, "stp")
    delay = 0
    delay_text = xpath_attr(node, "delay")
    if delay_text is not None:
        parsed = c_unsigned(delay_text, limit=ULONG_MAX, positive=True)
        if parsed is None:
            raise xml_error(f"Invalid delay value in network '{network}'", _DOMAIN)
        delay = parsed
    manager: MacTableManager | None = None
    manager_text = xpath_attr(node, "macTableManager")
    if manager_text is not None:
        if manager_text not in (MacTableManager.KERNEL, MacTableManager.LIBVIRT):
            raise xml_error(
                f"Invalid macTableManager setting '{manager_text}' in network '{network}'",
                _DOMAIN,
            )
        manager = MacTableManager(manager_text)
    bridge = BridgeDef(
        name=xpath_attr(node, "name"),
        zone=xpath_attr(node, "zone"),
        stp=stp_text != "off",
        delay=delay,
        mac_table_manager=manager,
    )
    return bridge, stp_text is not None


def _parse_mac(network: str, node: etree._Element | None) -> str | None:
    text = xpath_attr(node, "address")
    if text is None:
        return None
    mac = parse_mac(text)
    if mac is None:
        raise xml_error(f"Invalid bridge mac address '{text}' in network '{network}'", _DOMAIN)
    if is_multicast(mac):
        raise xml_error(
            f"Invalid multicast bridge mac address '{text}' in network '{network}'", _DOMAIN
        )
    return format_mac(mac)


def _parse_mtu(network: str, root: etree._Element) -> int:
    # string(./mtu/@size): the first <mtu> that has a size
    text = next((m.get("size") for m in every(root, "mtu") if m.get("size") is not None), None)
    if not text:
        return 0
    mtu = c_unsigned(str(text), limit=UINT_MAX)
    if mtu is None:
        raise xml_error(f"Invalid mtu size '{text}' in network '{network}'", _DOMAIN)
    return mtu


def _parse_uuid(node: etree._Element | None) -> str:
    text = string_of(node)
    if text is None:
        return generate_uuid()
    uuid = parse_uuid(text)
    if uuid is None:
        raise VirtError(ErrorCode.INTERNAL_ERROR, "malformed uuid element", _DOMAIN)
    return uuid


def _parse_name(node: etree._Element | None) -> str:
    name = string_of(node)
    if name is None:
        raise VirtError(ErrorCode.NO_NAME, "missing name information", _DOMAIN)
    if "/" in name:
        raise xml_detail("invalid char in name: /", ErrorDomain.XML)
    return name


def _check_routes(network: str, ips: tuple[IPDef, ...], routes: tuple[RouteDef, ...]) -> None:
    """Every route's gateway must be on the subnet of one of the network's addresses."""
    for route in routes:
        for ip in ips:
            if not same_family(route.gateway, ip.address):
                continue
            prefix = ip.prefix_length()
            net = mask_by_prefix(ip.address, prefix)
            if net is not None and net == mask_by_prefix(route.gateway, prefix):
                break
        else:
            raise unreachable_gateway(network, route.gateway)


def _check_forward_mode(net: NetworkDef, stp_given: bool) -> None:
    """The checks libvirt makes between the forward mode and the rest of the network."""
    mode, fwd, bridge = net.forward.mode, net.forward, net.bridge
    info = FORWARD_MODES[mode]
    if info.layer3:
        if not net.ips:
            raise xml_error(
                f"{mode} forwarding requested, but no IP address provided for network '{net.name}'",
                _DOMAIN,
            )
        if len(fwd.interfaces) > 1:
            raise xml_error(
                f"multiple forwarding interfaces specified for network '{net.name}', "
                "only one is supported",
                _DOMAIN,
            )
        if fwd.interfaces and not info.forward_dev:
            raise xml_error(
                f"forward dev not allowed for network '{net.name}' with forward mode='{mode}'",
                _DOMAIN,
            )
    if info.libvirt_bridge:
        return
    if not info.bridge_name:
        for given, what in (
            (bridge.name, "bridge name"),
            (bridge.zone, "bridge zone"),
            (bridge.mac_table_manager, "bridge macTableManager setting"),
        ):
            if given is not None:
                raise xml_error(
                    f"{what} not allowed in {mode} mode (network '{net.name}')", _DOMAIN
                )
    if bridge.delay or stp_given or bridge.zone is not None:
        raise xml_error(
            "bridge delay/stp/zone options only allowed in route, nat, and isolated mode, "
            f"not in {mode} (network '{net.name}')",
            _DOMAIN,
        )
    if bridge.name is not None and (fwd.interfaces or fwd.pf is not None):
        raise xml_error(
            f"A network with forward mode='{mode}' can specify a bridge name or a forward dev, "
            f"but not both (network '{net.name}')",
            _DOMAIN,
        )


def _parse_dnsmasq_options(root: etree._Element) -> tuple[str, ...]:
    values: list[str] = []
    for options in root.iterchildren(f"{{{DNSMASQ_NS}}}options"):
        for option in options.iterchildren(f"{{{DNSMASQ_NS}}}option"):
            value = prop(option, "value")
            if value is None:
                raise VirtError(
                    ErrorCode.INTERNAL_ERROR, "No dnsmasq options value specified", _DOMAIN
                )
            values.append(value)
    return tuple(values)


def parse_network(xml: str | bytes) -> NetworkDef:
    """Parse a ``<network>`` document (virNetworkDefParse with the network driver's
    dnsmasq namespace); raises ``VirtError`` as libvirt would refuse it."""
    root = parse_xml(xml, "network", domain=_DOMAIN)
    children = first_children(root)
    name = _parse_name(children.get("name"))
    uuid = _parse_uuid(children.get("uuid"))
    ipv6_text = xpath_attr(root, "ipv6")
    if ipv6_text is not None and ipv6_text not in ("yes", "no"):
        raise xml_error(f"Invalid ipv6 setting '{ipv6_text}' in network '{name}'", _DOMAIN)
    trust = prop_tristate(root, "trustGuestRxFilters")
    domain_node = children.get("domain")
    domain = prop(domain_node, "name")
    local_only = prop_tristate(domain_node, "localOnly")
    bandwidth_node = children.get("bandwidth")
    bandwidth = None
    if bandwidth_node is not None:
        bandwidth = parse_bandwidth(bandwidth_node, allow_floor=False)[0]
    vlan_node = children.get("vlan")
    vlan = parse_vlan(vlan_node) if vlan_node is not None else None
    isolated = prop_tristate(children.get("port"), "isolated")
    bridge, stp_given = _parse_bridge(name, children.get("bridge"))
    mac = _parse_mac(name, children.get("mac"))
    mtu = _parse_mtu(name, root)
    dns_node = children.get("dns")
    dns = parse_dns(name, dns_node) if dns_node is not None else DnsDef()
    vport_node = children.get("virtualport")
    vport = parse_virtualport(vport_node, require_type=True) if vport_node is not None else None
    portgroups = tuple(parse_portgroup(node) for node in every(root, "portgroup"))
    ips = tuple(parse_ip_element(name, node) for node in every(root, "ip"))
    routes = tuple(parse_route(name, node) for node in every(root, "route"))
    _check_routes(name, ips, routes)
    forward_node = children.get("forward")
    forward = parse_forward(name, forward_node) if forward_node is not None else ForwardDef()
    net = NetworkDef(
        name=name,
        uuid=uuid,
        ipv6=ipv6_text == "yes",
        trust_guest_rx_filters=trust,
        forward=forward,
        bridge=bridge,
        mtu=mtu,
        mac=mac,
        domain=domain,
        domain_local_only=local_only,
        dns=dns,
        vlan=vlan,
        bandwidth=bandwidth,
        isolated_port=isolated,
        ips=ips,
        routes=routes,
        virtualport=vport,
        portgroups=portgroups,
    )
    _check_forward_mode(net, stp_given)
    if mtu and not FORWARD_MODES[forward.mode].libvirt_bridge:
        raise xml_error(
            "mtu size only allowed in open, route, nat, and isolated mode, "
            f"not in {forward.mode} (network '{name}')",
            _DOMAIN,
        )
    metadata_node = children.get("metadata")
    metadata = parse_metadata(metadata_node) if metadata_node is not None else None
    dnsmasq_options = _parse_dnsmasq_options(root)
    if metadata is None and not dnsmasq_options:
        return net  # both as the constructor left them: no copy needed
    # the metadata is canonical already: set past the field's validator
    return net.model_copy(update={"metadata": metadata, "dnsmasq_options": dnsmasq_options})


def _format_bridge(w: XmlWriter, net: NetworkDef) -> None:
    bridge = net.bridge
    owned = FORWARD_MODES[net.forward.mode].libvirt_bridge
    if not (owned or bridge.name is not None or bridge.mac_table_manager is not None):
        return
    # libvirt prints the delay as a signed long, so that a delay past LONG_MAX
    # comes out negative and is refused when read back; written unsigned here
    delay = bridge.delay
    w.leaf(
        "bridge",
        [
            ("name", bridge.name),
            ("zone", bridge.zone),
            ("stp", ("on" if bridge.stp else "off") if owned else None),
            ("delay", delay if owned else None),
            ("macTableManager", bridge.mac_table_manager),
        ],
    )


def _format_dnsmasq_options(w: XmlWriter, options: tuple[str, ...]) -> None:
    if not options:
        return
    w.open("dnsmasq:options")
    for value in options:
        w.leaf("dnsmasq:option", [("value", value)])
    w.close("dnsmasq:options")


def format_network(
    net: NetworkDef,
    flags: NetworkXMLFlags = NO_FLAGS,
    *,
    live: NetworkLive | None = None,
) -> str:
    """The ``<network>`` document libvirt writes for ``net`` (virNetworkDefFormat).

    ``live`` holds the connection counts shown unless ``flags`` has INACTIVE.
    """
    inactive = NetworkXMLFlags.INACTIVE in flags
    counts: Mapping[str, int] | None = None
    connections = 0
    if live is not None and not inactive:
        counts, connections = live.interface_connections, live.connections
    w = XmlWriter()
    w.open(
        "network",
        [
            ("xmlns:dnsmasq", DNSMASQ_NS if net.dnsmasq_options else None),
            ("connections", connections or None),
            ("ipv6", "yes" if net.ipv6 else None),
            ("trustGuestRxFilters", net.trust_guest_rx_filters),
        ],
    )
    w.text("name", net.name)
    w.text("uuid", net.uuid)
    format_metadata(w, net.metadata)
    format_forward(w, net.forward, inactive=inactive, connections=counts)
    _format_bridge(w, net)
    if net.mtu:
        w.leaf("mtu", [("size", net.mtu)])
    if net.mac is not None:
        w.leaf("mac", [("address", net.mac)])
    if net.domain is not None:
        w.leaf("domain", [("name", net.domain), ("localOnly", net.domain_local_only)])
    format_dns(w, net.dns)
    format_vlan(w, net.vlan)
    format_bandwidth(w, net.bandwidth)
    if net.isolated_port is not None:
        w.leaf("port", [("isolated", net.isolated_port)])
    for ip in net.ips:
        format_ip_element(w, ip)
    for route in net.routes:
        format_route(w, route)
    format_virtualport(w, net.virtualport)
    for group in net.portgroups:
        format_portgroup(w, group)
    _format_dnsmasq_options(w, net.dnsmasq_options)
    w.close("network")
    return w.getvalue()
