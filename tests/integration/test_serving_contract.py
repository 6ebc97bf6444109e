"""The serving contract (tests/serving_contract.py) through a real nats-server:
the endpoint registered on nats.micro, the request sent by another connection."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from nats.micro import add_service
from nats.micro.request import Request

from shared.util import bus
from shared.util.api import Bound, Counters, answer
from shared.util.natsserver import EmbeddedNats
from tests.serving_contract import ServingContract, Text, metrics

pytestmark = pytest.mark.integration


class TestRealNats(ServingContract):
    @pytest.fixture(autouse=True)
    async def server_side(self, nats_server: EmbeddedNats, nc: NATS) -> AsyncIterator[None]:
        self.nc = nc
        self.service_nc = await bus.connect(
            nats_server.role_url("contract"), "virtbus-contract", deadline=10
        )
        try:
            yield
        finally:
            await bus.close(self.service_nc)

    async def deliver(
        self, bound: Bound[Text, Text], body: bytes, counters: Counters
    ) -> tuple[bytes, dict[str, str]]:
        service = await add_service(self.service_nc, name="contract", version="0.1.0")
        m = metrics()

        async def handle(request: Request) -> None:
            await answer(bound, request, m, counters)

        await service.add_endpoint(name="say", subject=bound.endpoint.subject(), handler=handle)
        await bus.settle(self.service_nc)
        try:
            msg = await self.nc.request(bound.endpoint.subject(), body, timeout=10)
        finally:
            await service.stop()
        return msg.data, dict(msg.headers or {})
