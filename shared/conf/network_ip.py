"""A network's ``<ip>`` elements with their ``<tftp>`` and ``<dhcp>`` (network_conf.c)."""

from __future__ import annotations

import enum
from ipaddress import IPv4Address, IPv6Address

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.macaddr import is_multicast, parse_mac
from shared.conf.socketaddr import (
    IPAddress,
    check_range,
    format_ip,
    ip_prefix,
    parse_ip,
    try_parse_ip,
)
from shared.conf.xmlprops import (
    ULONG_MAX,
    first,
    prop,
    prop_enum,
    prop_required,
    prop_tristate,
    prop_uint,
    sub_element,
    sub_elements,
    xpath_attr,
)
from shared.conf.xmlwriter import Attrs, XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, xml_error

_DOMAIN = ErrorDomain.NETWORK


class LeaseUnit(enum.StrEnum):
    """virNetworkDHCPLeaseTimeUnitType."""

    SECONDS = "seconds"
    MINUTES = "minutes"
    HOURS = "hours"


_UNIT_SECONDS = {LeaseUnit.SECONDS: 1, LeaseUnit.MINUTES: 60, LeaseUnit.HOURS: 3600}


class DhcpLease(BaseModel):
    """A lease time; ``expiry`` 0 means an infinite lease."""

    model_config = ConfigDict(frozen=True)

    expiry: int
    unit: LeaseUnit = LeaseUnit.MINUTES

    def seconds(self) -> int | None:
        """The lease in seconds, None when infinite."""
        return self.expiry * _UNIT_SECONDS[self.unit] if self.expiry else None


class DhcpRange(BaseModel):
    """A ``<range>`` of addresses the DHCP server hands out."""

    model_config = ConfigDict(frozen=True)

    start: IPAddress
    end: IPAddress
    lease: DhcpLease | None = None


class DhcpHost(BaseModel):
    """A static ``<host>``; ``mac`` is kept exactly as written (libvirt does)."""

    model_config = ConfigDict(frozen=True)

    mac: str | None = None
    id: str | None = None
    name: str | None = None
    ip: IPAddress | None = None
    lease: DhcpLease | None = None


class IPDef(BaseModel):
    """One ``<ip>`` element.  ``prefix`` 0 means "not given" (libvirt's convention)."""

    model_config = ConfigDict(frozen=True)

    family: str | None = None
    address: IPAddress
    netmask: IPAddress | None = None
    prefix: int = 0
    local_ptr: bool | None = None
    tftp_root: str | None = None
    ranges: tuple[DhcpRange, ...] = ()
    hosts: tuple[DhcpHost, ...] = ()
    bootp_file: str | None = None
    bootp_server: IPAddress | None = None

    @property
    def is_ipv4(self) -> bool:
        return isinstance(self.address, IPv4Address)

    @property
    def is_ipv6(self) -> bool:
        return isinstance(self.address, IPv6Address)

    def prefix_length(self) -> int:
        """virNetworkIPDefPrefix: explicit prefix, netmask, or the natural one; -1 if none."""
        return ip_prefix(self.address, self.netmask, self.prefix)

    def has_dhcp(self) -> bool:
        """Whether the element has DHCP ranges or hosts (what libvirt formats)."""
        return bool(self.ranges or self.hosts)


def parse_lease(node: etree._Element) -> DhcpLease | None:
    """virNetworkDHCPLeaseTimeDefParseXML; None when ``expiry`` is absent."""
    expiry = prop_uint(node, "expiry", base=0, limit=ULONG_MAX)
    if expiry is None:
        return None
    unit = prop_enum(node, "unit", LeaseUnit) or LeaseUnit.MINUTES
    # dnsmasq's minimum lease is two minutes
    if expiry > 0 and (
        (unit is LeaseUnit.SECONDS and expiry < 120) or (unit is LeaseUnit.MINUTES and expiry < 2)
    ):
        raise VirtError(
            ErrorCode.CONFIG_UNSUPPORTED,
            "The minimum lease time should be greater than 2 minutes",
            _DOMAIN,
        )
    return DhcpLease(expiry=expiry, unit=unit)


def _parse_sub_lease(node: etree._Element) -> DhcpLease | None:
    lease = sub_element(node, "lease")
    return parse_lease(lease) if lease is not None else None


def parse_dhcp_range(
    network: str, address: IPAddress, prefix: int, node: etree._Element
) -> DhcpRange:
    """virNetworkDHCPRangeDefParseXML: both ends inside ``address``/``prefix``."""
    start_text = prop(node, "start")
    if start_text is None:
        raise xml_error(f"Missing 'start' attribute in dhcp range for network '{network}'", _DOMAIN)
    start = parse_ip(start_text)
    end_text = prop(node, "end")
    if end_text is None:
        raise xml_error(f"Missing 'end' attribute in dhcp range for network '{network}'", _DOMAIN)
    end = parse_ip(end_text)
    check_range(start, end, address, prefix)
    return DhcpRange(start=start, end=end, lease=_parse_sub_lease(node))


