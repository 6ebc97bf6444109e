"""The one table of filter rule protocols and their attributes (nwfilter_conf.c's virAttr).

Each protocol element of a ``<rule>`` (``mac``, ``tcp``, ``icmpv6``, ...) has an
ordered list of attributes; the order is the order libvirt writes them in.
Each attribute names the forms of value it accepts (``DataType`` bits, tried
from the lowest bit up, as libvirt does) and, where libvirt adds a check or a
special formatter, which one (``Check``).  Parse, format and the firewall
compiler all read this table; nothing else lists protocols or attributes.
"""

from __future__ import annotations

import enum
import string
from collections.abc import Iterable
from dataclasses import dataclass, field


class DataType(enum.IntFlag):
    """libvirt's attrDatatype: the forms an attribute value may take.

    An attribute accepting several forms tries them in increasing bit order;
    a plain and a ``_HEX`` integer form therefore read ``12`` as decimal and
    ``0x12`` or ``1f`` as hex, and the form that matched decides how the value
    is written back (``0x`` prefix or not).
    """

    UINT16 = 1 << 0
    UINT8 = 1 << 1
    UINT16_HEX = 1 << 2
    UINT8_HEX = 1 << 3
    MACADDR = 1 << 4
    MACMASK = 1 << 5
    IPADDR = 1 << 6
    IPMASK = 1 << 7
    STRING = 1 << 8
    IPV6ADDR = 1 << 9
    IPV6MASK = 1 << 10
    STRINGCOPY = 1 << 11
    BOOLEAN = 1 << 12
    UINT32 = 1 << 13
    UINT32_HEX = 1 << 14
    IPSETNAME = 1 << 15
    IPSETFLAGS = 1 << 16


#: The forms whose numbers are written with a ``0x`` prefix.
HEX_TYPES = DataType.UINT8_HEX | DataType.UINT16_HEX | DataType.UINT32_HEX


class Check(enum.Enum):
    """An attribute's extra validation and formatting beyond its data type."""

    NONE = "none"
    MAC_PROTOCOL = "mac-protocol"  # ethertype >= 0x600, or a name of MAC_PROTOCOLS
    VLAN_ID = "vlan-id"  # 0..4095
    VLAN_ENCAP = "vlan-encap"  # ethertype >= 0x3c, or a name of MAC_PROTOCOLS
    ARP_OPCODE = "arp-opcode"  # a number, or a name of ARP_OPCODES
    IP_PROTOCOL = "ip-protocol"  # a number, or a name of IP_PROTOCOLS
    DSCP = "dscp"  # 0..63
    STATE = "state"  # connection states, see STATE_FLAGS
    TCP_FLAGS = "tcp-flags"  # MASK/FLAGS, see TCP_FLAGS
    IPSET = "ipset"  # an ipset name
    IPSET_FLAGS = "ipset-flags"  # up to six of src/dst


class Layer(enum.Enum):
    """Which header a protocol matches: it decides ebtables, iptables or ip6tables."""

    ETHERNET = "ethernet"
    IPV4 = "ipv4"
    IPV6 = "ipv6"


