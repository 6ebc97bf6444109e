"""nwfilterxml2firewall: the ebtables/iptables/ip6tables commands that instantiate a filter."""

from __future__ import annotations

import json
from pathlib import Path

from services.nwfilter.ebiptables import apply_new_rules
from services.nwfilter.resolve import instantiate
from services.storage.pools.command import render_command
from shared.conf.nwfilter import NWFilterDef, parse_nwfilter
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def _lookup(folder: Path) -> dict[str, NWFilterDef]:
    """Referenced filters are read as ``in/NAME.xml`` next to the input."""
    found: dict[str, NWFilterDef] = {}
    for path in sorted(folder.glob("*.xml")):
        try:
            filt = parse_nwfilter(path.read_text(encoding="utf-8"))
        except Exception:  # a broken neighbour only matters if referenced
            continue
        found.setdefault(path.stem, filt)
    return found


def strip_blocks(produced: str, blocks: list[str]) -> str:
    """Remove each block once, searching from where the previous one was found."""
    position = 0
    for block in blocks:
        at = produced.find(block, position)
        if at >= 0:
            produced = produced[:at] + produced[at + len(block) :]
            position = at
    return produced


def _commands(suite: Suite, case: Case) -> str:
    input_path = suite.file(case["input"])
    filt = parse_nwfilter(input_path.read_text(encoding="utf-8"))
    neighbours = _lookup(input_path.parent)
    variables = {name: tuple(values) for name, values in case.get("variables", {}).items()}
    inst = instantiate(filt, variables, neighbours.get)
    transactions = apply_new_rules(case.get("ifname", "vnet0"), inst.rules)
    text = "".join(render_command(rule.argv) + "\n" for tx in transactions for rule in tx.rules)
    if case.get("strip_blocks"):
        blocks = json.loads(suite.read(case["strip_blocks"]))["blocks"]
        text = strip_blocks(text, blocks)
    return text


def run_case(suite: Suite, case: Case) -> Outcome:
    if case.get("expect_error"):
        return expect_error(lambda: _commands(suite, case))
    return compare_text(_commands(suite, case), suite.read(case["expected"]), literal=True)