_DUID_CHARS = set("0123456789abcdefABCDEF:")


def parse_dhcp_host(
    network: str, address: IPAddress, node: etree._Element, *, partial_ok: bool = False
) -> DhcpHost:
    """virNetworkDHCPHostDefParseXML for an ``<ip>`` whose address is ``address``.

    ``partial_ok`` accepts a host naming only one of mac/name/ip (the network
    update API uses it to find an entry to delete).
    """
    ipv6 = isinstance(address, IPv6Address)
    mac = prop(node, "mac")
    if mac is not None:
        if ipv6:
            raise xml_error(
                f"Invalid to specify MAC address '{mac}' in network '{network}' "
                "IPv6 static host definition",
                _DOMAIN,
            )
        parsed = parse_mac(mac)
        if parsed is None:
            raise xml_error(f"Cannot parse MAC address '{mac}' in network '{network}'", _DOMAIN)
        if is_multicast(parsed):
            raise xml_error(
                f"expected unicast mac address, found multicast '{mac}' in network '{network}'",
                _DOMAIN,
            )
    host_id = prop(node, "id")
    if host_id is not None:
        bad = next((c for c in host_id if c not in _DUID_CHARS), None)
        if bad is not None:
            raise xml_error(
                f"Invalid character '{bad}' in id '{host_id}' of network '{network}'", _DOMAIN
            )
    name = prop(node, "name")
    if name is not None and not (name[:1].isascii() and name[:1].isalnum()):
        raise xml_error(f"Cannot use host name '{name}' in network '{network}'", _DOMAIN)
    ip_text = prop(node, "ip")
    ip = try_parse_ip(ip_text)
    if ip_text is not None and ip is None:
        raise xml_error(
            f"Invalid IP address in static host definition for network '{network}'", _DOMAIN
        )
    if partial_ok:
        if mac is None and name is None and ip_text is None:
            raise xml_error(
                "At least one of name, mac, or ip attribute must be specified for static "
                f"host definition in network '{network}'",
                _DOMAIN,
            )
    else:
        if ipv6 and host_id is None and name is None:
            raise xml_error(
                f"Static host definition in IPv6 network '{network}' must have id or name "
                "attribute",
                _DOMAIN,
            )
        if not ipv6 and mac is None and name is None:
            raise xml_error(
                f"Static host definition in IPv4 network '{network}' must have mac or name "
                "attribute",
                _DOMAIN,
            )
        if ip is None:
            raise xml_error(
                f"Missing IP address in static host definition for network '{network}'", _DOMAIN
            )
    return DhcpHost(mac=mac, id=host_id, name=name, ip=ip, lease=_parse_sub_lease(node))


def _parse_dhcp(
    network: str, address: IPAddress, prefix: int, node: etree._Element
) -> dict[str, object]:
    """The ``IPDef`` fields of a ``<dhcp>`` element: its ranges, hosts and bootp."""
    fields: dict[str, object] = {
        "ranges": tuple(
            parse_dhcp_range(network, address, prefix, sub) for sub in sub_elements(node, "range")
        ),
        "hosts": tuple(
            parse_dhcp_host(network, address, sub) for sub in sub_elements(node, "host")
        ),
    }
    bootp = sub_element(node, "bootp")
    # bootp options only exist for DHCPv4; libvirt ignores the element on IPv6
    if bootp is not None and isinstance(address, IPv4Address):
        fields["bootp_file"] = prop_required(bootp, "file")
        server = prop(bootp, "server")
        fields["bootp_server"] = parse_ip(server) if server is not None else None
    return fields


