"""JetStream key-value state with compare-and-set on the entry revision.

Each service owns one bucket.  Reads may come from a follower in a cluster
and are not read-your-writes, so every change goes through ``create`` (fails
when the key exists), ``update`` (fails when the revision moved) or
``mutate``, which re-reads and retries on conflict.  ``Conflict`` is the one
exception for a lost race; callers turn it into libvirt's error for the case.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.js.errors as jserr
from nats.js.api import KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

_RETRIES = 60
_WRONG_LAST_SEQUENCE = 10071


def backoff(attempt: int) -> float:
    """Full-jitter exponential wait after the ``attempt``-th lost race, so that
    many writers contending for one key spread out instead of colliding again."""
    return random.uniform(0, min(0.2, 0.002 * 2**attempt))


class Conflict(Exception):
    """A compare-and-set lost: the key exists (create) or its revision moved (update)."""


@dataclass(frozen=True)
class Entry:
    """A key's current value and the revision to compare against."""

    key: str
    value: bytes
    revision: int


class StateStore:
    """One service's KV bucket."""

    def __init__(self, kv: KeyValue, bucket: str) -> None:
        self._kv = kv
        self.bucket = bucket

    @classmethod
    async def open(
        cls, js: JetStreamContext, bucket: str, *, replicas: int = 1, history: int = 1
    ) -> StateStore:
        """Open ``bucket``, creating it (file storage) when it does not exist."""
        try:
            kv = await js.key_value(bucket)
        except jserr.BucketNotFoundError:
            try:
                kv = await js.create_key_value(
                    KeyValueConfig(
                        bucket=bucket,
                        history=history,
                        storage=StorageType.FILE,
                        replicas=replicas,
                    )
                )
            except jserr.BadRequestError:
                # Another replica created it between our look-up and create.
                kv = await js.key_value(bucket)
        return cls(kv, bucket)

    async def get(self, key: str) -> Entry | None:
        """The key's entry, or None when absent or deleted."""
        try:
            entry = await self._kv.get(key)
        except (jserr.KeyNotFoundError, jserr.KeyDeletedError):
            return None
        if entry.value is None or entry.revision is None:
            return None
        return Entry(key, entry.value, entry.revision)

    async def create(self, key: str, value: bytes) -> int:
        """Store ``value`` under a new key; raises ``Conflict`` when it exists."""
        try:
            revision: int = await self._kv.create(key, value)
        except jserr.KeyWrongLastSequenceError as err:
            raise Conflict(key) from err
        return revision

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Replace the value at ``revision``; raises ``Conflict`` when it moved."""
        try:
            new_revision: int = await self._kv.update(key, value, last=revision)
        except jserr.KeyWrongLastSequenceError as err:
            raise Conflict(key) from err
        return new_revision

    async def delete(self, key: str, revision: int | None = None) -> None:
        """Delete the key (at ``revision`` when given; ``Conflict`` if it moved)."""
        try:
            await self._kv.delete(key, last=revision)
        except jserr.KeyWrongLastSequenceError as err:
            raise Conflict(key) from err
        except jserr.BadRequestError as err:
            # nats-py passes the server's "wrong last sequence" (10071) through
            # unconverted on delete, unlike on update.
            if err.err_code == _WRONG_LAST_SEQUENCE:
                raise Conflict(key) from err
            raise

    async def mutate(
        self,
        key: str,
        change: Callable[[bytes | None], Awaitable[bytes | None]],
    ) -> bytes | None:
        """Apply ``change`` (old value or None -> new value or None to delete)
        under compare-and-set, re-reading and retrying on a lost race."""
        for attempt in range(_RETRIES):
            current = await self.get(key)
            new = await change(current.value if current else None)
            try:
                if new is None:
                    if current is not None:
                        await self.delete(key, current.revision)
                elif current is None:
                    await self.create(key, new)
                else:
                    await self.update(key, new, current.revision)
                return new
            except Conflict:
                await asyncio.sleep(backoff(attempt))
        raise Conflict(key)

    async def items(self, prefix: str = "") -> list[Entry]:
        """Every live entry whose key starts with ``prefix``, in one pass."""
        subject_filter = f"{prefix}>" if prefix.endswith(".") else ">"
        watcher = await self._kv.watch(subject_filter, ignore_deletes=True)
        entries: list[Entry] = []
        try:
            while True:
                entry = await watcher.updates(timeout=5)  # type: ignore[no-untyped-call]
                if entry is None:
                    break
                if entry.value is None or entry.revision is None or entry.operation is not None:
                    continue
                if entry.key.startswith(prefix):
                    entries.append(Entry(entry.key, entry.value, entry.revision))
        except TimeoutError:
            pass
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return entries
