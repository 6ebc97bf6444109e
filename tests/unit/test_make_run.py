"""`make run` passes its port, state and domains folders on to `virtbus up`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_takes_port_and_folders() -> None:
    def planned(*variables: str) -> str:
        done = subprocess.run(
            ["make", "-n", "run", *variables], cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    assert planned().endswith("/virtbus up")
    line = planned("PORT=14222", "STATE_DIR=/tmp/vb", "DOMAINS_DIR=/tmp/d", "ARGS=--host h")
    assert line.endswith(
        "virtbus up --nats-port 14222 --state-dir /tmp/vb --domains-dir /tmp/d --host h"
    )