@dataclass(frozen=True, eq=False)
class AttrSpec:
    """One attribute of a protocol element.

    Compared and hashed by identity: each is one entry of the table, and a
    field-by-field hash cost more than the look-ups keyed by it.
    """

    name: str
    types: DataType
    check: Check = Check.NONE
    #: Longest value kept, in UTF-8 bytes (comments are cut, not refused).
    max_bytes: int = 0
    #: False when libvirt's firewall cannot match the attribute on traffic
    #: towards the guest, so rules with direction 'in' or 'inout' using it are
    #: refused when instantiated (STP's srcmacaddr); parsing accepts it anyway.
    reversible: bool = True
    #: The forms of ``types`` in the order libvirt tries them, each with whether
    #: it is a ``_HEX`` form (derived once: flag arithmetic costs per value).
    forms: tuple[tuple[DataType, bool], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        forms = tuple((form, form in HEX_TYPES) for form in DataType if form in self.types)
        object.__setattr__(self, "forms", forms)


@dataclass(frozen=True)
class ProtocolSpec:
    """One protocol element of a rule.

    ``negation_copies`` lists (attribute, from) pairs: after parsing, libvirt
    gives the first attribute the ``match='no'`` of the second, or clears it
    when the second is absent.  ``ipset_fixup``: an ``ipset`` without
    ``ipsetflags`` gets ``ipsetflags='src'``, and in every other case both are
    dropped (libvirt's behaviour for all IP protocols except ``all``).
    ``port_check``: the name under which a rule with ports but without a
    port-carrying ``protocol`` is refused.
    """

    name: str
    layer: Layer
    attrs: tuple[AttrSpec, ...]
    negation_copies: tuple[tuple[str, str], ...] = ()
    ipset_fixup: bool = False
    port_check: str | None = None
    _position: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        positions = {spec.name: index for index, spec in enumerate(self.attrs)}
        object.__setattr__(self, "_position", positions)

    def attr(self, name: str) -> AttrSpec | None:
        """The attribute called ``name``, or None when this protocol has none."""
        index = self._position.get(name)
        return None if index is None else self.attrs[index]

    def present(self, names: Iterable[str]) -> list[AttrSpec]:
        """This protocol's attributes among ``names``, in table order (an element
        has a few of the twenty-odd attributes a protocol may have)."""
        order = self._position
        return [self.attrs[i] for i in sorted(order[name] for name in names if name in order)]


_U8 = DataType.UINT8 | DataType.UINT8_HEX
_U16 = DataType.UINT16 | DataType.UINT16_HEX
_U32 = DataType.UINT32 | DataType.UINT32_HEX

_COMMENT = AttrSpec("comment", DataType.STRINGCOPY, max_bytes=256)
_SRCMAC = AttrSpec("srcmacaddr", DataType.MACADDR)
_MAC_ATTRS = (
    _SRCMAC,
    AttrSpec("srcmacmask", DataType.MACMASK),
    AttrSpec("dstmacaddr", DataType.MACADDR),
    AttrSpec("dstmacmask", DataType.MACMASK),
)
_PORT_ATTRS = (
    AttrSpec("srcportstart", _U16),
    AttrSpec("srcportend", _U16),
    AttrSpec("dstportstart", _U16),
    AttrSpec("dstportend", _U16),
)


def _ip_attrs(addr: DataType, mask: DataType) -> tuple[AttrSpec, ...]:
    return (
        _SRCMAC,
        AttrSpec("srcipaddr", addr),
        AttrSpec("srcipmask", mask),
        AttrSpec("dstipaddr", addr),
        AttrSpec("dstipmask", mask),
        AttrSpec("srcipfrom", addr),
        AttrSpec("srcipto", addr),
        AttrSpec("dstipfrom", addr),
        # libvirt reads dstipto as IPv4 even in the -ipv6 protocols.
        AttrSpec("dstipto", DataType.IPADDR),
        AttrSpec("dscp", _U8, Check.DSCP),
        AttrSpec("connlimit-above", DataType.UINT16),
        AttrSpec("state", DataType.STRING, Check.STATE),
        AttrSpec("ipset", DataType.IPSETNAME, Check.IPSET),
        AttrSpec("ipsetflags", DataType.IPSETFLAGS, Check.IPSET_FLAGS),
    )


_IPV4 = _ip_attrs(DataType.IPADDR, DataType.IPMASK)
_IPV6 = _ip_attrs(DataType.IPV6ADDR, DataType.IPV6MASK)
_ICMP = (AttrSpec("type", _U8), AttrSpec("code", _U8))
_TCP_OPTION = AttrSpec("option", _U8)

_MAC_NEG = (("srcmacmask", "srcmacaddr"), ("dstmacmask", "dstmacaddr"))
_IP_NEG = (
    ("srcipmask", "srcipaddr"),
    ("dstipmask", "dstipaddr"),
    ("srcipto", "srcipfrom"),
    ("dstipto", "dstipfrom"),
)
# libvirt ties every port's negation to srcportstart's.
_PORT_NEG = (
    ("srcportend", "srcportstart"),
    ("dstportstart", "srcportstart"),
    ("dstportend", "srcportstart"),
)
_STP_PAIRS = (
    ("root-priority", _U16, "root-priority-hi"),
    ("root-address", DataType.MACADDR, "root-address-mask"),
    ("root-cost", _U32, "root-cost-hi"),
    ("sender-priority", _U16, "sender-priority-hi"),
    ("sender-address", DataType.MACADDR, "sender-address-mask"),
    ("port", _U16, "port-hi"),
    ("age", _U16, "age-hi"),
    ("max-age", _U16, "max-age-hi"),
    ("hello-time", _U16, "hello-time-hi"),
    ("forward-delay", _U16, "forward-delay-hi"),
)


def _stp_attrs() -> tuple[AttrSpec, ...]:
    attrs = [
        AttrSpec("srcmacaddr", DataType.MACADDR, reversible=False),
        AttrSpec("srcmacmask", DataType.MACMASK),
        AttrSpec("type", _U8),
        AttrSpec("flags", _U8),
    ]
    for low, kind, high in _STP_PAIRS:
        high_kind = DataType.MACMASK if kind is DataType.MACADDR else kind
        attrs += [AttrSpec(low, kind), AttrSpec(high, high_kind)]
    return (*attrs, _COMMENT)


_ARP = (
    *_MAC_ATTRS,
    AttrSpec("hwtype", _U16),
    AttrSpec("protocoltype", _U16),
    AttrSpec("opcode", _U16 | DataType.STRING, Check.ARP_OPCODE),
    AttrSpec("arpsrcmacaddr", DataType.MACADDR),
    AttrSpec("arpdstmacaddr", DataType.MACADDR),
    AttrSpec("arpsrcipaddr", DataType.IPADDR),
    AttrSpec("arpsrcipmask", DataType.IPMASK),
    AttrSpec("arpdstipaddr", DataType.IPADDR),
    AttrSpec("arpdstipmask", DataType.IPMASK),
    AttrSpec("gratuitous", DataType.BOOLEAN),
    _COMMENT,
)


def _ip_header(addr: DataType, mask: DataType) -> tuple[AttrSpec, ...]:
    return (
        *_MAC_ATTRS,
        AttrSpec("srcipaddr", addr),
        AttrSpec("srcipmask", mask),
        AttrSpec("dstipaddr", addr),
        AttrSpec("dstipmask", mask),
        AttrSpec("protocol", DataType.STRING | _U8, Check.IP_PROTOCOL),
        *_PORT_ATTRS,
    )


def _l4(name: str, layer: Layer, *extra: AttrSpec, ports: bool = False) -> ProtocolSpec:
    """An IP protocol element (tcp, udp, icmp, all, ... and their -ipv6 forms)."""
    ip_attrs = _IPV4 if layer is Layer.IPV4 else _IPV6
    negation = _IP_NEG + (_PORT_NEG if ports else ())
    if any(attr.name == "code" for attr in extra):
        negation += (("code", "type"),)
    return ProtocolSpec(
        name,
        layer,
        (*ip_attrs, *(_PORT_ATTRS if ports else ()), *extra, _COMMENT),
        negation,
        ipset_fixup=not name.startswith("all"),
    )


#: Every protocol element, in libvirt's table order.
PROTOCOLS: dict[str, ProtocolSpec] = {
    spec.name: spec
    for spec in (
        ProtocolSpec("arp", Layer.ETHERNET, _ARP),
        ProtocolSpec("rarp", Layer.ETHERNET, _ARP),
        ProtocolSpec(
            "mac",
            Layer.ETHERNET,
            (
                *_MAC_ATTRS,
                AttrSpec("protocolid", _U16 | DataType.STRING, Check.MAC_PROTOCOL),
                _COMMENT,
            ),
            _MAC_NEG,
        ),
        ProtocolSpec(
            "vlan",
            Layer.ETHERNET,
            (
                *_MAC_ATTRS,
                AttrSpec("vlanid", _U16, Check.VLAN_ID),
                AttrSpec("encap-protocol", _U16 | DataType.STRING, Check.VLAN_ENCAP),
                _COMMENT,
            ),
            _MAC_NEG,
        ),
        ProtocolSpec(
            "stp",
            Layer.ETHERNET,
            _stp_attrs(),
            (("srcmacmask", "srcmacaddr"), *((high, low) for low, _, high in _STP_PAIRS)),
        ),
        ProtocolSpec(
            "ip",
            Layer.ETHERNET,
            (
                *_ip_header(DataType.IPADDR, DataType.IPMASK),
                AttrSpec("dscp", _U8, Check.DSCP),
                _COMMENT,
            ),
            _IP_NEG[:2],
            ipset_fixup=True,
            port_check="IP",
        ),
        ProtocolSpec(
            "ipv6",
            Layer.ETHERNET,
            (
                *_ip_header(DataType.IPV6ADDR, DataType.IPV6MASK),
                AttrSpec("type", _U8),
                AttrSpec("typeend", _U8),
                AttrSpec("code", _U8),
                AttrSpec("codeend", _U8),
                _COMMENT,
            ),
            (*_IP_NEG[:2], ("typeend", "type"), ("code", "type"), ("codeend", "type")),
            ipset_fixup=True,
            port_check="IPv6",
        ),
        _l4(
            "tcp",
            Layer.IPV4,
            _TCP_OPTION,
            AttrSpec("flags", DataType.STRING, Check.TCP_FLAGS),
            ports=True,
        ),
        _l4("udp", Layer.IPV4, ports=True),
        _l4("udplite", Layer.IPV4),
        _l4("esp", Layer.IPV4),
        _l4("ah", Layer.IPV4),
        _l4("sctp", Layer.IPV4, ports=True),
        _l4("icmp", Layer.IPV4, *_ICMP),
        _l4("all", Layer.IPV4),
        _l4("igmp", Layer.IPV4),
        _l4("tcp-ipv6", Layer.IPV6, _TCP_OPTION, ports=True),
        _l4("udp-ipv6", Layer.IPV6, ports=True),
        _l4("udplite-ipv6", Layer.IPV6),
        _l4("esp-ipv6", Layer.IPV6),
        _l4("ah-ipv6", Layer.IPV6),
        _l4("sctp-ipv6", Layer.IPV6, ports=True),
        _l4("icmpv6", Layer.IPV6, *_ICMP),
        _l4("all-ipv6", Layer.IPV6),
    )
}

#: Ethertypes with a name (protocolid, encap-protocol).
MAC_PROTOCOLS: dict[str, int] = {
    "arp": 0x0806,
    "rarp": 0x8035,
    "ipv4": 0x0800,
    "ipv6": 0x86DD,
    "vlan": 0x8100,
}
#: ARP opcodes with a name, as ebtables names them.
ARP_OPCODES: dict[str, int] = {
    "Request": 1,
    "Reply": 2,
    "Request_Reverse": 3,
    "Reply_Reverse": 4,
    "DRARP_Request": 5,
    "DRARP_Reply": 6,
    "DRARP_Error": 7,
    "InARP_Request": 8,
    "ARP_NAK": 9,
}
#: IP protocol numbers with a name.
IP_PROTOCOLS: dict[str, int] = {
    "tcp": 6,
    "udp": 17,
    "udplite": 136,
    "esp": 50,
    "ah": 51,
    "icmp": 1,
    "igmp": 2,
    "sctp": 132,
    "icmpv6": 58,
}
#: Protocols a rule with ports may name in ``<ip protocol=...>``: tcp, udp, dccp, sctp.
PORT_PROTOCOLS = frozenset({6, 17, 33, 132})
#: Connection-tracking states (the rule's state flags, libvirt's bit values).
STATE_FLAGS: dict[str, int] = {
    "NEW": 1 << 1,
    "ESTABLISHED": 1 << 2,
    "RELATED": 1 << 3,
    "INVALID": 1 << 4,
    "NONE": 1 << 5,
}
#: TCP flag names; ALL and NONE stand for every flag and no flag.
TCP_FLAGS: dict[str, int] = {
    "FIN": 0x01,
    "SYN": 0x02,
    "RST": 0x04,
    "PSH": 0x08,
    "ACK": 0x10,
    "URG": 0x20,
    "ALL": 0x3F,
    "NONE": 0x00,
}
#: Characters allowed in an ipset name, and its longest length.
VALID_IPSETNAME = frozenset(string.ascii_letters + string.digits + "_.:-+ ")
MAX_IPSET_NAME_LENGTH = 31
#: Longest number of src/dst flags in ``ipsetflags``.
MAX_IPSET_FLAGS = 6
