"""``python -m bench.ledger`` on a few pairs: it drives real ledgers on a real
nats-server and counts what they stored (no timing is asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import ledger

pytestmark = pytest.mark.integration


async def test_every_pair_is_written_and_forwarded(tmp_path: Path) -> None:
    figures = await ledger.measure(tmp_path, streams=2, pairs=20)
    assert figures.streams == 2
    assert figures.events == 40
    assert figures.pairs_per_second > 0
    assert figures.behind >= 0
    table = ledger.table([figures], 20)
    assert [row[0] for row in table.rows] == ["2"]
