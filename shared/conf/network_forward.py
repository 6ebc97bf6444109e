"""A network's ``<forward>`` element and the one table of forward-mode behaviour.

``FORWARD_MODES`` says, per mode, what libvirt does with a network of that
mode: whether it creates and owns a bridge (and so writes stp/delay, allows
an mtu and bandwidth floors), whether it forwards at layer 3 (an ``<ip>`` is
required, at most one forward device), which sub-elements apply, and what
the pool of forward devices holds.  The parser, the formatter and the
network service read it; nothing else tests the mode.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.pci_address import PciAddress, format_pci_address, parse_pci_address
from shared.conf.socketaddr import check_range, format_ip, try_parse_ip
from shared.conf.xmlprops import (
    UINT_MAX,
    c_unsigned,
    every,
    first,
    member_of,
    prop,
    prop_tristate,
    xpath_attr,
)
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, xml_detail, xml_error

_DOMAIN = ErrorDomain.NETWORK


class ForwardMode(enum.StrEnum):
    """virNetworkForwardType; NONE is an isolated network (no ``<forward>``)."""

    NONE = "none"
    NAT = "nat"
    ROUTE = "route"
    OPEN = "open"
    BRIDGE = "bridge"
    PRIVATE = "private"
    VEPA = "vepa"
    PASSTHROUGH = "passthrough"
    HOSTDEV = "hostdev"


class DevicePool(enum.StrEnum):
    """What a mode's forward devices are."""

    NONE = "none"  # the mode uses no pool of devices
    NETDEV = "netdev"  # host network devices (macvtap, or the uplink of a libvirt bridge)
    PCI = "pci"  # PCI devices (VFs) assigned to guests


@dataclass(frozen=True)
class ForwardModeInfo:
    """The behaviour of one forward mode."""

    #: libvirt creates and owns the bridge (with dnsmasq and firewall rules):
    #: stp/delay/zone apply, an mtu may be set, bandwidth floors are supported.
    libvirt_bridge: bool
    #: layer-3 forwarding: an ``<ip>`` is required, at most one forward device.
    layer3: bool
    #: a forward device may be named (an open network forwards everywhere).
    forward_dev: bool
    #: ``<bridge name=...>`` may be given (for mode bridge: an existing host bridge).
    bridge_name: bool
    #: ``<nat>`` applies.
    nat: bool
    #: what ``<interface>``/``<address>``/``<pf>`` name.
    pool: DevicePool


# columns: libvirt_bridge, layer3, forward_dev, bridge_name, nat, pool
FORWARD_MODES: dict[ForwardMode, ForwardModeInfo] = {
    ForwardMode.NONE: ForwardModeInfo(True, False, False, True, False, DevicePool.NONE),
    ForwardMode.NAT: ForwardModeInfo(True, True, True, True, True, DevicePool.NETDEV),
    ForwardMode.ROUTE: ForwardModeInfo(True, True, True, True, False, DevicePool.NETDEV),
    ForwardMode.OPEN: ForwardModeInfo(True, True, False, True, False, DevicePool.NONE),
    ForwardMode.BRIDGE: ForwardModeInfo(False, False, True, True, False, DevicePool.NETDEV),
    ForwardMode.PRIVATE: ForwardModeInfo(False, False, True, False, False, DevicePool.NETDEV),
    ForwardMode.VEPA: ForwardModeInfo(False, False, True, False, False, DevicePool.NETDEV),
    ForwardMode.PASSTHROUGH: ForwardModeInfo(False, False, True, False, False, DevicePool.NETDEV),
    ForwardMode.HOSTDEV: ForwardModeInfo(False, False, True, False, False, DevicePool.PCI),
}


class ForwardDriver(enum.StrEnum):
    """virNetworkForwardDriverName; DEFAULT is never written."""

    DEFAULT = "default"
    KVM = "kvm"
    VFIO = "vfio"


class ForwardInterface(BaseModel):
    """One device of the forward pool: a network device or a PCI device."""

    model_config = ConfigDict(frozen=True)

    dev: str | None = None
    pci: PciAddress | None = None


class ForwardNat(BaseModel):
    """``<nat>``: the SNAT address range, the port range, IPv6 NAT; 0 ports = unset."""

    model_config = ConfigDict(frozen=True)

    ipv6: bool | None = None
    address_start: IPv4Address | None = None
    address_end: IPv4Address | None = None
    port_start: int = 0
    port_end: int = 0

    def is_empty(self) -> bool:
        return (
            self.ipv6 is None
            and self.address_start is None
            and self.address_end is None
            and not self.port_start
            and not self.port_end
        )


