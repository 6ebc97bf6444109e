"""kill -9 of the secret service again and again under bounded load: every
acknowledged change has exactly one event, no event is stored twice, and an
event exists exactly for the changes that exist."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import sys
import uuid
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from services.secret.service import SecretService, SecretSettings
from shared.api import secret as api
from shared.util.api import call
from shared.util.errors import VirtError
from shared.util.events import STREAM

pytestmark = pytest.mark.integration

KEY = base64.b64encode(b"k" * 32).decode()
ROOT = Path(__file__).resolve().parents[2]
KILLS = 6
IN_FLIGHT = 8


def _secret(ident: str) -> str:
    return (
        f"<secret ephemeral='no' private='no'><uuid>{ident}</uuid>"
        f"<usage type='ceph'><name>kill-{ident}</name></usage></secret>"
    )


async def _start(nats_url: str, state: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "services.secret", "--nats-url", nats_url],
        *["--state-dir", str(state), "--http-port", "0", "--log-level", "ERROR"],
        cwd=ROOT,
        env={**os.environ, "VIRTBUS_SECRET_KEY": KEY},
    )


async def _events(nc: NATS) -> list[dict[str, object]]:
    js = nc.jetstream()
    sub = await js.pull_subscribe("virtbus.event.secret.>", stream=STREAM)
    found: list[dict[str, object]] = []
    try:
        while True:
            try:
                batch = await sub.fetch(200, timeout=1)
            except TimeoutError:
                return found
            for msg in batch:
                found.append(json.loads(msg.data))
                await msg.ack()
    finally:
        await sub.unsubscribe()


async def test_kill_9_loop_loses_and_doubles_nothing(
    nats_url: str, nc: NATS, tmp_path: Path
) -> None:
    acknowledged: set[str] = set()
    state = tmp_path / "secret"
    stop = asyncio.Event()
    progress = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            ident = str(uuid.uuid4())
            try:
                await call(nc, api.DEFINE, api.DefineRequest(xml=_secret(ident)), timeout=2)
            except VirtError:
                await asyncio.sleep(0.05)  # no service, or killed mid-request: outcome unknown
                continue
            acknowledged.add(ident)
            progress.set()

    workers = [asyncio.create_task(load()) for _ in range(IN_FLIGHT)]
    try:
        for _ in range(KILLS):
            proc = await _start(nats_url, state)
            before = len(acknowledged)
            while len(acknowledged) < before + 20 and proc.returncode is None:
                progress.clear()
                await asyncio.wait_for(progress.wait(), 60)
            await asyncio.sleep(random.uniform(0, 0.3))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
    finally:
        stop.set()
        await asyncio.gather(*workers)
    # One clean start: it forwards whatever the killed ones left.
    settings = SecretSettings(nats_url=nats_url, state_dir=state, secret_key=KEY)
    async with SecretService(settings) as service:
        ledger = service.registry.ledger
        info = await service.nc.jetstream().stream_info(ledger.stream)
        await ledger.wait_forwarded(info.state.last_seq, timeout=60)
        existing = {d.uuid for d in service.registry.all()}
    events = await _events(nc)
    ids = [e["id"] for e in events]
    named = [e["subject"] for e in events]
    assert len(acknowledged) >= KILLS * 20
    assert len(set(ids)) == len(ids), "an event stored twice"
    assert len(set(named)) == len(named), "one define with two events"
    assert acknowledged <= existing, "an acknowledged define is lost"
    assert set(named) == existing, "events and changes disagree"
