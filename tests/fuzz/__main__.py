"""``python -m tests.fuzz [--seconds S | --per-kind N] [--seed N] [--kind K] [--save]``:
fuzz every kind, print the counts and each failure; ``--save`` keeps failures as
regression cases.  Exit status 1 when something failed."""

from __future__ import annotations

import argparse
import random
import sys
import time

from tests.conformance.data import conformance_dir
from tests.fuzz.kinds import KINDS, load_seeds
from tests.fuzz.run import fuzz, save_regressions


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--per-kind", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--kind", action="append", choices=sorted(KINDS))
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    folder = conformance_dir()
    seeds = load_seeds(folder)
    if not seeds:
        print(f"no seeds: conformance data not found at {folder}", file=sys.stderr)
        return 2
    per_kind = args.per_kind if args.seconds is None and args.per_kind is not None else None
    seconds = args.seconds if args.seconds is not None or per_kind is not None else 60.0
    print(f"fuzz: seed {seed}, {len(seeds)} seeds from {folder}")
    started = time.monotonic()
    report = fuzz(
        seeds, rng=random.Random(seed), per_kind=per_kind, seconds=seconds, kinds=args.kind
    )
    print(report.summary())
    print(f"  in {time.monotonic() - started:.1f} s")
    for item in report.found:
        print(f"\n[{item.seed.kind}] {item.failure.property}: {item.failure.detail}")
        print(f"  input: {item.seed.text[:2000]}")
    if args.save and report.found:
        print(f"\n{save_regressions(report.found)} new regression cases saved")
    return 1 if report.found else 0


if __name__ == "__main__":
    sys.exit(main())
