"""One contract for how an endpoint is answered (``shared.util.api.answer``), run
twice: on an in-memory request (tests/unit/test_serving_contract.py) and
through a real nats-server and nats.micro (tests/integration/...).

A transport gives ``deliver(bound, body)``: it hands ``body`` to ``answer`` as a
request of ``bound`` and returns the reply's data and headers.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod

import pytest
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER
from pydantic import BaseModel

from shared.util.api import ERROR_NAME_HEADER, Bound, Counters, Endpoint
from shared.util.errors import ErrorCode, VirtError
from shared.util.metrics import ProcessMetrics


class Text(BaseModel):
    text: str


SAY = Endpoint("contract", "say", Text, Text)


async def say(req: Text) -> Text:
    if req.text == "refuse":
        raise VirtError(ErrorCode.INVALID_ARG, "refused on purpose")
    if req.text == "crash":
        raise RuntimeError("secret internals")
    return Text(text=req.text.upper())


class ServingContract(ABC):
    """What every transport must show of ``answer``."""

    bound = SAY.bind(say)

    @abstractmethod
    async def deliver(
        self, bound: Bound[Text, Text], body: bytes, counters: Counters
    ) -> tuple[bytes, dict[str, str]]:
        """Answer ``body`` as a request of ``bound``; the reply's data and headers."""

    @pytest.fixture
    def counters(self) -> Counters:
        return Counters()

    async def test_a_reply_is_the_reply_model(self, counters: Counters) -> None:
        data, headers = await self.deliver(self.bound, b'{"text": "hi"}', counters)
        assert Text.model_validate_json(data) == Text(text="HI")
        assert ERROR_CODE_HEADER not in headers
        assert (counters.requests, counters.errors) == (1, 0)

    async def test_a_virt_error_crosses_as_its_code(self, counters: Counters) -> None:
        data, headers = await self.deliver(self.bound, b'{"text": "refuse"}', counters)
        assert headers[ERROR_CODE_HEADER] == str(int(ErrorCode.INVALID_ARG))
        assert headers[ERROR_NAME_HEADER] == "VIR_ERR_INVALID_ARG"
        assert "refused on purpose" in headers[ERROR_HEADER]
        err = VirtError.from_dict(json.loads(data))
        assert err.code is ErrorCode.INVALID_ARG
        assert (counters.errors, counters.last_error) == (1, "VIR_ERR_INVALID_ARG")

    async def test_an_unexpected_error_is_internal_without_its_text(
        self, counters: Counters
    ) -> None:
        data, headers = await self.deliver(self.bound, b'{"text": "crash"}', counters)
        assert headers[ERROR_CODE_HEADER] == str(int(ErrorCode.INTERNAL_ERROR))
        assert b"secret internals" not in data
        assert "secret internals" not in headers[ERROR_HEADER]
        assert counters.errors == 1

    async def test_a_malformed_request_names_the_field(self, counters: Counters) -> None:
        data, headers = await self.deliver(self.bound, b'{"txt": 1}', counters)
        err = VirtError.from_dict(json.loads(data))
        assert err.code is ErrorCode.INVALID_ARG
        assert headers[ERROR_CODE_HEADER] == str(int(ErrorCode.INVALID_ARG))
        assert "text: Field required" in err.message
        assert (counters.requests, counters.errors) == (1, 1)


def metrics() -> ProcessMetrics:
    return ProcessMetrics("contract")
