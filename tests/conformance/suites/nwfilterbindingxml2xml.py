"""nwfilterbindingxml2xml: parse a filter binding and format it again."""

from __future__ import annotations

from shared.conf.nwfilter_binding import format_nwfilter_binding, parse_nwfilter_binding
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def run_case(suite: Suite, case: Case) -> Outcome:
    text = suite.read(case["input"])
    if case.get("expect_error"):
        return expect_error(lambda: parse_nwfilter_binding(text))
    return compare_text(
        format_nwfilter_binding(parse_nwfilter_binding(text)), suite.read(case["expected"])
    )
