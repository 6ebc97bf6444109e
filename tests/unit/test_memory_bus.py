"""The in-memory bus (tests/memory_bus.py) behaves as a nats-server does where
the service contracts rely on it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.client import JetStreamContext

from shared.util.events import ensure_stream
from shared.util.ledger import Conflict, Event
from tests.memory_bus import MemoryBus, MemoryLedger, matches


def test_subject_matching() -> None:
    assert matches("a.*.c", "a.b.c") and not matches("a.*.c", "a.b.d")
    assert matches("a.>", "a.b.c") and not matches("a.>", "a")
    assert not matches("a.b", "a.b.c") and not matches("a.b.c", "a.b")


async def test_request_reaches_one_member_of_a_queue_group() -> None:
    bus = MemoryBus()
    seen: list[str] = []

    def member(name: str) -> Callable[[Msg], Awaitable[None]]:
        async def cb(msg: Msg) -> None:
            seen.append(name)
            await msg.respond(name.encode())

        return cb

    await bus.subscribe("svc.ask", queue="g", cb=member("one"))
    await bus.subscribe("svc.ask", queue="g", cb=member("two"))
    replies = [(await bus.request("svc.ask", b"", timeout=1)).data for _ in range(4)]
    assert sorted(replies) == [b"one", b"one", b"two", b"two"]
    assert len(seen) == 4
    await bus.close()


async def test_no_responders_and_timeout() -> None:
    bus = MemoryBus()
    with pytest.raises(NoRespondersError):
        await bus.request("nobody.here", b"", timeout=1)

    async def silent(msg: Msg) -> None:
        return None

    await bus.subscribe("quiet", cb=silent)
    with pytest.raises(NatsTimeoutError):
        await bus.request("quiet", b"", timeout=0.05)
    await bus.close()


async def test_ledger_compare_and_set_and_forwarding() -> None:
    bus = MemoryBus()
    nc, js = cast(NATS, bus), cast(JetStreamContext, bus.jetstream())
    await ensure_stream(js)
    first, second = MemoryLedger(nc, js, "demo"), MemoryLedger(nc, js, "demo")
    await first.open()
    await second.open()
    events: asyncio.Queue[bytes] = asyncio.Queue()

    async def take(msg: Msg) -> None:
        events.put_nowait(msg.data)

    await bus.subscribe("virtbus.event.demo.>", cb=take)
    seq = await first.write("k.a", b"1", [Event("thing", "a", "lifecycle", "Defined")])
    # The second replica decided on the key's absence: its write loses.
    with pytest.raises(Conflict):
        await second.write("k.a", b"2", expect=0)
    assert second.get("k.a") is not None and second.get("k.a").value == b"1"  # type: ignore[union-attr]
    # One of two replicas forwards the event, once.
    followers = [asyncio.create_task(first.follow()), asyncio.create_task(second.follow())]
    await first.wait_forwarded(seq)
    await second.wait_forwarded(seq)
    assert b'"Defined"' in await asyncio.wait_for(events.get(), 5)
    for task in followers:
        task.cancel()
    await asyncio.gather(*followers, return_exceptions=True)
    await bus.flush()
    assert events.empty()
    await bus.close()
