"""How a ledger write reads the server's acknowledgement: a lost compare-and-set
is a ``Conflict`` whichever way the server words it, a leader not ready yet is
asked again, anything else is an error that names the change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

import shared.util.ledger as ledger_module
from shared.util.errors import ErrorCode, VirtError
from shared.util.ledger import Conflict, Ledger


class Reply:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.data = json.dumps(doc).encode()


def error(code: int, description: str) -> dict[str, Any]:
    return {"error": {"code": 400, "err_code": code, "description": description}}


@pytest.fixture
def acks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """The acknowledgements the server gives, in order, to the ledger's publishes."""
    queue: list[dict[str, Any]] = []

    async def roundtrip(*_: object, **__: object) -> Reply:
        return Reply(queue.pop(0))

    monkeypatch.setattr(ledger_module, "roundtrip", roundtrip)
    yield queue


def ledger() -> Ledger:
    return Ledger(cast(NATS, None), cast(JetStreamContext, None), "secret", None)


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
    acks.append({"error": {"code": 404, "err_code": 10037, "description": "no message found"}})
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
