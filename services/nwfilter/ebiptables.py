"""A binding's rules as ebtables/iptables/ip6tables transactions, exactly as libvirt 9.

The chain-level half of libvirt's nwfilter_ebiptables_driver.c.  Replacing a
binding's rules is libvirt's two steps:

1. ``apply_new_rules``: build the new rules in temporary chains (ebtables
   ``libvirt-J-<if>``/``libvirt-P-<if>`` and their sub-chains, iptables
   ``FJ-``/``FP-``/``HJ-<if>``) and link them behind the old ones, so traffic
   stays filtered by the old rules meanwhile; a failure rolls the new chains
   back and leaves the old rules alone;
2. ``tear_old_rules``: unlink and remove the old chains and rename the new
   ones to the final names (``libvirt-I/O-``, ``FI/FO/HI-``).

``all_teardown`` removes everything of an interface (a deleted binding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from services.nwfilter.ebiptables_rules import (
    STATE_BITS,
    ebtables_rule,
    iptables_rule,
    layer_of,
    state_flags,
    state_text,
)
from services.nwfilter.firewall import FwLayer, Query, Transaction
from services.nwfilter.resolve import RuleInst
from services.nwfilter.variables import combinations
from shared.conf.nwfilter_rule import RuleDirection

ETH = FwLayer.ETHERNET
VIRT_IN, VIRT_OUT, VIRT_IN_POST, HOST_IN = (
    "libvirt-in",
    "libvirt-out",
    "libvirt-in-post",
    "libvirt-host-in",
)
#: ebtables sub-chain names by prefix: what the root chain's jump matches
#: (an ethertype, the STP group address, or nothing), in libvirt's lookup order.
SUBCHAIN_MATCH: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ipv4", ("-p", "0x0800")),
    ("ipv6", ("-p", "0x86dd")),
    ("arp", ("-p", "0x0806")),
    ("rarp", ("-p", "0x8035")),
    ("mac", ()),
    ("vlan", ("-p", "0x8100")),
    ("stp", ("-d", "01:80:c2:00:00:00")),
)


def root_chain(prefix: str, ifname: str) -> str:
    return f"libvirt-{prefix}-{ifname}"


def ebt_chain(prefix: str, ifname: str, suffix: str) -> str:
    return root_chain(prefix, ifname) if suffix == "root" else f"{prefix}-{ifname}-{suffix}"


# --- ebtables chain plumbing --------------------------------------------------


def _ebt_link(tx: Transaction, prefix: str, ifname: str, *, delete: bool = False) -> None:
    incoming = prefix in "JI"
    tx.add(
        ETH,
        "-t",
        "nat",
        "-D" if delete else "-A",
        "PREROUTING" if incoming else "POSTROUTING",
        "-i" if incoming else "-o",
        ifname,
        "-j",
        root_chain(prefix, ifname),
        ignore=delete,
    )


def _ebt_remove_root(tx: Transaction, prefix: str, ifname: str) -> None:
    tx.add(ETH, "-t", "nat", "-F", root_chain(prefix, ifname), ignore=True)
    tx.add(ETH, "-t", "nat", "-X", root_chain(prefix, ifname), ignore=True)


def _ebt_remove_subchains(tx: Transaction, prefixes: str, ifname: str) -> None:
    query = Query.REMOVE_TEMP_SUBCHAINS if prefixes == "JP" else Query.REMOVE_FINAL_SUBCHAINS
    for prefix in prefixes:
        tx.add(ETH, "-t", "nat", "-L", root_chain(prefix, ifname), query=query)


def _ebt_remove_all(tx: Transaction, prefixes: str, ifname: str) -> None:
    """Unlink both roots, remove their sub-chains, remove the roots."""
    for prefix in prefixes:
        _ebt_link(tx, prefix, ifname, delete=True)
    _ebt_remove_subchains(tx, prefixes, ifname)
    for prefix in prefixes:
        _ebt_remove_root(tx, prefix, ifname)


def _ebt_subchain(
    tx: Transaction, prefix: str, ifname: str, name: str, match: Sequence[str]
) -> None:
    """ebtablesCreateTmpSubChainFW."""
    chain = ebt_chain(prefix, ifname, name)
    tx.add(ETH, "-t", "nat", "-F", chain, ignore=True)
    tx.add(ETH, "-t", "nat", "-X", chain, ignore=True)
    tx.add(ETH, "-t", "nat", "-N", chain)
    tx.add(ETH, "-t", "nat", "-A", root_chain(prefix, ifname), *match, "-j", chain)


# --- iptables chain plumbing --------------------------------------------------

#: (base chain, chain prefix, incoming) of the three per-interface root chains.
_IPT_ROOTS = ((VIRT_OUT, "F", False), (VIRT_IN, "F", True), (HOST_IN, "H", True))


def _ipt_name(prefix: str, incoming: bool, temp: bool, ifname: str) -> str:
    kind = ("J" if incoming else "P") if temp else ("I" if incoming else "O")
    return f"{prefix}{kind}-{ifname}"


def _physdev(incoming: bool, old: bool = False) -> tuple[str, ...]:
    if incoming:
        return ("-m", "physdev", "--physdev-in")
    if old:
        return ("-m", "physdev", "--physdev-out")
    return ("-m", "physdev", "--physdev-is-bridged", "--physdev-out")


def _ipt_unlink(tx: Transaction, layer: FwLayer, ifname: str, temp: bool) -> None:
    for base, prefix, incoming in _IPT_ROOTS:
        chain = _ipt_name(prefix, incoming, temp, ifname)
        tx.add(layer, "-D", base, *_physdev(incoming), ifname, "-g", chain, ignore=True)
        if not incoming:
            # Rules of older libvirt versions lack --physdev-is-bridged.
            tx.add(layer, "-D", base, *_physdev(False, old=True), ifname, "-g", chain, ignore=True)


def _ipt_remove(tx: Transaction, layer: FwLayer, ifname: str, temp: bool) -> None:
    for _base, prefix, incoming in _IPT_ROOTS:
        chain = _ipt_name(prefix, incoming, temp, ifname)
        tx.add(layer, "-F", chain, ignore=True)
        tx.add(layer, "-X", chain, ignore=True)


def _ipt_base_chains(tx: Transaction, layer: FwLayer) -> None:
    """iptablesCreateBaseChainsFW: the shared chains and their jumps."""
    for chain in (VIRT_IN, VIRT_OUT, VIRT_IN_POST, HOST_IN):
        tx.add(layer, "-N", chain, ignore=True)
    jumps = (("FORWARD", VIRT_IN), ("FORWARD", VIRT_OUT), ("FORWARD", VIRT_IN_POST))
    for base, chain in (*jumps, ("INPUT", HOST_IN)):
        tx.add(layer, "-D", base, "-j", chain, ignore=True)
    for position, (base, chain) in enumerate(jumps, start=1):
        tx.add(layer, "-I", base, str(position), "-j", chain)
    tx.add(layer, "-I", "INPUT", "1", "-j", HOST_IN)


def _ipt_setup_tmp(tx: Transaction, layer: FwLayer, ifname: str) -> None:
    _ipt_unlink(tx, layer, ifname, temp=True)
    _ipt_remove(tx, layer, ifname, temp=True)
    _ipt_base_chains(tx, layer)
    for _base, prefix, incoming in _IPT_ROOTS:
        tx.add(layer, "-N", _ipt_name(prefix, incoming, True, ifname))
    for base, prefix, incoming in _IPT_ROOTS:
        chain = _ipt_name(prefix, incoming, True, ifname)
        tx.add(layer, "-A", base, *_physdev(incoming), ifname, "-g", chain)
    post = ("-m", "physdev", "--physdev-in", ifname, "-j", "ACCEPT")
    tx.add(layer, "-D", VIRT_IN_POST, *post, ignore=True)
    tx.add(layer, "-A", VIRT_IN_POST, *post)


# --- rules ------------------------------------------------------------------


def _iptables_instance(tx: Transaction, layer: FwLayer, inst: RuleInst, ifname: str) -> None:
    """iptablesCreateRuleInstance (and its state-controlled variant) for every
    combination of the rule's variables."""
    rule = inst.rule
    for combo in combinations(inst.variables, rule.variables()):
        direction_in = rule.direction is not RuleDirection.OUT
        inout = rule.direction is RuleDirection.INOUT
        flags = state_flags(rule) & STATE_BITS
        chains = [
            (f"FJ-{ifname}", direction_in, "RETURN", direction_in or inout),
            (f"FP-{ifname}", not direction_in, "ACCEPT", not direction_in or inout),
            (f"HJ-{ifname}", direction_in, "RETURN", direction_in),
        ]
        if rule.statematch and flags:
            # The states the rule names, only on the chains of its direction.
            skip = [direction_in and not inout, not direction_in, direction_in and not inout]
            for (chain, d_in, accept, may_skip), skipped in zip(chains, skip, strict=True):
                if not skipped:
                    iptables_rule(
                        tx, layer, chain, rule, combo, direction_in=d_in,
                        match=state_text(flags), default_match=False,
                        accept_target=accept, may_skip_icmp=may_skip,
                    )  # fmt: skip
            continue
        need_state = rule.statematch and not inout
        matches = (
            ("ESTABLISHED" if direction_in else "NEW,ESTABLISHED"),
            ("NEW,ESTABLISHED" if direction_in else "ESTABLISHED"),
            ("ESTABLISHED" if direction_in else "NEW,ESTABLISHED"),
        )
        for (chain, d_in, accept, may_skip), match in zip(chains, matches, strict=True):
            iptables_rule(
                tx, layer, chain, rule, combo, direction_in=d_in,
                match=match if need_state else None, default_match=True,
                accept_target=accept, may_skip_icmp=may_skip,
            )  # fmt: skip


