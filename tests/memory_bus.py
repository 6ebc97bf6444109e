"""An in-memory stand-in for a nats-server, to run whole service processes in
unit tests (tests/unit/test_service_contracts.py).

``MemoryBus`` is the part of nats-py's ``Client`` that the runtime, nats.micro
and the services use: ``subscribe`` (queue groups; each subscription's
callbacks run one after another, as nats-py runs them), ``publish``,
``request`` (``NoRespondersError`` when nothing listens, nats' ``TimeoutError``
when nothing answers), ``new_inbox``, ``flush`` and ``jetstream``.  So a
``ServiceProcess`` given one registers its micro service on it, and
``shared.util.api.call`` reaches the endpoints through ``answer`` as over a
server.

Streams (``MemoryStream``) store what is published on their subjects and
acknowledge it to the reply subject as JetStream does, honouring the expected
last subject sequence (with its subject filter), message ids and subject
rollups; the bus answers ``STREAM.MSG.GET`` by last subject too.  So a
``Ledger``'s writes, compare-and-set, refreshes and event forwarding run
unchanged.  ``MemoryLedger`` does only what a JetStream consumer would: it
loads and follows the bus's copy of its stream; ``install`` makes the runtime
and the services open it.  The rest of JetStream is what starting a process
needs: ``stream_info``, ``add_stream``, ``streams_info``, the JetStream
figures, and durable pull consumers that never deliver (no agent publishes
on the fake).  Not modelled: permissions, TTLs, limits, retention, replicas.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import nats.js.errors as jserr
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.client import JetStreamContext
from nats.nuid import NUID

import services.nwfilter.service
import shared.util.process
from shared.util.ledger import EVENTS_HEADER, OP_HEADER, Event, Ledger
from shared.util.subjects import LEDGER_PREFIX, js_api

Callback = Callable[[Msg], Awaitable[None]]
#: The JetStream API request the bus answers itself (``Ledger.refresh``).
_DIRECT_GET = js_api("STREAM.MSG.GET.")
#: JetStream's error code for a compare-and-set that lost (wrong last sequence).
WRONG_LAST_SEQUENCE = 10071


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


#: A ``STREAM.MSG.GET`` answer when the subject holds no message.
NO_MESSAGE: dict[str, Any] = {
    "error": {"code": 404, "err_code": 10037, "description": "no message found"}
}


def msg_get_reply(subject: str, seq: int, headers: dict[str, str], data: bytes) -> dict[str, Any]:
    """A ``STREAM.MSG.GET`` answer holding one message, as the server words it."""
    head = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return {
        "message": {
            "subject": subject,
            "seq": seq,
            "hdrs": base64.b64encode((head + "\r\n").encode()).decode(),
            "data": base64.b64encode(data).decode(),
        }
    }


class MemorySubscription:
    """One subscription: its messages are handed to ``cb`` one after another."""

    def __init__(self, bus: MemoryBus, subject: str, queue: str, cb: Callback) -> None:
        self.subject = subject
        self.queue = queue
        self._bus = bus
        self._cb = cb
        self._inbox: asyncio.Queue[Msg] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name=f"memory-sub {subject}")

    async def _run(self) -> None:
        while True:
            msg = await self._inbox.get()
            try:
                await self._cb(msg)
            except Exception as err:  # nats-py reports a callback's error, then goes on
                self._bus.callback_errors.append(err)

    def deliver(self, msg: Msg) -> None:
        self._inbox.put_nowait(msg)

    async def unsubscribe(self, limit: int = 0) -> None:
        self._bus.drop(self)
        if self._task is not asyncio.current_task():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def drain(self) -> None:
        await self.unsubscribe()


@dataclass
class StoredMessage:
    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes
    time: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class MemoryStream:
    """A stream as the bus keeps it: what a publish on its subjects stores."""

    name: str
    subjects: list[str]
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    messages: list[StoredMessage] = field(default_factory=list)
    last_seq: int = 0
    #: Every message up to here had its events forwarded (one forwarder takes each).
    forwarded: int = 0
    _ids: dict[str, int] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def info(self) -> Any:
        return SimpleNamespace(
            config=SimpleNamespace(name=self.name, subjects=list(self.subjects)),
            created=self.created,
            state=SimpleNamespace(
                messages=len(self.messages),
                bytes=sum(len(m.data) for m in self.messages),
                last_seq=self.last_seq,
            ),
        )

    def takes(self, subject: str) -> bool:
        return any(matches(pattern, subject) for pattern in self.subjects)

    def last(self, subject: str) -> StoredMessage | None:
        for msg in reversed(self.messages):
            if matches(subject, msg.subject):
                return msg
        return None

    def store(self, subject: str, data: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """Store a message; JetStream's acknowledgement: the sequence, or the
        error of a lost compare-and-set."""
        expected = headers.get("Nats-Expected-Last-Subject-Sequence")
        if expected is not None:
            scope = headers.get("Nats-Expected-Last-Subject-Sequence-Subject", subject)
            found = self.last(scope)
            last = found.seq if found else 0
            if last != int(expected):
                error = {
                    "code": 400,
                    "err_code": WRONG_LAST_SEQUENCE,
                    "description": f"wrong last sequence: {last}",
                }
                return {"error": error}
        msg_id = headers.get("Nats-Msg-Id")
        if msg_id is not None and msg_id in self._ids:
            return {"stream": self.name, "seq": self._ids[msg_id], "duplicate": True}
        if headers.get("Nats-Rollup") == "sub":
            self.messages = [m for m in self.messages if m.subject != subject]
        self.last_seq += 1
        self.messages.append(StoredMessage(self.last_seq, subject, dict(headers), data))
        if msg_id is not None:
            self._ids[msg_id] = self.last_seq
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()
        return {"stream": self.name, "seq": self.last_seq}

    async def wait_past(self, seq: int) -> None:
        """Until the stream holds a message after ``seq``."""
        while True:
            wake = self._wake
            if self.last_seq > seq:
                return
            await wake.wait()

    def direct_get(self, request: dict[str, Any]) -> dict[str, Any]:
        """``STREAM.MSG.GET`` by ``last_by_subj``, answered as the server does."""
        found = self.last(str(request.get("last_by_subj", "")))
        if found is None:
            return NO_MESSAGE
        return msg_get_reply(found.subject, found.seq, found.headers, found.data)


class _PullSubscription:
    """A durable pull consumer on the fake: nothing is ever delivered to it."""

    async def fetch(self, batch: int = 1, timeout: float = 5.0) -> list[Msg]:
        await asyncio.sleep(timeout)
        raise NatsTimeoutError

    async def consumer_info(self) -> Any:
        return SimpleNamespace(num_pending=0)

    async def unsubscribe(self) -> None:
        return None


class MemoryJetStream:
    """What processes ask JetStream for, kept by the bus."""

    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus

    async def stream_info(self, name: str) -> Any:
        stream = self._bus.streams.get(name)
        if stream is None:
            raise jserr.NotFoundError
        return stream.info()

    async def add_stream(self, config: Any = None, **params: Any) -> Any:
        name = str(config.name if config is not None else params["name"])
        subjects = list((config.subjects if config is not None else params["subjects"]) or [])
        return self._bus.streams.setdefault(name, MemoryStream(name, subjects)).info()

    async def streams_info(self) -> list[Any]:
        return [s.info() for s in self._bus.streams.values()]

    async def consumers_info(self, stream: str) -> list[Any]:
        return []

    async def account_info(self) -> Any:
        return SimpleNamespace(storage=0, limits=None)

    async def pull_subscribe(self, subject: str, *args: Any, **kwargs: Any) -> _PullSubscription:
        return _PullSubscription()


class MemoryBus:
    """A nats-py ``Client`` look-alike whose server is this object."""

    def __init__(self) -> None:
        self._subs: list[MemorySubscription] = []
        self._ids = itertools.count(1)
        self.streams: dict[str, MemoryStream] = {}
        #: Exceptions raised by subscription callbacks (nats-py logs them).
        self.callback_errors: list[BaseException] = []
        self.is_connected = True
        self.is_closed = False
        #: nats.micro takes its service ids from the client's NUID.
        self._nuid = NUID()

    def new_inbox(self) -> str:
        return f"_INBOX.memory.{next(self._ids)}"

    async def subscribe(
        self, subject: str, queue: str = "", cb: Callback | None = None, **_: Any
    ) -> MemorySubscription:
        assert cb is not None, "the fake delivers to callbacks only"
        sub = MemorySubscription(self, subject, queue, cb)
        self._subs.append(sub)
        return sub

    def drop(self, sub: MemorySubscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    async def _route(
        self, subject: str, data: bytes, reply: str, headers: dict[str, str] | None
    ) -> int:
        """Deliver to every plain subscriber and one member of each queue group,
        and store in the stream that takes the subject (its acknowledgement
        goes to ``reply``); the number of receivers."""
        chosen: dict[str, MemorySubscription] = {}
        plain: list[MemorySubscription] = []
        for sub in self._subs:
            if not matches(sub.subject, subject):
                continue
            if sub.queue:
                chosen.setdefault(sub.queue, sub)
            else:
                plain.append(sub)
        targets = plain + list(chosen.values())
        for sub in targets:
            sub.deliver(self._msg(subject, data, reply, headers))
        # A queue group member answers once, then the next one takes its turn.
        for sub in chosen.values():
            self._subs.remove(sub)
            self._subs.append(sub)
        stream = next((s for s in self.streams.values() if s.takes(subject)), None)
        if stream is None:
            return len(targets)
        ack = stream.store(subject, data, dict(headers or {}))
        if reply:
            await self._route(reply, json.dumps(ack).encode(), "", None)
        return len(targets) + 1

    def _msg(
        self, subject: str, data: bytes, reply: str = "", headers: dict[str, str] | None = None
    ) -> Msg:
        return Msg(
            _client=cast(Any, self),
            subject=subject,
            reply=reply,
            data=data,
            headers=dict(headers) if headers else None,
        )

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        if subject.startswith(_DIRECT_GET) and reply:
            stream = self.streams.get(subject[len(_DIRECT_GET) :])
            if stream is not None:
                doc = stream.direct_get(json.loads(payload))
                await self._route(reply, json.dumps(doc).encode(), "", None)
                return
        elif await self._route(subject, payload, reply, headers) or not reply:
            return
        # Nobody took it: the server's "no responders" answer to a request.
        await self._route(reply, b"", "", {"Status": "503"})

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float = 0.5,
        old_style: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Msg:
        if subject.startswith(_DIRECT_GET):
            stream = self.streams.get(subject[len(_DIRECT_GET) :])
            if stream is None:
                raise NoRespondersError
            doc = stream.direct_get(json.loads(payload))
            return self._msg(self.new_inbox(), json.dumps(doc).encode())
        inbox = self.new_inbox()
        answer: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

        async def take(msg: Msg) -> None:
            if not answer.done():
                answer.set_result(msg)

        sub = await self.subscribe(inbox, cb=take)
        try:
            if await self._route(subject, payload, inbox, headers) == 0:
                raise NoRespondersError
            try:
                return await asyncio.wait_for(answer, timeout)
            except TimeoutError:
                raise NatsTimeoutError from None
        finally:
            await sub.unsubscribe()

    async def flush(self, timeout: int = 10) -> None:
        # Let the subscriptions' tasks take what was routed so far.
        await asyncio.sleep(0)

    def jetstream(self, **_: Any) -> MemoryJetStream:
        return MemoryJetStream(self)

    async def drain(self) -> None:
        await self.close()

    async def close(self) -> None:
        for sub in list(self._subs):
            await sub.unsubscribe()
        self.is_connected = False
        self.is_closed = True


class MemoryLedger(Ledger):
    """A ``Ledger`` on a ``MemoryBus``.  Its writes, compare-and-set, refreshes
    and event writes are ``Ledger``'s own, answered by the bus's stream; what a
    JetStream consumer does (load the last message of each key, follow the
    stream) is done here from the bus's copy."""

    @property
    def _bus(self) -> MemoryBus:
        assert isinstance(self._nc, MemoryBus), "a MemoryLedger needs a MemoryBus"
        return self._nc

    async def open(self, replicas: int = 1) -> None:
        stream = self._bus.streams.setdefault(
            self.stream, MemoryStream(self.stream, [self._prefix + ">"])
        )
        self._epoch = format(zlib.crc32(stream.created.encode()), "08x")
        for msg in stream.messages:
            self._apply(msg.subject, msg.data, msg.headers, msg.seq)
        self._applied = stream.last_seq

    async def follow(self) -> None:
        """Apply every later message, and store the events of each message no
        replica forwarded yet (with ``Ledger._store_event``, as the real
        forwarder does)."""
        stream = self._bus.streams[self.stream]
        while True:
            for msg in [m for m in stream.messages if m.seq > self._applied]:
                self._apply(msg.subject, msg.data, msg.headers, msg.seq)
                self._applied = msg.seq
                if msg.seq > stream.forwarded:
                    stream.forwarded = msg.seq
                    await self._forward(msg)
                self._set_forwarded(msg.seq)
            await stream.wait_past(self._applied)

    async def _forward(self, stored: StoredMessage) -> None:
        length = stored.headers.get(EVENTS_HEADER)
        events = (
            [Event.from_json(d) for d in json.loads(stored.data[: int(length)])] if length else []
        )
        # What _store_event reads of a consumer's message: its time.
        msg = cast(Msg, SimpleNamespace(metadata=SimpleNamespace(timestamp=stored.time)))
        for index, event in enumerate(events):
            await self._store_event(msg, stored.seq, index, len(events), event)


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the runtime and the services open ``MemoryLedger`` in place of a
    JetStream ledger (they name ``Ledger`` where they make one)."""
    monkeypatch.setattr(shared.util.process, "Ledger", MemoryLedger)
    monkeypatch.setattr(services.nwfilter.service, "Ledger", MemoryLedger)


#: Sequences of the changes ``put`` applies.
_PUT_SEQ = itertools.count(1)


def memory_ledger(service: str, records: dict[str, bytes], host: str | None = "h1") -> Ledger:
    """A ledger holding ``records`` in memory as ``open`` would load them (no
    server: the decode path only reads memory)."""
    ledger = Ledger(cast(NATS, None), cast(JetStreamContext, None), service, host)
    for key, value in records.items():
        put(ledger, key, value)
    return ledger


def put(ledger: Ledger, key: str, value: bytes | None) -> None:
    """Apply one change, as the ledger's watch does."""
    seq = next(_PUT_SEQ)
    headers = {OP_HEADER: "DEL"} if value is None else None
    subject = f"{LEDGER_PREFIX}.{ledger.service}.{ledger.host or 'cluster'}.{key}"
    ledger._apply(subject, value or b"", headers, seq)
