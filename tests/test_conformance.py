"""libvirt 9.0.0's own test data, run through the conformance runner.

The expectations file lists the cases known to fail (with why) and the suites
not run yet; any other failure fails this test, and so does a listed case that
now passes, so the list can only shrink.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conformance.data import conformance_dir
from tests.conformance.runner import adapter_for, find_suites, run_suite

ROOT = Path(__file__).resolve().parent.parent
DATA = conformance_dir()
EXPECTED = json.loads((ROOT / "tests" / "conformance" / "expected-failures.json").read_text())


def _suites() -> list[str]:
    if not DATA.is_dir():
        return []
    return sorted(s.name for s in find_suites([DATA]))


def test_conformance_data_present() -> None:
    if DATA.is_dir():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"conformance data missing at {DATA} (CI must run it)")
    pytest.skip(f"conformance data not found at {DATA}; set VIRTBUS_CONFORMANCE_DIR")


@pytest.mark.parametrize("suite_name", _suites())
def test_suite(suite_name: str) -> None:
    suite = next(s for s in find_suites([DATA]) if s.name == suite_name)
    adapter = adapter_for(suite_name)
    if suite_name in EXPECTED["unsupported"]:
        assert adapter is None, f"{suite_name} now has an adapter: remove it from 'unsupported'"
        pytest.skip(f"not supported yet: {EXPECTED['unsupported'][suite_name]}")
    assert adapter is not None, f"no adapter for {suite_name} and not listed as unsupported"
    report = run_suite(suite, adapter)
    known: dict[str, str] = EXPECTED["failures"].get(suite_name, {})
    unexpected = {
        name: o.detail for name, o in report.results.items() if not o.passed and name not in known
    }
    fixed = [name for name in known if name in report.results and report.results[name].passed]
    assert not unexpected, f"unexpected failures in {suite_name}: {unexpected}"
    assert not fixed, f"listed as failing but now pass (remove them from the list): {fixed}"