class ForwardDef(BaseModel):
    """The ``<forward>`` element; mode NONE when the network has none."""

    model_config = ConfigDict(frozen=True)

    mode: ForwardMode = ForwardMode.NONE
    managed: bool = False
    driver: ForwardDriver | None = None
    interfaces: tuple[ForwardInterface, ...] = ()
    pf: str | None = None
    nat: ForwardNat = ForwardNat()

    @property
    def info(self) -> ForwardModeInfo:
        return FORWARD_MODES[self.mode]

    def dev(self) -> str | None:
        """virNetworkDefForwardIf(def, 0): the first pool device, if a network device."""
        return self.interfaces[0].dev if self.interfaces else None


def _nat_address(network: str, node: etree._Element, end: str) -> IPv4Address:
    """One end (``start``/``end``) of the SNAT address range, which must be IPv4."""
    text = prop(node, end) or ""
    parsed = try_parse_ip(text, ipv4_only=True)
    if not isinstance(parsed, IPv4Address):
        raise xml_error(
            f"Bad ipv4 {end} address '{text}' in <nat> in <forward> in network '{network}'",
            _DOMAIN,
        )
    return parsed


def _parse_nat(network: str, node: etree._Element) -> ForwardNat:
    ipv6 = prop_tristate(node, "ipv6")
    addresses = every(node, "address")
    if len(addresses) > 1:
        raise xml_error(
            f"Only one <address> element is allowed in <nat> in <forward> in network {network}",
            _DOMAIN,
        )
    start = end = None
    if addresses:
        for which in ("start", "end"):
            if prop(addresses[0], which) is None:
                raise xml_error(
                    f"missing '{which}' attribute in <address> element in <nat> in <forward> "
                    f"in network {network}",
                    _DOMAIN,
                )
        start = _nat_address(network, addresses[0], "start")
        end = _nat_address(network, addresses[0], "end")
        check_range(start, end)
    ports = every(node, "port")
    if len(ports) > 1:
        raise xml_error(
            f"Only one <port> element is allowed in <nat> in <forward> in network {network}",
            _DOMAIN,
        )
    port_start = port_end = 0
    if ports:
        port_start = _nat_port(ports[0], "start", network, 0)
        port_end = _nat_port(ports[0], "end", network, port_start)
    return ForwardNat(
        ipv6=ipv6,
        address_start=start,
        address_end=end,
        port_start=port_start,
        port_end=port_end,
    )


def _nat_port(node: etree._Element, name: str, network: str, low: int) -> int:
    text = xpath_attr(node, name)
    value = c_unsigned(text, limit=UINT_MAX, positive=True) if text is not None else None
    if value is None or value > 65535 or value < low:
        raise xml_detail(
            f"Missing or invalid '{name}' attribute in <port> in <nat> in <forward> "
            f"in network {network}",
            _DOMAIN,
        )
    return value


def _parse_pool_addresses(network: str, nodes: list[etree._Element]) -> list[ForwardInterface]:
    pool: list[ForwardInterface] = []
    for node in nodes:
        addr_type = prop(node, "type")
        if addr_type is None:
            raise xml_error(f"missing address type in network {network}", _DOMAIN)
        if addr_type not in ("none", "pci", "netdev"):
            raise VirtError(
                ErrorCode.CONFIG_UNSUPPORTED,
                f"unknown address type '{addr_type}' in network {network}",
                _DOMAIN,
            )
        if addr_type != "pci":
            raise xml_error(f"unsupported address type '{addr_type}' in network {network}", _DOMAIN)
        addr = parse_pci_address(node)
        if any(known.pci == addr for known in pool):
            raise xml_error(
                f"PCI device '{addr}' can only be listed once in network {network}", _DOMAIN
            )
        pool.append(ForwardInterface(pci=addr))
    return pool


def _parse_pool_devices(
    network: str, dev: str | None, nodes: list[etree._Element]
) -> list[ForwardInterface]:
    pool: list[ForwardInterface] = [ForwardInterface(dev=dev)] if dev is not None else []
    for index, node in enumerate(nodes):
        name = prop(node, "dev")
        if name is None:
            raise xml_error(
                "Missing required dev attribute in <forward> <interface> element of network "
                f"{network}",
                _DOMAIN,
            )
        if index == 0 and dev is not None:
            # <forward dev='x'> and a first <interface dev='x'/> name the same device
            if name != dev:
                raise xml_error(
                    f"<forward dev='{dev}'> must match first <interface dev='{name}'/> "
                    f"in network {network}",
                    _DOMAIN,
                )
            continue
        if any(known.dev == name for known in pool):
            raise xml_error(
                f"interface '{name}' can only be listed once in network {network}", _DOMAIN
            )
        pool.append(ForwardInterface(dev=name))
    return pool


