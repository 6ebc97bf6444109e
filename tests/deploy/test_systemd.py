"""deploy/systemd: every unit passes `systemd-analyze verify` (run against this
checkout's interpreter instead of /opt/virtbus's); each restarts and has its own port."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("virtbus-*.service"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_units_verify(tmp_path: Path) -> None:
    assert len(UNITS) == 5
    for unit in UNITS:
        text = unit.read_text().replace("/opt/virtbus/.venv/bin/python", sys.executable)
        (tmp_path / unit.name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        env={"SYSTEMD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_units_restart_and_each_has_its_own_port() -> None:
    ports = set()
    for unit in UNITS:
        text = unit.read_text()
        assert "\nRestart=always\n" in text
        assert "\nEnvironmentFile=/etc/virtbus/virtbus.env\n" in text
        [port] = re.findall(r"^Environment=VIRTBUS_HTTP_PORT=(\d+)$", text, re.M)
        ports.add(port)
    assert len(ports) == len(UNITS)