def _ebtables_instance(tx: Transaction, inst: RuleInst, ifname: str) -> None:
    rule = inst.rule
    for combo in combinations(inst.variables, rule.variables()):
        if rule.direction in (RuleDirection.OUT, RuleDirection.INOUT):
            chain = ebt_chain("J", ifname, inst.chain)
            ebtables_rule(tx, chain, rule, combo, rule.direction is RuleDirection.INOUT)
        if rule.direction in (RuleDirection.IN, RuleDirection.INOUT):
            ebtables_rule(tx, ebt_chain("P", ifname, inst.chain), rule, combo, False)


def sorted_rules(rules: Sequence[RuleInst]) -> list[RuleInst]:
    """virNWFilterRuleInstSort: root chain rules first, then by priority (stable);
    then a rule below its chain's priority is raised to it (not in root)."""
    ordered = sorted(rules, key=lambda r: (r.chain != "root", r.priority))
    return [
        replace(r, priority=r.chain_priority)
        if r.chain_priority > r.priority and r.chain != "root"
        else r
        for r in ordered
    ]


def _subchains(rules: Sequence[RuleInst], directions: tuple[RuleDirection, ...]) -> dict[str, int]:
    """The chains ebtables rules of these directions use, with their priority."""
    chains: dict[str, int] = {}
    for r in rules:
        if layer_of(r.rule) is ETH and r.rule.direction in directions:
            chains[r.chain] = r.chain_priority
    return chains


