"""networkportxml2xml: parse a network port and format it again."""

from __future__ import annotations

from shared.conf.network_port import format_network_port, parse_network_port
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def run_case(suite: Suite, case: Case) -> Outcome:
    text = suite.read(case["input"])
    if case.get("expect_error"):
        return expect_error(lambda: parse_network_port(text))
    return compare_text(format_network_port(parse_network_port(text)), suite.read(case["expected"]))
