"""The serving contract (tests/serving_contract.py) on an in-memory request."""

from __future__ import annotations

from typing import Any, cast

from nats.micro.request import Request

from shared.util.api import Bound, Counters, answer
from tests.serving_contract import ServingContract, Text, metrics


class MemoryRequest:
    """What ``answer`` uses of a nats.micro request, kept in memory."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.headers: dict[str, str] = {}
        self.subject = "memory"
        self.reply: tuple[bytes, dict[str, str]] | None = None

    async def respond(self, data: bytes = b"", headers: dict[str, str] | None = None) -> None:
        assert self.reply is None, "answered twice"
        self.reply = (data, headers or {})


class TestInMemory(ServingContract):
    async def deliver(
        self, bound: Bound[Text, Text], body: bytes, counters: Counters
    ) -> tuple[bytes, dict[str, str]]:
        request = MemoryRequest(body)
        await answer(bound, cast(Request, cast(Any, request)), metrics(), counters)
        assert request.reply is not None
        return request.reply
