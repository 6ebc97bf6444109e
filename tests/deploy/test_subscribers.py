"""The example subscribers (examples/): each reads an event live, is stopped,
and when started again replays from its durable consumer exactly what it missed,
connected as the ``readonly`` role, as an external tool would be."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from shared.util.credentials import read_file
from shared.util.events import STREAM
from shared.util.natsserver import free_port
from tests.deploy.test_events_doc import npm_installed  # noqa: F401 (fixture)
from tests.deploy.upstack import UpStack, virtbus_up
from tests.integration.cli import virtbus

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {
    "python": [sys.executable, str(ROOT / "examples/python-subscriber/subscriber.py"), "--idle"],
    "javascript": ["node", str(ROOT / "examples/js-subscriber/subscriber.mjs"), "--idle-ms"],
}
IDLE = {"python": "3", "javascript": "3000"}


async def _define(url: str, folder: Path, name: str) -> str:
    """Define a secret of ceph usage ``name``; its UUID (the events' name)."""
    xml = folder / f"{name}.xml"
    xml.write_text(
        f"<secret ephemeral='no' private='no'><usage type='ceph'><name>{name}</name>"
        "</usage></secret>"
    )
    r = await virtbus(url, "secret-define", str(xml))
    assert r.rc == 0, r.err
    return r.out.split()[1]


@dataclass(frozen=True)
class Reader:
    """Where a subscriber connects: the readonly role's URL and reply inbox prefix."""

    url: str
    inbox: str


def _readonly(up: UpStack, state_dir: Path) -> Reader:
    creds = read_file(state_dir / "creds" / "readonly.creds")
    return Reader(creds.url(up.url), creds.inbox_prefix)


async def _start(kind: str, reader: Reader, durable: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *COMMANDS[kind], IDLE[kind], "--durable", durable,
        "--filter", "virtbus.event.secret.>",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"NATS_URL": reader.url, "NATS_INBOX_PREFIX": reader.inbox,
             "PATH": "/usr/local/bin:/usr/bin:/bin"},
    )  # fmt: skip


async def _names(proc: asyncio.subprocess.Process) -> list[str | None]:
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert all(line["type"].startswith("org.virtbus.secret.") for line in lines)
    return [line["name"] for line in lines if line["detail"] == "Defined"]


async def _live_then_replay(
    js: JetStreamContext, url: str, reader: Reader, folder: Path, kind: str
) -> None:
    durable = f"example-{kind}"
    first = await _start(kind, reader, durable)
    async with asyncio.timeout(30):
        while True:  # the consumer exists: events from now on are its
            try:
                await js.consumer_info(STREAM, durable)
                break
            except NotFoundError:
                await asyncio.sleep(0.2)
    live = [await _define(url, folder, f"{kind}-live")]
    assert await _names(first) == live

    # Down: two more changes happen, and wait in its consumer.
    missed = [await _define(url, folder, f"{kind}-missed-{i}") for i in (1, 2)]
    assert (await js.consumer_info(STREAM, durable)).num_pending == 2

    replayed = await _names(await _start(kind, reader, durable))
    assert replayed == missed
    info = await js.consumer_info(STREAM, durable)
    assert info.num_pending == 0 and info.num_ack_pending == 0
    print(f"{kind} subscriber: read live {live}, replayed after being down {replayed}")


async def test_live_then_replay_after_being_down(
    tmp_path: Path,
    npm_installed: Path,  # noqa: F811
) -> None:
    async with virtbus_up(free_port(), tmp_path / "state") as up:
        reader = _readonly(up, tmp_path / "state")
        assert reader.inbox != up.inbox  # not the admin's credentials
        nc = NATS()
        await nc.connect(up.url, inbox_prefix=up.inbox)
        try:
            for kind in COMMANDS:
                await _live_then_replay(nc.jetstream(), up.url, reader, tmp_path, kind)
        finally:
            await nc.close()
