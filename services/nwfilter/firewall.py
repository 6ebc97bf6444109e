"""Firewall command lists (libvirt's virFirewall): rules grouped in transactions.

A ``Transaction`` is applied rule by rule; a rule marked ``ignore_errors`` may
fail without failing the transaction, and when another rule fails the
transaction's ``rollback`` rules run (errors ignored).  A rule with a
``query`` has its output read by a handler that may append more rules to the
transaction being applied (libvirt's query callbacks, used to find ebtables
sub-chains).  The iptables and ebtables programs get libvirt's locking
option (``-w``, ``--concurrent``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class FwLayer(enum.Enum):
    """Which program a rule is for."""

    ETHERNET = "ebtables"
    IPV4 = "iptables"
    IPV6 = "ip6tables"

    @property
    def lock_option(self) -> str:
        return "--concurrent" if self is FwLayer.ETHERNET else "-w"


class Query(enum.Enum):
    """How the output of a listing rule is used."""

    #: Remove the sub-chains of the final chains (libvirt-I/O ...).
    REMOVE_FINAL_SUBCHAINS = "IO"
    #: Remove the sub-chains of the temporary chains (libvirt-J/P ...).
    REMOVE_TEMP_SUBCHAINS = "JP"
    #: Rename the temporary sub-chains to their final names.
    RENAME_TEMP_SUBCHAINS = "rename"


@dataclass(frozen=True)
class FwRule:
    """One command: program (by layer) and arguments after the locking option."""

    layer: FwLayer
    args: tuple[str, ...]
    ignore_errors: bool = False
    query: Query | None = None

    @property
    def argv(self) -> list[str]:
        return [self.layer.value, self.layer.lock_option, *self.args]


@dataclass
class Transaction:
    """Rules applied in order, with the rules that undo them on failure."""

    ignore_errors: bool = False
    rules: list[FwRule] = field(default_factory=list)
    rollback: list[FwRule] = field(default_factory=list)

    def add(
        self, layer: FwLayer, *args: str, ignore: bool = False, query: Query | None = None
    ) -> None:
        self.rules.append(FwRule(layer, args, ignore or self.ignore_errors, query))


def subchain_followups(rule: FwRule, output: str) -> list[FwRule]:
    """The rules a listing's output asks for (ebtablesRemoveSubChainsQuery and
    ebtablesRenameTmpSubAndRootChainsQuery): one set per ``-j X-...`` jump."""
    if rule.query is None:
        return []
    follow: list[FwRule] = []
    eth = FwLayer.ETHERNET
    for line in output.splitlines():
        at = line.find("-j ")
        if at < 0:
            continue
        chain = line[at + 3 :].split()[0] if line[at + 3 :].split() else ""
        if len(chain) < 2 or chain[1] != "-":
            continue
        if rule.query is Query.RENAME_TEMP_SUBCHAINS:
            if chain[0] not in "JP":
                continue
            new = ("I" if chain[0] == "J" else "O") + chain[1:]
            follow += [
                FwRule(eth, ("-t", "nat", "-L", chain), query=Query.RENAME_TEMP_SUBCHAINS),
                FwRule(eth, ("-t", "nat", "-F", new), ignore_errors=True),
                FwRule(eth, ("-t", "nat", "-X", new), ignore_errors=True),
                FwRule(eth, ("-t", "nat", "-E", chain, new)),
            ]
        elif chain[0] in rule.query.value:
            follow += [
                FwRule(eth, ("-t", "nat", "-L", chain), query=rule.query),
                FwRule(eth, ("-t", "nat", "-F", chain), ignore_errors=True),
                FwRule(eth, ("-t", "nat", "-X", chain), ignore_errors=True),
            ]
    return follow
