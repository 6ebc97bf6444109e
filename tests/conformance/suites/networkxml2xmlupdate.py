"""networkxml2xmlupdate: one net-update change to a network, then the network formatted."""

from __future__ import annotations

from services.network.update import update_network
from shared.conf.network import NetworkXMLFlags, format_network, parse_network
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def produce(suite: Suite, case: Case) -> str:
    """virtbus's formatting of the case's network after its update."""
    flags = NetworkXMLFlags(0)
    for name in case.get("format_flags") or []:
        flags |= NetworkXMLFlags[name.removeprefix("VIR_NETWORK_XML_")]
    net = update_network(
        parse_network(suite.read(case["input"])),
        case["command_value"],
        case["section_value"],
        suite.read(case["update"]),
        case["parent_index"],
    )
    return format_network(net, flags)


def run_case(suite: Suite, case: Case) -> Outcome:
    if case.get("expect_error"):
        return expect_error(lambda: produce(suite, case))
    return compare_text(produce(suite, case), suite.read(case["expected"]))
