"""Each service's endpoint table (tests/service_contract.py) on the in-memory bus:
the whole process runs, its state in ``MemoryLedger``, its micro service on
``MemoryBus``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import pytest
from nats.aio.client import Client as NATS

from shared.util.events import STREAM, CloudEvent
from shared.util.subjects import event_filter
from tests import memory_bus
from tests.memory_bus import MemoryBus, matches
from tests.service_contract import Caller, ServiceContract, TableCase


async def _same(bus: MemoryBus) -> NATS:
    """Every role's connection is the bus itself (the fake has no permissions)."""
    return cast(NATS, bus)


class TestOnMemoryBus(ServiceContract):
    @pytest.fixture(autouse=True)
    def memory(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        memory_bus.install(monkeypatch)
        self.tmp_path = tmp_path

    @asynccontextmanager
    async def started(self, case: TableCase) -> AsyncIterator[Caller]:
        bus = self.bus = MemoryBus()
        try:
            process = case.make("nats://memory.invalid", self.tmp_path / case.id, cast(NATS, bus))
            async with process:
                yield Caller(lambda role: _same(bus), process)
            assert not bus.callback_errors, bus.callback_errors
        finally:
            await bus.close()

    async def stored_events(
        self, caller: Caller, service: str, enough: Callable[[list[CloudEvent]], bool]
    ) -> list[CloudEvent]:
        stream = self.bus.streams[STREAM]
        async with asyncio.timeout(10):
            while True:
                seen = stream.last_seq
                events = [
                    CloudEvent.model_validate_json(m.data)
                    for m in stream.messages
                    if matches(event_filter(service), m.subject)
                ]
                if enough(events):
                    return events
                await stream.wait_past(seen)
