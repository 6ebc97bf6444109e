"""A network's ``<portgroup>`` elements (network_conf.c)."""

from __future__ import annotations

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.netdev_bandwidth import Bandwidth, format_bandwidth, parse_bandwidth
from shared.conf.netdev_vlan import Vlan, format_vlan, parse_vlan
from shared.conf.netdev_vport import VirtualPort, format_virtualport, parse_virtualport
from shared.conf.xmlprops import first, prop_tristate, xpath_attr
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorDomain, xml_error


class PortGroupDef(BaseModel):
    """Settings a guest interface picks up by naming the portgroup (or by default)."""

    model_config = ConfigDict(frozen=True)

    name: str
    default: bool = False
    trust_guest_rx_filters: bool | None = None
    virtualport: VirtualPort | None = None
    bandwidth: Bandwidth | None = None
    vlan: Vlan | None = None


def parse_portgroup(node: etree._Element) -> PortGroupDef:
    """virNetworkPortGroupParseXML (``default`` is true only for "yes", any case)."""
    name = xpath_attr(node, "name")
    if name is None:
        raise xml_error("Missing required name attribute in portgroup", ErrorDomain.NETWORK)
    default = (xpath_attr(node, "default") or "").lower() == "yes"
    trust = prop_tristate(node, "trustGuestRxFilters")
    vport_node = first(node, "virtualport")
    bandwidth_node = first(node, "bandwidth")
    vlan_node = first(node, "vlan")
    return PortGroupDef(
        name=name,
        default=default,
        trust_guest_rx_filters=trust,
        virtualport=parse_virtualport(vport_node) if vport_node is not None else None,
        bandwidth=(
            parse_bandwidth(bandwidth_node, allow_floor=False)[0]
            if bandwidth_node is not None
            else None
        ),
        vlan=parse_vlan(vlan_node) if vlan_node is not None else None,
    )


def format_portgroup(w: XmlWriter, group: PortGroupDef) -> None:
    """virPortGroupDefFormat: vlan, virtualport, bandwidth; always an open/close pair."""
    w.open(
        "portgroup",
        [
            ("name", group.name),
            ("default", "yes" if group.default else None),
            ("trustGuestRxFilters", group.trust_guest_rx_filters),
        ],
    )
    format_vlan(w, group.vlan)
    format_virtualport(w, group.virtualport)
    format_bandwidth(w, group.bandwidth)
    w.close("portgroup")
