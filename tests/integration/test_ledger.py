"""The ledger against a real nats-server: one message per change, events derived
from it exactly once, reads from memory, compare-and-set."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError

import shared.util.ledger as ledger_module
from shared.util.events import CONTENT_TYPE, STREAM, ensure_stream
from shared.util.ledger import Conflict, Event, Ledger
from tests.conftest import ConnectAs

pytestmark = pytest.mark.integration

Start = Callable[[], Awaitable[Ledger]]


@pytest.fixture
async def nc(connect_as: ConnectAs) -> NATS:
    """The ledgers here are the ``test`` service's: its connection."""
    return await connect_as("test")


@pytest.fixture
async def start_ledger(nc: NATS) -> AsyncIterator[Start]:
    """Opens ledgers of one service (replicas) and runs their watch and forwarder."""
    tasks: list[asyncio.Task[None]] = []
    await ensure_stream(nc.jetstream())

    async def start() -> Ledger:
        ledger = Ledger(nc, nc.jetstream(), "test", None)
        await ledger.open()
        tasks.append(asyncio.create_task(ledger.follow()))
        return ledger

    yield start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def stored_events(nc: NATS) -> list[tuple[dict[str, str], dict[str, object]]]:
    """Every event of the test service in VIRTBUS_EVENTS: (headers, body)."""
    js = nc.jetstream()
    sub = await js.pull_subscribe("virtbus.event.test.>", stream=STREAM)
    found: list[tuple[dict[str, str], dict[str, object]]] = []
    try:
        while True:
            try:
                batch = await sub.fetch(100, timeout=0.5)
            except TimeoutError:
                break
            for msg in batch:
                found.append((dict(msg.headers or {}), json.loads(msg.data)))
                await msg.ack()
    finally:
        await sub.unsubscribe()
    return found


async def test_a_change_is_one_message_and_its_event_follows(nc: NATS, start_ledger: Start) -> None:
    ledger = await start_ledger()
    seq = await ledger.write("obj.a", b"one", [Event("thing", "a", "lifecycle", "Defined")])
    record = ledger.get("obj.a")
    assert record is not None and record.value == b"one" and record.seq == seq
    info = await nc.jetstream().stream_info(ledger.stream)
    assert info.state.messages == 1
    await ledger.wait_forwarded(seq)
    [(headers, body)] = await stored_events(nc)
    assert headers["Content-Type"] == CONTENT_TYPE
    assert body["id"] == ledger.event_id(seq, 0, 1)
    assert body["data"] == {
        "object": "thing",
        "name": "a",
        "event": "lifecycle",
        "detail": "Defined",
        "host": None,
        "extra": {},
    }


async def test_compare_and_set_refuses_a_stale_write(start_ledger: Start) -> None:
    ledger = await start_ledger()
    await ledger.write("obj.a", b"one", expect=0)
    with pytest.raises(Conflict):
        await ledger.write("obj.a", b"again", expect=0)
    seq = await ledger.write("obj.a", b"two")
    with pytest.raises(Conflict):
        await ledger.write("obj.a", b"stale", expect=seq - 1)
    await ledger.write("obj.a", None, [Event("thing", "a", "lifecycle", "Undefined")])
    assert ledger.get("obj.a") is None


async def test_a_replica_sees_the_other_replicas_changes(start_ledger: Start) -> None:
    one = await start_ledger()
    two = await start_ledger()
    await one.write("obj.a", b"from one")
    for _ in range(200):
        if two.get("obj.a") is not None:
            break
        await asyncio.sleep(0.01)
    record = two.get("obj.a")
    assert record is not None and record.value == b"from one"
    # two's memory may be stale for a moment; a lost race re-reads the key.
    await one.write("obj.a", b"newer")
    with contextlib.suppress(Conflict):
        await two.write("obj.a", b"from two", expect=record.seq)
    assert two.seq("obj.a") >= record.seq


async def test_events_are_stored_once_across_restarts_and_replicas(
    nc: NATS, start_ledger: Start
) -> None:
    # Changes made while no forwarder runs (the writer died right after its
    # write): the next forwarder stores their events, each exactly once, even
    # with two replicas forwarding at the same time.
    writer = Ledger(nc, nc.jetstream(), "test", None)
    await writer.open()
    last = 0
    for i in range(30):
        last = await writer.write(f"obj.k{i % 7}", b"%d" % i, [Event("thing", f"k{i}", "x")])
    one = await start_ledger()
    two = await start_ledger()
    await one.wait_forwarded(last)
    await two.wait_forwarded(last)
    three = await start_ledger()  # a restart: resumes after the last stored event
    last = await three.write("obj.z", b"z", [Event("thing", "z", "x"), Event("thing", "z", "y")])
    await three.wait_forwarded(last)
    events = await stored_events(nc)
    ids = [body["id"] for _, body in events]
    assert len(ids) == 32
    assert len(set(ids)) == 32


