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
            ["make", "--no-print-directory", "-n", "run", *variables],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    assert planned().endswith("/virtbus up")
    line = planned("PORT=14222", "STATE_DIR=/tmp/vb", "DOMAINS_DIR=/tmp/d", "ARGS=--host h")
    assert line.endswith(
        "virtbus up --nats-port 14222 --state-dir /tmp/vb --domains-dir /tmp/d --host h"
    )


def test_up_hands_the_domains_folder_to_the_agent(tmp_path: Path) -> None:
    from client.cli.main import parse_line
    from client.cli.up import Stack

    _, args = parse_line(["up", "--domains-dir", str(tmp_path / "doms"), "--nats-port", "1"])
    assert args.domains_dir == str(tmp_path / "doms") and args.nats_port == 1
    stack = Stack(tmp_path / "state", None, 1, tmp_path / "doms")
    commands = {child.name: stack._command(child) for child in stack.children}
    agent = commands.pop("agent-qemu")
    assert agent[agent.index("--domains-dir") + 1] == str(tmp_path / "doms")
    assert all("--domains-dir" not in argv for argv in commands.values())
