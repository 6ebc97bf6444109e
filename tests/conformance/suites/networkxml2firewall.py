"""networkxml2firewall: the iptables commands that set up a network (Linux expectations)."""

from __future__ import annotations

from services.network.iptables import base_commands, network_commands
from services.storage.pools.command import render_command
from shared.conf.network import parse_network
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def _text(suite: Suite, case: Case) -> str:
    # the first network of a host also creates libvirt's chains; the expected
    # files leave that part out (it is the case's strip_prefix file)
    commands = base_commands() + network_commands(parse_network(suite.read(case["input"])))
    text = "".join(render_command(c) + "\n" for c in commands)
    prefix = case.get("strip_prefix")
    if prefix:
        text = text.removeprefix(suite.read(prefix))
    return text


def run_case(suite: Suite, case: Case) -> Outcome:
    if case.get("expect_error"):
        return expect_error(lambda: _text(suite, case))
    return compare_text(_text(suite, case), suite.read(case["expected"]), literal=True)
