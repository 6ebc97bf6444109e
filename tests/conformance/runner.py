"""Runs every suite folder found under the given folders and reports per suite.

A suite folder holds a ``cases.json`` manifest (libvirt-conformance's format:
``suite``, ``kind``, ``compare`` and a list of ``cases`` naming input and
expected files).  The adapter for a suite is the module
``tests.conformance.suites.<suite>``; suites without one are reported as
unsupported and not counted.  Output: one ``<suite>: N passed, M failed`` line
per suite, then the total; ``--json`` prints every case's result instead.
The exit status is 0 whenever the run completed, whatever the score.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.util.errors import VirtError

Case = dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """One case's result; ``detail`` names the first differing line or the error."""

    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Suite:
    """A manifest folder: its path and parsed ``cases.json``."""

    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest.get("suite") or self.path.name)

    @property
    def cases(self) -> list[Case]:
        return list(self.manifest.get("cases", []))

    def file(self, relative: str) -> Path:
        """A data file named by the manifest, which must stay inside the suite folder."""
        path = (self.path / relative).resolve()
        if not path.is_relative_to(self.path.resolve()):
            raise ValueError(f"manifest path {relative!r} leaves the suite folder")
        return path

    def read(self, relative: str) -> str:
        return self.file(relative).read_text(encoding="utf-8")


Adapter = Callable[[Suite, Case], Outcome]


@dataclass
class SuiteReport:
    name: str
    results: dict[str, Outcome] = field(default_factory=dict)

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results.values() if r.passed)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed


def first_difference(produced: str, expected: str) -> str:
    """A one-line description of where two texts first differ."""
    got, want = produced.splitlines(), expected.splitlines()
    for number, (a, b) in enumerate(zip(got, want, strict=False), start=1):
        if a != b:
            return f"line {number}: expected {b!r}, got {a!r}"
    if len(got) != len(want):
        n = min(len(got), len(want)) + 1
        if len(got) > len(want):
            return f"line {n}: unexpected extra {got[n - 1]!r}"
        return f"line {n}: missing {want[n - 1]!r}"
    return "texts differ in line endings or trailing whitespace"


def compare_text(produced: str, expected: str, *, literal: bool = False) -> Outcome:
    """libvirt's harness comparison: backslash-newline pairs are removed from the
    expected text unless ``literal``; a missing final newline is tolerated."""
    if not literal:
        expected = expected.replace("\\\n", "")
    if expected.endswith("\n") and not produced.endswith("\n"):
        produced += "\n"
    if produced == expected:
        return Outcome(True)
    return Outcome(False, first_difference(produced, expected))


def expect_error(action: Callable[[], object]) -> Outcome:
    """Pass when ``action`` is refused with a ``VirtError``."""
    try:
        action()
    except VirtError:
        return Outcome(True)
    return Outcome(False, "accepted an input libvirt rejects")


def find_suites(roots: list[Path]) -> Iterator[Suite]:
    """Every manifest folder at or under the given folders, sorted by path."""
    seen: set[Path] = set()
    for root in roots:
        candidates = [root / "cases.json"] if (root / "cases.json").is_file() else []
        candidates += sorted(root.rglob("*/cases.json"))
        for manifest_path in candidates:
            folder = manifest_path.parent.resolve()
            if folder in seen:
                continue
            seen.add(folder)
            yield Suite(folder, json.loads(manifest_path.read_text(encoding="utf-8")))


def adapter_for(suite_name: str) -> Adapter | None:
    """The suite's adapter, or None when virtbus does not support that suite."""
    module_name = f"tests.conformance.suites.{suite_name}"
    if not suite_name.isidentifier() or importlib.util.find_spec(module_name) is None:
        return None
    module = importlib.import_module(module_name)
    run_case: Adapter = module.run_case
    return run_case


def run_suite(suite: Suite, adapter: Adapter) -> SuiteReport:
    """Run every case; an unexpected exception fails the case, never the run."""
    report = SuiteReport(suite.name)
    for case in suite.cases:
        try:
            outcome = adapter(suite, case)
        except VirtError as err:
            outcome = Outcome(False, f"refused: {err}")
        except Exception as err:  # one broken case must not stop the report
            where = traceback.extract_tb(err.__traceback__)[-1]
            outcome = Outcome(
                False, f"crashed: {type(err).__name__}: {err} ({where.filename}:{where.lineno})"
            )
        report.results[str(case["name"])] = outcome
    return report


def run(roots: list[Path], only: set[str] | None = None) -> tuple[list[SuiteReport], list[str]]:
    """Run the suites under ``roots``; returns the reports and the unsupported suite names."""
    reports: list[SuiteReport] = []
    unsupported: list[str] = []
    for suite in find_suites(roots):
        if only and suite.name not in only:
            continue
        adapter = adapter_for(suite.name)
        if adapter is None:
            unsupported.append(suite.name)
            continue
        reports.append(run_suite(suite, adapter))
    return reports, unsupported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.conformance",
        description="Run libvirt conformance suites (manifest folders) against virtbus.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="folders holding suite folders")
    parser.add_argument("--suite", action="append", help="run only this suite (repeatable)")
    parser.add_argument("--json", action="store_true", help="print every case's result as JSON")
    args = parser.parse_args(argv)
    for d in args.dirs:
        if not d.is_dir():
            parser.error(f"{d} is not a folder")
    reports, unsupported = run(args.dirs, set(args.suite) if args.suite else None)
    total_passed = sum(r.passed for r in reports)
    total_failed = sum(r.failed for r in reports)
    if args.json:
        doc = {
            "suites": {
                r.name: {
                    "passed": r.passed,
                    "failed": r.failed,
                    "cases": {
                        name: {"passed": o.passed, "detail": o.detail}
                        for name, o in r.results.items()
                    },
                }
                for r in reports
            },
            "unsupported": unsupported,
            "passed": total_passed,
            "failed": total_failed,
        }
        json.dump(doc, sys.stdout, indent=2)
        print()
        return 0
    for r in reports:
        print(f"{r.name}: {r.passed} passed, {r.failed} failed")
    for name in unsupported:
        print(f"{name}: not supported")
    print(f"{total_passed} passed, {total_failed} failed")
    return 0