def parse_forward(network: str, node: etree._Element) -> ForwardDef:
    """virNetworkForwardDefParseXML: an absent or empty mode is ``nat``."""
    mode_text = xpath_attr(node, "mode")
    found = member_of(ForwardMode, mode_text) if mode_text is not None else ForwardMode.NAT
    if found is None:
        raise VirtError(
            ErrorCode.CONFIG_UNSUPPORTED, f"unknown forwarding type '{mode_text}'", _DOMAIN
        )
    mode = found
    managed = (xpath_attr(node, "managed") or "").lower() == "yes"
    driver: ForwardDriver | None = None
    driver_text = xpath_attr(first(node, "driver"), "name")
    if driver_text is not None:
        if driver_text not in (ForwardDriver.KVM, ForwardDriver.VFIO):
            raise VirtError(
                ErrorCode.CONFIG_UNSUPPORTED,
                f"Unknown forward <driver name='{driver_text}'/> in network {network}",
                _DOMAIN,
            )
        driver = ForwardDriver(driver_text)
    if_nodes = every(node, "interface")
    addr_nodes = every(node, "address")
    pf_nodes = every(node, "pf")
    nat_nodes = every(node, "nat")
    nat = ForwardNat()
    if len(nat_nodes) > 1:
        raise xml_error(
            f"Only one <nat> element is allowed in <forward> of network {network}", _DOMAIN
        )
    if nat_nodes:
        if not FORWARD_MODES[mode].nat:
            raise xml_error(
                "The <nat> element can only be used when <forward> 'mode' is 'nat' in network "
                f"{network}",
                _DOMAIN,
            )
        nat = _parse_nat(network, nat_nodes[0])
    dev = xpath_attr(node, "dev")
    if dev is not None and (addr_nodes or pf_nodes):
        raise xml_error(
            "the <forward> 'dev' attribute cannot be used when <address> or <pf> sub-elements "
            f"are present in network {network}",
            _DOMAIN,
        )
    pool: list[ForwardInterface] = []
    pf: str | None = None
    # libvirt reads one kind of pool: interfaces, else addresses, else a pf
    if if_nodes or dev is not None:
        pool = _parse_pool_devices(network, dev, if_nodes)
    elif addr_nodes:
        pool = _parse_pool_addresses(network, addr_nodes)
    elif len(pf_nodes) > 1:
        raise xml_error(
            f"Only one <pf> element is allowed in <forward> of network {network}", _DOMAIN
        )
    elif pf_nodes:
        pf = prop(pf_nodes[0], "dev")
        if pf is None:
            raise xml_error(
                f"Missing required dev attribute in <pf> element of network '{network}'", _DOMAIN
            )
    return ForwardDef(
        mode=mode, managed=managed, driver=driver, interfaces=tuple(pool), pf=pf, nat=nat
    )


def _format_nat(w: XmlWriter, nat: ForwardNat) -> None:
    if nat.is_empty():
        return
    with w.block("nat", [("ipv6", nat.ipv6)]) as n:
        if nat.address_start is not None:
            end = format_ip(nat.address_end) if nat.address_end is not None else None
            n.leaf("address", [("start", format_ip(nat.address_start)), ("end", end)])
        if nat.port_start or nat.port_end:
            n.leaf("port", [("start", nat.port_start), ("end", nat.port_end or None)])


def format_forward(
    w: XmlWriter,
    fwd: ForwardDef,
    *,
    inactive: bool,
    connections: Mapping[str, int] | None = None,
) -> None:
    """The ``<forward>`` element as virNetworkDefFormatBuf writes it.

    ``inactive`` (VIR_NETWORK_XML_INACTIVE) hides a pf's interfaces and the
    live ``connections`` counts (per forward device name).
    """
    if fwd.mode is ForwardMode.NONE:
        return
    attrs: list[tuple[str, object | None]] = [
        ("dev", fwd.dev() if fwd.pf is None else None),
        ("mode", fwd.mode),
    ]
    if fwd.mode is ForwardMode.HOSTDEV:
        attrs.append(("managed", fwd.managed))
    with w.block("forward", attrs) as f:
        if fwd.driver is not None and fwd.driver is not ForwardDriver.DEFAULT:
            f.leaf("driver", [("name", fwd.driver)])
        if fwd.mode is ForwardMode.NAT:
            _format_nat(f, fwd.nat)
        if fwd.pf is not None:
            f.leaf("pf", [("dev", fwd.pf)])
        if fwd.interfaces and (fwd.pf is None or not inactive):
            for iface in fwd.interfaces:
                if iface.dev is not None:
                    count = (connections or {}).get(iface.dev, 0) if not inactive else 0
                    f.leaf("interface", [("dev", iface.dev), ("connections", count or None)])
                elif iface.pci is not None:
                    format_pci_address(f, iface.pci, with_type=True)