async def test_events_of_one_object_are_stored_once_by_restarted_and_racing_forwarders(
    nc: NATS, start_ledger: Start
) -> None:
    # Every event here is about the same two objects, so each compare-and-set
    # is on a subject that already has events: forwarders started after the
    # first one stopped remember nothing, guess wrong and must read the
    # subject's last event, and the two of them race on every event.
    writer = Ledger(nc, nc.jetstream(), "test", None)
    await writer.open()

    async def write(numbers: range) -> int:
        last = 0
        for i in numbers:
            name = "a" if i % 3 else "b"
            last = await writer.write(f"obj.{name}", b"%d" % i, [Event("thing", name, "x")])
        return last

    last = await write(range(20))
    first = Ledger(nc, nc.jetstream(), "test", None)
    await first.open()
    forwarding = asyncio.create_task(first.follow())
    await first.wait_forwarded(last)
    forwarding.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await forwarding
    last = await write(range(20, 40))
    two = await start_ledger()
    three = await start_ledger()
    await two.wait_forwarded(last)
    await three.wait_forwarded(last)
    ids = [str(body["id"]) for _, body in await stored_events(nc)]
    assert ids == [writer.event_id(seq, 0, 1) for seq in range(1, last + 1)]


async def test_an_event_only_change_gets_an_id_of_its_own(nc: NATS, start_ledger: Start) -> None:
    ledger = await start_ledger()
    first = await ledger.announce([Event("thing", "eph", "lifecycle", "Defined")])
    second = await ledger.announce([Event("thing", "eph", "lifecycle", "Defined")])
    await ledger.wait_forwarded(second)
    ids = {body["id"] for _, body in await stored_events(nc)}
    assert ids == {ledger.event_id(first, 0, 1), ledger.event_id(second, 0, 1)}
    assert ledger.items() == []


class _DiesAfterStoring(Ledger):
    """A forwarder that dies right after storing its first event, before it
    records how far it got (the process killed between those two steps)."""

    async def _store_event(self, *args: object, **kwargs: object) -> None:
        await super()._store_event(*args, **kwargs)  # type: ignore[arg-type]
        raise _Killed


class _Killed(BaseException):
    pass


async def test_a_forwarder_killed_after_storing_does_not_store_again(
    nc: NATS, start_ledger: Start
) -> None:
    writer = Ledger(nc, nc.jetstream(), "test", None)
    await writer.open()
    last = 0
    for i in range(3):
        last = await writer.write(f"obj.k{i}", b"v", [Event("thing", f"k{i}", "x")])
    dying = _DiesAfterStoring(nc, nc.jetstream(), "test", None)
    await dying.open()
    with pytest.raises(_Killed):
        await dying.follow()
    assert len(await stored_events(nc)) == 1
    restarted = await start_ledger()
    await restarted.wait_forwarded(last)
    ids = [str(body["id"]) for _, body in await stored_events(nc)]
    assert sorted(ids) == sorted({writer.event_id(s, 0, 1) for s in range(1, last + 1)})


async def test_events_refused_by_the_stream_are_stored_once_room_returns(
    nc: NATS, start_ledger: Start, connect_as: ConnectAs
) -> None:
    # Limiting the event stream is the NATS administrator's doing.
    js = (await connect_as("operator")).jetstream()
    info = await js.stream_info(STREAM)
    config = info.config
    config.max_msgs = 1
    config.discard = "new"  # type: ignore[assignment]
    await js.update_stream(config)
    ledger = await start_ledger()
    first = await ledger.write("obj.a", b"1", [Event("thing", "a", "x")])
    await ledger.wait_forwarded(first)
    # The event stream is full: the change is made, its event waits.
    second = await ledger.write("obj.b", b"2", [Event("thing", "b", "x")])
    assert ledger.get("obj.b") is not None
    await asyncio.sleep(0.5)
    assert ledger.forwarded < second
    config.max_msgs = -1
    await js.update_stream(config)
    await ledger.wait_forwarded(second, timeout=30)
    assert len(await stored_events(nc)) == 2


async def test_opening_waits_out_a_stream_that_does_not_answer_yet(nc: NATS) -> None:
    """In a cluster, a ledger stream whose replicas have no leader yet leaves
    STREAM.INFO unanswered; opening tries again instead of failing the start."""
    js = nc.jetstream()
    real_info = js.stream_info
    unanswered = 2

    async def stream_info(name: str, *args: object, **kwargs: object) -> object:
        nonlocal unanswered
        if unanswered:
            unanswered -= 1
            raise NatsTimeoutError
        return await real_info(name, *args, **kwargs)  # type: ignore[arg-type]

    js.stream_info = stream_info  # type: ignore[method-assign, assignment]
    ledger = Ledger(nc, js, "test", None)
    await ledger.open()
    assert unanswered == 0
    assert ledger.stream == "VIRTBUS_LEDGER_test"
    assert (await real_info(ledger.stream)).config.name == ledger.stream


