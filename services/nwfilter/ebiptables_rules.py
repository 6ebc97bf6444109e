"""One filter rule as ebtables, iptables or ip6tables arguments, exactly as libvirt 9 writes them.

This is the per-rule half of libvirt's nwfilter_ebiptables_driver.c
(ebtablesCreateRuleInstance, _iptablesCreateRuleInstance and their helpers);
``ebiptables`` puts the rules into chains and transactions.  Directions are
seen from the guest: an ``out`` rule matches what the guest sends, which
ebtables sees entering the bridge port (the ``J`` chain) and iptables in the
``FJ``/``HJ`` chains; ``in`` is the reverse.  Values given as variables are
written as the variable's text, untouched, as libvirt does.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.nwfilter.firewall import FwLayer, Transaction
from shared.conf.nwfilter_attrs import RuleAttr, TcpFlags
from shared.conf.nwfilter_params import VarAccess
from shared.conf.nwfilter_protocols import STATE_FLAGS, TCP_FLAGS, Layer
from shared.conf.nwfilter_rule import NWFilterRule, RuleAction, RuleDirection
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

Combo = Mapping[VarAccess, str]

#: The bridge group address STP frames go to.
STP_BGA = "01:80:c2:00:00:00"
ETHERTYPE = {"arp": 0x0806, "rarp": 0x8035}
#: iptables' ``-p`` name of each IP protocol element.
IPT_PROTOCOL = {
    "tcp": "tcp",
    "udp": "udp",
    "udplite": "udplite",
    "esp": "esp",
    "ah": "ah",
    "sctp": "sctp",
    "icmp": "icmp",
    "igmp": "igmp",
    "all": "all",
    "tcp-ipv6": "tcp",
    "udp-ipv6": "udp",
    "udplite-ipv6": "udplite",
    "esp-ipv6": "esp",
    "ah-ipv6": "ah",
    "sctp-ipv6": "sctp",
    "icmpv6": "icmpv6",
    "all-ipv6": "all",
}
_PORTED = {"tcp", "udp", "sctp", "tcp-ipv6", "udp-ipv6", "sctp-ipv6"}
_STATE_ORDER = ("NEW", "ESTABLISHED", "RELATED", "INVALID")
STATE_BITS = sum(STATE_FLAGS.values())


def _internal(message: str) -> VirtError:
    return VirtError(ErrorCode.INTERNAL_ERROR, message, ErrorDomain.NWFILTER)


def layer_of(rule: NWFilterRule) -> FwLayer:
    """Which program instantiates ``rule`` (a rule without protocol is ebtables')."""
    spec = rule.spec
    if spec is None or spec.layer is Layer.ETHERNET:
        return FwLayer.ETHERNET
    return FwLayer.IPV6 if spec.layer is Layer.IPV6 else FwLayer.IPV4


def text(attr: RuleAttr, combo: Combo, *, as_hex: bool = False, direction_in: bool = False) -> str:
    """printDataType: an attribute's value as a command argument."""
    if attr.var is not None:
        return combo[attr.var]
    value = attr.value
    if isinstance(value, tuple):  # ipsetflags: src/dst swap for traffic towards the guest
        swap = {"src": "dst", "dst": "src"}
        return ",".join(swap[f] if direction_in else f for f in value)
    if isinstance(value, bool | TcpFlags) or value is None:
        raise _internal(f"Cannot print data type of {value!r}")
    if isinstance(value, int):
        return f"0x{value:x}" if as_hex else str(value)
    return value


def tcp_flags_text(flags: int) -> str:
    """virNWFilterPrintTCPFlags."""
    if flags == 0:
        return "NONE"
    if flags == 0x3F:
        return "ALL"
    return ",".join(
        name for name, bit in TCP_FLAGS.items() if bit in (1, 2, 4, 8, 16, 32) and flags & bit
    )


def state_flags(rule: NWFilterRule) -> int:
    """The connection states a rule's ``state`` attribute sets (rule->flags)."""
    attr = rule.attrs.get("state")
    if attr is None or not isinstance(attr.value, int) or isinstance(attr.value, bool):
        return 0
    return attr.value


def state_text(flags: int) -> str | None:
    """virNWFilterPrintStateMatchFlags without NONE; None for NONE or nothing."""
    if flags & STATE_FLAGS["NONE"]:
        return None
    names = [name for name in _STATE_ORDER if flags & STATE_FLAGS[name]]
    return ",".join(names) or None


def target_of(action: RuleAction) -> str:
    return action.value.upper()


# --- ebtables ---------------------------------------------------------------


class RuleValues:
    """A rule instance's attributes and their values for one variable combination."""

    def __init__(self, rule: NWFilterRule, combo: Combo) -> None:
        self.rule = rule
        self.combo = combo
        self.parts: list[str] = []

    def has(self, name: str) -> bool:
        return name in self.rule.attrs

    def attr(self, name: str) -> RuleAttr:
        return self.rule.attrs[name]

    def val(self, name: str, *, as_hex: bool = False) -> str:
        return text(self.rule.attrs[name], self.combo, as_hex=as_hex)

    def neg(self, name: str) -> bool:
        attr = self.rule.attrs.get(name)
        return attr is not None and attr.negated

    def add(self, *parts: str) -> None:
        self.parts.extend(parts)


class _Args(RuleValues):
    """A command's arguments being built (``parts``)."""

    @property
    def args(self) -> list[str]:
        return self.parts

    def bang(self, name: str) -> None:
        if self.neg(name):
            self.args.append("!")

    def item(self, name: str, option: str, *, as_hex: bool = False) -> None:
        """INST_ITEM: option, negation, value (ebtables' order)."""
        if self.has(name):
            value = self.val(name, as_hex=as_hex)
            self.add(option)
            self.bang(name)
            self.add(value)

    def item2(self, name: str, high: str, option: str, sep: str) -> None:
        """INST_ITEM_2PARMS: ``low[sep high]``."""
        if self.has(name):
            value = self.val(name)
            self.add(option)
            self.bang(name)
            self.add(f"{value}{sep}{self.val(high)}" if self.has(high) else value)


def _eth_header(a: _Args, reverse: bool) -> None:
    """ebtablesHandleEthHdr."""
    a.item2("srcmacaddr", "srcmacmask", "-d" if reverse else "-s", "/")
    a.item2("dstmacaddr", "dstmacmask", "-s" if reverse else "-d", "/")


def _ebt_ip(a: _Args, reverse: bool, v6: bool) -> None:
    pre = "--ip6" if v6 else "--ip"
    src, dst = ("-destination", "-source") if reverse else ("-source", "-destination")
    a.item2("srcipaddr", "srcipmask", pre + src, "/")
    a.item2("dstipaddr", "dstipmask", pre + dst, "/")
    a.item("protocol", f"{pre}-protocol")
    a.item2("srcportstart", "srcportend", f"{pre}{src}-port", ":")
    a.item2("dstportstart", "dstportend", f"{pre}{dst}-port", ":")
    if not v6:
        if a.has("dscp"):
            value = a.val("dscp", as_hex=True)
            a.add("--ip-tos")
            a.bang("dscp")
            a.add(value)
        return
    if any(a.has(n) for n in ("type", "typeend", "code", "codeend")):
        a.add("--ip6-icmp-type")
        ranges = []
        for low, high in (("type", "typeend"), ("code", "codeend")):
            first = a.val(low) if a.has(low) else "0"
            last = a.val(high) if a.has(high) else (first if a.has(low) else "255")
            ranges.append(f"{first}:{last}")
        a.bang("type")
        a.add("/".join(ranges))


def _ebt_arp(a: _Args, reverse: bool) -> None:
    a.add("-p", f"0x{ETHERTYPE[a.rule.protocol or 'arp']:x}")
    a.item("hwtype", "--arp-htype")
    a.item("opcode", "--arp-opcode")
    a.item("protocoltype", "--arp-ptype", as_hex=True)
    # libvirt keeps one mask buffer for both addresses: a source mask also
    # applies to a destination given without one.
    mask: str | None = None
    for addr, addr_mask, fwd, rev in (
        ("arpsrcipaddr", "arpsrcipmask", "--arp-ip-src", "--arp-ip-dst"),
        ("arpdstipaddr", "arpdstipmask", "--arp-ip-dst", "--arp-ip-src"),
    ):
        if a.has(addr):
            ip = a.val(addr)
            if a.has(addr_mask):
                mask = a.val(addr_mask)
            a.add(rev if reverse else fwd)
            a.bang(addr)
            a.add(f"{ip}/{mask if mask is not None else '32'}")
    for addr, fwd, rev in (
        ("arpsrcmacaddr", "--arp-mac-src", "--arp-mac-dst"),
        ("arpdstmacaddr", "--arp-mac-dst", "--arp-mac-src"),
    ):
        if a.has(addr):
            mac = a.val(addr)
            a.add(rev if reverse else fwd)
            a.bang(addr)
            a.add(mac)
    if a.has("gratuitous") and a.attr("gratuitous").value is True:
        a.bang("gratuitous")
        a.add("--arp-gratuitous")


_STP_ITEMS = (
    ("root-priority", "root-priority-hi", "--stp-root-pri", ":"),
    ("root-address", "root-address-mask", "--stp-root-addr", "/"),
    ("root-cost", "root-cost-hi", "--stp-root-cost", ":"),
    ("sender-priority", "sender-priority-hi", "--stp-sender-prio", ":"),
    ("sender-address", "sender-address-mask", "--stp-sender-addr", "/"),
    ("port", "port-hi", "--stp-port", ":"),
    ("age", "age-hi", "--stp-msg-age", ":"),
    ("max-age", "max-age-hi", "--stp-max-age", ":"),
    ("hello-time", "hello-time-hi", "--stp-hello-time", ":"),
    ("forward-delay", "forward-delay-hi", "--stp-forward-delay", ":"),
)


def ebtables_rule(
    tx: Transaction, chain: str, rule: NWFilterRule, combo: Combo, reverse: bool
) -> None:
    """ebtablesCreateRuleInstance: append the rule to ebtables chain ``chain``."""
    a = _Args(rule, combo)
    a.add("-t", "nat", "-A", chain)
    protocol = rule.protocol
    if protocol == "stp" and reverse and a.has("srcmacaddr"):
        raise _internal(
            "STP filtering in inout direction with source MAC address set is not supported"
        )
    if protocol is not None:
        _eth_header(a, reverse)
    if protocol == "mac":
        if a.has("protocolid"):
            value = a.val("protocolid", as_hex=True)
            a.add("-p")
            a.bang("protocolid")
            a.add(value)
    elif protocol == "vlan":
        a.add("-p", "0x8100")
        a.item("vlanid", "--vlan-id")
        a.item("encap-protocol", "--vlan-encap")
    elif protocol == "stp":
        a.add("-d", STP_BGA)
        a.item("type", "--stp-type")
        a.item("flags", "--stp-flags")
        for low, high, option, sep in _STP_ITEMS:
            a.item2(low, high, option, sep)
    elif protocol in ("arp", "rarp"):
        _ebt_arp(a, reverse)
    elif protocol in ("ip", "ipv6"):
        a.add("-p", protocol if protocol == "ipv6" else "ipv4")
        _ebt_ip(a, reverse, protocol == "ipv6")
    action = RuleAction.DROP if rule.action is RuleAction.REJECT else rule.action
    a.add("-j", target_of(action))
    tx.add(FwLayer.ETHERNET, *a.args)


# --- iptables ---------------------------------------------------------------


def _ipt_ip_header(a: _Args, direction_in: bool) -> tuple[bool, bool]:
    """iptablesHandleIPHdr; returns (skip the rule, skip the state match)."""
    src, dst = ("--destination", "--source") if direction_in else ("--source", "--destination")
    srange, drange = (
        ("--dst-range", "--src-range") if direction_in else ("--src-range", "--dst-range")
    )
    for addr, mask, frm, to, option, range_option in (
        ("srcipaddr", "srcipmask", "srcipfrom", "srcipto", src, srange),
        ("dstipaddr", "dstipmask", "dstipfrom", "dstipto", dst, drange),
    ):
        if a.has(addr):
            ip = a.val(addr)
            a.bang(addr)
            a.add(option, f"{ip}/{a.val(mask)}" if a.has(mask) else ip)
        elif a.has(frm):
            ip = a.val(frm)
            a.add("-m", "iprange")
            a.bang(frm)
            a.add(range_option, f"{ip}-{a.val(to)}" if a.has(to) else ip)
    if a.has("dscp"):
        value = a.val("dscp")
        a.add("-m", "dscp")
        a.bang("dscp")
        a.add("--dscp", value)
    if a.has("connlimit-above"):
        # libvirt limits connections only for traffic from the guest.
        return direction_in, not direction_in
    return False, False


def _ipt_ports(a: _Args, direction_in: bool) -> None:
    sport, dport = ("--dport", "--sport") if direction_in else ("--sport", "--dport")
    for start, end, option in (
        ("srcportstart", "srcportend", sport),
        ("dstportstart", "dstportend", dport),
    ):
        if a.has(start):
            port = a.val(start)
            a.bang(start)
            a.add(option, f"{port}:{a.val(end)}" if a.has(end) else port)


def _ipt_after_state(a: _Args, direction_in: bool) -> None:
    """iptablesHandleIPHdrAfterStateMatch: ipset, connlimit, comment."""
    if a.has("ipset") and a.has("ipsetflags"):
        a.add("-m", "set", "--match-set", a.val("ipset"))
        a.add(text(a.attr("ipsetflags"), a.combo, direction_in=direction_in))
    if a.has("connlimit-above") and not direction_in:
        value = a.val("connlimit-above")
        a.add("-m", "connlimit")
        a.bang("connlimit-above")
        a.add("--connlimit-above", value)
    if a.has("comment"):
        a.add("-m", "comment", "--comment", a.val("comment"))


def iptables_rule(
    tx: Transaction,
    layer: FwLayer,
    chain: str,
    rule: NWFilterRule,
    combo: Combo,
    *,
    direction_in: bool,
    match: str | None,
    default_match: bool,
    accept_target: str,
    may_skip_icmp: bool,
) -> None:
    """_iptablesCreateRuleInstance: append the rule to ``chain``, or nothing
    when libvirt leaves it out for this chain."""
    protocol = rule.protocol or ""
    a = _Args(rule, combo)
    a.add("-A", chain, "-p", IPT_PROTOCOL[protocol])
    base = len(a.args)
    mac_skipped = False
    if a.has("srcmacaddr"):
        if direction_in:
            mac_skipped = True
        else:
            mac = a.val("srcmacaddr")
            a.add("-m", "mac")
            a.bang("srcmacaddr")
            a.add("--mac-source", mac)
    skip_rule, skip_match = _ipt_ip_header(a, direction_in)
    if protocol in ("tcp", "tcp-ipv6") and a.has("flags"):
        flags = a.attr("flags").value
        assert isinstance(flags, TcpFlags)
        a.bang("flags")
        a.add("--tcp-flags", tcp_flags_text(flags.mask), tcp_flags_text(flags.flags))
    if protocol in _PORTED:
        _ipt_ports(a, direction_in)
    if protocol in ("tcp", "tcp-ipv6") and a.has("option"):
        value = a.val("option")
        a.bang("option")
        a.add("--tcp-option", value)
    has_icmp_type = False
    if protocol in ("icmp", "icmpv6") and a.has("type"):
        has_icmp_type = True
        if may_skip_icmp:
            return
        value = a.val("type")
        a.bang("type")
        a.add("--icmp-type" if protocol == "icmp" else "--icmpv6-type")
        a.add(f"{value}/{a.val('code')}" if a.has("code") else value)
    if (mac_skipped and len(a.args) == base) or skip_rule:
        return
    if rule.action is RuleAction.ACCEPT:
        target = accept_target
    else:
        target = target_of(rule.action)
        skip_match = default_match
    if match is not None and not skip_match:
        a.add("-m", "conntrack", "--ctstate", match)
        if default_match and not has_icmp_type and rule.direction is not RuleDirection.INOUT:
            a.add("-m", "conntrack", "--ctdir", "Reply" if direction_in else "Original")
    _ipt_after_state(a, direction_in)
    a.add("-j", target)
    tx.add(layer, *a.args)
