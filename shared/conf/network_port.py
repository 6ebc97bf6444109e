"""The network port kind: libvirt's ``<networkport>`` XML (virnetworkportdef.c) <-> model.

A port is a guest interface's attachment to a network.  How it is plugged
(``<plug type=...>``) decides which attributes apply; ``PLUG_TYPES`` holds
that, read by parse and format alike.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.macaddr import format_mac, parse_mac
from shared.conf.netdev_bandwidth import Bandwidth, format_bandwidth, parse_bandwidth
from shared.conf.netdev_vlan import Vlan, format_vlan, parse_vlan
from shared.conf.netdev_vport import VirtualPort, format_virtualport, parse_virtualport
from shared.conf.network import MacTableManager
from shared.conf.network_forward import ForwardDriver
from shared.conf.pci_address import PciAddress, format_pci_address, parse_pci_address
from shared.conf.uuid import parse_uuid
from shared.conf.xmlprops import (
    first,
    member_of,
    prop,
    prop_enum,
    prop_tristate,
    string_of,
    xpath_attr,
)
from shared.conf.xmlsafe import parse_xml
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, xml_error

_DOMAIN = ErrorDomain.NETWORK


class PlugType(enum.StrEnum):
    """virNetworkPortPlugType."""

    NONE = "none"
    NETWORK = "network"
    BRIDGE = "bridge"
    DIRECT = "direct"
    HOSTDEV_PCI = "hostdev-pci"


class MacvlanMode(enum.StrEnum):
    """virNetDevMacVLanMode: how a direct (macvtap) port talks to its device."""

    VEPA = "vepa"
    PRIVATE = "private"
    BRIDGE = "bridge"
    PASSTHROUGH = "passthrough"


@dataclass(frozen=True)
class PlugTypeInfo:
    """What a plug type carries."""

    bridge: bool  # a bridge name (and its MAC table manager)
    direct: bool  # a host device and a macvtap mode
    pci: bool  # a PCI device (managed, driver, address)


PLUG_TYPES: dict[PlugType, PlugTypeInfo] = {
    PlugType.NONE: PlugTypeInfo(bridge=False, direct=False, pci=False),
    PlugType.NETWORK: PlugTypeInfo(bridge=True, direct=False, pci=False),
    PlugType.BRIDGE: PlugTypeInfo(bridge=True, direct=False, pci=False),
    PlugType.DIRECT: PlugTypeInfo(bridge=False, direct=True, pci=False),
    PlugType.HOSTDEV_PCI: PlugTypeInfo(bridge=False, direct=False, pci=True),
}


class PortPlug(BaseModel):
    """``<plug>``; the fields of the other plug types stay unset."""

    model_config = ConfigDict(frozen=True)

    type: PlugType = PlugType.NONE
    bridge: str | None = None
    mac_table_manager: MacTableManager | None = None
    dev: str | None = None
    mode: MacvlanMode = MacvlanMode.VEPA
    managed: bool | None = None
    driver: ForwardDriver | None = None
    address: PciAddress | None = None


class NetworkPortDef(BaseModel):
    """What a ``<networkport>`` document says."""

    model_config = ConfigDict(frozen=True)

    uuid: str
    owner_name: str
    owner_uuid: str
    group: str | None = None
    mac: str
    virtualport: VirtualPort | None = None
    bandwidth: Bandwidth | None = None
    class_id: int = 0
    vlan: Vlan | None = None
    isolated_port: bool | None = None
    trust_guest_rx_filters: bool | None = None
    plug: PortPlug = PortPlug()


def _internal(message: str) -> VirtError:
    return VirtError(ErrorCode.INTERNAL_ERROR, message, _DOMAIN)


def _uuid(text: str | None, missing: str) -> str:
    if text is None:
        raise _internal(missing)
    uuid = parse_uuid(text)
    if uuid is None:
        raise _internal(f"Unable to parse UUID '{text}'")
    return uuid


def _parse_plug(node: etree._Element | None) -> PortPlug:
    plug_type = prop_enum(node, "type", PlugType) or PlugType.NONE
    info = PLUG_TYPES[plug_type]
    if node is None or plug_type is PlugType.NONE:
        return PortPlug()
    if info.bridge:
        bridge = prop(node, "bridge")
        if bridge is None:
            raise xml_error("Missing network port bridge name", _DOMAIN)
        manager_text = prop(node, "macTableManager")
        manager = None
        if manager_text is not None:
            if manager_text not in (MacTableManager.KERNEL, MacTableManager.LIBVIRT):
                raise xml_error(
                    f"Invalid macTableManager setting '{manager_text}' in network port", _DOMAIN
                )
            manager = MacTableManager(manager_text)
        return PortPlug(type=plug_type, bridge=bridge, mac_table_manager=manager)
    if info.direct:
        dev = prop(node, "dev")
        if dev is None:
            raise xml_error("Missing network port link device name", _DOMAIN)
        mode_text = prop(node, "mode")
        mode = MacvlanMode.VEPA
        if mode_text is not None:
            given = member_of(MacvlanMode, mode_text)
            if given is None:
                raise xml_error(f"Invalid mode setting '{mode_text}' in network port", _DOMAIN)
            mode = given
        return PortPlug(type=plug_type, dev=dev, mode=mode)
    managed = prop_tristate(node, "managed")
    driver_text = xpath_attr(first(node, "driver"), "name")
    driver = None
    if driver_text is not None:
        if driver_text not in (ForwardDriver.KVM, ForwardDriver.VFIO):
            raise xml_error("Missing network port driver name", _DOMAIN)
        driver = ForwardDriver(driver_text)
    address_node = first(node, "address")
    if address_node is None:
        raise xml_error("Missing network port PCI address", _DOMAIN)
    return PortPlug(
        type=plug_type, managed=managed, driver=driver, address=parse_pci_address(address_node)
    )


def parse_network_port(xml: str | bytes) -> NetworkPortDef:
    """virNetworkPortDefParse; raises ``VirtError`` as libvirt would refuse the document."""
    root = parse_xml(xml, "networkport", domain=_DOMAIN)
    uuid = _uuid(string_of(first(root, "uuid")), "network port has no uuid")
    owner = first(root, "owner")
    owner_name = string_of(first(owner, "name"))
    if owner_name is None:
        raise _internal("network port has no owner name")
    owner_uuid = _uuid(string_of(first(owner, "uuid")), "network port has no owner UUID")
    group = string_of(first(root, "group"))
    vport_node = first(root, "virtualport")
    vport = parse_virtualport(vport_node) if vport_node is not None else None
    mac_text = xpath_attr(first(root, "mac"), "address")
    if mac_text is None:
        raise _internal("network port has no mac")
    mac = parse_mac(mac_text)
    if mac is None:
        raise _internal(f"Unable to parse MAC '{mac_text}'")
    bandwidth, class_id = None, None
    bandwidth_node = first(root, "bandwidth")
    if bandwidth_node is not None:
        # whether the port may use a floor is only known when it is plugged
        bandwidth, class_id = parse_bandwidth(bandwidth_node, allow_floor=True, allow_class_id=True)
    vlan_node = first(root, "vlan")
    return NetworkPortDef(
        uuid=uuid,
        owner_name=owner_name,
        owner_uuid=owner_uuid,
        group=group,
        mac=format_mac(mac),
        virtualport=vport,
        bandwidth=bandwidth,
        class_id=class_id or 0,
        vlan=parse_vlan(vlan_node) if vlan_node is not None else None,
        isolated_port=prop_tristate(first(root, "port"), "isolated"),
        trust_guest_rx_filters=prop_tristate(first(root, "rxfilters"), "trustGuest"),
        plug=_parse_plug(first(root, "plug")),
    )


def _format_plug(w: XmlWriter, plug: PortPlug) -> None:
    if plug.type is PlugType.NONE:
        return
    info = PLUG_TYPES[plug.type]
    if info.bridge:
        w.leaf(
            "plug",
            [
                ("type", plug.type),
                ("bridge", plug.bridge),
                ("macTableManager", plug.mac_table_manager),
            ],
        )
    elif info.direct:
        w.leaf("plug", [("type", plug.type), ("dev", plug.dev), ("mode", plug.mode)])
    else:
        w.open("plug", [("type", plug.type), ("managed", plug.managed)])
        if plug.driver is not None and plug.driver is not ForwardDriver.DEFAULT:
            w.leaf("driver", [("name", plug.driver)])
        format_pci_address(w, plug.address or PciAddress(), with_type=False)
        w.close("plug")


def format_network_port(port: NetworkPortDef) -> str:
    """The ``<networkport>`` document libvirt writes for ``port``."""
    w = XmlWriter()
    w.open("networkport")
    w.text("uuid", port.uuid)
    w.open("owner")
    w.text("name", port.owner_name)
    w.text("uuid", port.owner_uuid)
    w.close("owner")
    w.text("group", port.group)
    w.leaf("mac", [("address", port.mac)])
    format_virtualport(w, port.virtualport)
    format_bandwidth(w, port.bandwidth, port.class_id)
    format_vlan(w, port.vlan)
    if port.isolated_port is not None:
        w.leaf("port", [("isolated", port.isolated_port)])
    if port.trust_guest_rx_filters is not None:
        w.leaf("rxfilters", [("trustGuest", port.trust_guest_rx_filters)])
    _format_plug(w, port.plug)
    w.close("networkport")
    return w.getvalue()