async def test_an_event_the_stream_refuses_is_counted_as_a_failure(
    nc: NATS, connect_as: ConnectAs
) -> None:
    """The forwarder reports each refused attempt (the process's
    ``event_publish_failures`` counter), and stores the event once it can."""
    await ensure_stream(nc.jetstream())
    js = (await connect_as("operator")).jetstream()
    config = (await js.stream_info(STREAM)).config
    config.max_msgs = 1
    config.discard = "new"  # type: ignore[assignment]
    await js.update_stream(config)
    failed: list[str] = []
    refused = asyncio.Event()

    def on_failure(kind: str) -> None:
        failed.append(kind)
        refused.set()

    ledger = Ledger(nc, nc.jetstream(), "test", None, on_event_failure=on_failure)
    await ledger.open()
    follower = asyncio.create_task(ledger.follow())
    try:
        first = await ledger.write("obj.a", b"1", [Event("thing", "a", "x")])
        await ledger.wait_forwarded(first)
        assert failed == []
        second = await ledger.write("obj.b", b"2", [Event("gadget", "b", "x")])
        await refused.wait()
        assert set(failed) == {"gadget"}
        config.max_msgs = -1
        await js.update_stream(config)
        await ledger.wait_forwarded(second, timeout=30)
        assert len(await stored_events(nc)) == 2
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


async def test_events_the_event_stream_let_expire_are_not_stored_again(
    nc: NATS, start_ledger: Start, connect_as: ConnectAs
) -> None:
    """A key's last message keeps its events in the ledger after they were
    forwarded.  Once VIRTBUS_EVENTS has let them expire, a forwarder that
    starts again finds no event of the ledger, starts from its first message,
    and must not announce those old changes a second time."""
    await ensure_stream(nc.jetstream())
    # How long events are kept is the NATS administrator's to set.
    js = (await connect_as("operator")).jetstream()
    config = (await js.stream_info(STREAM)).config
    config.max_age = 1.0
    config.duplicate_window = 1.0
    await js.update_stream(config)
    writer = Ledger(nc, nc.jetstream(), "test", None)
    await writer.open()
    forwarding = asyncio.create_task(writer.follow())
    old = await writer.write("obj.a", b"1", [Event("thing", "a", "lifecycle", "Defined")])
    await writer.wait_forwarded(old)
    forwarding.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await forwarding
    assert len(await stored_events(nc)) == 1
    for _ in range(100):
        if not await stored_events(nc):
            break
        await asyncio.sleep(0.1)
    assert await stored_events(nc) == []
    restarted = await start_ledger()
    new = await restarted.write("obj.b", b"2", [Event("thing", "b", "lifecycle", "Defined")])
    await restarted.wait_forwarded(new)
    ids = [str(body["id"]) for _, body in await stored_events(nc)]
    assert ids == [restarted.event_id(new, 0, 1)]
    assert restarted.get("obj.a") is not None


async def test_writes_wait_for_a_forwarder_that_trails_far_behind(
    nc: NATS, start_ledger: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes made faster than their events are stored slow to the events'
    pace: the forwarder never trails by much more than ``MAX_BEHIND``."""
    monkeypatch.setattr(ledger_module, "MAX_BEHIND", 5)
    store_event = Ledger._store_event

    async def slowly(self: Ledger, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.02)  # a busy event stream: 20 ms an event
        await store_event(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "_store_event", slowly)
    ledger = await start_ledger()
    first = await ledger.write("obj.first", b"v", [Event("thing", "first", "x")])
    await ledger.wait_forwarded(first)
    behind = []
    for i in range(30):
        seq = await ledger.write(f"obj.k{i}", b"v", [Event("thing", f"k{i}", "x")])
        behind.append(seq - ledger.forwarded)
    # Each write waited until the forwarder was within 5 messages of the
    # ledger; without waiting, it falls ~30 behind.
    assert max(behind) <= 6
    await ledger.wait_forwarded(ledger.last_written)
    assert len(await stored_events(nc)) == 31


async def test_a_stalled_forwarder_holds_no_write_up(
    nc: NATS, start_ledger: Start, connect_as: ConnectAs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the event stream refuses events, the forwarder stores nothing:
    changes go ahead past ``MAX_BEHIND`` and their events wait for room."""
    monkeypatch.setattr(ledger_module, "MAX_BEHIND", 3)
    js = (await connect_as("operator")).jetstream()
    ledger = await start_ledger()
    first = await ledger.write("obj.first", b"v", [Event("thing", "first", "x")])
    await ledger.wait_forwarded(first)
    config = (await js.stream_info(STREAM)).config
    config.max_msgs = 1
    config.discard = "new"  # type: ignore[assignment]
    await js.update_stream(config)
    for i in range(10):
        await ledger.write(f"obj.k{i}", b"v", [Event("thing", f"k{i}", "x")])
    assert ledger.last_written - ledger.forwarded >= 10
    config.max_msgs = -1
    await js.update_stream(config)
    await ledger.wait_forwarded(ledger.last_written, timeout=30)
    assert len(await stored_events(nc)) == 11
