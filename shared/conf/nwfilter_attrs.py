"""Rule attribute values (nwfilter_conf.c): read and written per the protocol table.

Each attribute of a protocol element accepts the forms its ``AttrSpec.types``
lists, tried in libvirt's order, then passes the attribute's ``Check``; what
was read is kept typed (``RuleAttr``) for the firewall compiler, together with
what libvirt needs to write it back the same way (hex or decimal, negation,
or the variable it refers to).
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from operator import itemgetter

from pydantic import BaseModel, ConfigDict, Field

from shared.conf.macaddr import format_mac, parse_mac
from shared.conf.nwfilter_params import VarAccess, format_var_access, parse_var_access
from shared.conf.nwfilter_protocols import (
    ARP_OPCODES,
    HEX_TYPES,
    IP_PROTOCOLS,
    MAC_PROTOCOLS,
    MAX_IPSET_FLAGS,
    MAX_IPSET_NAME_LENGTH,
    STATE_FLAGS,
    TCP_FLAGS,
    VALID_IPSETNAME,
    AttrSpec,
    Check,
    DataType,
)
from shared.conf.nwfilter_values import UINT_MAX, is_contiguous_mask, parse_uint
from shared.conf.socketaddr import format_ip, netmask_bits, try_parse_ip
from shared.util.errors import VirtError


class TcpFlags(BaseModel):
    """``flags='MASK/SET'`` of a tcp rule: the flags examined and those that must be set."""

    model_config = ConfigDict(frozen=True, strict=True)

    mask: int = Field(ge=0, le=0x3F)
    flags: int = Field(ge=0, le=0x3F)


#: A parsed attribute value; which type an attribute holds follows from its spec
#: (see ``value_type``): numbers, masks (prefix lengths), ethertypes, opcodes,
#: protocols and state flags are ints; addresses are strings in libvirt's
#: canonical form; ipsetflags is a tuple of "src"/"dst".
AttrValue = bool | int | str | TcpFlags | tuple[str, ...]


class RuleAttr(BaseModel):
    """One attribute of a rule's protocol element: a value or a variable reference."""

    model_config = ConfigDict(frozen=True, strict=True)

    value: AttrValue | None = None
    var: VarAccess | None = None
    #: Negated by ``match='no'``.
    negated: bool = False
    #: The value was given in hex, and numbers are written back as ``0x..``.
    hex: bool = False

    def model_post_init(self, context: object, /) -> None:
        # run once, when the attribute is made (see NWFilterRule.model_post_init)
        if (self.value is None) == (self.var is None):
            raise ValueError("a rule attribute holds exactly one of value and var")


_TEXT_TYPES = (
    DataType.MACADDR
    | DataType.MACMASK
    | DataType.IPADDR
    | DataType.IPV6ADDR
    | DataType.STRINGCOPY
    | DataType.IPSETNAME
)


@functools.cache
def value_type(spec: AttrSpec) -> type:
    """The Python type of the values of attribute ``spec``."""
    if spec.check is Check.TCP_FLAGS:
        return TcpFlags
    if spec.types & DataType.IPSETFLAGS:
        return tuple
    if spec.types & _TEXT_TYPES:
        return str
    if spec.types & DataType.BOOLEAN:
        return bool
    return int


_NO_CHECK = Check.NONE
#: The checks whose values may be written by name, and the names of each.
_NAMED: dict[Check, dict[str, int]] = {
    Check.MAC_PROTOCOL: MAC_PROTOCOLS,
    Check.VLAN_ENCAP: MAC_PROTOCOLS,
    Check.ARP_OPCODE: ARP_OPCODES,
    Check.IP_PROTOCOL: IP_PROTOCOLS,
}


class IllegalValue(Exception):
    """An attribute value the attribute's data types and check refuse."""


# --- reading values -------------------------------------------------------


#: Reads ``text`` as one data type (the form, whether it is a _HEX one, the
#: text, the attribute); None when the text is not of that form.
_Reader = Callable[[DataType, bool, str, AttrSpec], AttrValue | None]


def _number_reader(limit: int) -> _Reader:
    def read(form: DataType, hex_form: bool, text: str, spec: AttrSpec) -> AttrValue | None:
        number = parse_uint(text, 16 if hex_form else 10)
        return number if number is not None and number <= limit else None

    return read


def _read_mac(form: DataType, hex_form: bool, text: str, spec: AttrSpec) -> AttrValue | None:
    mac = parse_mac(text)
    if mac is None:
        return None
    if form is DataType.MACMASK and not is_contiguous_mask(mac):
        raise IllegalValue
    return format_mac(mac)


