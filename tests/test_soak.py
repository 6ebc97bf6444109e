"""The soak's short slice: the whole local stack (`virtbus up`) under mixed load for
40 s, with kill -9 of a random service, the agent or nats-server every few seconds
and the pool's filesystem full for a fifth of the run.  ``make soak`` runs it for
ten minutes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.soak.run import soak

pytestmark = pytest.mark.e2e


async def test_soak_slice(tmp_path: Path) -> None:
    report = await soak(40, tmp_path, seed=20261205, workers=4, kill_every=4.0)
    print(report.summary())
    assert report.clean, report.summary()
    assert report.acknowledged > 0 and report.checked > 0 and report.events > 0
    assert sum(report.kills.values()) > 0, "nothing was killed"
    if os.geteuid() == 0:
        assert report.full_disk and report.full_disk_refusals > 0, report.summary()
