"""``python -m bench.ledger [--pairs N] [--streams 1 2 4]``: what one ledger stream
takes, and what several take side by side.

The ledger (``shared.util.ledger``) alone, with no service around it: an
embedded nats-server (as the product runs it: ``sync_interval: always``) and
K ledgers, each of a service of its own (so each its own stream, as a ledger
split over K streams would be), each with its watch and forwarder running in
this process.  A *pair* is what a secret's define and set-value write: a new
key with one event, then the key again with one event; 16 pairs are in
flight, spread over the K ledgers in turn.  For each K the table gives the
pairs per second, the CPU time per pair of nats-server and of this process,
and how far the forwarders were behind when the last write was acknowledged
(events not yet in ``VIRTBUS_EVENTS``, and the time they took to get there).

This is where the secret service's define+set+get throughput is bounded:
every write of one ledger goes through its stream's one-at-a-time store and
fsync, and its forwarder stores one event at a time (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.load import drive
from bench.meter import cpu_of
from bench.table import Table, ms, rate
from shared.util import bus
from shared.util.events import STREAM, ensure_stream
from shared.util.ledger import Event, Ledger
from shared.util.natsserver import EmbeddedNats

CONCURRENCY = 16
VALUE = b"v" * 300


@dataclass
class Figures:
    streams: int
    pairs_per_second: float
    server_cpu: float
    client_cpu: float
    behind: int
    caught_up: float
    #: Events in VIRTBUS_EVENTS once the forwarders caught up (two per pair).
    events: int


async def measure(folder: Path, streams: int, pairs: int) -> Figures:
    """``pairs`` pairs over ``streams`` ledgers on a fresh server under ``folder``."""
    names = [f"ledger{n}" for n in range(streams)]
    server = EmbeddedNats(folder / "nats", services=names)
    await server.start()
    connections = []
    followers: list[asyncio.Task[None]] = []
    try:
        for name in names:
            connections.append(await bus.connect(server.role_url(name), f"virtbus-bench-{name}"))
        await ensure_stream(connections[0].jetstream())
        ledgers = []
        for name, nc in zip(names, connections, strict=True):
            ledger = Ledger(nc, nc.jetstream(), name)
            await ledger.open()
            followers.append(asyncio.create_task(ledger.follow()))
            ledgers.append(ledger)

        async def pair(number: int) -> None:
            ledger = ledgers[number % streams]
            key = f"s.{uuid.uuid4().hex}"
            await ledger.write(key, VALUE, [Event("secret", key, "lifecycle", "Defined")])
            await ledger.write(key, VALUE, [Event("secret", key, "value", "ValueChanged")])

        assert server.proc is not None
        server_pid = server.proc.pid
        before = cpu_of(server_pid), cpu_of(os.getpid())
        _, seconds = await drive(pairs, CONCURRENCY, pair)
        behind = sum(ledger.last_written - ledger.forwarded for ledger in ledgers)
        began = time.perf_counter()
        for ledger in ledgers:
            await ledger.wait_forwarded(ledger.last_written, timeout=300)
        caught_up = time.perf_counter() - began
        after = cpu_of(server_pid), cpu_of(os.getpid())
        events = (await connections[0].jetstream().stream_info(STREAM)).state.messages
        return Figures(
            streams,
            pairs / seconds,
            (after[0] - before[0]) / pairs,
            (after[1] - before[1]) / pairs,
            behind,
            caught_up,
            events,
        )
    finally:
        for task in followers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for nc in connections:
            await bus.close(nc)
        await server.stop()


def table(rows: Sequence[Figures], pairs: int) -> Table:
    result = Table(
        f"ledger: {pairs} pairs (a new key, then the key again, one event each), "
        f"{CONCURRENCY} in flight",
        ["streams", "pairs", "nats-server CPU", "this process CPU", "behind at the end"],
    )
    for row in rows:
        result.add(
            str(row.streams),
            rate(row.pairs_per_second),
            f"{row.server_cpu * 1e6:,.0f} us",
            f"{row.client_cpu * 1e6:,.0f} us",
            f"{row.behind} ledger messages, {ms(row.caught_up)}",
        )
    result.notes.append(
        "CPU: per pair, over the writes and the forwarding that followed them; "
        "behind: messages whose events were not yet stored when the last write was "
        "acknowledged, and the time until they were"
    )
    return result


async def run(pairs: int, streams: Sequence[int]) -> Table:
    rows = []
    with tempfile.TemporaryDirectory(prefix="virtbus-bench-ledger-") as tmp:
        for count in streams:
            folder = Path(tmp) / f"k{count}"
            folder.mkdir()
            rows.append(await measure(folder, count, pairs))
    return table(rows, pairs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger")
    parser.add_argument("--pairs", type=int, default=6000, help="pairs per row")
    parser.add_argument(
        "--streams", type=int, nargs="+", default=[1, 2, 4], help="ledgers side by side"
    )
    args = parser.parse_args(argv)
    print(asyncio.run(run(args.pairs, args.streams)).render(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
