"""Each service's endpoint table (tests/service_contract.py) on a real
nats-server: the process connects as its own role, the requests come from an
``admin`` connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from client.events import subscribe
from shared.util import roles
from shared.util.events import CloudEvent
from shared.util.subjects import event_filter
from tests.conftest import ConnectAs
from tests.service_contract import Caller, ServiceContract, TableCase

pytestmark = pytest.mark.integration


class TestOnNatsServer(ServiceContract):
    @pytest.fixture(autouse=True)
    def server(self, nats_url: str, connect_as: ConnectAs, tmp_path: Path) -> None:
        self.nats_url, self.tmp_path = nats_url, tmp_path
        self.connections: dict[str, NATS] = {}

        async def connect(role: str) -> NATS:
            if role not in self.connections:
                self.connections[role] = await connect_as(role)
            return self.connections[role]

        self.connect = connect

    @asynccontextmanager
    async def started(self, case: TableCase) -> AsyncIterator[Caller]:
        process = case.make(self.nats_url, self.tmp_path / case.id, None)
        async with process:
            yield Caller(self.connect, process)

    async def stored_events(
        self, caller: Caller, service: str, enough: Callable[[list[CloudEvent]], bool]
    ) -> list[CloudEvent]:
        nc = await self.connect(roles.ADMIN)
        events: list[CloudEvent] = []
        async with asyncio.timeout(10), subscribe(nc, event_filter(service), replay=True) as feed:
            async for event in feed:
                events.append(event)
                if enough(events):
                    return events
        raise AssertionError("the event feed ended")
