"""The secret service killed with SIGKILL and restarted, as a real process.

Persistent secrets and their values survive; ephemeral ones are gone; the
value is never in plain text in the state folders, the logs, the events or
the metrics.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from client.connection import Client
from client.events import subscribe
from shared.util.natsserver import EmbeddedNats, free_port
from tests.conftest import ConnectAs
from tests.integration.procs import kill9, start_service, terminate, wait_for_service

pytestmark = pytest.mark.integration

VALUE = b"Plain-Text-Canary-7f3e9a"
PERSISTENT = "<secret private='yes'><usage type='tls'><name>web</name></usage></secret>"
EPHEMERAL = "<secret ephemeral='yes'><usage type='tls'><name>tmp</name></usage></secret>"


def _files_containing(folder: Path, needle: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_sigkill_restart_keeps_persistent_drops_ephemeral(
    nats_server: EmbeddedNats, nc: NATS, connect_as: ConnectAs, tmp_path: Path
) -> None:
    state = tmp_path / "secret"
    state.mkdir()
    log = tmp_path / "secret.log"
    port = free_port()
    args = ["--http-port", str(port), "--log-level", "DEBUG"]
    proc = start_service("services.secret", nats_server.url, state, log, extra=args)
    client = Client(nc)
    try:
        await wait_for_service(nc, "secret", proc)
        keep = await client.secret.define(PERSISTENT)
        gone = await client.secret.define(EPHEMERAL)
        await client.secret.set_value(keep, VALUE)
        await client.secret.set_value(gone, VALUE)
        key_file = state / "secret.key"
        assert key_file.stat().st_mode & 0o777 == 0o600

        kill9(proc)
        proc = start_service("services.secret", nats_server.url, state, log, extra=args)
        await wait_for_service(nc, "secret", proc)

        assert [s.uuid for s in await client.secret.list()] == [keep]
        as_storage = await connect_as("storage")
        internal = await as_storage.request(
            "virtbus.v1.secret.internal.value.get", f'{{"uuid": "{keep}"}}'.encode(), timeout=5
        )
        assert VALUE.decode() not in internal.data.decode()  # base64 on the wire
        assert base64.b64decode(json.loads(internal.data)["value"]) == VALUE
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as r,
        ):
            metrics = await r.text()
        assert 'virtbus_secret_secrets{kind="ephemeral"} 0.0' in metrics
    finally:
        terminate(proc)

    events = []
    async with subscribe(nc, replay=True) as stream:

        async def drain() -> None:
            async for ev in stream:
                events.append(ev.model_dump_json())
                if len(events) == 4:
                    return

        await asyncio.wait_for(drain(), 10)
    encoded = base64.b64encode(VALUE)
    for needle in (VALUE, encoded):
        assert not _files_containing(tmp_path, needle), "value found in plain text on disk"
        assert needle.decode() not in metrics
        assert all(needle.decode() not in e for e in events)
