"""bench/: table layout, the quick XML benchmark on one document, the import-time reader.

No timing is ever asserted: the figures depend on the machine and its load.
"""

from __future__ import annotations

import os
import time

import pytest

from bench import conf, meter, oneshot, profile
from bench.table import Table, percentile


def test_table_pads_columns_and_prints_notes() -> None:
    table = Table("Title", ["kind", "rate"])
    table.add("pool", "7,000/s")
    table.add("disk+backing chain", "40/s")
    table.notes.append("a note")

    lines = table.render().splitlines()

    assert lines == [
        "Title",
        "=====",
        "kind                   rate",
        "------------------  -------",
        "pool                7,000/s",
        "disk+backing chain     40/s",
        "  a note",
    ]


def test_table_refuses_a_row_of_the_wrong_width() -> None:
    with pytest.raises(ValueError, match="2 columns"):
        Table("T", ["a", "b"]).add("only one")


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile([3.0], 99) == 3.0


def _pool_kind() -> conf.Kind:
    return next(k for k in conf.KINDS if k.name == "pool")


def test_quick_conf_benchmark_on_one_document() -> None:
    pool = _pool_kind()

    table = conf.run(quick=True, kinds=[pool])

    assert list(table.headers) == conf.HEADERS
    assert len(table.rows) == 1
    row = table.rows[0]
    assert len(row) == len(conf.HEADERS)
    assert row[0] == "pool"
    assert int(row[1]) == len((conf.DOCUMENTS / "pool.xml").read_bytes())
    assert row[2].endswith("/s") and row[4].endswith("/s")
    assert float(row[6]) > 0
    assert "pool" in table.render()


def test_a_kind_whose_module_has_not_landed_is_not_available() -> None:
    ghost = conf.Kind("ghost", "pool.xml", "shared.conf.no_such_kind", _pool_kind().prepare)

    row = conf.measure(ghost, seconds=0.01)

    assert row[0] == "ghost"
    assert row[2] == "not available"
    assert row[4].endswith("/s")


def test_every_document_round_trips_through_its_kind() -> None:
    for kind in conf.KINDS:
        trip = conf.load(kind)
        if isinstance(trip, str):
            continue  # the kind's module has not landed yet
        assert isinstance(trip(), str), kind.name


_IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |   encodings.utf_8
import time:       300 |        400 | encodings
import time:       500 |        500 | site
import time:      2000 |       2000 |       aiohttp
import time:      1000 |       3000 |     nats.aio.transport
import time:       700 |       3700 |   client.connection
import time:       900 |       4600 | client.cli.session
"""


def test_importtime_lines_are_read_with_their_depth() -> None:
    imports = oneshot.parse_importtime(_IMPORTTIME)

    assert [(i.name, i.cumulative_us, i.depth) for i in imports[:2]] == [
        ("encodings.utf_8", 100, 1),
        ("encodings", 400, 0),
    ]
    assert oneshot.importer(imports, 3) == "client.connection"
    assert oneshot.importer(imports, 6) == "(top level)"


def test_import_table_splits_startup_from_the_cli() -> None:
    table = oneshot.import_table(oneshot.parse_importtime(_IMPORTTIME), "secret-list")

    assert [row[:2] for row in table.rows] == [
        ["interpreter start-up (site)", "0.90 ms"],
        ["the CLI, all it imports", "4.60 ms"],
        ["  aiohttp", "2.00 ms"],
    ]
    assert table.rows[2][2] == "client.connection"


def test_cpu_table_divides_each_process_cpu_by_the_phase_requests() -> None:
    async def work(_: int) -> None:
        return None

    phase = profile.Phase("define+set+get", 10, 16, work, requests=3)
    figures = profile.Figures(
        calls=10, requests=30, wall=0.5, cpu=(0.003, 0.009, 0.0003), latencies=[0.01, 0.02]
    )

    table = profile.cpu_table("secret", [(phase, figures)])

    assert table.rows == [
        ["define+set+get", "30", "100 us", "300 us", "10 us", "20.0/s", "15.0 ms"]
    ]
    assert any("3 requests per call" in note for note in table.notes)


def test_cpu_time_of_a_process_grows_with_its_work() -> None:
    before = meter.cpu_of(os.getpid())
    spent = time.process_time() + 0.02
    while time.process_time() < spent:
        pass

    assert meter.cpu_of(os.getpid()) > before
