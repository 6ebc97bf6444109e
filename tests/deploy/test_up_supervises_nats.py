"""`virtbus up` restarts its embedded nats-server when it is killed, and the
services find it again (same port, same JetStream store)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from shared.util.natsserver import free_port
from tests.deploy.upstack import virtbus_up
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
    state = tmp_path / "state"
    async with virtbus_up(free_port(), state) as up:
        url = up.url
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
