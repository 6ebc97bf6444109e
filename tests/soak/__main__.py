"""``python -m tests.soak [--seconds S] [--seed N] [--workers N] [--kill-every S]``: run
the soak in a temporary folder and print its counts; exit 1 when anything
acknowledged was lost, an event was doubled or a file was orphaned."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

from tests.soak.run import soak


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kill-every", type=float, default=6.0)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"soak: seed {seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="virtbus-soak-") as folder:
        report = asyncio.run(
            soak(
                args.seconds,
                Path(folder),
                seed=seed,
                workers=args.workers,
                kill_every=args.kill_every,
            )
        )
    print(report.summary())
    for reason, count in report.refusals.most_common(8):
        print(f"  refused {count}: {reason}")
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
