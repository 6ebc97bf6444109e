"""``python -m bench.profile [secret|storage] [--cpu] [--count N] [--phase P]``: where a
request's time goes, on both sides.

Starts an embedded nats-server and the service (secret, or storage with a
``dir`` pool of qcow2 volumes) as a process of its own, and drives it through
the Python client in this process, phase by phase (secret: define+set+get with
16 in flight, then get-value; storage: create, info, list of every volume (with
their figures, then names, keys and paths only), delete, 8 in flight).

``--cpu`` prints, for every phase, the CPU time per request of the client
(this process), of the service and of nats-server (their ``/proc`` figures),
with the wall-clock rate beside them.  CPU time is what one request costs
whatever else the machine runs; wall-clock figures on a busy machine are not.

Without ``--cpu`` the service runs under ``cProfile`` (CPU time, enabled by
SIGUSR1 and disabled by SIGUSR2 around the phase ``--phase``, by default the
first measured one; its stats are written when SIGTERM stops it), the client
is profiled in this process over the same phase, and the top entries of each
side by own time are printed.
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
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.client import Client as NATS

from bench.load import drive
from bench.meter import Meter
from bench.secret import VALUE_SIZE, _sequence, probe_secret, secret_xml
from bench.stack import service_stack
from bench.storage import (
    HOST,
    POOL,
    VOLUME_XML,
    listing,
    pool_xml,
    probe_storage,
    volume_name,
)
from bench.table import Table, median, ms, rate
from client.connection import Client
from client.storage import StorageClient
from shared.api.storage import BuildMode, VolRef

_TOP = 18
#: Which class serves each service (``--serve`` runs it under the profiler).
_SERVICES = {
    "secret": ("services.secret.service", "SecretService", "SecretSettings"),
    "storage": ("services.storage.service", "StorageService", "StorageSettings"),
}


@dataclass
class Phase:
    """``count`` calls of ``work(i)``, ``concurrency`` at a time; each call is
    ``requests`` requests."""

    name: str
    count: int
    concurrency: int
    work: Callable[[int], Awaitable[object]]
    requests: int = 1


@dataclass
class Figures:
    calls: int
    requests: int
    wall: float
    cpu: tuple[float, float, float]  # client, service, nats-server seconds
    latencies: list[float] = field(default_factory=list)


async def _run_phase(phase: Phase, meter: Meter) -> Figures:
    before = meter.read()
    latencies, wall = await drive(phase.count, phase.concurrency, phase.work)
    after = await meter.settle()
    cpu = (after[0] - before[0], after[1] - before[1], after[2] - before[2])
    return Figures(phase.count, phase.count * phase.requests, wall, cpu, latencies)


def _secret_phases(nc: NATS, count: int) -> tuple[list[Phase], list[Phase]]:
    """(warm-up, measured) phases of the secret service."""
    client = Client(nc)
    value = os.urandom(VALUE_SIZE)
    one: list[str] = []

    async def sequence(_: int) -> None:
        await _sequence(client, value, None)

    async def prepare(_: int) -> None:
        one.append(await client.secret.define(secret_xml()))
        await client.secret.set_value(one[0], value)

    async def get(_: int) -> None:
        if await client.secret.get_value(one[0]) != value:
            raise RuntimeError("a different secret value came back")

    warm = [Phase("warm-up", 20, 1, sequence, 3), Phase("prepare", 1, 1, prepare, 2)]
    measured = [
        Phase("define+set+get", count, 16, sequence, 3),
        Phase("get-value, 16 in flight", count, 16, get),
        Phase("get-value, one at a time", count, 1, get),
    ]
    return warm, measured


def _storage_phases(nc: NATS, count: int, folder: Path) -> tuple[list[Phase], list[Phase]]:
    storage = StorageClient(nc, HOST)
    names = [volume_name(i) for i in range(count)]

    async def pool(_: int) -> None:
        await storage.pool_create(pool_xml(folder / "pool"), BuildMode.BUILD)

    async def create(i: int) -> None:
        await storage.vol_create(POOL, VOLUME_XML.format(name=names[i]))

    async def info(i: int) -> None:
        await storage.vol_info(VolRef(pool=POOL, name=names[i]))

    listed = listing(lambda: storage.vol_list(POOL), count)
    named = listing(lambda: storage.vol_list_brief(POOL), count)

    async def delete(i: int) -> None:
        await storage.vol_delete(VolRef(pool=POOL, name=names[i]))

    return [Phase("pool", 1, 1, pool)], [
        Phase("volume create", count, 8, create),
        Phase("volume info", count, 8, info),
        Phase(f"list of {count} volumes", max(10, count // 10), 8, listed),
        Phase(f"brief list of {count}", max(10, count // 10), 8, named),
        Phase("volume delete", count, 8, delete),
    ]


def _stack(
    which: str, folder: Path, meter: Meter, stats: Path | None
) -> AbstractAsyncContextManager[tuple[str, NATS]]:
    command = ["-m", "bench.profile", "--serve", str(stats), which] if stats else None
    if which == "secret":
        return service_stack(folder, "secret", probe_secret, command=command, started=meter.started)
    return service_stack(
        folder, "storage", probe_storage, host=HOST, command=command, started=meter.started
    )


def _us(seconds: float, requests: int) -> str:
    return f"{seconds / requests * 1e6:,.0f} us"


def cpu_table(which: str, results: list[tuple[Phase, Figures]]) -> Table:
    table = Table(
        f"{which}: CPU time per request, by process",
        ["phase", "requests", "client", "service", "nats-server", "wall rate", "median call"],
    )
    for phase, fig in results:
        table.add(
            phase.name,
            str(fig.requests),
            *(_us(seconds, fig.requests) for seconds in fig.cpu),
            rate(fig.calls / fig.wall),
            ms(median(fig.latencies)),
        )
    table.notes.append(
        "CPU: each process's CPU time over the phase (/proc/PID/task/*/schedstat) / requests"
    )
    if which == "secret":
        table.notes.append("define+set+get is 3 requests per call")
    return table


def _top(stats: pstats.Stats, title: str) -> str:
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(_TOP)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return f"{title}\n" + "\n".join(lines[start:])


async def _run(
    which: str, folder: Path, count: int, cpu: bool, chosen: str | None
) -> tuple[list[tuple[Phase, Figures]], cProfile.Profile | None, Path | None]:
    meter = Meter()
    stats = None if cpu else folder / "service.prof"
    profiler: cProfile.Profile | None = None
    results: list[tuple[Phase, Figures]] = []
    async with _stack(which, folder, meter, stats) as (_, nc):
        if which == "secret":
            warm, measured = _secret_phases(nc, count)
        else:
            warm, measured = _storage_phases(nc, count, folder)
        for phase in warm:
            await _run_phase(phase, meter)
        target = chosen or measured[0].name
        if not cpu and target not in [p.name for p in measured]:
            raise SystemExit(f"no phase {target!r}: {', '.join(p.name for p in measured)}")
        for phase in measured:
            profiled = not cpu and phase.name == target
            if profiled:
                os.kill(meter.service, signal.SIGUSR1)
                await asyncio.sleep(0.2)
                profiler = cProfile.Profile(time.process_time)
                profiler.enable()
            results.append((phase, await _run_phase(phase, meter)))
            if profiled:
                assert profiler is not None
                profiler.disable()
                os.kill(meter.service, signal.SIGUSR2)
    return results, profiler, stats


def _serve(stats_path: str, which: str, argv: Sequence[str]) -> int:
    """The service, profiled (CPU time) between SIGUSR1 and SIGUSR2; the stats
    are written when it stops."""
    import importlib

    from shared.util.process import run_main

    module, process, settings = _SERVICES[which]
    loaded = importlib.import_module(module)
    profiler = cProfile.Profile(time.process_time)
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profiler.disable())
    try:
        return run_main(getattr(loaded, process), getattr(loaded, settings), argv)
    finally:
        profiler.disable()
        profiler.dump_stats(stats_path)


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["--serve"]:
        return _serve(args_in[1], args_in[2], args_in[3:])
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("which", nargs="?", choices=sorted(_SERVICES), default="secret")
    parser.add_argument("--count", type=int, default=600, help="calls per phase")
    parser.add_argument("--cpu", action="store_true", help="CPU time per request, no profiler")
    parser.add_argument("--phase", help="the phase to profile (default: the first)")
    args = parser.parse_args(args_in)
    with tempfile.TemporaryDirectory(prefix="virtbus-profile-") as tmp:
        folder = Path(tmp)
        results, profiler, stats = asyncio.run(
            _run(args.which, folder, args.count, args.cpu, args.phase)
        )
        print(cpu_table(args.which, results).render())
        if profiler is not None and stats is not None:
            print(_top(pstats.Stats(profiler), "client side (this process), CPU time, by own time"))
            print()
            print(_top(pstats.Stats(str(stats)), f"{args.which} service, CPU time, by own time"))
            if os.environ.get("VIRTBUS_PROFILE_KEEP"):
                import shutil

                shutil.copy(stats, os.environ["VIRTBUS_PROFILE_KEEP"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
