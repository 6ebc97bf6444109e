"""One durable write per change: a service's state and its events in one stream.

Each service (and host, for host-scoped ones) owns one *ledger*: the JetStream
stream ``VIRTBUS_LEDGER_<service>[_<host>]`` on ``virtbus.ledger.<service>.<host>.>``.
A change is **one** message on ``virtbus.ledger.<service>.<host>.<key>``: the
key's new value (or a tombstone, ``Virtbus-Op: DEL``) with the events the
change announces ahead of it in the payload (their length in the
``Virtbus-Events`` header).  Compare-and-set is the
server's ``Nats-Expected-Last-Subject-Sequence``: a write names the sequence
of the key's last message it decided on, and loses (``Conflict``) when the key
moved.  That one message is the request path's only fsynced write.

The events are derived from the ledger, never written beside it: a forwarder
in every replica follows the ledger in order and stores each announced event
as a CloudEvent in ``VIRTBUS_EVENTS`` (on ``virtbus.event.>``, with
``Content-Type: application/cloudevents+json``).  Its id is the ledger
message's identity (``<ledger>-<created>-<sequence>[-<n>]``), so it is unique
across restarts and replicas and the same however often it is forwarded.  Each
event carries a ``Virtbus-Source`` header naming its ledger position, and is
published with ``Nats-Expected-Last-Subject-Sequence`` on its own subject
(``virtbus.event.<service>.<host>.<kind>.<name>``): the sequence of the
object's previous event, which the forwarder remembers from its own
acknowledgements.  When that compare-and-set loses, the subject's last event
says why: it is this very event (another replica stored it: skip it), a later
one of this ledger (this forwarder is behind: start again from the stream's
position), or an older one (the remembered sequence was stale: try again with
the one read).  Of two forwarders exactly one stores each event, events are
stored in ledger order, and after a crash anywhere a forwarder resumes from
the position of the last event stored.  So an event exists exactly when its
change does, once the forwarder has caught up (it is behind by milliseconds
while running).  The check is per subject because the server answers it from
its per-subject index; a check over all of a ledger's event subjects costs
the server a walk over every one of them on each publish (measured: 40% of
its CPU per change with a few thousand objects, growing with their number).
Under a sustained load, a write waits (``_keep_up``) while this process's
forwarder trails by more than ``MAX_BEHIND`` messages and is storing events,
so changes keep to the pace of their events instead of leaving them ever
further behind; a stalled forwarder (the event stream refusing) holds no
write up.  A ledger message older than ``VIRTBUS_EVENTS`` keeps events is not
forwarded: its events were stored and have expired since, or would have (a
consumer away for longer reconciles from state).

Old values of a key are dropped by the write itself (``Nats-Rollup: sub``)
once the forwarder has passed the key's previous message, so compaction never
loses an event that is not yet forwarded; a tombstone that rolls up expires
after the event retention (``Nats-TTL``).

Reads come from memory: ``start`` loads the last message of every key, then a
watch (an ordered consumer) applies every later message, so replicas
converge; a process's own writes are applied as soon as they are acknowledged
(read-your-writes).  A write that loses its compare-and-set re-reads the key
from the server (``refresh``) before the caller decides again.

The ledger holds bytes; its owner turns them into its records through
``decode``/``decoded``, the one place where a malformed record (one a bug, a
bad restore or a hostile writer left) is logged by key, never by content,
counted in ``bad_keys`` until its key changes, and skipped, so bad state
never takes a process down (every process exports the count as
``virtbus_<service>_bad_records``).

Why not an atomic batch (state and event as two messages committed together,
NATS 2.12+)?  On a one-replica file stream the 2.15 server stages every batch
in a file store of its own; measured here, a batch of two cost ~3 ms and
~310 batches/s with 16 in flight, against ~0.5 ms and ~3,200/s for one
message.  A derived event keeps the request at one message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import heapq
import json
import logging
import os
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nats.js.errors as jserr
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.client import JetStreamContext

# JSON on the per-change paths (events, acknowledgements) is pydantic-core's
# (Rust): 0.2-0.5 us per document against 1.4-2.7 us for the json module,
# within 0.3 us of orjson, with no dependency of its own.
from pydantic_core import from_json, to_json

from shared.util.api import to_json as model_json
from shared.util.bus import roundtrip
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, no_space
from shared.util.events import (
    CONTENT_TYPE,
    MAX_AGE_SECONDS,
    STREAM,
    cloud_event,
    find_or_add_stream,
)
from shared.util.state import Conflict as Conflict  # re-exported: the ledger's lost race
from shared.util.subjects import (
    CLUSTER,
    EVENT_PREFIX,
    LEDGER_PREFIX,
    event_subject,
    js_api,
    ledger_name,
    token,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

OP_HEADER = "Virtbus-Op"
EVENTS_HEADER = "Virtbus-Events"
SOURCE_HEADER = "Virtbus-Source"
#: Keys under this prefix carry events only (a change nothing stores, such as
#: an ephemeral secret's); they expire with the event retention.
EVENT_ONLY_PREFIX = "_ev."
#: A lost compare-and-set: 10071 ("wrong last sequence: N"), or 10164 ("wrong
#: last sequence", no number) from a replicated stream's leader while another
#: write of the same subject is in flight.
_WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
#: The leader of a replicated stream cannot check an expected sequence yet
#: (just elected): a write may be sent again.
_NOT_READY = 10163
#: Event subjects whose last sequence a forwarder remembers (the oldest are
#: forgotten first; a forgotten one costs one extra read when next used).
_REMEMBERED_SUBJECTS = 65536
#: Seconds between the server's heartbeats to a following replica when idle.
_FOLLOW_HEARTBEAT = 1.0
#: Server errors that mean "no room": disk, account or stream limits.
_NO_SPACE_CODES = {10023, 10028, 10047, 10054, 10077}
_TTL = f"{MAX_AGE_SECONDS}s"
#: How long one write may try before the request answers with an error: well
#: inside a client's 30 s timeout.
WRITE_DEADLINE = 10.0
#: How far (ledger messages) this process's forwarder may trail the ledger
#: before a write waits for it (``_keep_up``).
MAX_BEHIND = 1000
#: The longest a write waits for the forwarder; a forwarder that stored
#: nothing for this long is stalled, and writes do not wait for it.
KEEP_UP_SECONDS = 1.0
#: Longest subject (bytes) a change or one of its events may be published on.
#: A longer name is refused: nats-server closes a connection whose protocol
#: line (subject and reply inbox) passes 4 KiB, which would cut the process
#: off the bus, and the forwarder would retry the event's subject for ever.
MAX_SUBJECT = 2048


#: Free space a write leaves untouched on the state filesystem: JetStream
#: itself must never meet a full disk (a block write that fails with ENOSPC
#: leaves its stream refusing writes until the server restarts), so requests
#: are refused with a clear error while the filesystem is this close to full.
RESERVE_FRACTION = 0.05
RESERVE_MAX = 64 * 1024 * 1024
RESERVE_MIN = 1024 * 1024


def free_space_guard(path: Path) -> Callable[[], str | None]:
    """A check that names the shortage when the filesystem holding ``path`` has
    less free space than the reserve, else returns None."""

    # The folder may not exist yet: its nearest existing parent is on the
    # filesystem it will be on.
    where = path
    while not where.exists() and where.parent != where:
        where = where.parent

    def check() -> str | None:
        try:
            st = os.statvfs(where)
        except OSError:
            return None  # nothing to judge by
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        reserve = min(RESERVE_MAX, max(RESERVE_MIN, int(total * RESERVE_FRACTION)))
        if free >= reserve:
            return None
        return f"{free // 1024} KiB free on the state filesystem, {reserve // 1024} KiB kept"

    return check


@dataclass(frozen=True)
class Event:
    """An event a change announces (``EventData`` without the envelope)."""

    object: str
    name: str
    event: str
    detail: str | None = None
    host: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"o": self.object, "n": self.name, "e": self.event}
        if self.detail is not None:
            doc["d"] = self.detail
        if self.host is not None:
            doc["h"] = self.host
        if self.extra:
            doc["x"] = self.extra
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Event:
        return cls(doc["o"], doc["n"], doc["e"], doc.get("d"), doc.get("h"), doc.get("x") or {})


@dataclass(frozen=True)
class Record:
    """A key's value as the ledger holds it, and the sequence to compare against."""

    key: str
    value: bytes
    seq: int


