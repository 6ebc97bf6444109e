"""nwfilterbindingxml2xml: parse a filter binding and format it again."""

from __future__ import annotations

from shared.conf.nwfilter_binding import format_nwfilter_binding, parse_nwfilter_binding
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def produce(suite: Suite, case: Case) -> str:
    """virtbus's formatting of the case's input."""
    return format_nwfilter_binding(parse_nwfilter_binding(suite.read(case["input"])))


def run_case(suite: Suite, case: Case) -> Outcome:
    if case.get("expect_error"):
        text = suite.read(case["input"])
        return expect_error(lambda: parse_nwfilter_binding(text))
    return compare_text(produce(suite, case), suite.read(case["expected"]))
