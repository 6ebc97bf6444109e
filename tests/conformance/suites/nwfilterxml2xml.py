"""nwfilterxml2xml: parse a network filter and format it again; '-invalid' inputs must fail."""

from __future__ import annotations

from shared.conf.nwfilter import format_nwfilter, parse_nwfilter
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def run_case(suite: Suite, case: Case) -> Outcome:
    text = suite.read(case["input"])
    if case.get("expect_error"):
        return expect_error(lambda: parse_nwfilter(text))
    return compare_text(format_nwfilter(parse_nwfilter(text)), suite.read(case["expected"]))
