"""Firewall backends: apply, check and remove one network's rules on this host.

``NftablesBackend`` (the default where ``nft`` exists) writes the network's
own table in one ``nft -f`` transaction; ``IptablesBackend`` inserts
libvirt 9's rules into libvirt's private chains, creating those chains when
missing.  Both only ever touch what the network's rules name, so the host's
and other programs' rules stay as they are.  ``present`` tells whether the
rules are all still in place (a host firewall reload removes them), so that
the service's periodic check can restore them; ``apply`` never duplicates.
"""

from __future__ import annotations

import shutil
from typing import Protocol

from services.network import iptables, nftables
from services.network.host import run
from shared.conf.network import NetworkDef
from shared.util.errors import VirtError


class FirewallBackend(Protocol):
    name: str

    async def apply(self, net: NetworkDef) -> None:
        """Put ``net``'s rules in place (replacing what is there of them)."""

    async def remove(self, net: NetworkDef) -> None:
        """Take ``net``'s rules away; nothing when they are already gone."""

    async def present(self, net: NetworkDef) -> bool:
        """Whether every rule of ``net`` is in place."""

    async def replace(self, old: NetworkDef, new: NetworkDef) -> None:
        """Change a running network's rules from ``old``'s to ``new``'s."""


class NftablesBackend:
    """One ``inet`` table per network, replaced and removed whole."""

    name = "nftables"

    async def apply(self, net: NetworkDef) -> None:
        script = nftables.add_script(net)
        if script:
            await run(["nft", "-f", "-"], script)

    async def replace(self, old: NetworkDef, new: NetworkDef) -> None:
        # one transaction replaces the table whole: no moment without rules
        await self.apply(new)

    async def remove(self, net: NetworkDef) -> None:
        if net.forward.mode in nftables.FIREWALLED and net.bridge.name:
            await run(["nft", "-f", "-"], nftables.delete_script(net.bridge.name))

    async def present(self, net: NetworkDef) -> bool:
        if net.forward.mode not in nftables.FIREWALLED or not net.bridge.name:
            return True
        table = nftables.table_name(net.bridge.name)
        try:
            listed = await run(["nft", "list", "table", nftables.FAMILY, table])
        except VirtError:
            return False
        # a chain flushed while the table stayed also counts as missing rules
        return _rule_count(listed) == _rule_count(nftables.add_script(net))


def _rule_count(text: str) -> int:
    """The rules in an nft script or listing (both indent a rule by two tabs)."""
    return sum(
        1
        for line in text.splitlines()
        if line.startswith("\t\t") and not line.strip().startswith("type ")
    )


class IptablesBackend:
    """libvirt 9's rules in libvirt's private chains."""

    name = "iptables"

    def __init__(self) -> None:
        # libvirt creates its chains once per daemon; so do we, and again after
        # a check found rules missing (a firewall reload removes the chains too)
        self._chains_ready = False

    async def _ensure_chains(self) -> None:
        if self._chains_ready:
            return
        for program in (iptables.IPV4, iptables.IPV6):
            for table, chain, parent in iptables.PRIVATE_CHAINS:
                try:
                    await run([program, "-w", "--table", table, "--new-chain", chain])
                except VirtError:
                    pass  # it exists already
                hook = [program, "-w", "--table", table, "--check", parent, "--jump", chain]
                try:
                    await run(hook)
                except VirtError:
                    hook[4] = "--insert"
                    await run(hook)
        self._chains_ready = True

    async def apply(self, net: NetworkDef) -> None:
        rules = iptables.network_rules(net)
        if not rules:
            return
        await self._ensure_chains()
        for rule in rules:
            try:
                await run(rule.command("--check"))
            except VirtError:
                await run(rule.command("--insert"))

    async def replace(self, old: NetworkDef, new: NetworkDef) -> None:
        await self.remove(old)
        await self.apply(new)

    async def remove(self, net: NetworkDef) -> None:
        for rule in reversed(iptables.network_rules(net)):
            try:
                await run(rule.command("--delete"))
            except VirtError:
                pass  # already gone

    async def present(self, net: NetworkDef) -> bool:
        for rule in iptables.network_rules(net):
            try:
                await run(rule.command("--check"))
            except VirtError:
                self._chains_ready = False
                return False
        return True


BACKENDS: dict[str, type[NftablesBackend] | type[IptablesBackend]] = {
    "nftables": NftablesBackend,
    "iptables": IptablesBackend,
}


def choose_backend(name: str) -> FirewallBackend:
    """The backend ``name`` names; ``auto`` is nftables where ``nft`` exists, else iptables."""
    if name == "auto":
        name = "nftables" if shutil.which("nft") else "iptables"
    return BACKENDS[name]()
