"""``virtbus up``: the local stack starts, shows in ``status``, heals and stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from shared.util.natsserver import free_port
from tests.integration.cli import virtbus

pytestmark = pytest.mark.e2e


async def _read_until(stream: asyncio.StreamReader, marker: str, timeout: float) -> str:
    seen = ""
    async with asyncio.timeout(timeout):
        while marker not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"stream ended before {marker!r}: {seen}")
            seen += line.decode()
    return seen


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def test_up_status_restart_and_clean_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    # The CLI finds the admin's credentials in the stack's state folder by itself.
    monkeypatch.setenv("VIRTBUS_STATE_DIR", str(tmp_path / "state"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client.cli.main",
        "up",
        "--nats-port",
        str(port),
        "--state-dir",
        str(tmp_path / "state"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        banner = await _read_until(proc.stdout, "virtbus is up", 60)
        assert f"NATS: {url}" in banner
        assert "secret: http://127.0.0.1:" in banner

        status = json.loads((await virtbus(url, "--json", "status")).out)
        [secret] = [s for s in status if s["name"] == "secret"]
        assert {e["name"] for e in secret["endpoints"]} >= {"define", "list", "value-get"}

        # A child killed behind the supervisor's back comes back.
        pids = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit()
            and _cmdline(p).startswith(f"{sys.executable} -m services.secret --nats-url {url}")
        ]
        assert len(pids) == 1
        os.kill(pids[0], signal.SIGKILL)
        for _ in range(100):
            await asyncio.sleep(0.2)
            r = await virtbus(url, "--json", "status")
            assert r.rc == 0, r.err
            now = json.loads(r.out)
            ids = [s["id"] for s in now if s["name"] == "secret"]
            if ids and ids != [secret["id"]]:
                break
        else:
            raise AssertionError("secret service was not restarted")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    r = await virtbus(url, "status")
    assert r.rc == 1
