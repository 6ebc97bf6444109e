"""storagevolxml2xml: parse a volume in the context of its pool and format it again."""

from __future__ import annotations

from shared.conf.storage_pool import parse_storage_pool
from shared.conf.storage_volume import VolParseFlags, format_storage_volume, parse_storage_volume
from tests.conformance.runner import Case, Outcome, Suite, compare_text, expect_error

# The manifest names libvirt's flag constants.
_FLAGS = {
    "VIR_VOL_XML_PARSE_NO_CAPACITY": VolParseFlags.NO_CAPACITY,
    "VIR_VOL_XML_PARSE_OPT_CAPACITY": VolParseFlags.OPT_CAPACITY,
}


def _flags(case: Case) -> VolParseFlags:
    flags = VolParseFlags.NONE
    for name in case.get("parse_flags") or []:
        flags |= _FLAGS[name]
    return flags


def produce(suite: Suite, case: Case) -> str:
    """virtbus's formatting of the case's input (a volume of the case's pool)."""
    pool = parse_storage_pool(suite.read(case["pool"]))
    vol = parse_storage_volume(suite.read(case["input"]), pool, _flags(case))
    return format_storage_volume(pool, vol)


def run_case(suite: Suite, case: Case) -> Outcome:
    if case.get("expect_error"):
        pool = parse_storage_pool(suite.read(case["pool"]))
        text = suite.read(case["input"])
        return expect_error(lambda: parse_storage_volume(text, pool, _flags(case)))
    return compare_text(produce(suite, case), suite.read(case["expected"]))
