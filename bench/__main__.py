"""``python -m bench [secret|conf|storage|blockjob|network|nwfilter|all] [--quick]``:
run the benchmarks and print their tables."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from collections.abc import Sequence


def header() -> str:
    """When and where the figures were taken."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"virtbus benchmarks, {now}, {platform.node()}: {os.cpu_count()} CPUs, "
        f"{platform.machine()}, Python {platform.python_version()}\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "which",
        nargs="?",
        choices=["secret", "conf", "storage", "blockjob", "network", "nwfilter", "all"],
        default="all",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run of each benchmark: seconds to a minute each",
    )
    args = parser.parse_args(argv)
    print(header(), flush=True)
    # Imported here so that `conf` alone never imports the bus client.
    if args.which in ("conf", "all"):
        from bench import conf

        print(conf.run(args.quick).render(), flush=True)
    if args.which in ("secret", "all"):
        from bench import secret
        from shared.util.errors import VirtError

        try:
            tables = secret.run(args.quick)
        except (RuntimeError, VirtError) as err:  # the stack did not come up
            print(f"error: secret benchmark: {err}", file=sys.stderr)
            return 1
        for table in tables:
            print(table.render(), flush=True)
    if args.which in ("storage", "all"):
        from bench import storage

        if storage.main(["--quick"] if args.quick else []) != 0:
            return 1
    if args.which in ("network", "all"):
        from bench import network

        if network.main(["--quick"] if args.quick or args.which == "all" else []) != 0:
            return 1
    if args.which in ("nwfilter", "all"):
        from bench import nwfilter

        # 100 bindings per side take minutes: "all" runs the quick form.
        if nwfilter.main(["--quick"] if args.quick or args.which == "all" else []) != 0:
            return 1
    if args.which in ("blockjob", "all"):
        from bench import blockjob

        if blockjob.main(["--quick"] if args.quick else []) != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
