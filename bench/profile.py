"""``python -m bench.profile [secret] [--count N]``: where a request's time goes, on both sides.

Starts an embedded nats-server and the secret service under ``cProfile`` (its
stats are written when SIGTERM stops it), runs define+set+get sequences with
16 in flight through the Python client under ``cProfile`` in this process,
and prints the top entries of each side by own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.secret import VALUE_SIZE, _sequence
from bench.stack import ROOT
from client.connection import Client
from shared.util import bus
from shared.util.errors import VirtError
from shared.util.natsserver import EmbeddedNats

_TOP = 18


def _top(stats: pstats.Stats, title: str) -> str:
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(_TOP)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return f"{title}\n" + "\n".join(lines[start:])


async def _run(folder: Path, count: int, concurrency: int) -> str:
    server = EmbeddedNats(folder / "nats")
    await server.start()
    service_stats = folder / "service.prof"
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "bench.profile", "--serve", str(service_stats)],
        *["--nats-url", server.url, "--state-dir", str(folder / "secret")],
        *["--http-port", "0", "--log-level", "WARNING"],
        cwd=ROOT,
    )
    try:
        nc = await bus.connect(server.url, "virtbus-profile")
        client = Client(nc)
        for _ in range(100):
            try:
                await client.secret.list()
                break
            except VirtError:
                await asyncio.sleep(0.1)
        value = os.urandom(VALUE_SIZE)
        for _ in range(20):
            await _sequence(client, value, None)
        slots = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with slots:
                await _sequence(client, value, None)

        proc.send_signal(signal.SIGUSR1)  # the service starts profiling
        await asyncio.sleep(0.2)
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        await asyncio.gather(*(one() for _ in range(count)))
        profiler.disable()
        await bus.close(nc)
    finally:
        proc.terminate()
        # The profiled service drains slowly on a busy machine; its stats are
        # written once it has stopped.
        await asyncio.wait_for(proc.wait(), 120)
        await server.stop()
    client_side = _top(pstats.Stats(profiler), "client side (this process), CPU time, by own time")
    service_side = _top(pstats.Stats(str(service_stats)), "secret service, CPU time, by own time")
    return f"{client_side}\n\n{service_side}"


def _serve(stats_path: str, argv: Sequence[str]) -> int:
    """The secret service, profiled (CPU time) from SIGUSR1 until it stops."""
    from services.secret.service import SecretService, SecretSettings
    from shared.util.process import run_main

    profiler = cProfile.Profile(time.process_time)
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    try:
        return run_main(SecretService, SecretSettings, argv)
    finally:
        profiler.disable()
        profiler.dump_stats(stats_path)


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["--serve"]:
        return _serve(args_in[1], args_in[2:])
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("which", nargs="?", choices=["secret"], default="secret")
    parser.add_argument("--count", type=int, default=600, help="define+set+get sequences")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(args_in)
    with tempfile.TemporaryDirectory(prefix="virtbus-profile-") as folder:
        print(asyncio.run(_run(Path(folder), args.count, args.concurrency)))
        if os.environ.get("VIRTBUS_PROFILE_KEEP"):
            import shutil

            shutil.copy(Path(folder) / "service.prof", os.environ["VIRTBUS_PROFILE_KEEP"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
