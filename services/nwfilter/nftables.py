"""A binding's rules as native nftables, with libvirt's semantics, replaced in one transaction.

Two tables, both named ``virtbus-nwfilter``:

* ``bridge``: the layer-2 rules (what ebtables does for libvirt).  Base chain
  ``pre`` (prerouting, priority -300, where ebtables' nat PREROUTING runs)
  sends frames from a guest port to ``I-<port>`` through the verdict map
  ``port_in``; ``post`` (postrouting, 300) sends frames to a guest port to
  ``O-<port>`` through ``port_out``.  Sub-chains ``I-<port>-<chain>`` are
  jumped to by ethertype in chain priority order, as libvirt orders them.
* ``inet``: the IP rules (iptables/ip6tables for libvirt), with connection
  tracking as libvirt uses it.  Bridged packets reach it through bridge
  netfilter; which guest port a packet came from or goes to is carried in the
  packet mark, set by the bridge table: the low 16 bits hold the port id of
  the sending guest (set first in ``I-<port>``), the high 16 bits that of the
  receiving guest (``mark-<port>``, from the bridge ``forward`` hook before
  bridge netfilter runs).  ``forward`` jumps by mark to ``FI-<port>`` (from
  the guest) and ``FO-<port>`` (to it), ``input`` to ``HI-<port>``.

Rule order, actions and state matching follow libvirt: in ``FI``/``HI`` an
accepted packet returns (the receiving guest's ``FO`` still sees it), in
``FO`` it is accepted; drop and reject end it; ``continue`` has no verdict.
Drop and reject rules count what they stop (the drop counters per binding).
A few attributes have no nftables equivalent here (``ipset``,
``connlimit-above``, ``gratuitous`` ARP, STP fields, TCP ``option``): a
binding using them is refused with ``VIR_ERR_CONFIG_UNSUPPORTED``.

``binding_script`` replaces everything of one port in a single ``nft -f``
transaction, so a packet meets either the old rules or the new ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.nwfilter.ebiptables import SUBCHAIN_MATCH, sorted_rules
from services.nwfilter.ebiptables_rules import (
    layer_of,
)
from services.nwfilter.firewall import FwLayer
from services.nwfilter.nftables_rules import check_supported, l2_rule, l3_rules
from services.nwfilter.resolve import RuleInst
from services.nwfilter.variables import combinations
from shared.conf.nwfilter_rule import RuleDirection

TABLE = "virtbus-nwfilter"
BRIDGE = f"bridge {TABLE}"
INET = f"inet {TABLE}"
MAX_PORT_ID = 0xFFFF


def infrastructure_script() -> str:
    """The tables, base chains and verdict maps every binding hangs off
    (applied once, when the tables are missing)."""
    return f"""add table {BRIDGE}
add map {BRIDGE} port_in {{ type ifname : verdict; }}
add map {BRIDGE} port_out {{ type ifname : verdict; }}
add map {BRIDGE} port_mark {{ type ifname : verdict; }}
add chain {BRIDGE} pre {{ type filter hook prerouting priority -300; policy accept; }}
add chain {BRIDGE} tag {{ type filter hook forward priority -200; policy accept; }}
add chain {BRIDGE} post {{ type filter hook postrouting priority 300; policy accept; }}
add rule {BRIDGE} pre iifname vmap @port_in
add rule {BRIDGE} tag oifname vmap @port_mark
add rule {BRIDGE} post oifname vmap @port_out
add table {INET}
add map {INET} from_port {{ type mark : verdict; }}
add map {INET} to_port {{ type mark : verdict; }}
add map {INET} host_port {{ type mark : verdict; }}
add chain {INET} forward {{ type filter hook forward priority 0; policy accept; }}
add chain {INET} input {{ type filter hook input priority 0; policy accept; }}
add rule {INET} forward meta mark & 0x0000ffff vmap @from_port
add rule {INET} forward meta mark & 0xffff0000 vmap @to_port
add rule {INET} input meta mark & 0x0000ffff vmap @host_port
"""


@dataclass(frozen=True)
class PortChains:
    """The chains one port owns in each table."""

    bridge: tuple[str, ...]
    inet: tuple[str, ...]


def owned_by(chain: str, port: str) -> bool:
    """Whether ``chain`` is one of ``port``'s chains."""
    if chain in (
        f"I-{port}",
        f"O-{port}",
        f"mark-{port}",
        f"FI-{port}",
        f"FO-{port}",
        f"HI-{port}",
    ):
        return True
    return chain.startswith((f"I-{port}-", f"O-{port}-"))


def _q(name: str) -> str:
    """A chain name as nft reads it (bare: nft 1.0 refuses quoted chain names)."""
    return name


@dataclass(frozen=True)
class PortRules:
    """Everything of one port: its id and the rules of each of its chains, in order."""

    port: str
    port_id: int
    bridge: dict[str, list[str]]
    inet: dict[str, list[str]]

    @property
    def chains(self) -> PortChains:
        return PortChains(tuple(self.bridge), tuple(self.inet))

    @property
    def rule_count(self) -> int:
        return sum(len(r) for r in (*self.bridge.values(), *self.inet.values()))


