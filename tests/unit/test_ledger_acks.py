"""How a ledger write reads the server's acknowledgement: a lost compare-and-set
is a ``Conflict`` whichever way the server words it, a leader not ready yet is
asked again, anything else is an error that names the change.  The forwarder
also asks a not-ready event stream again, and counts only real refusals."""

from __future__ import annotations

import asyncio
import datetime
import json
import types
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.client import JetStreamContext

import shared.util.ledger as ledger_module
from shared.util.errors import ErrorCode, VirtError
from shared.util.ledger import Conflict, Event, Ledger
from tests.memory_bus import NO_MESSAGE, msg_get_reply


class Reply:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.data = json.dumps(doc).encode()


def error(code: int, description: str) -> dict[str, Any]:
    return {"error": {"code": 400, "err_code": code, "description": description}}


#: Stands for an answer that never came (the server restarting).
LOST = {"lost": True}


@pytest.fixture
def sent() -> list[dict[str, str]]:
    """The headers of every message the ledger sends, in order."""
    return []


@pytest.fixture
def acks(monkeypatch: pytest.MonkeyPatch, sent: list[dict[str, str]]) -> Iterator[list[Any]]:
    """The server's answers, in order, to what the ledger sends: documents,
    ``LOST``, or functions of the headers sent so far that make one."""
    queue: list[Any] = []

    async def roundtrip(*_: object, headers: dict[str, str] | None = None, **__: object) -> Reply:
        sent.append(dict(headers or {}))
        doc = queue.pop(0)
        if doc is LOST:
            raise NatsTimeoutError
        return Reply(doc(sent) if callable(doc) else doc)

    monkeypatch.setattr(ledger_module, "roundtrip", roundtrip)
    monkeypatch.setattr(asyncio, "sleep", _no_wait)
    yield queue


async def _no_wait(_: float) -> None:
    return None


def last_message(subject: str, seq: int, msg_id: str) -> dict[str, Any]:
    """A STREAM.MSG.GET answer: the subject's last message, with its id."""
    return msg_get_reply(subject, seq, {"Nats-Msg-Id": msg_id}, b"")


def ledger(on_event_failure: Callable[[str], None] | None = None) -> Ledger:
    """A secret service's ledger with no server (``roundtrip`` answers from ``acks``)."""
    return Ledger(
        cast(NATS, None),
        cast(JetStreamContext, None),
        "secret",
        None,
        on_event_failure=on_event_failure,
    )


@pytest.mark.parametrize(
    ("code", "words"),
    [(10071, "wrong last sequence: 7"), (10164, "wrong last sequence")],
    ids=["one server", "replicated stream, a write in flight"],
)
async def test_a_lost_compare_and_set_is_a_conflict(
    acks: list[dict[str, Any]], code: int, words: str
) -> None:
    acks.append(error(code, words))
    # A lost race re-reads the key before the caller decides again: gone meanwhile.
    acks.append(NO_MESSAGE)
    with pytest.raises(Conflict):
        await ledger().write("s.k1", b"value", what="secret k1")
    assert acks == []


async def test_a_leader_not_ready_is_asked_again(acks: list[dict[str, Any]]) -> None:
    acks.extend(
        [
            error(10163, "expected last sequence per subject temporarily unavailable"),
            {"stream": "VIRTBUS_LEDGER_secret", "seq": 12},
        ]
    )
    written = ledger()
    await written.write("s.k1", b"value", what="secret k1")
    assert acks == []
    assert written.last_written == 12


async def test_another_refusal_is_an_error_naming_the_change(acks: list[dict[str, Any]]) -> None:
    acks.append(error(10060, "expected stream does not match"))
    with pytest.raises(VirtError) as refused:
        await ledger().write("s.k1", b"value", what="secret k1")
    assert refused.value.code is ErrorCode.OPERATION_FAILED
    assert refused.value.message.endswith("cannot store secret k1: expected stream does not match")


async def test_a_write_sent_again_that_finds_itself_stored_succeeds(
    acks: list[Any], sent: list[dict[str, str]]
) -> None:
    """The answer to the first sending was lost; the second sending loses the
    compare-and-set to the first, which the key's last message shows by its id."""
    subject = "virtbus.ledger.secret.cluster.s.k1"
    acks.extend(
        [
            LOST,
            error(10071, "wrong last sequence: 7"),
            lambda sent: last_message(subject, 7, sent[0]["Nats-Msg-Id"]),
        ]
    )
    written = ledger()
    assert await written.write("s.k1", b"value", what="secret k1") == 7
    assert written.last_written == 7
    assert sent[0]["Nats-Msg-Id"] == sent[1]["Nats-Msg-Id"]
    record = written.get("s.k1")
    assert record is not None and record.value == b"value" and record.seq == 7


async def test_a_write_sent_again_that_finds_another_is_a_conflict(
    acks: list[dict[str, Any]],
) -> None:
    acks.extend(
        [
            LOST,
            error(10071, "wrong last sequence: 7"),
            last_message("virtbus.ledger.secret.cluster.s.k1", 7, "someone-else"),
            NO_MESSAGE,
        ]
    )
    with pytest.raises(Conflict):
        await ledger().write("s.k1", b"value", what="secret k1")


async def test_a_first_sending_that_loses_is_a_conflict_without_a_look(
    acks: list[dict[str, Any]], sent: list[dict[str, str]]
) -> None:
    acks.extend(
        [
            error(10071, "wrong last sequence: 7"),
            NO_MESSAGE,
        ]
    )
    with pytest.raises(Conflict):
        await ledger().write("s.k1", b"value", what="secret k1")
    assert len(sent) == 2  # the write, then the refresh's read: no look for its own id


def ledger_message() -> Any:
    """What the forwarder reads of a ledger message: its timestamp."""
    stamp = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    return types.SimpleNamespace(metadata=types.SimpleNamespace(timestamp=stamp))


async def test_an_event_stream_leader_not_ready_is_asked_again_not_counted(
    acks: list[dict[str, Any]], sent: list[dict[str, str]]
) -> None:
    """A replicated event stream that has just elected its leader answers 10163:
    the forwarder sends the same event again, and reports no failure."""
    failures: list[str] = []
    forwarder = ledger(failures.append)
    acks.extend(
        [
            error(10163, "expected last sequence per subject temporarily unavailable"),
            {"stream": "VIRTBUS_EVENTS", "seq": 41},
        ]
    )
    event = Event("secret", "s1", "lifecycle", "Defined")
    await forwarder._store_event(ledger_message(), 3, 0, 1, event)
    assert acks == []
    assert failures == []
    assert [h["Nats-Msg-Id"] for h in sent] == [forwarder.event_id(3, 0, 1)] * 2
    assert forwarder._event_seqs == {"virtbus.event.secret.cluster.secret.s1": 41}


async def test_an_event_the_stream_refuses_otherwise_is_counted(acks: list[dict[str, Any]]) -> None:
    failures: list[str] = []
    forwarder = ledger(failures.append)
    acks.append(error(10077, "maximum messages exceeded"))
    with pytest.raises(VirtError):
        await forwarder._store_event(
            ledger_message(), 3, 0, 1, Event("secret", "s1", "lifecycle", "Defined")
        )
    assert failures == ["secret"]
