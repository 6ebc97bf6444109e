"""Every XML document virtbus formats in a passing conformance case is valid by
libvirt's own RelaxNG schema.

Generic over suites: any suite that has an adapter and whose cases expect an
XML document with one of the roots below takes part, so new kinds join as
their adapters land.  A passing case formats exactly its expected file
(compare_text allows only a missing final newline), so validating that file
validates virtbus's output; a case that does not pass yet is skipped.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pytest
from lxml import etree

from tests.conformance.data import conformance_dir
from tests.conformance.runner import Case, Suite, adapter_for, find_suites

ROOT = Path(__file__).resolve().parent.parent
DATA = conformance_dir()
SCHEMAS = DATA / "schemas"

#: Root element of a formatted document -> libvirt schema file describing it.
SCHEMA_FOR_ROOT = {
    "pool": "storagepool.rng",
    "volume": "storagevol.rng",
    "secret": "secret.rng",
    "network": "network.rng",
    "networkport": "networkport.rng",
    "filter": "nwfilter.rng",
    "filterbinding": "nwfilterbinding.rng",
}


def _root_tag(path: Path) -> str | None:
    try:
        for _, element in etree.iterparse(str(path), events=("start",)):
            return str(element.tag)
    except etree.XMLSyntaxError:
        return None
    return None


def _cases() -> list[tuple[str, str]]:
    if not DATA.is_dir():
        return []
    found: list[tuple[str, str]] = []
    for suite in find_suites([DATA]):
        if adapter_for(suite.name) is None:
            continue
        for case in suite.cases:
            expected = case.get("expected")
            if not isinstance(expected, str) or not expected.endswith(".xml"):
                continue
            if _root_tag(suite.file(expected)) in SCHEMA_FOR_ROOT:
                found.append((suite.name, str(case["name"])))
    return found


@cache
def _suite(name: str) -> Suite:
    return next(s for s in find_suites([DATA]) if s.name == name)


@cache
def _schema(file_name: str) -> etree.RelaxNG:
    # Parsed from its path so that its <include href=...> resolve beside it.
    return etree.RelaxNG(etree.parse(str(SCHEMAS / file_name)))


def test_schema_data_present() -> None:
    if DATA.is_dir() and SCHEMAS.is_dir():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"conformance data or schemas missing at {DATA} (CI must run them)")
    pytest.skip(f"conformance data not found at {DATA}; set VIRTBUS_CONFORMANCE_DIR")


@pytest.mark.parametrize(("suite_name", "case_name"), _cases(), ids=lambda v: str(v))
def test_formatted_output_is_schema_valid(suite_name: str, case_name: str) -> None:
    suite = _suite(suite_name)
    case: Case = next(c for c in suite.cases if str(c["name"]) == case_name)
    adapter = adapter_for(suite_name)
    assert adapter is not None
    outcome = adapter(suite, case)
    if not outcome.passed:
        pytest.skip(f"case does not pass yet: {outcome.detail}")
    document = etree.parse(str(suite.file(case["expected"])))
    root = str(document.getroot().tag)
    schema = _schema(SCHEMA_FOR_ROOT[root])
    if not schema.validate(document):
        errors = "; ".join(f"line {e.line}: {e.message}" for e in schema.error_log)
        pytest.fail(
            f"{suite_name}/{case_name}: output not valid by {SCHEMA_FOR_ROOT[root]}: {errors}"
        )
