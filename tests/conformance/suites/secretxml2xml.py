"""secretxml2xml: parse a secret and format it again."""

from __future__ import annotations

from shared.conf.secret import format_secret, parse_secret
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def run_case(suite: Suite, case: Case) -> Outcome:
    text = suite.read(case["input"])
    if case.get("expect_error"):
        return expect_error(lambda: parse_secret(text))
    return compare_text(format_secret(parse_secret(text)), suite.read(case["expected"]))
