"""The two ways a binding's rules reach the kernel: libvirt's commands, or nftables.

``EbiptablesBackend`` runs libvirt 9's ebtables/iptables/ip6tables commands
(``ebiptables``) one by one, with libvirt's transactions: new rules in
temporary chains linked behind the old ones, then the old ones removed; a
failure rolls the new chains back and keeps the old rules.
``NftBackend`` writes one ``nft -f`` transaction per binding (``nftables``).

Both can work inside a named network namespace (``netns``), make sure bridged
traffic reaches the IP hooks (bridge netfilter settings), tell which ports
have rules installed, and take a ``snapshot`` of a port's installed rules
(counters left out) so that reconciliation can tell whether they are still
exactly what was applied.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.nwfilter import ebiptables, nftables
from services.nwfilter.firewall import FwLayer, FwRule, Transaction, subchain_followups
from services.nwfilter.resolve import RuleInst
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
)
_ENV = {**os.environ, "LC_ALL": "C", "PATH": _SEARCH_PATH}
TIMEOUT = 60.0
_BRIDGE_NF = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables")


def _firewall_error(message: str) -> VirtError:
    return VirtError(ErrorCode.BUILD_FIREWALL, message, ErrorDomain.NWFILTER)


@dataclass
class Runner:
    """Runs commands, in network namespace ``netns`` when given."""

    netns: str | None = None
    commands: int = 0

    def argv(self, argv: Sequence[str]) -> list[str]:
        program = shutil.which(argv[0], path=_SEARCH_PATH) or argv[0]
        full = [program, *argv[1:]]
        return ["ip", "netns", "exec", self.netns, *full] if self.netns else full

    async def run(self, argv: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
        """Exit code, stdout and stderr of ``argv``; kills it when cancelled."""
        self.commands += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv(argv),
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=_ENV,
                close_fds=False,
            )
        except FileNotFoundError as missing:
            raise _firewall_error(f"Cannot find '{argv[0]}' in path") from missing
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), TIMEOUT
            )
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def ensure_bridge_netfilter(self) -> None:
        """Bridged IP traffic must meet the IP hooks (libvirt warns when it does not)."""
        for name in _BRIDGE_NF:
            await self.run(["sysctl", "-q", "-w", f"net.bridge.{name}=1"])


class Backend(Protocol):
    """What the service needs of a firewall backend."""

    name: str
    runner: Runner

    async def prepare(self) -> None: ...
    async def apply(self, port: str, rules: Sequence[RuleInst]) -> int: ...
    async def remove(self, port: str) -> None: ...
    async def ports(self) -> set[str]: ...
    async def snapshots(self, ports: Sequence[str]) -> dict[str, str]: ...
    async def drops(self, ports: Sequence[str]) -> dict[str, int]: ...


# --- libvirt's commands ---------------------------------------------------------


@dataclass
class EbiptablesBackend:
    """libvirt 9's ebtables/iptables/ip6tables commands, run one by one."""

    runner: Runner = field(default_factory=Runner)
    name: str = "ebiptables"

    async def prepare(self) -> None:
        await self.runner.ensure_bridge_netfilter()

    async def _apply_tx(self, tx: Transaction) -> None:
        rules = list(tx.rules)
        index = 0
        while index < len(rules):
            rule = rules[index]
            index += 1
            code, out, err = await self.runner.run(rule.argv)
            if code != 0 and not (rule.ignore_errors or tx.ignore_errors):
                for undo in tx.rollback:
                    await self.runner.run(undo.argv)
                raise _firewall_error(
                    f"Failed to apply firewall rules {' '.join(rule.argv)}: {err.strip()}"
                )
            if code == 0 and rule.query is not None:
                rules.extend(subchain_followups(rule, out))

    async def apply(self, port: str, rules: Sequence[RuleInst]) -> int:
        """Replace the port's rules; returns how many rules were written."""
        transactions = ebiptables.apply_new_rules(port, rules)
        for tx in transactions:
            await self._apply_tx(tx)
        await self._apply_tx(ebiptables.tear_old_rules(port))
        return sum(1 for rule in transactions[-1].rules if _is_filter_rule(rule))

    async def remove(self, port: str) -> None:
        await self._apply_tx(ebiptables.all_teardown(port))

    async def _listing(self) -> tuple[str, str, str]:
        ebt = (await self.runner.run(["ebtables", "--concurrent", "-t", "nat", "-L"]))[1]
        ipt = (await self.runner.run(["iptables", "-w", "-S"]))[1]
        ip6t = (await self.runner.run(["ip6tables", "-w", "-S"]))[1]
        return ebt, ipt, ip6t

    async def ports(self) -> set[str]:
        ebt, ipt, ip6t = await self._listing()
        found = set(re.findall(r"Bridge chain: libvirt-[IO]-(\S+?),", ebt))
        for listing in (ipt, ip6t):
            found |= set(re.findall(r"^-N [FH][IO]-(\S+)$", listing, re.M))
        return found

    async def snapshots(self, ports: Sequence[str]) -> dict[str, str]:
        """Each port's installed rules, from one listing of each program."""
        ebt, ipt, ip6t = await self._listing()
        return {port: _ebiptables_snapshot(port, ebt, (ipt, ip6t)) for port in ports}

    async def drops(self, ports: Sequence[str]) -> dict[str, int]:
        return {}  # libvirt's rules keep no counters of their own


