"""The secret benchmark: define + set-value + get-value through the Python client, beside libvirt.

virtbus's side runs a real embedded nats-server and the secret service as its
own process in a temporary folder, and measures through ``client.Client``:
each call's latency over sequential sequences, then the throughput of more
sequences with a bounded number in flight.  libvirt's side does the same work
against ``qemu:///system`` through python3-libvirt (``bench/secret_libvirt.py``
under the system interpreter).  One-shot CLI commands are timed beside virsh's,
and the CLI's import cost is broken down.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from bench import oneshot
from bench.libvirt_side import PREFIX, Libvirt, WorkerError
from bench.load import drive
from bench.stack import service_stack
from bench.table import Table, median, ms, percentile, rate
from client.connection import Client

#: The secret both sides define, again and again: persistent and readable back.
SECRET_XML = """<secret ephemeral='no' private='no'>
  <description>virtbus benchmark secret</description>
  <uuid>{uuid}</uuid>
  <usage type='ceph'>
    <name>{usage}</name>
  </usage>
</secret>
"""
VALUE_SIZE = 32
_WARMUP = 5


@dataclass(frozen=True)
class Sizes:
    """How much work a run does."""

    sequences: int
    throughput: int
    concurrency: int
    cli_runs: int


NORMAL = Sizes(sequences=200, throughput=400, concurrency=16, cli_runs=10)
QUICK = Sizes(sequences=20, throughput=48, concurrency=16, cli_runs=2)

_OPERATIONS = [
    ("define", "define"),
    ("set_value", "set-value"),
    ("get_value", "get-value"),
    ("sequence", "define+set+get"),
]


@dataclass
class Figures:
    """Seconds per call of each operation, and the throughput run's wall time."""

    define: list[float]
    set_value: list[float]
    get_value: list[float]
    sequence: list[float]
    throughput_seconds: float = 0.0
    throughput_sequences: int = 0

    @classmethod
    def empty(cls) -> Figures:
        return cls([], [], [], [])

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figures:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})

    def cells(self) -> list[str]:
        """One cell per row of ``_ROWS``."""
        out = []
        for attr, _ in _OPERATIONS:
            values: list[float] = getattr(self, attr)
            out += [ms(median(values)), ms(percentile(values, 99))]
        per_second = self.throughput_sequences / self.throughput_seconds
        return [*out, rate(per_second), rate(3 * per_second)]


_ROWS = [f"{label}, {stat}" for _, label in _OPERATIONS for stat in ("median", "p99")] + [
    "throughput, define+set+get",
    "throughput, requests",
]


def secret_xml() -> str:
    ident = str(uuid.uuid4())
    return SECRET_XML.format(uuid=ident, usage=PREFIX + ident)


# -- virtbus's side --------------------------------------------------------------------


async def probe_secret(nc: NATS) -> object:
    """A call the secret service answers once it serves."""
    return await Client(nc).secret.list()


@asynccontextmanager
async def secret_stack(folder: Path) -> AsyncIterator[tuple[str, Client]]:
    """An embedded nats-server and a secret service process under ``folder``;
    yields the NATS URL and a client once the service answers."""
    async with service_stack(folder, "secret", probe_secret) as (url, nc):
        yield url, Client(nc)


async def _sequence(client: Client, value: bytes, figures: Figures | None) -> None:
    t0 = time.perf_counter()
    ident = await client.secret.define(secret_xml())
    t1 = time.perf_counter()
    await client.secret.set_value(ident, value)
    t2 = time.perf_counter()
    if await client.secret.get_value(ident) != value:
        raise RuntimeError("virtbus returned a different secret value")
    t3 = time.perf_counter()
    if figures is not None:
        figures.define.append(t1 - t0)
        figures.set_value.append(t2 - t1)
        figures.get_value.append(t3 - t2)
        figures.sequence.append(t3 - t0)


async def measure_client(client: Client, sizes: Sizes) -> Figures:
    """Sequential latencies, then the wall time of the throughput run."""
    value = os.urandom(VALUE_SIZE)
    figures = Figures.empty()
    for _ in range(_WARMUP):
        await _sequence(client, value, None)
    for _ in range(sizes.sequences):
        await _sequence(client, value, figures)
    _, figures.throughput_seconds = await drive(
        sizes.throughput, sizes.concurrency, lambda _: _sequence(client, value, None)
    )
    figures.throughput_sequences = sizes.throughput
    return figures


