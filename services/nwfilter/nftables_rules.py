"""One filter rule as nftables expressions, with the semantics libvirt gives it.

The per-rule half of the nftables backend (``nftables`` puts the rules into
chains and transactions): the layer-2 matches ebtables would make, and the IP
matches with libvirt's connection-state rules for the ``FI``/``FO``/``HI``
chains.  What nftables cannot express here is refused with
``VIR_ERR_CONFIG_UNSUPPORTED`` (``check_supported``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from services.nwfilter.ebiptables_rules import (
    IPT_PROTOCOL,
    STATE_BITS,
    RuleValues,
    state_flags,
    tcp_flags_text,
)
from services.nwfilter.resolve import RuleInst
from services.nwfilter.variables import combinations
from shared.conf.nwfilter_attrs import TcpFlags
from shared.conf.nwfilter_params import VarAccess
from shared.conf.nwfilter_protocols import STATE_FLAGS
from shared.conf.nwfilter_rule import NWFilterRule, RuleAction, RuleDirection
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_UNSUPPORTED = ("ipset", "connlimit-above", "gratuitous", "option")
_STP_FIELDS = frozenset(
    {"type", "flags", "root-priority", "root-address", "root-cost", "sender-priority"}
    | {"sender-address", "port", "age", "max-age", "hello-time", "forward-delay"}
)


def _unsupported(what: str) -> VirtError:
    return VirtError(
        ErrorCode.CONFIG_UNSUPPORTED,
        f"{what} is not supported by the nftables backend",
        ErrorDomain.NWFILTER,
    )


# --- matches ------------------------------------------------------------------


class _Match(RuleValues):
    """The nft expression of one rule instance being built (``parts``)."""

    def op(self, name: str) -> str:
        return "!= " if self.neg(name) else ""

    def field(self, name: str, expr: str, value: str) -> None:
        self.add(f"{expr} {self.op(name)}{value}")

    def addr(self, name: str, mask: str | None, expr: str, v6: bool) -> None:
        """An address with an optional prefix length (or a MAC with a mask)."""
        value = self.val(name)
        if mask is not None and self.has(mask):
            if expr.startswith("ether"):
                self.add(f"{expr} & {self.val(mask)} {self.op(name)}{value}")
                return
            value = str(ipaddress.ip_network(f"{value}/{self.val(mask)}", strict=False))
        self.field(name, expr, value)

    def span(self, name: str, high: str, expr: str) -> None:
        value = self.val(name)
        if self.has(high):
            value = f"{value}-{self.val(high)}"
        self.field(name, expr, value)


def _mac_header(m: _Match, reverse: bool) -> None:
    for addr, mask, fwd, rev in (
        ("srcmacaddr", "srcmacmask", "ether saddr", "ether daddr"),
        ("dstmacaddr", "dstmacmask", "ether daddr", "ether saddr"),
    ):
        if m.has(addr):
            m.addr(addr, mask, rev if reverse else fwd, False)


def _ip4(value: str) -> str:
    return f"0x{int(ipaddress.IPv4Address(value)):08x}"


def _arp(m: _Match, reverse: bool) -> None:
    """ARP and RARP fields by offset (nft's arp expressions know ARP only)."""
    m.add(f"ether type 0x{0x0806 if m.rule.protocol == 'arp' else 0x8035:04x}")
    if m.has("hwtype"):
        m.field("hwtype", "@nh,0,16", m.val("hwtype"))
    if m.has("opcode"):
        m.field("opcode", "@nh,48,16", m.val("opcode"))
    if m.has("protocoltype"):
        m.field("protocoltype", "@nh,16,16", m.val("protocoltype"))
    src, dst = ("@nh,112,32", "@nh,192,32")
    mask_bits: str | None = None
    for addr, mask, fwd, rev in (
        ("arpsrcipaddr", "arpsrcipmask", src, dst),
        ("arpdstipaddr", "arpdstipmask", dst, src),
    ):
        if m.has(addr):
            if m.has(mask):
                mask_bits = m.val(mask)
            bits = int(mask_bits) if mask_bits is not None else 32
            netmask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
            expr = rev if reverse else fwd
            value = int(_ip4(m.val(addr)), 16) & netmask
            if bits == 32:
                m.field(addr, expr, f"0x{value:08x}")
            else:
                m.add(f"{expr} & 0x{netmask:08x} {m.op(addr)}0x{value:08x}")
    for addr, fwd, rev in (
        ("arpsrcmacaddr", "@nh,64,48", "@nh,144,48"),
        ("arpdstmacaddr", "@nh,144,48", "@nh,64,48"),
    ):
        if m.has(addr):
            m.field(addr, rev if reverse else fwd, "0x" + m.val(addr).replace(":", ""))


def _ip_l2(m: _Match, reverse: bool, v6: bool) -> None:
    """ebtables' ``-p ipv4``/``-p ipv6`` matches."""
    fam = "ip6" if v6 else "ip"
    m.add(f"ether type {'0x86dd' if v6 else '0x0800'}")
    src, dst = ("daddr", "saddr") if reverse else ("saddr", "daddr")
    for addr, mask, which in (("srcipaddr", "srcipmask", src), ("dstipaddr", "dstipmask", dst)):
        if m.has(addr):
            m.addr(addr, mask, f"{fam} {which}", v6)
    if m.has("protocol"):
        m.field("protocol", "ip6 nexthdr" if v6 else "ip protocol", m.val("protocol"))
    sport, dport = ("dport", "sport") if reverse else ("sport", "dport")
    if m.has("srcportstart"):
        m.span("srcportstart", "srcportend", f"th {sport}")
    if m.has("dstportstart"):
        m.span("dstportstart", "dstportend", f"th {dport}")
    if not v6 and m.has("dscp"):
        # libvirt hands the value to ebtables' --ip-tos: the whole TOS byte.
        m.field("dscp", "@nh,8,8", m.val("dscp"))
    if v6 and any(m.has(n) for n in ("type", "typeend", "code", "codeend")):
        for low, high, expr in (
            ("type", "typeend", "icmpv6 type"),
            ("code", "codeend", "icmpv6 code"),
        ):
            first = m.val(low) if m.has(low) else "0"
            last = m.val(high) if m.has(high) else (first if m.has(low) else "255")
            m.add(f"{expr} {m.op('type')}{first}-{last}")


def l2_rule(rule: NWFilterRule, combo: dict[VarAccess, str], reverse: bool) -> str:
    protocol = rule.protocol
    m = _Match(rule, combo)
    if protocol == "stp":
        if reverse and m.has("srcmacaddr"):
            raise VirtError(
                ErrorCode.INTERNAL_ERROR,
                "STP filtering in inout direction with source MAC address set is not supported",
                ErrorDomain.NWFILTER,
            )
        if any(m.has(n) for n in _STP_FIELDS):
            raise _unsupported("matching STP fields")
    if protocol is not None:
        _mac_header(m, reverse)
    if protocol == "mac" and m.has("protocolid"):
        m.field("protocolid", "ether type", f"0x{int(m.val('protocolid'), 0):04x}")
    elif protocol == "vlan":
        m.add("ether type 0x8100")
        if m.has("vlanid"):
            m.field("vlanid", "vlan id", m.val("vlanid"))
        if m.has("encap-protocol"):
            m.field("encap-protocol", "vlan type", f"0x{int(m.val('encap-protocol'), 0):04x}")
    elif protocol == "stp":
        m.add("ether daddr 01:80:c2:00:00:00")
    elif protocol in ("arp", "rarp"):
        if m.has("gratuitous"):
            raise _unsupported("gratuitous ARP matching")
        _arp(m, reverse)
    elif protocol in ("ip", "ipv6"):
        _ip_l2(m, reverse, protocol == "ipv6")
    verdict = {
        RuleAction.ACCEPT: "accept",
        RuleAction.DROP: "counter drop",
        RuleAction.REJECT: "counter drop",
        RuleAction.RETURN: "return",
        RuleAction.CONTINUE: "",
    }[rule.action]
    return " ".join(p for p in (*m.parts, verdict) if p)


_L4 = {"icmpv6": "ipv6-icmp"}


def _l3_rule(
    rule: NWFilterRule,
    combo: dict[VarAccess, str],
    *,
    v6: bool,
    direction_in: bool,
    match: str | None,
    default_match: bool,
    accept: str,
    may_skip_icmp: bool,
) -> str | None:
    """One iptables-style rule as nft, or None when libvirt leaves it out."""
    protocol = rule.protocol or ""
    m = _Match(rule, combo)
    m.add(f"meta nfproto {'ipv6' if v6 else 'ipv4'}")
    name = IPT_PROTOCOL[protocol]
    if name != "all":
        m.add(f"meta l4proto {_L4.get(name, name)}")
    base = len(m.parts)
    mac_skipped = False
    if m.has("srcmacaddr"):
        if direction_in:
            mac_skipped = True
        else:
            m.field("srcmacaddr", "ether saddr", m.val("srcmacaddr"))
    fam = "ip6" if v6 else "ip"
    src, dst = ("daddr", "saddr") if direction_in else ("saddr", "daddr")
    for addr, mask, frm, to, which in (
        ("srcipaddr", "srcipmask", "srcipfrom", "srcipto", src),
        ("dstipaddr", "dstipmask", "dstipfrom", "dstipto", dst),
    ):
        if m.has(addr):
            m.addr(addr, mask, f"{fam} {which}", v6)
        elif m.has(frm):
            m.span(frm, to, f"{fam} {which}")
    if m.has("dscp"):
        m.field("dscp", f"{fam} dscp", m.val("dscp"))
    if protocol in ("tcp", "tcp-ipv6") and m.has("flags"):
        flags = rule.attrs["flags"].value
        assert isinstance(flags, TcpFlags)
        mask = "|".join(tcp_flags_text(flags.mask).lower().split(",")) if flags.mask else "0"
        want = tcp_flags_text(flags.flags).lower().replace(",", "|") if flags.flags else "0"
        mask = "fin|syn|rst|psh|ack|urg" if flags.mask == 0x3F else mask
        want = "fin|syn|rst|psh|ack|urg" if flags.flags == 0x3F else want
        equals = "!=" if rule.attrs["flags"].negated else "=="
        m.add(f"tcp flags & ({mask}) {equals} {'0x0' if want == '0' else want}")
    sport, dport = ("dport", "sport") if direction_in else ("sport", "dport")
    if m.has("srcportstart"):
        m.span("srcportstart", "srcportend", f"th {sport}")
    if m.has("dstportstart"):
        m.span("dstportstart", "dstportend", f"th {dport}")
    has_icmp_type = False
    if protocol in ("icmp", "icmpv6") and m.has("type"):
        has_icmp_type = True
        if may_skip_icmp:
            return None
        m.field("type", f"{protocol} type", m.val("type"))
        if m.has("code"):
            m.field("type", f"{protocol} code", m.val("code"))
    if mac_skipped and len(m.parts) == base:
        return None
    skip_match = False
    if rule.action is RuleAction.ACCEPT:
        verdict = accept
    else:
        verdict = {
            RuleAction.DROP: "counter drop",
            RuleAction.REJECT: "counter reject",
            RuleAction.RETURN: "return",
            RuleAction.CONTINUE: "",
        }[rule.action]
        skip_match = default_match
    if match is not None and not skip_match:
        m.add(f"ct state {{ {match.lower()} }}")
        if default_match and not has_icmp_type and rule.direction is not RuleDirection.INOUT:
            m.add(f"ct direction {'reply' if direction_in else 'original'}")
    comment = ""
    if m.has("comment"):
        comment = 'comment "' + m.val("comment").replace('"', "'") + '"'
    return " ".join(p for p in (*m.parts, verdict, comment) if p)


def _state_text(flags: int) -> str | None:
    if flags & STATE_FLAGS["NONE"]:
        return None
    names = [n for n in ("NEW", "ESTABLISHED", "RELATED", "INVALID") if flags & STATE_FLAGS[n]]
    return ",".join(names).replace(",", ", ") or None


def l3_rules(inst: RuleInst, port: str, v6: bool) -> list[tuple[str, str]]:
    """(chain, rule) pairs of one iptables-layer rule for every variable combination."""
    rule = inst.rule
    out: list[tuple[str, str]] = []
    for combo in combinations(inst.variables, rule.variables()):
        direction_in = rule.direction is not RuleDirection.OUT
        inout = rule.direction is RuleDirection.INOUT
        chains = [
            (f"FI-{port}", direction_in, "return", direction_in or inout),
            (f"FO-{port}", not direction_in, "accept", not direction_in or inout),
            (f"HI-{port}", direction_in, "return", direction_in),
        ]
        flags = state_flags(rule) & STATE_BITS
        if rule.statematch and flags:
            skip = [direction_in and not inout, not direction_in, direction_in and not inout]
            for (chain, d_in, accept, may_skip), skipped in zip(chains, skip, strict=True):
                if skipped:
                    continue
                text = _l3_rule(
                    rule, dict(combo), v6=v6, direction_in=d_in, match=_state_text(flags),
                    default_match=False, accept=accept, may_skip_icmp=may_skip,
                )  # fmt: skip
                if text is not None:
                    out.append((chain, text))
            continue
        need_state = rule.statematch and not inout
        matches = (
            "established" if direction_in else "new, established",
            "new, established" if direction_in else "established",
            "established" if direction_in else "new, established",
        )
        for (chain, d_in, accept, may_skip), match in zip(chains, matches, strict=True):
            text = _l3_rule(
                rule, dict(combo), v6=v6, direction_in=d_in,
                match=match if need_state else None, default_match=True,
                accept=accept, may_skip_icmp=may_skip,
            )  # fmt: skip
            if text is not None:
                out.append((chain, text))
    return out


def check_supported(rules: Sequence[RuleInst]) -> None:
    for inst in rules:
        for name in _UNSUPPORTED:
            if name in inst.rule.attrs and not (
                name == "gratuitous" or (name == "option" and inst.rule.protocol == "stp")
            ):
                raise _unsupported(f"the {name} attribute")
