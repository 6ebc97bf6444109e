"""The key-value and event-publishing interfaces of ``state``/``events``, on a ledger.

For code written against ``StateStore`` (compare-and-set on revisions) and
``EventPublisher``: ``LedgerState`` keeps the same calls, with the ledger's
sequence as the revision and reads from the ledger's memory; ``LedgerPublisher``
stores each event as an event-only ledger change (one write, id from the
ledger).  A change that has both a state and an event should write them
together with ``Ledger.write``; these adapters are for state without an
event and events without a state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from shared.util.events import CloudEvent, cloud_event
from shared.util.ledger import Event, Ledger
from shared.util.state import Conflict, Entry, backoff

_RETRIES = 60


class LedgerState:
    """``StateStore``'s calls over a ledger's keys."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def get(self, key: str) -> Entry | None:
        record = self.ledger.get(key)
        return None if record is None else Entry(key, record.value, record.seq)

    async def create(self, key: str, value: bytes) -> int:
        """Store ``value`` under a new key; ``Conflict`` when it exists."""
        if self.ledger.get(key) is not None:
            raise Conflict(key)
        return await self.ledger.write(key, value)

    async def update(self, key: str, value: bytes, revision: int) -> int:
        return await self.ledger.write(key, value, expect=revision)

    async def put(self, key: str, value: bytes) -> int:
        """Overwrite whatever the key holds (a record one writer owns)."""
        for attempt in range(_RETRIES):
            try:
                return await self.ledger.write(key, value)
            except Conflict:
                await asyncio.sleep(backoff(attempt))
        raise Conflict(key)

    async def delete(self, key: str, revision: int | None = None) -> None:
        if revision is None and self.ledger.get(key) is None:
            return
        await self.ledger.write(key, None, expect=revision)

    async def mutate(
        self, key: str, change: Callable[[bytes | None], Awaitable[bytes | None]]
    ) -> bytes | None:
        for attempt in range(_RETRIES):
            current = self.ledger.get(key)
            old = current.value if current else None
            new = await change(old)
            if new == old:
                return new
            if new is None and current is None:
                return None
            try:
                await self.ledger.write(key, new)
                return new
            except Conflict:
                await asyncio.sleep(backoff(attempt))
        raise Conflict(key)

    async def items(self, prefix: str = "") -> list[Entry]:
        return [Entry(r.key, r.value, r.seq) for r in self.ledger.items(prefix)]


class LedgerPublisher:
    """``EventPublisher.publish`` as an event-only ledger change."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def publish(
        self,
        object_kind: str,
        name: str,
        event: str,
        detail: str | None = None,
        *,
        event_id: str | None = None,
        host: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> CloudEvent:
        """Store the event; its id comes from the ledger (``event_id`` is not used:
        the ledger's id is already unique and derived from the change)."""
        announced = Event(object_kind, name, event, detail, host, extra or {})
        seq = await self._ledger.announce([announced], what=f"{object_kind} event")
        where = host if host is not None else self._ledger.host
        return cloud_event(
            self._ledger.event_id(seq, 0, 1),
            self._ledger.service,
            where,
            object_kind,
            name,
            event,
            detail,
            extra,
        )