def _ebiptables_snapshot(port: str, ebt: str, ipt: Sequence[str]) -> str:
    lines: list[str] = []
    chain = ""
    for line in ebt.splitlines():
        if line.startswith("Bridge chain: "):
            chain = line.split()[2].rstrip(",")
            if chain in (f"libvirt-I-{port}", f"libvirt-O-{port}") or chain.startswith(
                (f"I-{port}-", f"O-{port}-")
            ):
                lines.append(line)
            continue
        mine = chain.startswith(("libvirt-", "I-", "O-")) and (
            f"-{port}" in chain or f" {port} " in f"{line} "
        )
        if mine or f"libvirt-I-{port}" in line or f"libvirt-O-{port}" in line:
            lines.append(f"{chain}: {line}")
    pattern = re.compile(rf"[FH][IO]-{re.escape(port)}\b|physdev-(in|out) {re.escape(port)}\b")
    for listing in ipt:
        lines += [line for line in listing.splitlines() if pattern.search(line)]
    return "\n".join(lines)


def _is_filter_rule(rule: FwRule) -> bool:
    """A rule of the filter itself (not chain plumbing) in the main transaction."""
    args = rule.args
    if rule.layer is FwLayer.ETHERNET:
        return (
            len(args) > 3 and args[2] == "-A" and not args[3].endswith("ROUTING") and "-j" in args
        )
    return len(args) > 1 and args[0] == "-A" and args[1].startswith(("FJ-", "FP-", "HJ-"))


# --- nftables -----------------------------------------------------------------


_COUNTER = re.compile(r"counter packets \d+ bytes \d+")