def apply_new_rules(ifname: str, rules: Sequence[RuleInst]) -> list[Transaction]:
    """ebiptablesApplyNewRules: a cleanup transaction (errors ignored), then the
    transaction building and linking the temporary chains, with its rollback."""
    ordered = sorted_rules(rules)
    cleanup = Transaction(ignore_errors=True)
    for prefix in "JP":
        _ebt_link(cleanup, prefix, ifname, delete=True)
    _ebt_remove_subchains(cleanup, "JP", ifname)
    for prefix in "JP":
        _ebt_remove_root(cleanup, prefix, ifname)

    tx = Transaction()
    layers = {layer_of(r.rule) for r in ordered}
    chains_in = _subchains(ordered, (RuleDirection.OUT, RuleDirection.INOUT))
    chains_out = _subchains(ordered, (RuleDirection.IN, RuleDirection.INOUT))
    if ETH in layers:
        subchains: list[tuple[int, str, str, tuple[str, ...]]] = []
        for prefix, chains in (("J", chains_in), ("P", chains_out)):
            if not chains:
                continue
            tx.add(ETH, "-t", "nat", "-N", root_chain(prefix, ifname))
            for name, priority in sorted(chains.items(), key=lambda item: item[1]):
                match = next((m for p, m in SUBCHAIN_MATCH if name.startswith(p)), None)
                if match is not None:
                    subchains.append((priority, prefix, name, match))
        subchains.sort(key=lambda s: s[0])
        j = 0
        for r in ordered:
            if layer_of(r.rule) is not ETH:
                continue
            while j < len(subchains) and subchains[j][0] <= r.priority:
                _ebt_subchain(tx, subchains[j][1], ifname, subchains[j][2], subchains[j][3])
                j += 1
            _ebtables_instance(tx, r, ifname)
        for _priority, prefix, name, match in subchains[j:]:
            _ebt_subchain(tx, prefix, ifname, name, match)
    for layer in (FwLayer.IPV4, FwLayer.IPV6):
        if layer in layers:
            _ipt_setup_tmp(tx, layer, ifname)
            for r in ordered:
                if layer_of(r.rule) is layer:
                    _iptables_instance(tx, layer, r, ifname)
    if chains_in:
        _ebt_link(tx, "J", ifname)
    if chains_out:
        _ebt_link(tx, "P", ifname)

    rollback = Transaction(ignore_errors=True)
    for prefix in "JP":
        _ebt_link(rollback, prefix, ifname, delete=True)
    for layer in (FwLayer.IPV6, FwLayer.IPV4):
        if layer in layers:
            _ipt_unlink(rollback, layer, ifname, temp=True)
            _ipt_remove(rollback, layer, ifname, temp=True)
    _ebt_remove_subchains(rollback, "JP", ifname)
    for prefix in "JP":
        _ebt_remove_root(rollback, prefix, ifname)
    tx.rollback = rollback.rules
    return [cleanup, tx]