def _read_stringcopy(form: DataType, hex_form: bool, text: str, spec: AttrSpec) -> AttrValue:
    return text.encode()[: spec.max_bytes].decode(errors="ignore")


def _read_boolean(form: DataType, hex_form: bool, text: str, spec: AttrSpec) -> AttrValue:
    return text in ("true", "1", "yes")


def _read_text(form: DataType, hex_form: bool, text: str, spec: AttrSpec) -> AttrValue:
    return text  # left to the attribute's check


def _address(text: str, ipv4: bool) -> IPv4Address | IPv6Address | None:
    """``text`` as an address of the family the data type asks for."""
    address = try_parse_ip(text, ipv4_only=ipv4)
    if address is None or (not ipv4 and not isinstance(address, IPv6Address)):
        return None
    return address


def _address_reader(ipv4: bool) -> _Reader:
    """IPADDR / IPV6ADDR: an address, kept as libvirt writes it back."""

    def read(form: DataType, hex_form: bool, text: str, spec: AttrSpec) -> AttrValue | None:
        address = _address(text, ipv4)
        return None if address is None else format_ip(address)

    return read


def _mask_reader(ipv4: bool) -> _Reader:
    """IPMASK / IPV6MASK: a prefix length, or a netmask kept as its prefix length."""

    def read(form: DataType, hex_form: bool, text: str, spec: AttrSpec) -> AttrValue | None:
        number = parse_uint(text, 10)
        if number is not None:
            return number if number <= (32 if ipv4 else 128) else None
        address = _address(text, ipv4)
        if address is None:
            return None
        bits = netmask_bits(address)
        return bits if bits >= 0 else None

    return read


#: The reader of each data type, looked up once per form tried (a chain of
#: comparisons with enum members costs more than the reading itself).
_READERS: dict[DataType, _Reader] = {
    DataType.UINT8: _number_reader(0xFF),
    DataType.UINT8_HEX: _number_reader(0xFF),
    DataType.UINT16: _number_reader(0xFFFF),
    DataType.UINT16_HEX: _number_reader(0xFFFF),
    DataType.UINT32: _number_reader(UINT_MAX),
    DataType.UINT32_HEX: _number_reader(UINT_MAX),
    DataType.IPADDR: _address_reader(ipv4=True),
    DataType.IPV6ADDR: _address_reader(ipv4=False),
    DataType.IPMASK: _mask_reader(ipv4=True),
    DataType.IPV6MASK: _mask_reader(ipv4=False),
    DataType.MACADDR: _read_mac,
    DataType.MACMASK: _read_mac,
    DataType.STRINGCOPY: _read_stringcopy,
    DataType.BOOLEAN: _read_boolean,
    DataType.STRING: _read_text,
    DataType.IPSETNAME: _read_text,
    DataType.IPSETFLAGS: _read_text,
}


def ascii_lower(text: str) -> str:
    """Lower-case A-Z only, as libvirt's g_ascii_strcasecmp comparisons do."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _lookup(names: dict[str, int], text: str) -> int | None:
    lowered = ascii_lower(text)
    return next((value for name, value in names.items() if name.lower() == lowered), None)


def _parse_items(items: tuple[tuple[str, int], ...], text: str, sep: str) -> int | None:
    """libvirt's parseStringItems over ``_items`` of a table: names (case-insensitive
    prefixes, in table order) separated by blanks or ``sep``; None when something
    else appears."""
    lowered = ascii_lower(text)
    flags, i, end = 0, 0, len(text)
    while True:
        while i < end and (lowered[i] in " \t\n\v\f\r" or lowered[i] == sep):
            i += 1
        if i >= end:
            return flags
        for name, value in items:
            if lowered.startswith(name, i):
                flags |= value
                i += len(name)
                break
        else:
            return None


def _items(names: dict[str, int]) -> tuple[tuple[str, int], ...]:
    """A table's names lower-cased once, in table order, for ``_parse_items``."""
    return tuple((name.lower(), value) for name, value in names.items())


_STATE_ITEMS = _items(STATE_FLAGS)
_TCP_FLAG_ITEMS = _items(TCP_FLAGS)


def _parse_ipset_flags(text: str) -> tuple[str, ...] | None:
    flags: list[str] = []
    i = 0
    while len(flags) < MAX_IPSET_FLAGS:
        word = ascii_lower(text[i : i + 3])
        if word not in ("src", "dst"):
            return None
        flags.append(word)
        i += 3
        if text[i : i + 1] != ",":
            break
        i += 1
    return tuple(flags) if i == len(text) else None


