"""Round-trip properties of the filter and binding kinds over generated models.

The generators produce the models libvirt itself can round-trip: values in
their canonical form, negations as libvirt's fix-up leaves them, and no
ipset on protocols whose ipset fix-up is not idempotent (tested by example
in test_conf_nwfilter).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.conf.macaddr import format_mac
from shared.conf.nwfilter import (
    CHAIN_PREFIXES,
    CHAIN_PRIORITIES,
    NWFilterDef,
    format_nwfilter,
    parse_nwfilter,
)
from shared.conf.nwfilter_attrs import RuleAttr, TcpFlags
from shared.conf.nwfilter_binding import (
    NWFilterBindingDef,
    format_nwfilter_binding,
    parse_nwfilter_binding,
)
from shared.conf.nwfilter_params import MAX_ITERID, FilterRef, VarAccess
from shared.conf.nwfilter_protocols import (
    ARP_OPCODES,
    HEX_TYPES,
    IP_PROTOCOLS,
    MAC_PROTOCOLS,
    PORT_PROTOCOLS,
    PROTOCOLS,
    STATE_FLAGS,
    AttrSpec,
    Check,
    DataType,
)
from shared.conf.nwfilter_rule import NWFilterRule, RuleAction, RuleDirection
from shared.conf.socketaddr import format_ip

_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
_names = st.text(alphabet=_NAME_CHARS + "-.", min_size=1, max_size=12)
_var_names = st.text(alphabet=_NAME_CHARS, max_size=6)
_param_values = st.text(alphabet=_NAME_CHARS + ".:", min_size=1, max_size=10)
# Text that survives XML attribute-value normalisation and libvirt's escaping.
_free_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xD7FF), max_size=40
).filter(lambda s: not s.startswith("$") and len(s.encode()) <= 256)
_ports = ("srcportstart", "srcportend", "dstportstart", "dstportend")

_macs = st.binary(min_size=6, max_size=6).map(format_mac)
_mac_masks = st.integers(0, 48).map(
    lambda n: format_mac(((1 << 48) - (1 << (48 - n))).to_bytes(6, "big"))
)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(format_ip)
_var_access = st.one_of(
    st.builds(VarAccess, name=_var_names, iterator=st.integers(0, MAX_ITERID)),
    st.builds(VarAccess, name=_var_names, index=st.integers(0, 0xFFFFFFFF)),
)


def _number(top: int, forms: DataType, low: int = 0) -> st.SearchStrategy[RuleAttr]:
    hexes = st.booleans() if forms & HEX_TYPES else st.just(False)
    return st.builds(lambda v, h: RuleAttr(value=v, hex=h), st.integers(low, top), hexes)


def _named_number(
    names: dict[str, int], low: int, top: int, named_hex: bool, forms: DataType
) -> st.SearchStrategy[RuleAttr]:
    """A number that a name may stand for; a named value comes back with the
    form libvirt records for names (hex for IP protocols, decimal otherwise)."""

    def fix(attr: RuleAttr) -> RuleAttr:
        if attr.value in names.values():
            return RuleAttr(value=attr.value, hex=named_hex)
        return attr

    return _number(top, forms, low).map(fix)


def _value(spec: AttrSpec) -> st.SearchStrategy[RuleAttr]:
    check, types = spec.check, spec.types
    if check is Check.MAC_PROTOCOL:
        return _named_number(MAC_PROTOCOLS, 0x600, 0xFFFF, False, types)
    if check is Check.VLAN_ENCAP:
        return _named_number(MAC_PROTOCOLS, 0x3C, 0xFFFF, False, types)
    if check is Check.IP_PROTOCOL:
        return _named_number(IP_PROTOCOLS, 0, 0xFF, True, types)
    if check is Check.ARP_OPCODE:
        return _named_number(ARP_OPCODES, 0, 0xFFFF, False, DataType.UINT16)
    if check is Check.VLAN_ID:
        return _number(4095, types)
    if check is Check.DSCP:
        return _number(63, types)
    if check is Check.STATE:
        plain = st.sets(st.sampled_from(["NEW", "ESTABLISHED", "RELATED", "INVALID"]))
        flags = plain.map(lambda s: sum(STATE_FLAGS[n] for n in s))
        return st.one_of(st.just(STATE_FLAGS["NONE"]), flags).map(lambda v: RuleAttr(value=v))
    if check is Check.TCP_FLAGS:
        return st.builds(TcpFlags, mask=st.integers(0, 63), flags=st.integers(0, 63)).map(
            lambda v: RuleAttr(value=v)
        )
    if check is Check.IPSET:
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-+ "
        return st.text(alphabet=alphabet, max_size=31).map(lambda v: RuleAttr(value=v))
    if check is Check.IPSET_FLAGS:
        words = st.lists(st.sampled_from(["src", "dst"]), min_size=1, max_size=6)
        return words.map(lambda v: RuleAttr(value=tuple(v)))
    by_type: dict[DataType, st.SearchStrategy[bool | int | str]] = {
        DataType.MACADDR: _macs,
        DataType.MACMASK: _mac_masks,
        DataType.IPADDR: _ipv4,
        DataType.IPV6ADDR: _ipv6,
        DataType.IPMASK: st.integers(0, 32),
        DataType.IPV6MASK: st.integers(0, 128),
        DataType.STRINGCOPY: _free_text,
        DataType.BOOLEAN: st.booleans(),
    }
    for form, values in by_type.items():
        if types & form:
            return values.map(lambda v: RuleAttr(value=v))
    top = 0xFF if types & DataType.UINT8 else 0xFFFF if types & DataType.UINT16 else 0xFFFFFFFF
    return _number(top, types)


@st.composite
def rules(draw: st.DrawFn) -> NWFilterRule:
    action = draw(st.sampled_from(list(RuleAction)))
    direction = draw(st.sampled_from(list(RuleDirection)))
    priority = draw(st.integers(-1000, 1000))
    statematch = draw(st.booleans())
    protocol = draw(st.one_of(st.none(), st.sampled_from(list(PROTOCOLS))))
    if protocol is None:
        return NWFilterRule(
            action=action, direction=direction, priority=priority, statematch=statematch
        )
    spec = PROTOCOLS[protocol]
    candidates = [
        a for a in spec.attrs if not (spec.ipset_fixup and a.name in ("ipset", "ipsetflags"))
    ]
    chosen = draw(st.lists(st.sampled_from(candidates), unique=True, max_size=6))
    negated = draw(st.booleans())
    attrs: dict[str, RuleAttr] = {}
    for attr_spec in chosen:
        attr = draw(st.one_of(_value(attr_spec), _var_access.map(lambda v: RuleAttr(var=v))))
        attrs[attr_spec.name] = attr.model_copy(update={"negated": negated})
    if spec.port_check and any(p in attrs for p in _ports):
        number = draw(st.sampled_from(sorted(PORT_PROTOCOLS)))
        named = number in IP_PROTOCOLS.values()
        attrs["protocol"] = RuleAttr(
            value=number, negated=negated, hex=named or draw(st.booleans())
        )
    # libvirt's fix-up: these take their negation from another attribute.
    for target, source in spec.negation_copies:
        if target in attrs:
            source_negated = source in attrs and attrs[source].negated
            attrs[target] = attrs[target].model_copy(update={"negated": source_negated})
    return NWFilterRule(
        action=action,
        direction=direction,
        priority=priority,
        statematch=statematch,
        protocol=protocol,
        attrs=attrs,
    )


_filterrefs = st.builds(
    FilterRef,
    filter=_names,
    parameters=st.dictionaries(
        st.text(alphabet=_NAME_CHARS, min_size=1, max_size=8),
        st.lists(_param_values, min_size=1, max_size=3).map(tuple),
        max_size=3,
    ),
)


@st.composite
def filters(draw: st.DrawFn) -> NWFilterDef:
    prefix = draw(st.sampled_from(CHAIN_PREFIXES))
    chain = prefix
    if prefix != "root":
        chain += draw(
            st.text(alphabet=_NAME_CHARS + ".:-", max_size=12 - len(prefix)).filter(
                lambda s: not s.startswith("root")
            )
        )
    default = CHAIN_PRIORITIES.get(prefix, 0)
    # Priority 0 is not written, and reading the filter back gives the chain's default.
    priority = draw(st.integers(-1000, 1000).filter(lambda p: p != 0 or default == 0))
    return NWFilterDef(
        name=draw(_names),
        uuid=str(draw(st.uuids())),
        chain=chain,
        priority=priority,
        entries=tuple(draw(st.lists(st.one_of(rules(), _filterrefs), max_size=5))),
    )


@settings(max_examples=300)
@given(filters())
def test_filter_format_parse_format_is_stable(d: NWFilterDef) -> None:
    once = format_nwfilter(d)
    assert format_nwfilter(parse_nwfilter(once)) == once


@given(filters())
def test_filter_model_survives_json(d: NWFilterDef) -> None:
    assert NWFilterDef.model_validate_json(d.model_dump_json()) == d


_text_content = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xD7FF), min_size=1, max_size=20
)
_attr_text = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0xD7FF), min_size=1, max_size=15
)

bindings = st.builds(
    NWFilterBindingDef,
    owner_name=_text_content,
    owner_uuid=st.uuids().map(str),
    portdev=_attr_text,
    linkdev=st.one_of(st.none(), _attr_text),
    mac=_macs,
    filter=_names,
    parameters=_filterrefs.map(lambda ref: ref.parameters),
)


@given(bindings)
def test_binding_format_parse_format_is_stable(b: NWFilterBindingDef) -> None:
    once = format_nwfilter_binding(b)
    assert format_nwfilter_binding(parse_nwfilter_binding(once)) == once
    assert parse_nwfilter_binding(once) == b
