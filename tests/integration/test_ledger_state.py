"""The compare-and-set calls and event-only changes of ``ledger_state``, against a
real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from shared.util import bus
from shared.util.events import STREAM, ensure_stream
from shared.util.ledger import Ledger
from shared.util.ledger_state import LedgerPublisher, LedgerState
from shared.util.natsserver import EmbeddedNats
from shared.util.state import Conflict

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    """A connection as the service ``test`` of host h1, the ledger's owner."""
    conn = await bus.connect(nats_server.role_url("test"), "virtbus-test", deadline=10)
    try:
        yield conn
    finally:
        await bus.close(conn)


async def test_compare_and_set_calls_and_events(nc: NATS) -> None:
    await ensure_stream(nc.jetstream())
    ledger = Ledger(nc, nc.jetstream(), "test", "h1")
    await ledger.open()
    follower = asyncio.create_task(ledger.follow())
    try:
        state = LedgerState(ledger)
        revision = await state.create("job.a", b"1")
        with pytest.raises(Conflict):
            await state.create("job.a", b"again")
        revision = await state.update("job.a", b"2", revision)
        with pytest.raises(Conflict):
            await state.update("job.a", b"stale", revision - 1)
        await state.put("job.a", b"3")

        async def bump(old: bytes | None) -> bytes | None:
            return b"%d" % (int(old or b"0") + 1)

        assert await state.mutate("job.a", bump) == b"4"
        assert [e.value for e in await state.items("job.")] == [b"4"]
        await state.delete("job.a")
        assert await state.get("job.a") is None
        await state.create("job.a", b"new")  # a deleted key may be made again
        cloud = await LedgerPublisher(ledger).publish("thing", "a", "x", "Detail")
        await ledger.wait_forwarded(ledger.last_written)
        sub = await nc.jetstream().pull_subscribe("virtbus.event.test.>", stream=STREAM)
        [msg] = await sub.fetch(1, timeout=5)
        assert json.loads(msg.data)["id"] == cloud.id
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


async def test_concurrent_mutations_are_never_lost(nc: NATS) -> None:
    await ensure_stream(nc.jetstream())
    ledger = Ledger(nc, nc.jetstream(), "test", "h1")
    await ledger.open()
    follower = asyncio.create_task(ledger.follow())
    try:
        state = LedgerState(ledger)

        async def increment(old: bytes | None) -> bytes:
            return str(int(old or b"0") + 1).encode()

        await asyncio.gather(*(state.mutate("n", increment) for _ in range(25)))
        entry = await state.get("n")
        assert entry is not None and entry.value == b"25"
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