def _check(spec: AttrSpec, form: DataType, value: AttrValue) -> tuple[AttrValue, DataType]:
    """Apply the attribute's check; returns the value and the form it is written in."""
    check = spec.check
    if check is _NO_CHECK:  # most attributes
        return value, form
    if check in _NAMED:
        if form is DataType.STRING:
            number = _lookup(_NAMED[check], str(value))
            if number is None:
                raise IllegalValue
            # libvirt records a named protocol as hex, a named ethertype or opcode as decimal.
            return number, DataType.UINT8_HEX if check is Check.IP_PROTOCOL else DataType.UINT16
        assert isinstance(value, int)
        if (check is Check.MAC_PROTOCOL and value < 0x600) or (
            check is Check.VLAN_ENCAP and value < 0x3C
        ):
            raise IllegalValue
        return value, form
    if check is Check.VLAN_ID or check is Check.DSCP:
        assert isinstance(value, int)
        if value > (4095 if check is Check.VLAN_ID else 63):
            raise IllegalValue
        return value, form
    if check is Check.STATE:
        flags = _parse_items(_STATE_ITEMS, str(value), ",")
        if flags is None:
            raise IllegalValue
        return (STATE_FLAGS["NONE"] if flags & STATE_FLAGS["NONE"] else flags), DataType.UINT16
    if check is Check.TCP_FLAGS:
        mask_text, slash, set_text = str(value).partition("/")
        mask = _parse_items(_TCP_FLAG_ITEMS, mask_text, ",")
        flags = _parse_items(_TCP_FLAG_ITEMS, set_text, ",")
        if not slash or mask is None or flags is None:
            raise IllegalValue
        return TcpFlags(mask=mask & 0x3F, flags=flags & 0x3F), form
    if check is Check.IPSET:
        name = str(value)
        if len(name.encode()) > MAX_IPSET_NAME_LENGTH or not VALID_IPSETNAME.issuperset(name):
            raise IllegalValue
        return name, form
    if check is Check.IPSET_FLAGS:
        ipset_flags = _parse_ipset_flags(str(value))
        if ipset_flags is None:
            raise IllegalValue
        return ipset_flags, form
    return value, form


def parse_attr(spec: AttrSpec, text: str, negated: bool) -> RuleAttr:
    """One attribute value as virNWFilterRuleDetailsParse reads it; raises ``IllegalValue``."""
    if text.startswith("$"):
        try:
            var = parse_var_access(text[1:])
        except VirtError as err:
            raise IllegalValue from err
        return RuleAttr(var=var, negated=negated)
    for form, hex_form in spec.forms:
        value = _READERS[form](form, hex_form, text, spec)
        if value is not None:
            value, written = _check(spec, form, value)
            if written is not form:
                hex_form = written in HEX_TYPES
            return RuleAttr(value=value, negated=negated, hex=hex_form)
    raise IllegalValue


# --- writing values -------------------------------------------------------


def _named(names: dict[str, int], value: int) -> str | None:
    return next((name for name, number in names.items() if number == value), None)


def _print_items(names: dict[str, int], flags: int) -> str:
    """libvirt's printStringItems: the single-bit names of ``flags``, low bit first
    (names of one bit in table order)."""
    single = [(v, name) for name, v in names.items() if v & flags and not v & (v - 1)]
    return ",".join(name for v, name in sorted(single, key=itemgetter(0)) if v < 1 << 32)


def _print_tcp_flags(flags: int) -> str:
    if flags == 0:
        return "NONE"
    if flags == 0x3F:
        return "ALL"
    return _print_items(TCP_FLAGS, flags)


def format_attr(spec: AttrSpec, attr: RuleAttr) -> str:
    if attr.var is not None:
        return "$" + format_var_access(attr.var)
    value = attr.value
    if isinstance(value, TcpFlags):
        return f"{_print_tcp_flags(value.mask)}/{_print_tcp_flags(value.flags)}"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    assert isinstance(value, int)
    check = spec.check
    if check is _NO_CHECK:  # most attributes
        return f"0x{value:x}" if attr.hex else str(value)
    if check is Check.STATE:
        return _print_items(STATE_FLAGS, value)
    if check in _NAMED:
        name = _named(_NAMED[check], value)
        if name is not None:
            return name
        if check is Check.ARP_OPCODE:
            return str(value)
    return f"0x{value:x}" if attr.hex else str(value)