@dataclass
class VirtbusRun:
    figures: Figures
    cli: dict[str, str]
    imports: list[oneshot.Import] | str


async def run_virtbus(folder: Path, sizes: Sizes) -> VirtbusRun:
    """The CLI first, while the store holds one secret (as libvirt's does), then the API."""
    async with secret_stack(folder) as (url, client):
        ident = await client.secret.define(secret_xml())
        await client.secret.set_value(ident, os.urandom(VALUE_SIZE))
        cli = {
            name: await asyncio.to_thread(
                oneshot.median_cell, oneshot.virtbus_argv("-c", url, *args), sizes.cli_runs, ""
            )
            for name, args in _cli_commands(ident)
        }
        try:
            imports: list[oneshot.Import] | str = await asyncio.to_thread(
                oneshot.importtime, ["-c", url, "secret-list"]
            )
        except (oneshot.CommandFailed, subprocess.TimeoutExpired) as err:
            imports = f"failed: {err}"
        return VirtbusRun(await measure_client(client, sizes), cli, imports)


def _cli_commands(ident: str) -> list[tuple[str, list[str]]]:
    return [("secret-list", ["secret-list"]), ("secret-get-value", ["secret-get-value", ident])]


# -- libvirt's side and the tables -------------------------------------------------------


def run_libvirt(lv: Libvirt, sizes: Sizes) -> tuple[Figures | str, dict[str, str]]:
    """libvirt's figures (or why there are none) and virsh's CLI cells."""
    if lv.reason is not None:
        return lv.reason, {}
    template = ["--xml-template", SECRET_XML, "--value-size", str(VALUE_SIZE)]
    cli: dict[str, str] = {}
    try:
        ident = lv.call("prepare", *template)["uuid"]
        try:
            for name, args in _cli_commands(ident):
                cli[name] = oneshot.median_cell(lv.virsh(*args), sizes.cli_runs, "n/a (no virsh)")
        finally:
            lv.call("cleanup")
        counts = ["--sequences", str(sizes.sequences), "--throughput", str(sizes.throughput)]
        reply = lv.call("run", *template, *counts, "--concurrency", str(sizes.concurrency))
        return Figures.from_json(reply), cli
    except WorkerError as err:
        return f"failed: {err}", cli


def api_table(ours: Figures, theirs: Figures | str, lv: Libvirt, sizes: Sizes) -> Table:
    table = Table(
        f"Secret API through the Python client: {sizes.sequences} sequential "
        f"define+set+get, then {sizes.throughput} with {sizes.concurrency} in flight",
        ["measure", "virtbus", lv.label],
    )
    their_cells = theirs.cells() if isinstance(theirs, Figures) else [theirs] * len(_ROWS)
    for row in zip(_ROWS, ours.cells(), their_cells, strict=True):
        table.add(*row)
    table.notes.append(
        "virtbus: client -> embedded nats-server (JetStream, fsync always) -> secret service"
    )
    table.notes.append(
        "libvirt: python3-libvirt -> libvirtd on qemu:///system, one connection per thread"
    )
    grown = _WARMUP + sizes.sequences + sizes.throughput
    table.notes.append(f"each side's store grows by {grown} secrets over the run")
    if lv.started:
        table.notes.append("libvirtd was not running: the benchmark started it (libvirtd -d)")
    return table


def cli_table(ours: dict[str, str], theirs: dict[str, str], lv: Libvirt, runs: int) -> Table:
    table = Table(
        f"One-shot CLI commands, wall time (median of {runs} runs)", ["command", "virtbus", "virsh"]
    )
    for name, _ in _cli_commands(""):
        table.add(name, ours[name], theirs.get(name, lv.reason or "failed"))
    floor = oneshot.median_cell([sys.executable, "-c", "pass"], runs, "")
    table.add("python -c pass (interpreter start)", floor, "")
    return table


def run(quick: bool) -> list[Table]:
    """Every secret table; ``quick`` does a tenth of the work."""
    sizes = QUICK if quick else NORMAL
    lv = Libvirt.find()
    with tempfile.TemporaryDirectory(prefix="virtbus-bench-") as folder:
        ours = asyncio.run(run_virtbus(Path(folder), sizes))
    theirs, virsh_cli = run_libvirt(lv, sizes)
    return [
        api_table(ours.figures, theirs, lv, sizes),
        cli_table(ours.cli, virsh_cli, lv, sizes.cli_runs),
        oneshot.import_table(ours.imports, "secret-list"),
    ]