def compile_port(port: str, port_id: int, rules: Sequence[RuleInst]) -> PortRules:
    """The nft rules of a binding on ``port``; raises ``VirtError`` for what
    the backend cannot express."""
    if not 1 <= port_id <= MAX_PORT_ID:
        raise ValueError(f"port id {port_id} out of range")
    check_supported(rules)
    ordered = sorted_rules(rules)
    root_in, root_out = f"I-{port}", f"O-{port}"
    bridge: dict[str, list[str]] = {
        root_in: [f"meta mark set meta mark & 0xffff0000 | 0x{port_id:04x}"],
        root_out: [],
        f"mark-{port}": [f"meta mark set meta mark & 0x0000ffff | 0x{port_id << 16:08x}"],
    }
    subchains: list[tuple[int, str, str, tuple[str, ...]]] = []
    for root, directions in (
        (root_in, (RuleDirection.OUT, RuleDirection.INOUT)),
        (root_out, (RuleDirection.IN, RuleDirection.INOUT)),
    ):
        chains: dict[str, int] = {}
        for r in ordered:
            if layer_of(r.rule) is FwLayer.ETHERNET and r.rule.direction in directions:
                chains[r.chain] = r.chain_priority
        for name, priority in sorted(chains.items(), key=lambda item: item[1]):
            match = next((m for p, m in SUBCHAIN_MATCH if name.startswith(p)), None)
            if match is not None:
                subchains.append((priority, root, name, match))
    subchains.sort(key=lambda s: s[0])

    def link(sub: tuple[int, str, str, tuple[str, ...]]) -> None:
        _priority, root, name, match = sub
        chain = f"{root}-{name}"
        bridge[chain] = []
        expr = {"-p": "ether type", "-d": "ether daddr"}
        cond = f"{expr[match[0]]} {match[1]} " if match else ""
        bridge[root].append(f"{cond}jump {chain}")

    j = 0
    for r in ordered:
        if layer_of(r.rule) is not FwLayer.ETHERNET:
            continue
        while j < len(subchains) and subchains[j][0] <= r.priority:
            link(subchains[j])
            j += 1
        for combo in combinations(r.variables, r.rule.variables()):
            for root, reverse, wanted in (
                (root_in, r.rule.direction is RuleDirection.INOUT, RuleDirection.OUT),
                (root_out, False, RuleDirection.IN),
            ):
                if r.rule.direction in (wanted, RuleDirection.INOUT):
                    chain = root if r.chain == "root" else f"{root}-{r.chain}"
                    bridge[chain].append(l2_rule(r.rule, dict(combo), reverse))
    for sub in subchains[j:]:
        link(sub)

    inet: dict[str, list[str]] = {f"FI-{port}": [], f"FO-{port}": [], f"HI-{port}": []}
    for layer in (FwLayer.IPV4, FwLayer.IPV6):
        for r in ordered:
            if layer_of(r.rule) is layer:
                for chain, text in l3_rules(r, port, layer is FwLayer.IPV6):
                    inet[chain].append(text)
    return PortRules(port, port_id, bridge, inet)


def binding_script(new: PortRules, old_chains: PortChains | None) -> str:
    """One nft transaction replacing whatever ``port`` had by ``new``."""
    lines: list[str] = []
    for table, chains in ((BRIDGE, new.bridge), (INET, new.inet)):
        for chain in chains:
            lines.append(f"add chain {table} {_q(chain)}")
            lines.append(f"flush chain {table} {_q(chain)}")
        for chain, rules in chains.items():
            lines += [f"add rule {table} {_q(chain)} {rule}" for rule in rules]
    if old_chains is not None:
        for table, stale in (
            (BRIDGE, set(old_chains.bridge) - set(new.bridge)),
            (INET, set(old_chains.inet) - set(new.inet)),
        ):
            for chain in sorted(stale):
                lines.append(f"flush chain {table} {_q(chain)}")
                lines.append(f"delete chain {table} {_q(chain)}")
    lines += _elements("add", new.port, new.port_id)
    return "\n".join(lines) + "\n"


def _elements(verb: str, port: str, port_id: int) -> list[str]:
    return [
        f'{verb} element {BRIDGE} port_in {{ "{port}" : jump {_q("I-" + port)} }}',
        f'{verb} element {BRIDGE} port_out {{ "{port}" : jump {_q("O-" + port)} }}',
        f'{verb} element {BRIDGE} port_mark {{ "{port}" : jump {_q("mark-" + port)} }}',
        f"{verb} element {INET} from_port {{ 0x{port_id:08x} : jump {_q('FI-' + port)} }}",
        f"{verb} element {INET} to_port {{ 0x{port_id << 16:08x} : jump {_q('FO-' + port)} }}",
        f"{verb} element {INET} host_port {{ 0x{port_id:08x} : jump {_q('HI-' + port)} }}",
    ]


def removal_script(port: str, port_id: int, chains: PortChains) -> str:
    """One nft transaction removing everything of ``port``."""
    lines = [
        line.replace("add element", "delete element", 1) for line in _elements("add", port, port_id)
    ]
    lines = [_strip_verdict(line) for line in lines]
    for table, names in ((BRIDGE, chains.bridge), (INET, chains.inet)):
        lines += [f"flush chain {table} {_q(c)}" for c in names]
        lines += [f"delete chain {table} {_q(c)}" for c in names]
    return "\n".join(lines) + "\n"


def _strip_verdict(line: str) -> str:
    """``delete element`` names the key only."""
    head, _, rest = line.partition("{ ")
    key = rest.split(" : ", 1)[0]
    return f"{head}{{ {key} }}"
