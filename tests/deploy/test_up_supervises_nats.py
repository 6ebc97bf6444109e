"""`virtbus up` restarts its embedded nats-server when it is killed, and the
services find it again (same port, same JetStream store)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from shared.util.natsserver import free_port
from tests.integration.cli import virtbus

pytestmark = pytest.mark.e2e


def _pids_running(config: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(config).encode() in argv and argv[0].endswith(b"nats-server"):
            pids.append(int(entry.name))
    return pids


async def test_killed_nats_server_comes_back(tmp_path: Path) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    state = tmp_path / "state"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client.cli.main",
        "up",
        "--nats-port",
        str(port),
        "--state-dir",
        str(state),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(90):
            while b"virtbus is up" not in await proc.stdout.readline():
                pass
        xml = tmp_path / "s.xml"
        xml.write_text(
            "<secret ephemeral='no' private='no'><usage type='ceph'>"
            "<name>before</name></usage></secret>"
        )
        assert (await virtbus(url, "secret-define", str(xml))).rc == 0

        [pid] = _pids_running(state / "nats" / "nats-server.conf")
        os.kill(pid, signal.SIGKILL)
        async with asyncio.timeout(60):
            while True:
                await asyncio.sleep(0.5)
                now = _pids_running(state / "nats" / "nats-server.conf")
                if now and now != [pid]:
                    break
        # The secret defined before the crash is still there, and the service
        # answers again once it has reconnected.
        async with asyncio.timeout(60):
            while True:
                r = await virtbus(url, "secret-list")
                if r.rc == 0 and "before" in r.out:
                    break
                await asyncio.sleep(0.5)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
