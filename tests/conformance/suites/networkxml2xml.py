"""networkxml2xml: parse a network (dnsmasq namespace on) and format it with the case's flags."""

from __future__ import annotations

from shared.conf.network import NetworkXMLFlags, format_network, parse_network
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def _flags(names: list[str]) -> NetworkXMLFlags:
    flags = NetworkXMLFlags(0)
    for name in names:
        flags |= NetworkXMLFlags[name.removeprefix("VIR_NETWORK_XML_")]
    return flags


def produce(suite: Suite, case: Case) -> str:
    """virtbus's formatting of the case's input, with the case's flags."""
    net = parse_network(suite.read(case["input"]))
    return format_network(net, _flags(case.get("format_flags") or []))


def run_case(suite: Suite, case: Case) -> Outcome:
    if case.get("expect_error"):
        text = suite.read(case["input"])
        return expect_error(lambda: parse_network(text))
    return compare_text(produce(suite, case), suite.read(case["expected"]))
