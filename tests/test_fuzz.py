"""The fuzz suite's bounded slice: every kind's conformance seeds and a fixed number
of their mutants (a fixed random seed, so a run is repeatable), and every regression
case ever found.  ``make fuzz`` runs the same loop for longer with a fresh seed."""

from __future__ import annotations

import os
import random

import pytest

from tests.conformance.data import conformance_dir
from tests.fuzz.check import check
from tests.fuzz.kinds import KINDS, Seed, load_seeds
from tests.fuzz.run import fuzz, load_regressions

#: Mutants per kind: about 45 s of CPU for all kinds.
MUTANTS_PER_KIND = 8000
SEED = 20261205

DATA = conformance_dir()
_SEEDS: list[Seed] | None = None


def _seeds() -> list[Seed]:
    global _SEEDS
    if _SEEDS is None:
        _SEEDS = load_seeds(DATA) if DATA.is_dir() else []
    if not _SEEDS:
        if os.environ.get("CI") == "true":
            pytest.fail(f"conformance data missing at {DATA} (CI must fuzz from it)")
        pytest.skip(f"no fuzz seeds: conformance data not found at {DATA}")
    return _SEEDS


def _explain(kind: str, text: str, prop: str, detail: str) -> str:
    return f"[{kind}] {prop}\n{detail}\ninput:\n{text}"


_REGRESSIONS = load_regressions()


@pytest.mark.parametrize(
    ("why", "case"),
    _REGRESSIONS,
    ids=[f"{case.kind}-{number}" for number, (_, case) in enumerate(_REGRESSIONS)],
)
def test_regression_case(why: str, case: Seed) -> None:
    failure = check(KINDS[case.kind], case.text, case.context)
    assert failure is None, _explain(case.kind, case.text, failure.property, failure.detail)


def test_every_kind_has_seeds() -> None:
    kinds = {seed.kind for seed in _seeds()}
    assert kinds == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_seeds_keep_the_properties(kind: str) -> None:
    for seed in _seeds():
        if seed.kind == kind:
            failure = check(KINDS[kind], seed.text, seed.context)
            assert failure is None, _explain(kind, seed.text, failure.property, failure.detail)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_mutants_keep_the_properties(kind: str) -> None:
    report = fuzz(
        _seeds(), rng=random.Random(f"{SEED}-{kind}"), per_kind=MUTANTS_PER_KIND, kinds=[kind]
    )
    assert report.inputs == MUTANTS_PER_KIND
    found = report.found
    assert not found, "\n\n".join(
        _explain(f.seed.kind, f.seed.text, f.failure.property, f.failure.detail) for f in found
    )