@dataclass
class NftBackend:
    """Native nftables: one transaction per binding."""

    runner: Runner = field(default_factory=Runner)
    name: str = "nftables"
    _ids: dict[str, int] = field(default_factory=dict)
    _chains: dict[str, nftables.PortChains] = field(default_factory=dict)

    async def _nft(self, script: str) -> None:
        code, _out, err = await self.runner.run(["nft", "-f", "-"], stdin=script)
        if code != 0:
            raise _firewall_error(f"nft failed: {err.strip()}")

    async def prepare(self) -> None:
        await self.runner.ensure_bridge_netfilter()
        code, _out, _err = await self.runner.run(["nft", "list", "table", *nftables.BRIDGE.split()])
        if code != 0:
            await self._nft(nftables.infrastructure_script())
        await self._recover()

    async def _recover(self) -> None:
        """Port ids and chains of what is installed (after a restart)."""
        code, out, _err = await self.runner.run(["nft", "-j", "list", "ruleset"])
        if code != 0:
            return
        self._ids.clear()
        names: dict[str, list[str]] = {"bridge": [], "inet": []}
        for item in json.loads(out).get("nftables", []):
            if "map" in item and item["map"].get("name") == "from_port":
                for key, verdict in item["map"].get("elem", []):
                    target = verdict.get("jump", {}).get("target", "")
                    if target.startswith("FI-"):
                        self._ids[target[3:]] = int(key)
            chain = item.get("chain")
            if chain and chain.get("table") == nftables.TABLE and chain.get("family") in names:
                names[chain["family"]].append(chain["name"])
        for port in self._ids:
            self._chains[port] = nftables.PortChains(
                tuple(n for n in names["bridge"] if nftables.owned_by(n, port)),
                tuple(n for n in names["inet"] if nftables.owned_by(n, port)),
            )

    def _port_id(self, port: str) -> int:
        if port in self._ids:
            return self._ids[port]
        used = set(self._ids.values())
        port_id = next(i for i in range(1, nftables.MAX_PORT_ID + 1) if i not in used)
        self._ids[port] = port_id
        return port_id

    async def apply(self, port: str, rules: Sequence[RuleInst]) -> int:
        compiled = nftables.compile_port(port, self._port_id(port), rules)
        try:
            await self._nft(nftables.binding_script(compiled, self._chains.get(port)))
        except VirtError:
            # The tables may have been flushed by someone else: set them up
            # again, learn what is left, and try once more.
            await self.prepare()
            compiled = nftables.compile_port(port, self._port_id(port), rules)
            await self._nft(nftables.binding_script(compiled, self._chains.get(port)))
        self._chains[port] = compiled.chains
        return compiled.rule_count

    async def remove(self, port: str) -> None:
        if port not in self._ids:
            await self._recover()
        if port not in self._ids:
            return
        await self._nft(nftables.removal_script(port, self._ids[port], self._chains[port]))
        del self._ids[port]
        self._chains.pop(port, None)

    async def ports(self) -> set[str]:
        await self._recover()
        return set(self._ids)

    async def _listing(self) -> tuple[dict[str, str], str]:
        """Every chain of both tables by name, and the bridge dispatch map."""
        blocks: dict[str, str] = {}
        dispatch = ""
        for family in ("bridge", "inet"):
            code, out, _ = await self.runner.run(["nft", "list", "table", family, nftables.TABLE])
            if code != 0:
                continue
            for name, body in _CHAIN_BLOCK.findall(out):
                blocks[f"{family} {name}"] = body
            if family == "bridge":
                dispatch = out
        return blocks, dispatch

    async def snapshots(self, ports: Sequence[str]) -> dict[str, str]:
        blocks, dispatch = await self._listing()
        result: dict[str, str] = {}
        for port in ports:
            mine = sorted(k for k in blocks if nftables.owned_by(k.split(" ", 1)[1], port))
            body = "\n".join(f"{k}\n{_COUNTER.sub('counter', blocks[k])}" for k in mine)
            present = f'"{port}" : jump I-{port}' in dispatch
            result[port] = f"dispatch={present}\n{body}"
        return result

    async def drops(self, ports: Sequence[str]) -> dict[str, int]:
        blocks, _ = await self._listing()
        result: dict[str, int] = {}
        for port in ports:
            result[port] = sum(
                int(n)
                for k, body in blocks.items()
                if nftables.owned_by(k.split(" ", 1)[1], port)
                for n in re.findall(r"counter packets (\d+)", body)
            )
        return result


_CHAIN_BLOCK = re.compile(r"^\tchain (\S+) \{\n(.*?)^\t\}", re.M | re.S)


def make_backend(kind: str, netns: str | None = None) -> Backend:
    """``nftables``, ``ebiptables``, or ``auto`` (nftables where ``nft`` exists)."""
    runner = Runner(netns)
    if kind == "auto":
        kind = "nftables" if shutil.which("nft", path=_SEARCH_PATH) else "ebiptables"
    if kind == "nftables":
        return NftBackend(runner)
    if kind == "ebiptables":
        return EbiptablesBackend(runner)
    raise ValueError(f"unknown firewall backend {kind!r}")
