"""storagepoolxml2xml: parse a storage pool and format it again."""

from __future__ import annotations

from shared.conf.storage_pool import format_storage_pool, parse_storage_pool
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def produce(suite: Suite, case: Case) -> str:
    """virtbus's formatting of the case's input."""
    return format_storage_pool(parse_storage_pool(suite.read(case["input"])))


def run_case(suite: Suite, case: Case) -> Outcome:
    if case.get("expect_error"):
        text = suite.read(case["input"])
        return expect_error(lambda: parse_storage_pool(text))
    return compare_text(produce(suite, case), suite.read(case["expected"]))