def tear_old_rules(ifname: str) -> Transaction:
    """ebiptablesTearOldRules: drop the old chains, give the new ones the final names."""
    tx = Transaction(ignore_errors=True)
    for layer in (FwLayer.IPV4, FwLayer.IPV6):
        _ipt_unlink(tx, layer, ifname, temp=False)
        _ipt_remove(tx, layer, ifname, temp=False)
        for _base, prefix, incoming in _IPT_ROOTS:
            tx.add(
                layer,
                "-E",
                _ipt_name(prefix, incoming, True, ifname),
                _ipt_name(prefix, incoming, False, ifname),
            )
    _ebt_remove_all(tx, "IO", ifname)
    for prefix in "JP":
        tx.add(
            ETH, "-t", "nat", "-L", root_chain(prefix, ifname), query=Query.RENAME_TEMP_SUBCHAINS
        )
    for temp, final in (("J", "I"), ("P", "O")):
        tx.add(ETH, "-t", "nat", "-E", root_chain(temp, ifname), root_chain(final, ifname))
    return tx


def tear_new_rules(ifname: str) -> Transaction:
    """ebiptablesTearNewRulesFW: remove the temporary chains."""
    tx = Transaction(ignore_errors=True)
    for layer in (FwLayer.IPV4, FwLayer.IPV6):
        _ipt_unlink(tx, layer, ifname, temp=True)
        _ipt_remove(tx, layer, ifname, temp=True)
    _ebt_remove_all(tx, "JP", ifname)
    return tx


def all_teardown(ifname: str) -> Transaction:
    """ebiptablesAllTeardown: every chain of the interface, temporary or final."""
    tx = tear_new_rules(ifname)
    post = ("-m", "physdev", "--physdev-in", ifname, "-j", "ACCEPT")
    for layer in (FwLayer.IPV4, FwLayer.IPV6):
        _ipt_unlink(tx, layer, ifname, temp=False)
        tx.add(layer, "-D", VIRT_IN_POST, *post, ignore=True)
        _ipt_remove(tx, layer, ifname, temp=False)
    _ebt_remove_all(tx, "IO", ifname)
    return tx
