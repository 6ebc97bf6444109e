"""networkxml2xml: parse a network (dnsmasq namespace on) and format it with the case's flags."""

from __future__ import annotations

from shared.conf.network import NetworkXMLFlags, format_network, parse_network
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def _flags(names: list[str]) -> NetworkXMLFlags:
    flags = NetworkXMLFlags(0)
    for name in names:
        flags |= NetworkXMLFlags[name.removeprefix("VIR_NETWORK_XML_")]
    return flags


def run_case(suite: Suite, case: Case) -> Outcome:
    text = suite.read(case["input"])
    if case.get("expect_error"):
        return expect_error(lambda: parse_network(text))
    produced = format_network(parse_network(text), _flags(case.get("format_flags") or []))
    return compare_text(produced, suite.read(case["expected"]))
