"""The XML benchmark: parse+format round trips per second of shared.conf, lxml's as the floor.

Each kind's module is imported by name when the benchmark runs, so a kind whose
module has not landed yet shows as "not available" and is measured as soon as it
does.  The documents in ``bench/documents`` are the project's own, typical of
what operators write (the volume is read in the context of the pool document,
the disk is a running guest's, with its backing chain).  libvirt has no call that
parses and formats without defining an object, so there is no libvirt column:
lxml's bare parse+serialise of the same bytes is the floor.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from lxml import etree

from bench.table import Table, rate

DOCUMENTS = Path(__file__).with_name("documents")
#: Calls between two looks at the clock.
_BATCH = 10
#: Rounds each figure is measured in; the two figures of a row take turns, so
#: that load from elsewhere on the machine weighs on both alike.
_ROUNDS = 5

RoundTrip = Callable[[], object]


def _document(name: str) -> bytes:
    return (DOCUMENTS / name).read_bytes()


def _pool(mod: ModuleType, doc: bytes) -> RoundTrip:
    return lambda: mod.format_storage_pool(mod.parse_storage_pool(doc))


def _volume(mod: ModuleType, doc: bytes) -> RoundTrip:
    pools = importlib.import_module("shared.conf.storage_pool")
    pool = pools.parse_storage_pool(_document("pool.xml"))
    return lambda: mod.format_storage_volume(pool, mod.parse_storage_volume(doc, pool))


def _network(mod: ModuleType, doc: bytes) -> RoundTrip:
    return lambda: mod.format_network(mod.parse_network(doc))


def _nwfilter(mod: ModuleType, doc: bytes) -> RoundTrip:
    return lambda: mod.format_nwfilter(mod.parse_nwfilter(doc))


def _disk(mod: ModuleType, doc: bytes) -> RoundTrip:
    return lambda: mod.format_disk(mod.parse_disk(doc, active=True), active=True)


@dataclass(frozen=True)
class Kind:
    """A benchmarked kind: its document, its module and how to round-trip it."""

    name: str
    document: str
    module: str
    prepare: Callable[[ModuleType, bytes], RoundTrip]


KINDS = [
    Kind("volume", "volume.xml", "shared.conf.storage_volume", _volume),
    Kind("pool", "pool.xml", "shared.conf.storage_pool", _pool),
    Kind("network", "network.xml", "shared.conf.network", _network),
    Kind("nwfilter", "nwfilter.xml", "shared.conf.nwfilter", _nwfilter),
    Kind("disk+backing chain", "disk.xml", "shared.conf.disk", _disk),
]

HEADERS = ["kind", "bytes", "virtbus", "per trip", "lxml floor", "per trip", "x floor"]


def per_second(fn: RoundTrip, seconds: float) -> float:
    """Calls of ``fn`` per second over at least ``seconds`` (after one warm-up call)."""
    fn()
    calls = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(_BATCH):
            fn()
        calls += _BATCH
        now = time.perf_counter()
        if now >= end:
            return calls / (now - start)


def best_rates(fns: Sequence[RoundTrip], seconds: float) -> list[float]:
    """Calls per second of each of ``fns``: the best of ``_ROUNDS`` rounds of
    ``seconds / _ROUNDS`` each, the functions taking turns round by round."""
    best = [0.0] * len(fns)
    for _ in range(_ROUNDS):
        for i, fn in enumerate(fns):
            best[i] = max(best[i], per_second(fn, seconds / _ROUNDS))
    return best


def lxml_floor(doc: bytes) -> RoundTrip:
    return lambda: etree.tostring(etree.fromstring(doc))


def load(kind: Kind) -> RoundTrip | str:
    """The kind's round trip, or "not available" while its module or its
    parse/format functions do not exist yet."""
    try:
        mod = importlib.import_module(kind.module)
        return kind.prepare(mod, _document(kind.document))
    except ModuleNotFoundError as err:
        if err.name is not None and kind.module.startswith(err.name):
            return "not available"
        raise
    except AttributeError:
        return "not available"


def _micros(per_sec: float) -> str:
    return f"{1e6 / per_sec:,.0f} us" if per_sec < 1e5 else f"{1e6 / per_sec:.1f} us"


def measure(kind: Kind, seconds: float) -> list[str]:
    """One table row for ``kind``.  A kind that fails is shown with its error,
    not raised: the other kinds' figures are still worth printing."""
    doc = _document(kind.document)
    floor_trip = lxml_floor(doc)
    head = [kind.name, str(len(doc))]
    try:
        trip = load(kind)
        if isinstance(trip, str):
            return [*head, trip, "", *_cells(best_rates([floor_trip], seconds)[0]), ""]
        floor, ours = best_rates([floor_trip, trip], seconds)
    except Exception as err:  # a half-written module: report it in its row
        failed = f"error: {type(err).__name__}: {err}"
        return [*head, failed, "", *_cells(best_rates([floor_trip], seconds)[0]), ""]
    return [*head, *_cells(ours), *_cells(floor), f"{floor / ours:.1f}"]


def _cells(per_sec: float) -> list[str]:
    return [rate(per_sec), _micros(per_sec)]


def run(quick: bool, kinds: Sequence[Kind] = KINDS) -> Table:
    """The round-trip table; ``quick`` measures each figure for 0.05 s instead of 1 s
    (in ``_ROUNDS`` rounds)."""
    seconds = 0.05 if quick else 1.0
    table = Table("XML parse+format round trips per second (one thread)", HEADERS)
    for kind in kinds:
        table.add(*measure(kind, seconds))
    table.notes.append(
        "virtbus: shared.conf parse_<kind> then format_<kind>; "
        "lxml floor: etree.fromstring then etree.tostring of the same bytes"
    )
    table.notes.append("x floor: how many lxml round trips fit in the time of one of ours")
    table.notes.append("libvirt: no parse+format-only API to compare with (see docs/benchmarks.md)")
    return table
