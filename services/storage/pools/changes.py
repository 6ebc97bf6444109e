"""Changes of storage that no ledger record carries, and their events: a
volume's deletion or a change of its content (wipe, resize, upload), and a
pool's build or deletion.

Each is journalled with its event before the change (``CreationJournal``),
marked done once the change is made, and its event is then stored under the
record's key (``Ledger.announce``), once: here, by the periodic settling when
the state store refused it, or at the next start when a crash came first.  A
change a crash cut short is announced at the next start with ``interrupted``
(the storage may have changed in part); a volume's deletion only once its
storage is gone (a pool's deletion is recorded as a change: cut short, it is
announced as interrupted whether or not its folder went).  A change that
fails is forgotten without an event, as its caller hears of the failure.
One record per volume (or pool): a further change of it is refused until the
earlier one's event is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from services.storage.pools.journal import Creation, CreationJournal
from services.storage.pools.objects import PoolObj
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.ledger import Conflict, Event

log = logging.getLogger(__name__)


class Announcer(Protocol):
    """How a change's event is stored (the service's ledger and metrics)."""

    async def announce(self, obj: PoolObj | None, event: Event, key: str | None = None) -> None:
        """Store ``event`` (under ``key``: ``Ledger.announce``); ``obj``'s figures
        changed with it."""

    async def announced(self, key: str) -> bool:
        """Whether an event announced under ``key`` is stored (``Ledger.announced``)."""


def _subject(event: Event) -> str:
    return f"{event.object} '{event.name}'"


class StorageChanges:
    """The journalled changes of this host's storage."""

    def __init__(self, journal: CreationJournal, announcer: Announcer) -> None:
        self._journal = journal
        self._announcer = announcer

    def begin(
        self, pool_uuid: str, name: str, path: str | None, event: Event, *, deletion: bool = False
    ) -> str:
        """Journal a change of ``name`` (``journal.POOL`` for the pool itself) with its
        event, before the change; the record's key.  A ``deletion``'s event is
        due only once ``path`` is gone.  Refused (``VIR_ERR_OPERATION_INVALID``)
        while an earlier change of the name waits for its event."""
        key = uuid.uuid4().hex
        doc = event.to_json()
        deleted, changed = (doc, None) if deletion else (None, doc)
        if not self._journal.begin(pool_uuid, name, path, key, deleted=deleted, changed=changed):
            raise VirtError(
                ErrorCode.OPERATION_INVALID,
                f"{_subject(event)} has a change whose event is not stored yet",
                ErrorDomain.STORAGE,
            )
        return key

    def failed(self, pool_uuid: str, name: str, key: str) -> None:
        """Forget the change under ``key``: it was not made (no event)."""
        self._journal.end(pool_uuid, name, key)

    def done(self, pool_uuid: str, name: str, key: str) -> None:
        """The change under ``key`` is made: its event is due whatever happens next."""
        try:
            self._journal.done(pool_uuid, name, key)
        except VirtError as err:
            # Still announced next; only a crash before that would report it
            # as interrupted.
            log.warning("%s", err.message)

    @contextlib.asynccontextmanager
    async def journalled(
        self, pool_uuid: str, name: str, path: str | None, event: Event, *, deletion: bool = False
    ) -> AsyncIterator[str]:
        """``begin`` before the block, ``done`` after it (not for a ``deletion``,
        whose event is due once its storage is gone), ``failed`` when it
        raises; the record's key, for ``announce`` once the block is left."""
        key = self.begin(pool_uuid, name, path, event, deletion=deletion)
        try:
            yield key
        except BaseException:
            self.failed(pool_uuid, name, key)
            raise
        if not deletion:
            self.done(pool_uuid, name, key)

    async def announce(self, obj: PoolObj, name: str, key: str, event: Event) -> None:
        """Store the event of a journalled change under its record's key, then
        end the record; one the state store refuses stays for the periodic
        settling (which may also store it first: the key is stored once)."""
        try:
            await self._announcer.announce(obj, event, key)
        except Conflict:
            pass  # the periodic settling stored it meanwhile
        except VirtError as err:
            log.warning(
                "the %s event of %s is stored later: %s", event.detail, _subject(event), err.message
            )
            return
        # The periodic settling may have ended this record and a change of the
        # same name begun its own meanwhile: end this change's record only.
        self._journal.end(obj.uuid, name, key)

    async def settle(self, change: Creation) -> None:
        """A recorded deletion's or change's event, stored once (its key is
        stored once), then the record ended.  A deletion whose storage is still
        there did not happen and has none; a change a crash cut short is
        announced as ``interrupted``."""
        key = change.event_key
        assert key is not None
        if not await self._announcer.announced(key):
            event = await _due_event(change)
            if event is not None:
                with contextlib.suppress(Conflict):
                    await self._announcer.announce(None, event, key)
        self._journal.end(change.pool_uuid, change.name, key)

    async def settle_refused(self, busy: Callable[[str, str], bool]) -> None:
        """Store the events the state store refused when their changes were
        made: a deletion's once its storage went, any other change's once it
        was done; one a request of this process is still making (``busy``:
        pool UUID and volume name) is left to that request, and a creation or a
        change still under way to the next start.  (A pool's own record is
        never ``busy``: its build or delete is stored once whoever gets there
        first, as its key is stored once.)  A failure leaves the
        record for the next call."""
        for change in self._journal.recorded():
            if busy(change.pool_uuid, change.name):
                continue
            if change.deleted is None and not change.done:
                continue
            try:
                await self.settle(change)
            except VirtError as err:
                log.warning("an event is not stored yet: %s", err)


async def _due_event(change: Creation) -> Event | None:
    if change.deleted is not None:
        gone = change.path is None or not await asyncio.to_thread(os.path.lexists, change.path)
        return Event.from_json(change.deleted) if gone else None
    assert change.changed is not None
    event = Event.from_json(change.changed)
    if change.done:
        return event
    return dataclasses.replace(event, extra=event.extra | {"interrupted": True})
