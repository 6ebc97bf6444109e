"""storagepoolxml2xml: parse a storage pool and format it again."""

from __future__ import annotations

from shared.conf.storage_pool import format_storage_pool, parse_storage_pool
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error


def run_case(suite: Suite, case: Case) -> Outcome:
    text = suite.read(case["input"])
    if case.get("expect_error"):
        return expect_error(lambda: parse_storage_pool(text))
    return compare_text(format_storage_pool(parse_storage_pool(text)), suite.read(case["expected"]))
