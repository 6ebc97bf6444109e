"""Filter rules (nwfilter_conf.c): ``<rule>`` and its protocol element <-> ``NWFilterRule``.

The attributes each protocol element takes come from the table in
``nwfilter_protocols``; this module reads and writes their values the way
libvirt does, quirks included:

* one bad attribute refuses the whole filter, and the error names the last
  bad attribute in table order (libvirt reports each and the last one stays);
* ``match='no'`` negates every attribute of its element, then each
  ``ProtocolSpec.negation_copies`` pair copies the negation from one attribute
  to another; a rule whose attributes end up differently negated is written
  as several elements, split where the negation changes;
* a rule may repeat its protocol element; later ones add to the earlier ones,
  and elements naming another protocol are ignored, as are unknown ones;
* an out-of-range rule priority silently becomes the default 500.
"""

from __future__ import annotations

import enum
from typing import Literal, Self, TypeVar

from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.conf.nwfilter_params import VarAccess, format_var_access, parse_var_access
from shared.conf.nwfilter_protocols import (
    ARP_OPCODES,
    HEX_TYPES,
    IP_PROTOCOLS,
    MAC_PROTOCOLS,
    MAX_IPSET_FLAGS,
    MAX_IPSET_NAME_LENGTH,
    PORT_PROTOCOLS,
    PROTOCOLS,
    STATE_FLAGS,
    TCP_FLAGS,
    VALID_IPSETNAME,
    AttrSpec,
    Check,
    DataType,
    ProtocolSpec,
)
from shared.conf.nwfilter_values import (
    is_contiguous_mask,
    mac_octets,
    netmask_bits,
    parse_int,
    parse_ipv4,
    parse_ipv6,
    parse_mac,
    parse_uint,
)
from shared.conf.xmlwriter import XmlWriter, escape
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_DOMAIN = ErrorDomain.NWFILTER
_E = TypeVar("_E", bound=enum.StrEnum)

MIN_RULE_PRIORITY = -1000
MAX_RULE_PRIORITY = 1000
DEFAULT_RULE_PRIORITY = MAX_RULE_PRIORITY // 2


class RuleAction(enum.StrEnum):
    """What a matching packet meets (virNWFilterRuleAction)."""

    DROP = "drop"
    ACCEPT = "accept"
    REJECT = "reject"
    RETURN = "return"
    CONTINUE = "continue"


class RuleDirection(enum.StrEnum):
    """Which traffic a rule applies to, seen from the guest (virNWFilterRuleDirection)."""

    IN = "in"
    OUT = "out"
    INOUT = "inout"


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

    @model_validator(mode="after")
    def _one_of_value_or_var(self) -> Self:
        if (self.value is None) == (self.var is None):
            raise ValueError("a rule attribute holds exactly one of value and var")
        return self


def value_type(spec: AttrSpec) -> type:
    """The Python type of the values of attribute ``spec``."""
    if spec.check is Check.TCP_FLAGS:
        return TcpFlags
    if spec.check is Check.IPSET_FLAGS:
        return tuple
    if spec.check in (Check.IPSET,) or spec.types & (
        DataType.MACADDR | DataType.MACMASK | DataType.IPADDR | DataType.IPV6ADDR
    ):
        return str
    if spec.types & DataType.STRINGCOPY:
        return str
    if spec.types & DataType.BOOLEAN:
        return bool
    return int


class NWFilterRule(BaseModel):
    """A ``<rule>``: action, direction, priority and at most one protocol element.

    ``attrs`` maps attribute names of ``protocol``'s table to their values;
    they are written in table order.  ``protocol`` is None for a rule whose
    element libvirt did not recognise (it keeps such rules, without a match).
    """

    model_config = ConfigDict(frozen=True, strict=True)

    kind: Literal["rule"] = "rule"
    action: RuleAction
    direction: RuleDirection
    priority: int = Field(default=DEFAULT_RULE_PRIORITY, ge=MIN_RULE_PRIORITY, le=MAX_RULE_PRIORITY)
    #: False for ``statematch='false'``: no connection-state matching.
    statematch: bool = True
    protocol: str | None = None
    attrs: dict[str, RuleAttr] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _attrs_fit_protocol(self) -> Self:
        if self.protocol is None:
            if self.attrs:
                raise ValueError("a rule without a protocol has no attributes")
            return self
        spec = PROTOCOLS.get(self.protocol)
        if spec is None:
            raise ValueError(f"unknown protocol {self.protocol!r}")
        for name, attr in self.attrs.items():
            attr_spec = spec.attr(name)
            if attr_spec is None:
                raise ValueError(f"protocol {self.protocol!r} has no attribute {name!r}")
            if attr.value is not None and not isinstance(attr.value, value_type(attr_spec)):
                raise ValueError(f"attribute {name!r} cannot hold {attr.value!r}")
        return self

    @property
    def spec(self) -> ProtocolSpec | None:
        """The table entry of this rule's protocol."""
        return PROTOCOLS.get(self.protocol) if self.protocol else None

    def variables(self) -> list[VarAccess]:
        """The distinct variable references of the rule, in table order."""
        found: list[VarAccess] = []
        for spec in self.spec.attrs if self.spec else ():
            attr = self.attrs.get(spec.name)
            if attr is not None and attr.var is not None and attr.var not in found:
                found.append(attr.var)
        return found