def parse_ip_element(network: str, node: etree._Element) -> IPDef:
    """virNetworkIPDefParseXML; raises ``VirtError`` with libvirt's wording."""
    family = xpath_attr(node, "family")
    address_text = xpath_attr(node, "address")
    if address_text is None:
        raise xml_error(f"Missing required address attribute in network '{network}'", _DOMAIN)
    address = try_parse_ip(address_text)
    if address is None:
        raise xml_error(f"Invalid address '{address_text}' in network '{network}'", _DOMAIN)
    netmask_text = xpath_attr(node, "netmask")
    netmask = try_parse_ip(netmask_text)
    if netmask_text is not None and netmask is None:
        raise xml_error(f"Invalid netmask '{netmask_text}' in network '{network}'", _DOMAIN)
    prefix = prop_uint(node, "prefix") or 0
    local_ptr = prop_tristate(node, "localPtr")
    _check_family(network, family, address_text, address, netmask_text, netmask, prefix)
    fields: dict[str, object] = {}
    dhcp = first(node, "dhcp")
    if dhcp is not None:
        fields = _parse_dhcp(network, address, ip_prefix(address, netmask, prefix), dhcp)
    tftp = first(node, "tftp")
    if tftp is not None:
        if not isinstance(address, IPv4Address):
            raise _unsupported(
                f"Unsupported <tftp> element in an IPv6 element in network '{network}'"
            )
        fields["tftp_root"] = xpath_attr(tftp, "root")
    return IPDef.model_validate(
        {
            "family": family,
            "address": address,
            "netmask": netmask,
            "prefix": prefix,
            "local_ptr": local_ptr,
            **fields,
        }
    )


def _unsupported(message: str) -> VirtError:
    return VirtError(ErrorCode.CONFIG_UNSUPPORTED, message, _DOMAIN)


def _check_family(
    network: str,
    family: str | None,
    address_text: str,
    address: IPAddress,
    netmask_text: str | None,
    netmask: IPAddress | None,
    prefix: int,
) -> None:
    if family is None or family == "ipv4":
        if not isinstance(address, IPv4Address):
            said = "no" if family is None else "ipv4"
            raise _unsupported(
                f"{said} family specified for non-IPv4 address '{address_text}' "
                f"in network '{network}'"
            )
        if netmask_text is not None:
            if not isinstance(netmask, IPv4Address):
                raise _unsupported(
                    f"Invalid netmask '{netmask_text}' for address '{address_text}' "
                    f"in network '{network}' (both must be IPv4)"
                )
            if prefix > 0:
                raise _unsupported(
                    f"Network '{network}' IP address cannot have both a prefix and a netmask"
                )
        elif prefix > 32:
            raise _unsupported(f"Invalid IPv4 prefix '{prefix}' in network '{network}'")
    elif family == "ipv6":
        if not isinstance(address, IPv6Address):
            raise _unsupported(
                f"Family 'ipv6' specified for non-IPv6 address '{address_text}' "
                f"in network '{network}'"
            )
        if netmask_text is not None:
            raise _unsupported(
                f"netmask not allowed for IPv6 address '{address_text}' in network '{network}'"
            )
        if prefix > 128:
            raise _unsupported(f"Invalid IPv6 prefix '{prefix}' in network '{network}'")
    else:
        raise xml_error(f"Unrecognized family '{family}' in network '{network}'", _DOMAIN)


def format_lease(w: XmlWriter, lease: DhcpLease) -> None:
    """The ``<lease>`` child: an expiry of 0 (infinite) is written without a unit."""
    w.leaf("lease", [("expiry", lease.expiry), ("unit", lease.unit if lease.expiry else None)])


def _element_with_lease(w: XmlWriter, name: str, attrs: Attrs, lease: DhcpLease | None) -> None:
    if lease is None:
        w.leaf(name, attrs)
        return
    w.open(name, attrs)
    format_lease(w, lease)
    w.close(name)


def format_dhcp_host(w: XmlWriter, host: DhcpHost) -> None:
    """One ``<host>`` line of ``<dhcp>``."""
    ip = format_ip(host.ip) if host.ip is not None else None
    attrs = [("mac", host.mac), ("id", host.id), ("name", host.name), ("ip", ip)]
    _element_with_lease(w, "host", attrs, host.lease)


def format_ip_element(w: XmlWriter, ip: IPDef) -> None:
    """virNetworkIPDefFormat: always an open/close pair; ``<dhcp>`` only with ranges
    or hosts (a lone ``<bootp>`` is not written, as in libvirt)."""
    w.open(
        "ip",
        [
            ("family", ip.family),
            ("address", format_ip(ip.address)),
            ("netmask", format_ip(ip.netmask) if ip.netmask is not None else None),
            ("prefix", ip.prefix or None),
            ("localPtr", ip.local_ptr),
        ],
    )
    if ip.tftp_root is not None:
        w.leaf("tftp", [("root", ip.tftp_root)])
    if ip.has_dhcp():
        w.open("dhcp")
        for r in ip.ranges:
            attrs = [("start", format_ip(r.start)), ("end", format_ip(r.end))]
            _element_with_lease(w, "range", attrs, r.lease)
        for host in ip.hosts:
            format_dhcp_host(w, host)
        if ip.bootp_file is not None:
            server = format_ip(ip.bootp_server) if ip.bootp_server is not None else None
            w.leaf("bootp", [("file", ip.bootp_file), ("server", server)])
        w.close("dhcp")
    w.close("ip")
