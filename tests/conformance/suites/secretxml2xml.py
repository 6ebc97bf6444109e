"""secretxml2xml: parse a secret and format it again."""

from __future__ import annotations

from shared.conf.secret import format_secret, parse_secret
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def produce(suite: Suite, case: Case) -> str:
    """virtbus's formatting of the case's input."""
    return format_secret(parse_secret(suite.read(case["input"])))


def run_case(suite: Suite, case: Case) -> Outcome:
    if case.get("expect_error"):
        text = suite.read(case["input"])
        return expect_error(lambda: parse_secret(text))
    return compare_text(produce(suite, case), suite.read(case["expected"]))