class _Illegal(Exception):
    """An attribute value the attribute's data types and check refuse."""


def _internal(message: str) -> VirtError:
    return VirtError(ErrorCode.INTERNAL_ERROR, message, _DOMAIN)


# --- reading values -------------------------------------------------------


def _parse_form(form: DataType, text: str, spec: AttrSpec) -> AttrValue | None:
    """``text`` read as one data type; None when it is not of that form."""
    hex_base = 16 if form & HEX_TYPES else 10
    if form in (DataType.UINT8, DataType.UINT8_HEX):
        number = parse_uint(text, hex_base)
        return number if number is not None and number <= 0xFF else None
    if form in (DataType.UINT16, DataType.UINT16_HEX):
        number = parse_uint(text, hex_base)
        return number if number is not None and number <= 0xFFFF else None
    if form in (DataType.UINT32, DataType.UINT32_HEX):
        return parse_uint(text, hex_base)
    if form in (DataType.IPADDR, DataType.IPV6ADDR):
        return parse_ipv4(text) if form is DataType.IPADDR else parse_ipv6(text)
    if form in (DataType.IPMASK, DataType.IPV6MASK):
        version, width = (4, 32) if form is DataType.IPMASK else (6, 128)
        number = parse_uint(text, 10)
        if number is not None:
            return number if number <= width else None
        address = parse_ipv4(text) if version == 4 else parse_ipv6(text)
        return netmask_bits(address, version) if address is not None else None
    if form in (DataType.MACADDR, DataType.MACMASK):
        mac = parse_mac(text)
        if mac is None:
            return None
        if form is DataType.MACMASK and not is_contiguous_mask(mac_octets(mac)):
            raise _Illegal
        return mac
    if form is DataType.STRINGCOPY:
        return text.encode()[: spec.max_bytes].decode(errors="ignore")
    if form is DataType.BOOLEAN:
        return text in ("true", "1", "yes")
    return text  # STRING, IPSETNAME, IPSETFLAGS: left to the attribute's check


