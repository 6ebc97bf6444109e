"""JetStream key-value state with compare-and-set on the entry revision.

Each service owns one bucket.  Reads may come from a follower in a cluster
and are not read-your-writes, so every change goes through ``create`` (fails
when the key exists), ``update`` (fails when the revision moved) or
``mutate``, which re-reads and retries on conflict.  ``Conflict`` is the one
exception for a lost race; callers turn it into libvirt's error for the case.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.js.errors as jserr
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from shared.util.subjects import kv_filter, kv_prefix

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

    def __init__(self, kv: KeyValue, js: JetStreamContext, bucket: str) -> None:
        self._kv = kv
        self._js = js
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
        return cls(kv, js, bucket)

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

    async def put(self, key: str, value: bytes) -> int:
        """Overwrite the key whatever it holds; only for a record one writer owns
        (everything shared goes through ``create``/``update``/``mutate``)."""
        revision: int = await self._kv.put(key, value)
        return revision

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
            if new == (current.value if current else None):
                return new  # nothing to change: no write, no new revision
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
        """Every live entry whose key starts with ``prefix`` (a whole-token
        prefix ending in ``.``, or empty for all), in one pass.

        Read with a pull consumer sized by its pending count when created:
        nats-py's push watcher can declare its initial values complete while a
        value is still in flight, and a key missed here is a secret or pool
        forgotten at start-up.
        """
        subjects = kv_filter(self.bucket, prefix)
        sub = await self._js.pull_subscribe(
            subjects,
            stream=f"KV_{self.bucket}",
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0,
            ),
        )
        start = len(kv_prefix(self.bucket))
        entries: list[Entry] = []
        try:
            remaining = (await sub.consumer_info()).num_pending or 0
            while remaining > 0:
                batch = await sub.fetch(min(remaining, 256), timeout=10)
                remaining -= len(batch)
                for msg in batch:
                    operation = (msg.headers or {}).get("KV-Operation")
                    if operation in ("DEL", "PURGE") or not msg.data:
                        continue
                    entries.append(
                        Entry(msg.subject[start:], msg.data, msg.metadata.sequence.stream)
                    )
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return entries