def _encode_events(events: Sequence[Event]) -> bytes:
    return to_json([e.to_json() for e in events])


def _parent(key: str) -> str:
    """``a.b.`` of ``a.b.c`` (empty for a one-token key)."""
    head, dot, _ = key.rpartition(".")
    return head + dot


def _pauses() -> Iterator[float]:
    """The waits between tries at a server that did not answer or is not ready
    yet: 50 ms, doubling, at most 1 s."""
    pause = 0.05
    while True:
        yield pause
        pause = min(pause * 2, 1.0)


def _ack_error(reply: dict[str, Any]) -> tuple[int, str] | None:
    err = reply.get("error")
    if not err:
        return None
    return int(err.get("err_code", 0)), str(err.get("description", "error"))


class Ledger:
    """One service's ledger: writes, in-memory reads, the watch and the forwarder."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        service: str,
        host: str | None = None,
        *,
        space: Callable[[], str | None] | None = None,
        on_event_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._nc = nc
        #: Told the object kind of each event the forwarder failed to store (it
        #: tries again until stored: the process's failure counter).
        self._on_event_failure = on_event_failure
        #: Says why there is no room for a write (``free_space_guard``), or None.
        self._space = space
        self._js = js
        self.service = service
        self.host = host
        self.stream = ledger_name(service, host)
        self._prefix = f"{LEDGER_PREFIX}.{service}.{token(host or CLUSTER)}."
        self._events_filter = f"{EVENT_PREFIX}.{service}.{token(host or CLUSTER)}.>"
        self._epoch = ""
        self._values: dict[str, Record] = {}
        #: Last sequence of every key seen, tombstones included (for compare-and-set).
        self._seqs: dict[str, int] = {}
        #: Last sequence among the keys of each parent (``a.b.`` of ``a.b.c``).
        self._parent_seqs: dict[str, int] = {}
        #: Every ledger message up to here has its events in VIRTBUS_EVENTS.
        self.forwarded = 0
        #: The sequence of the last event in VIRTBUS_EVENTS on each event subject
        #: (as this forwarder last knew it): the compare-and-set of the next one.
        self._event_seqs: dict[str, int] = {}
        #: The sequence of this process's last write (tests, shutdown).
        self.last_written = 0
        #: Every ledger message up to here is applied to memory.
        self._applied = 0
        #: True while ``follow`` runs in this process.
        self._following = False
        #: The loop time ``forwarded`` last moved (0: never).
        self._progress_at = 0.0
        #: Seconds VIRTBUS_EVENTS keeps an event (0: for ever), read by each
        #: round of the forwarder.
        self._retention = 0.0
        #: (sequence, tie-break, future) of each ``wait_forwarded``, soonest first.
        self._forwarded_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._listeners: list[Callable[[str, Record | None], None]] = []
        #: Keys whose current value did not decode (``decode``); a key leaves when it changes.
        self.bad_keys: set[str] = set()

    # -- set-up --------------------------------------------------------------------

    async def open(self, replicas: int = 1) -> None:
        """Create the ledger stream when absent; load every key into memory."""
        config = StreamConfig(
            name=self.stream,
            subjects=[self._prefix + ">"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas,
            allow_rollup_hdrs=True,
            allow_direct=True,
            duplicate_window=120,
        )
        info = await find_or_add_stream(self._js, self.stream, lambda: self._add_stream(config))
        # The stream's creation time tells a ledger from an older one of the
        # same name (deleted and made again), whose sequences start over.
        created = str(getattr(info, "created", None) or "")
        self._epoch = format(zlib.crc32(created.encode()), "08x")
        await self._load()

    async def _add_stream(self, config: StreamConfig) -> StreamInfo:
        # nats-py's StreamConfig has no field for per-message TTLs (2.11+):
        # send the request ourselves with it set.
        body = config.as_dict()
        body["allow_msg_ttl"] = True
        reply = await roundtrip(
            self._nc, js_api(f"STREAM.CREATE.{self.stream}"), json.dumps(body).encode(), timeout=5
        )
        doc = json.loads(reply.data)
        if "error" in doc:
            raise jserr.BadRequestError(description=doc["error"].get("description"))
        return await self._js.stream_info(self.stream)

    async def _load(self) -> None:
        """Every key's last message, read with a pull consumer sized by its pending
        count (a push watcher may call the initial values complete too early)."""
        sub = await self._js.pull_subscribe(
            self._prefix + ">",
            stream=self.stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0,
            ),
        )
        try:
            remaining = (await sub.consumer_info()).num_pending or 0
            while remaining > 0:
                batch = await sub.fetch(min(remaining, 512), timeout=10)
                remaining -= len(batch)
                for msg in batch:
                    seq = msg.metadata.sequence.stream
                    self._apply(msg.subject, msg.data, msg.headers, seq)
                    # The stream's last message is the last of its subject, so
                    # the highest sequence delivered is where the stream stood.
                    self._applied = max(self._applied, seq)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # -- reads (memory) --------------------------------------------------------------

    def get(self, key: str) -> Record | None:
        """The key's value, or None when absent or deleted."""
        return self._values.get(key)

    def items(self, prefix: str = "") -> list[Record]:
        """Every live key starting with ``prefix``."""
        if not prefix:
            return list(self._values.values())
        return [r for k, r in self._values.items() if k.startswith(prefix)]

    def seq(self, key: str) -> int:
        """The sequence of the key's last message (0 when it has none)."""
        return self._seqs.get(key, 0)

    def siblings_seq(self, key: str) -> int:
        """The last sequence among ``key`` and the keys sharing its parent."""
        return self._parent_seqs.get(_parent(key), 0)

    def on_change(self, listener: Callable[[str, Record | None], None]) -> None:
        """Call ``listener(key, record or None)`` for every change applied."""
        self._listeners.append(listener)

    def decode(self, record: Record, parse: Callable[[bytes], T]) -> T | None:
        """``parse(record.value)``, or None when it raises: the record is malformed,
        and the caller skips it.  It is logged with its key (never its content,
        nor the error's text, which may quote it) and counted in ``bad_keys``
        until the key changes.  Any ``Exception`` of ``parse`` counts: a stored
        record that breaks the parser must not stop the process either."""
        try:
            value = parse(record.value)
        except Exception as err:
            if record.seq >= self._seqs.get(record.key, 0):
                self.bad_keys.add(record.key)
            log.error(
                "skipping malformed record %s of %s (%s)",
                record.key,
                self.stream,
                type(err).__name__,
                extra={"ledger": self.stream, "key": record.key},
            )
            return None
        self.bad_keys.discard(record.key)
        return value

    def read(self, key: str, parse: Callable[[bytes], T]) -> T | None:
        """What ``parse`` makes of ``key``'s record; None when there is none, or
        when it is malformed (``decode``: logged by key and counted)."""
        record = self.get(key)
        return None if record is None else self.decode(record, parse)

    def decoded(self, prefix: str, parse: Callable[[bytes], T]) -> list[tuple[Record, T]]:
        """Every live key starting with ``prefix`` that ``parse`` accepts, with
        what it made of it; malformed ones are skipped as ``decode`` says."""
        found = []
        for record in self.items(prefix):
            value = self.decode(record, parse)
            if value is not None:
                found.append((record, value))
        return found

    def _apply(self, subject: str, data: bytes, headers: dict[str, str] | None, seq: int) -> None:
        key = subject[len(self._prefix) :]
        if key.startswith(EVENT_ONLY_PREFIX) or seq <= self._seqs.get(key, 0):
            return
        self._seqs[key] = seq
        self.bad_keys.discard(key)
        parent = _parent(key)
        if seq > self._parent_seqs.get(parent, 0):
            self._parent_seqs[parent] = seq
        record: Record | None
        if headers and headers.get(OP_HEADER) == "DEL":
            record = None
            self._values.pop(key, None)
        else:
            framed = headers.get(EVENTS_HEADER) if headers else None
            record = Record(key, data[int(framed) :] if framed else data, seq)
            self._values[key] = record
        for listener in self._listeners:
            listener(key, record)

    # -- writes --------------------------------------------------------------------

    async def write(
        self,
        key: str,
        value: bytes | None,
        events: Sequence[Event] = (),
        *,
        expect: int | None = None,
        siblings: bool = False,
        what: str | None = None,
    ) -> int:
        """Store ``value`` under ``key`` (None: delete it) with the ``events`` the
        change announces, as one message; its sequence is returned.

        ``expect`` is the key's sequence the caller decided on (default: the one
        in memory; 0: the key must have no message).  With ``siblings`` the
        comparison covers every key of the same parent (``a.b.*`` for
        ``a.b.c``): the write loses when any of them changed, which makes a
        parent an exclusive group (one secret per usage).  Raises ``Conflict`` when
        the key moved (the key is re-read first, so the caller can decide
        again), ``VirtError`` naming the cause when the server has no room, and
        ``VirtError`` (``VIR_ERR_OPERATION_TIMEOUT``) when no answer came within
        ``WRITE_DEADLINE`` -- a change whose outcome is unknown is fenced first,
        so a request answered with an error did not happen.
        """
        self._check_subjects(self._prefix + key, events, what or key)
        if expect is None:
            expect = self.siblings_seq(key) if siblings else self.seq(key)
        headers = {
            "Nats-Expected-Last-Subject-Sequence": str(expect),
            "Nats-Msg-Id": uuid.uuid4().hex,
        }
        if siblings:
            headers["Nats-Expected-Last-Subject-Sequence-Subject"] = (
                self._prefix + _parent(key) + "*"
            )
        payload = value or b""
        if events:
            # The events go ahead of the value in the payload, their length in
            # a header: an inventory's event may be larger than headers allow.
            announced = _encode_events(events)
            headers[EVENTS_HEADER] = str(len(announced))
            payload = announced + payload
        if value is None:
            headers[OP_HEADER] = "DEL"
        previous = self.seq(key)
        if 0 < previous <= self.forwarded:
            # Every older message of the key has its events stored: drop them.
            headers["Nats-Rollup"] = "sub"
            if value is None:
                headers["Nats-TTL"] = _TTL
        try:
            seq = await self._publish(self._prefix + key, payload, headers, what or key)
        except Conflict:
            await self.refresh(key, siblings=siblings)
            raise
        self._apply(self._prefix + key, payload, headers, seq)
        return seq

    async def announce(
        self, events: Sequence[Event], *, what: str = "event", key: str | None = None
    ) -> int:
        """Store events that no state change in the ledger carries (an ephemeral
        secret's, a volume's whose change is its storage).

        ``key`` names the announcement (letters, digits, ``-`` and ``_``): it
        is stored once (``Conflict`` when it already was), and ``announced``
        tells afterwards whether it was, for an owner that must learn after a
        crash whether its change's events exist.
        """
        self._check_subjects(None, events, what)
        announced = _encode_events(events)
        headers = {
            "Nats-Msg-Id": uuid.uuid4().hex,
            EVENTS_HEADER: str(len(announced)),
            "Nats-TTL": _TTL,
        }
        if key is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = "0"
        subject = f"{self._prefix}{EVENT_ONLY_PREFIX}{key or uuid.uuid4().hex}"
        return await self._publish(subject, announced, headers, what)

    async def announced(self, key: str) -> bool:
        """Whether an announcement under ``key`` is stored (read from the server:
        announcements are not kept in memory).  One older than the event
        retention has expired and reads as not stored."""
        return await self._last(self.stream, f"{self._prefix}{EVENT_ONLY_PREFIX}{key}") is not None

    def _check_subjects(self, subject: str | None, events: Sequence[Event], what: str) -> None:
        """Refuse (``VIR_ERR_INVALID_ARG``) a change whose subject or an event's
        would pass ``MAX_SUBJECT``: a name too long to be a key."""
        subjects = [] if subject is None else [subject]
        subjects += [event_subject(self.service, self.host, e.object, e.name) for e in events]
        for name in subjects:
            size = len(name.encode())
            if size > MAX_SUBJECT:
                shown = what if len(what) <= 80 else what[:77] + "..."
                raise VirtError(
                    ErrorCode.INVALID_ARG,
                    f"{shown}: the name is too long to store"
                    f" ({size} bytes as a key, at most {MAX_SUBJECT})",
                    ErrorDomain.NONE,
                )

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str], what: str) -> int:
        """One message, retried under its message id until a definite answer."""
        if self._space is not None:
            shortage = self._space()
            if shortage is not None:
                raise no_space(what, shortage)
        await self._keep_up()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITE_DEADLINE
        pauses = _pauses()
        # Sent again after an answer that did not come: the message may be stored.
        resent = False
        while True:
            try:
                msg = await roundtrip(
                    self._nc,
                    subject,
                    data,
                    headers=headers,
                    timeout=max(0.1, min(5.0, deadline - loop.time())),
                )
            except (NatsTimeoutError, NoRespondersError, ConnectionClosedError) as err:
                pause = next(pauses)
                if loop.time() + pause >= deadline:
                    raise VirtError(
                        ErrorCode.OPERATION_TIMEOUT,
                        f"no answer from the state store while storing {what}"
                        f" ({type(err).__name__})",
                        ErrorDomain.NONE,
                    ) from err
                await asyncio.sleep(pause)
                resent = True
                continue
            reply = from_json(msg.data)
            failure = _ack_error(reply)
            if failure is None:
                return self._written(int(reply["seq"]))
            code, description = failure
            if code == _NOT_READY:
                pause = next(pauses)
                if loop.time() + pause < deadline:
                    await asyncio.sleep(pause)
                    continue
            if code in _WRONG_LAST_SEQUENCE:
                # A message sent again after its answer was lost (the server
                # restarting) loses its own compare-and-set when the first
                # sending was stored and the server no longer knows its id:
                # the subject's last message is then this very write.
                own = await self._own_write(subject, headers) if resent else None
                if own is None:
                    raise Conflict(subject[len(self._prefix) :])
                return self._written(own)
            if code in _NO_SPACE_CODES or "resources" in description or "maximum" in description:
                raise no_space(what, description)
            raise VirtError(
                ErrorCode.OPERATION_FAILED, f"cannot store {what}: {description}", ErrorDomain.NONE
            )

    async def _keep_up(self) -> None:
        """Wait (at most ``KEEP_UP_SECONDS``) while this process's forwarder
        trails the ledger by more than ``MAX_BEHIND`` messages and is storing
        events: under a sustained load, changes slow to the pace their events
        are stored at, instead of their events falling ever further behind.
        A forwarder that stores nothing (the event stream refusing them, or
        none running here) holds no write up: those events wait, as before."""
        if not self._following:
            return
        target = max(self._applied, self.last_written) - MAX_BEHIND
        if self.forwarded >= target:
            return
        if asyncio.get_running_loop().time() - self._progress_at > KEEP_UP_SECONDS:
            return
        with contextlib.suppress(TimeoutError):
            await self.wait_forwarded(target, timeout=KEEP_UP_SECONDS)

    def _written(self, seq: int) -> int:
        """``seq``, a message of this process now stored."""
        self.last_written = max(self.last_written, seq)
        return seq

    async def _own_write(self, subject: str, headers: dict[str, str]) -> int | None:
        """The sequence of the last message on ``subject`` when it carries the
        message id in ``headers`` (a write of this call), else None."""
        found = await self._last(self.stream, subject)
        if found is None or found[2].get("Nats-Msg-Id") != headers.get("Nats-Msg-Id"):
            return None
        return found[1]

    async def refresh(self, key: str, *, siblings: bool = False) -> None:
        """Re-read ``key`` (and with ``siblings`` the last change among the keys
        of its parent) from the server into memory, after a lost race."""
        subjects = [self._prefix + key]
        if siblings:
            subjects.append(self._prefix + _parent(key) + "*")
        for subject in subjects:
            # The stream's own get (answered by its leader, so never stale).
            found = await self._last(self.stream, subject)
            if found is None:
                if subject.endswith("*"):
                    self._parent_seqs.pop(_parent(key), None)
                else:
                    # No message at all (a tombstone that expired): the key is new again.
                    self._values.pop(key, None)
                    self._seqs.pop(key, None)
                    self.bad_keys.discard(key)
                continue
            where, seq, headers, data = found
            self._apply(where, data, headers, seq)
            if subject.endswith("*"):
                # The server's last among the siblings is what a write compares
                # with (a sibling's tombstone may have expired since we saw it).
                self._parent_seqs[_parent(key)] = seq

    async def _last(
        self, stream: str, subject: str
    ) -> tuple[str, int, dict[str, str], bytes] | None:
        """(subject, sequence, headers, data) of the last message of ``stream`` on
        ``subject`` (wildcards allowed), or None when there is none."""
        reply = await roundtrip(
            self._nc,
            js_api(f"STREAM.MSG.GET.{stream}"),
            json.dumps({"last_by_subj": subject}).encode(),
            timeout=5,
        )
        doc = json.loads(reply.data)
        if "error" in doc:
            if doc["error"].get("code") == 404:
                return None
            raise VirtError(
                ErrorCode.OPERATION_FAILED,
                f"cannot read {subject}: {doc['error'].get('description')}",
            )
        message = doc["message"]
        headers: dict[str, str] = {}
        raw = base64.b64decode(message.get("hdrs") or b"").decode(errors="replace")
        for line in raw.split("\r\n")[1:]:
            name, sep, text = line.partition(":")
            if sep:
                headers[name.strip()] = text.strip()
        data = base64.b64decode(message.get("data") or b"")
        return str(message["subject"]), int(message["seq"]), headers, data

    # -- background: watch and forwarder ------------------------------------------------

    async def follow(self) -> None:
        """Apply every message after the ones loaded (the watch) and store the
        events of every message not yet forwarded (the forwarder), until
        cancelled.  One ordered consumer does both, so each ledger message
        reaches this process once."""
        self._following = True
        try:
            while True:
                try:
                    await self._follow()
                except asyncio.CancelledError:
                    raise
                except Conflict:
                    continue  # another replica forwarded meanwhile: start from its position
                except Exception as err:
                    log.warning(
                        "event forwarding stopped, retrying: %s",
                        err or type(err).__name__,
                        extra={"ledger": self.stream},
                    )
                    await asyncio.sleep(1.0)
        finally:
            self._following = False

    async def _position(self) -> tuple[int, int]:
        """(ledger sequence, events of it done) of the last event forwarded;
        zeros when none is stored.  The one look over all of this ledger's
        event subjects: at the start of forwarding, not per event."""
        found = await self._last(STREAM, self._events_filter)
        return (0, 0) if found is None else self._source(found[2])

    def _source(self, headers: dict[str, str]) -> tuple[int, int]:
        """(ledger sequence, events of it done) an event's ``Virtbus-Source``
        names; zeros for an event not forwarded from this ledger (or from an
        older one of the same name)."""
        parts = headers.get(SOURCE_HEADER, "").split()
        if len(parts) != 4 or parts[0] != self.stream or parts[1] != self._epoch:
            return 0, 0
        return int(parts[2]), int(parts[3])

    async def _follow(self) -> None:
        # Read at the start of each round: the operator may change it.
        self._retention = float((await self._js.stream_info(STREAM)).config.max_age or 0)
        position, done = await self._position()
        self._set_forwarded(position - 1)
        start = max(1, min(position, self._applied + 1))
        # The subscription's callback (nats-py awaits it for one message after
        # another) takes each message; its iterator would cost a task and a
        # wait per message.  The first error it meets ends this round.
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def take(msg: Msg) -> None:
            if ended.done():
                return
            try:
                await self._take(msg, position, done)
            except asyncio.CancelledError:
                raise
            except BaseException as err:  # handed to follow(), which decides
                ended.set_exception(err)

        sub = await self._js.subscribe(
            self._prefix + ">",
            stream=self.stream,
            ordered_consumer=True,
            cb=take,
            # Two missed heartbeats make nats-py re-create the consumer: after
            # the loss of its server, a replica's view is stale for about two
            # heartbeats (it was 5 s each: 10 s of stale reads in a cluster).
            idle_heartbeat=_FOLLOW_HEARTBEAT,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
            ),
        )
        try:
            await ended
        finally:
            ended.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _take(self, msg: Msg, position: int, done: int) -> None:
        """Apply one ledger message and store the events of it not yet stored
        (``position``/``done``: where the stream said forwarding stood)."""
        seq = msg.metadata.sequence.stream
        self._apply(msg.subject, msg.data, msg.headers, seq)
        if seq > self._applied:
            self._applied = seq
        if seq < position:
            return
        if self._retention and msg.metadata.timestamp.timestamp() < time.time() - self._retention:
            # Older than VIRTBUS_EVENTS keeps an event: its events were stored
            # and have expired, or would have by now (no forwarder ran for
            # that long).  None of them is found for ``_position`` then, so a
            # forwarder starts from the ledger's first message; storing them
            # would announce old changes anew.
            self._set_forwarded(seq)
            return
        events = self._events_of(msg)
        first = done if seq == position else 0
        for index in range(first, len(events)):
            await self._store_event(msg, seq, index, len(events), events[index])
        self._set_forwarded(seq)

    def _set_forwarded(self, seq: int) -> None:
        if seq <= self.forwarded:
            return
        self.forwarded = seq
        self._progress_at = asyncio.get_running_loop().time()
        waiting = self._forwarded_waiters
        while waiting and waiting[0][0] <= seq:
            _, _, waiter = heapq.heappop(waiting)
            if not waiter.done():
                waiter.set_result(None)

    async def wait_forwarded(self, seq: int, timeout: float = 10.0) -> None:
        """Wait until the events of ledger message ``seq`` are stored (tests, shutdown)."""
        if self.forwarded >= seq:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._forwarded_waiters, (seq, id(waiter), waiter))
        async with asyncio.timeout(timeout):
            await waiter

    @staticmethod
    def _events_of(msg: Msg) -> list[Event]:
        length = (msg.headers or {}).get(EVENTS_HEADER)
        if not length:
            return []
        try:
            return [Event.from_json(doc) for doc in from_json(msg.data[: int(length)])]
        except (ValueError, KeyError, TypeError):
            log.error("ledger message with unreadable events", extra={"subject": msg.subject})
            return []

    def event_id(self, seq: int, index: int, count: int) -> str:
        """The id of the ``index``-th event of ledger message ``seq``."""
        base = f"{self.stream}-{self._epoch}-{seq}"
        return base if count == 1 else f"{base}-{index}"

    async def _store_event(self, msg: Msg, seq: int, index: int, count: int, event: Event) -> None:
        """Store the ``index``-th event of ledger message ``seq`` unless another
        forwarder did; raises ``Conflict`` when this one is behind."""
        host = event.host if event.host is not None else self.host
        cloud = cloud_event(
            self.event_id(seq, index, count),
            self.service,
            host,
            event.object,
            event.name,
            event.event,
            event.detail,
            event.extra,
            msg.metadata.timestamp,
        )
        subject = event_subject(self.service, self.host, event.object, event.name)
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Nats-Msg-Id": cloud.id,
            SOURCE_HEADER: f"{self.stream} {self._epoch} {seq} {index + 1}",
        }
        body = model_json(cloud)
        # A subject never seen is most often new: try it as one (a wrong guess
        # costs one read below).
        expect = self._event_seqs.get(subject, 0)
        pauses = _pauses()
        while True:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expect)
            try:
                reply = await roundtrip(self._nc, subject, body, headers=headers, timeout=5)
            except (NatsTimeoutError, NoRespondersError, ConnectionClosedError):
                self._event_failed(event.object)
                raise
            doc = from_json(reply.data)
            failure = _ack_error(doc)
            if failure is None:
                self._remember(subject, int(doc["seq"]))
                return
            if failure[0] == _NOT_READY:
                # A replicated event stream's new leader: not a failure, ask again.
                await asyncio.sleep(next(pauses))
                continue
            if failure[0] not in _WRONG_LAST_SEQUENCE:
                self._event_failed(event.object)
                raise VirtError(ErrorCode.OPERATION_FAILED, f"event not stored: {failure[1]}")
            found = await self._last(STREAM, subject)
            if found is None:
                expect = 0  # its events expired meanwhile
                continue
            _, last, stored_headers, _ = found
            stored = self._source(stored_headers)
            if stored == (seq, index + 1):
                self._remember(subject, last)  # another replica stored this one
                return
            if stored > (seq, index + 1):
                self._event_seqs.clear()
                raise Conflict(subject)  # another replica is ahead: start from its position
            expect = last

    def _remember(self, subject: str, seq: int) -> None:
        seqs = self._event_seqs
        seqs.pop(subject, None)
        seqs[subject] = seq
        if len(seqs) > _REMEMBERED_SUBJECTS:
            del seqs[next(iter(seqs))]

    def _event_failed(self, object_kind: str) -> None:
        if self._on_event_failure is not None:
            self._on_event_failure(object_kind)