def _ascii_lower(text: str) -> str:
    """Lower-case A-Z only, as libvirt's g_ascii_strcasecmp comparisons do."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _lookup(names: dict[str, int], text: str) -> int | None:
    lowered = _ascii_lower(text)
    return next((value for name, value in names.items() if name.lower() == lowered), None)


def _parse_items(names: dict[str, int], text: str, sep: str) -> int | None:
    """libvirt's parseStringItems: names (case-insensitive prefixes, in table order)
    separated by blanks or ``sep``; None when something else appears."""
    flags, i = 0, 0
    while True:
        while i < len(text) and (text[i] in " \t\n\v\f\r" or text[i] == sep):
            i += 1
        if i >= len(text):
            return flags
        for name, value in names.items():
            if _ascii_lower(text[i : i + len(name)]) == name.lower():
                flags |= value
                i += len(name)
                break
        else:
            return None


def _parse_ipset_flags(text: str) -> tuple[str, ...] | None:
    flags: list[str] = []
    i = 0
    while len(flags) < MAX_IPSET_FLAGS:
        word = _ascii_lower(text[i : i + 3])
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
    if check in (Check.MAC_PROTOCOL, Check.VLAN_ENCAP, Check.ARP_OPCODE, Check.IP_PROTOCOL):
        if form is DataType.STRING:
            names = {Check.ARP_OPCODE: ARP_OPCODES, Check.IP_PROTOCOL: IP_PROTOCOLS}
            number = _lookup(names.get(check, MAC_PROTOCOLS), str(value))
            if number is None:
                raise _Illegal
            # libvirt records a named protocol as hex, a named ethertype or opcode as decimal.
            return number, DataType.UINT8_HEX if check is Check.IP_PROTOCOL else DataType.UINT16
        assert isinstance(value, int)
        if (check is Check.MAC_PROTOCOL and value < 0x600) or (
            check is Check.VLAN_ENCAP and value < 0x3C
        ):
            raise _Illegal
        return value, form
    if check is Check.VLAN_ID or check is Check.DSCP:
        assert isinstance(value, int)
        if value > (4095 if check is Check.VLAN_ID else 63):
            raise _Illegal
        return value, form
    if check is Check.STATE:
        flags = _parse_items(STATE_FLAGS, str(value), ",")
        if flags is None:
            raise _Illegal
        return (STATE_FLAGS["NONE"] if flags & STATE_FLAGS["NONE"] else flags), DataType.UINT16
    if check is Check.TCP_FLAGS:
        mask_text, slash, set_text = str(value).partition("/")
        mask = _parse_items(TCP_FLAGS, mask_text, ",")
        flags = _parse_items(TCP_FLAGS, set_text, ",")
        if not slash or mask is None or flags is None:
            raise _Illegal
        return TcpFlags(mask=mask & 0x3F, flags=flags & 0x3F), form
    if check is Check.IPSET:
        name = str(value)
        if len(name.encode()) > MAX_IPSET_NAME_LENGTH or any(
            c not in VALID_IPSETNAME for c in name
        ):
            raise _Illegal
        return name, form
    if check is Check.IPSET_FLAGS:
        ipset_flags = _parse_ipset_flags(str(value))
        if ipset_flags is None:
            raise _Illegal
        return ipset_flags, form
    return value, form


def _parse_attr(spec: AttrSpec, text: str, negated: bool) -> RuleAttr:
    """One attribute value as virNWFilterRuleDetailsParse reads it; raises _Illegal."""
    if text.startswith("$"):
        try:
            var = parse_var_access(text[1:])
        except VirtError as err:
            raise _Illegal from err
        return RuleAttr(var=var, negated=negated)
    for form in DataType:
        if not spec.types & form:
            continue
        value = _parse_form(form, text, spec)
        if value is not None:
            value, form = _check(spec, form, value)
            return RuleAttr(value=value, negated=negated, hex=bool(form & HEX_TYPES))
    raise _Illegal


# --- writing values -------------------------------------------------------


def _named(names: dict[str, int], value: int) -> str | None:
    return next((name for name, number in names.items() if number == value), None)


def _print_items(names: dict[str, int], flags: int) -> str:
    """libvirt's printStringItems: the single-bit names of ``flags``, low bit first."""
    return ",".join(
        name
        for bit in range(32)
        if flags & (1 << bit)
        for name, v in names.items()
        if v == 1 << bit
    )


def _print_tcp_flags(flags: int) -> str:
    if flags == 0:
        return "NONE"
    if flags == 0x3F:
        return "ALL"
    return _print_items(TCP_FLAGS, flags)


def _format_value(spec: AttrSpec, attr: RuleAttr) -> str:
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
    if check is Check.STATE:
        return _print_items(STATE_FLAGS, value)
    if check in (Check.MAC_PROTOCOL, Check.VLAN_ENCAP, Check.ARP_OPCODE, Check.IP_PROTOCOL):
        names = {Check.ARP_OPCODE: ARP_OPCODES, Check.IP_PROTOCOL: IP_PROTOCOLS}
        name = _named(names.get(check, MAC_PROTOCOLS), value)
        if name is not None:
            return name
        if check is Check.ARP_OPCODE:
            return str(value)
    return f"0x{value:x}" if attr.hex else str(value)


# --- the protocol element ---------------------------------------------------


def _parse_details(node: etree._Element, spec: ProtocolSpec, attrs: dict[str, RuleAttr]) -> None:
    """Read the attributes of one protocol element into ``attrs``; raises VirtError."""
    negated = node.get("match") == "no"
    error: VirtError | None = None
    for attr_spec in spec.attrs:
        text = node.get(attr_spec.name)
        if text is None:
            continue
        try:
            attrs[attr_spec.name] = _parse_attr(attr_spec, text, negated)
        except _Illegal:
            error = _internal(f"{attr_spec.name} has illegal value {text}")
    if error is not None:
        raise error


