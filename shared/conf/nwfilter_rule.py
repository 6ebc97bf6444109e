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
from typing import Literal, TypeVar, cast

from lxml import etree
from pydantic import BaseModel, ConfigDict, Field

from shared.conf.nwfilter_attrs import (
    IllegalValue,
    RuleAttr,
    ascii_lower,
    format_attr,
    parse_attr,
    value_type,
)
from shared.conf.nwfilter_params import VarAccess
from shared.conf.nwfilter_protocols import (
    PORT_PROTOCOLS,
    PROTOCOLS,
    ProtocolSpec,
)
from shared.conf.nwfilter_values import (
    parse_int,
)
from shared.conf.xmlprops import local_name, member_of
from shared.conf.xmlwriter import XmlWriter, escape_attr
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

    def model_post_init(self, context: object, /) -> None:
        # A check of the validated fields, as an "after" model validator would be;
        # pydantic runs those again each time the rule is validated as a field of
        # a filter, this only when a rule is made.  A ValueError raised here
        # becomes a ValidationError all the same.
        if self.protocol is None:
            if self.attrs:
                raise ValueError("a rule without a protocol has no attributes")
            return
        spec = PROTOCOLS.get(self.protocol)
        if spec is None:
            raise ValueError(f"unknown protocol {self.protocol!r}")
        for name, attr in self.attrs.items():
            attr_spec = spec.attr(name)
            if attr_spec is None:
                raise ValueError(f"protocol {self.protocol!r} has no attribute {name!r}")
            if attr.value is not None and not isinstance(attr.value, value_type(attr_spec)):
                raise ValueError(f"attribute {name!r} cannot hold {attr.value!r}")

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


def _internal(message: str) -> VirtError:
    return VirtError(ErrorCode.INTERNAL_ERROR, message, _DOMAIN)


# --- the protocol element ---------------------------------------------------


def _parse_details(node: etree._Element, spec: ProtocolSpec, attrs: dict[str, RuleAttr]) -> None:
    """Read the attributes of one protocol element into ``attrs``; raises VirtError."""
    # one call into lxml, not one per attribute of the table (lxml gives str)
    given = cast("dict[str, str]", dict(node.items()))
    negated = given.get("match") == "no"
    error: VirtError | None = None
    for attr_spec in spec.present(given):
        text = given[attr_spec.name]
        try:
            attrs[attr_spec.name] = parse_attr(attr_spec, text, negated)
        except IllegalValue:
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
            if attrs[target].negated != negated:
                attrs[target] = attrs[target].model_copy(update={"negated": negated})
    if spec.ipset_fixup:
        # libvirt clears both when both are given, so that its own output (an ipset
        # it completed with ipsetflags='src') loses the match when read again;
        # keeping a complete pair makes a written filter read back unchanged.
        if "ipset" in attrs and "ipsetflags" not in attrs:
            attrs["ipsetflags"] = RuleAttr(value=("src",))
        elif "ipset" not in attrs:
            attrs.pop("ipsetflags", None)


def _format_details(w: XmlWriter, spec: ProtocolSpec, attrs: dict[str, RuleAttr]) -> None:
    """virNWFilterRuleDefDetailsFormat: the protocol element(s) of a rule."""
    line: str | None = None
    shown_negated: bool | None = None  # negation of the open element, None if undecided
    present = [(s, attrs[s.name]) for s in spec.present(attrs)]
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
        line += f" {attr_spec.name}='{escape_attr(format_attr(attr_spec, attr))}'"
        index += 1
    w.line((line or f"<{spec.name}") + "/>")


# --- the rule ----------------------------------------------------------------


def _parse_choice(node: etree._Element, name: str, choices: type[_E]) -> _E:
    text = node.get(name)
    if text is None:
        raise _internal(f"rule node requires {name} attribute")
    choice = member_of(choices, text)
    if choice is None:
        raise VirtError(
            ErrorCode.CONFIG_UNSUPPORTED, f"unknown rule {name} attribute value", _DOMAIN
        )
    return choice


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
        statematch_text == "0" or ascii_lower(statematch_text) == "false"
    )

    spec: ProtocolSpec | None = None
    attrs: dict[str, RuleAttr] = {}
    for child in node:
        if not isinstance(child.tag, str):
            continue
        name = local_name(child)
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
    head = f"<rule action='{rule.action}' direction='{rule.direction}' priority='{rule.priority}'"
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
