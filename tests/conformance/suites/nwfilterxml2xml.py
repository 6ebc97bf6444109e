"""nwfilterxml2xml: parse a network filter and format it again; '-invalid' inputs must fail."""

from __future__ import annotations

from shared.conf.nwfilter import format_nwfilter, parse_nwfilter
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def produce(suite: Suite, case: Case) -> str:
    """virtbus's formatting of the case's input."""
    return format_nwfilter(parse_nwfilter(suite.read(case["input"])))


def run_case(suite: Suite, case: Case) -> Outcome:
    if case.get("expect_error"):
        text = suite.read(case["input"])
        return expect_error(lambda: parse_nwfilter(text))
    return compare_text(produce(suite, case), suite.read(case["expected"]))