def _validate(spec: ProtocolSpec, attrs: dict[str, RuleAttr]) -> None:
    """virNWFilterRuleValidate: ports in an ip/ipv6 rule need a port protocol."""
    if spec.port_check is None:
        return
    ports = ("srcportstart", "srcportend", "dstportstart", "dstportend")
    if not any(name in attrs for name in ports):
        return
    protocol = attrs.get("protocol")
    # A protocol given as a variable counts as protocol 0 here, as in libvirt.
    number = protocol.value if protocol is not None and protocol.var is None else 0
    if protocol is None or number not in PORT_PROTOCOLS:
        raise _internal(
            f"{spec.port_check} rule with port specification requires protocol "
            "specification with protocol to be either one of tcp(6), udp(17), "
            "dccp(33), or sctp(132)"
        )


def _fixup(spec: ProtocolSpec, attrs: dict[str, RuleAttr]) -> None:
    """virNWFilterRuleDefFixup: copy negations, complete or drop ipset matches."""
    for target, source in spec.negation_copies:
        if target in attrs:
            source_attr = attrs.get(source)
            negated = source_attr.negated if source_attr is not None else False
            attrs[target] = attrs[target].model_copy(update={"negated": negated})
    if spec.ipset_fixup:
        if "ipset" in attrs and "ipsetflags" not in attrs:
            attrs["ipsetflags"] = RuleAttr(value=("src",))
        else:
            attrs.pop("ipset", None)
            attrs.pop("ipsetflags", None)


def _format_details(w: XmlWriter, spec: ProtocolSpec, attrs: dict[str, RuleAttr]) -> None:
    """virNWFilterRuleDefDetailsFormat: the protocol element(s) of a rule."""
    line: str | None = None
    shown_negated: bool | None = None  # negation of the open element, None if undecided
    present = [(s, attrs[s.name]) for s in spec.attrs if s.name in attrs]
    index = 0
    while index < len(present):
        attr_spec, attr = present[index]
        if line is None:
            line = f"<{spec.name}"
        if shown_negated is not None and shown_negated != attr.negated:
            w.line(line + "/>")
            line, shown_negated = None, None
            continue
        if shown_negated is None and attr.negated:
            line += " match='no'"
        shown_negated = attr.negated
        line += f" {attr_spec.name}='{escape(_format_value(attr_spec, attr))}'"
        index += 1
    w.line((line or f"<{spec.name}") + "/>")


# --- the rule ----------------------------------------------------------------


def _parse_choice(node: etree._Element, name: str, choices: type[_E]) -> _E:
    text = node.get(name)
    if text is None:
        raise _internal(f"rule node requires {name} attribute")
    try:
        return choices(text)
    except ValueError:
        raise VirtError(
            ErrorCode.CONFIG_UNSUPPORTED, f"unknown rule {name} attribute value", _DOMAIN
        ) from None


def parse_rule(node: etree._Element) -> NWFilterRule:
    """virNWFilterRuleParse: one ``<rule>`` element; raises ``VirtError``."""
    action = _parse_choice(node, "action", RuleAction)
    direction = _parse_choice(node, "direction", RuleDirection)
    priority = DEFAULT_RULE_PRIORITY
    priority_text = node.get("priority")
    if priority_text is not None:
        number = parse_int(priority_text)
        if number is not None and MIN_RULE_PRIORITY <= number <= MAX_RULE_PRIORITY:
            priority = number
    statematch_text = node.get("statematch")
    statematch = statematch_text is None or not (
        statematch_text == "0" or _ascii_lower(statematch_text) == "false"
    )

    spec: ProtocolSpec | None = None
    attrs: dict[str, RuleAttr] = {}
    for child in node:
        if not isinstance(child.tag, str):
            continue
        name = etree.QName(child).localname
        if spec is None:
            spec = PROTOCOLS.get(name)
        if spec is None or name != spec.name:
            continue
        _parse_details(child, spec, attrs)
        _validate(spec, attrs)
    if spec is not None:
        _fixup(spec, attrs)
    return NWFilterRule(
        action=action,
        direction=direction,
        priority=priority,
        statematch=statematch,
        protocol=spec.name if spec else None,
        attrs=attrs,
    )


def format_rule(w: XmlWriter, rule: NWFilterRule) -> None:
    """virNWFilterRuleDefFormat: the ``<rule>`` element."""
    head = (
        f"<rule action='{rule.action.value}' direction='{rule.direction.value}'"
        f" priority='{rule.priority}'"
    )
    if not rule.statematch:
        head += " statematch='false'"
    spec = rule.spec
    if spec is None:
        w.line(head + "/>")
        return
    w.line(head + ">")
    inner = w.child()
    _format_details(inner, spec, rule.attrs)
    w.extend(inner)
    w.line("</rule>")
