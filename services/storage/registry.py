"""What the storage service keeps in its KV bucket, per host.

Keys of the ``virtbus_storage`` bucket:

* ``pool.<host>.<uuid>`` -> ``PoolRecord``: the pool's current definition
  (libvirt's config file, or its state file when active), a redefinition
  waiting for the pool to stop, and the persistent/active/autostart flags.

Volumes are not stored: the pool's storage says which exist (the creation
journal, ``journal.py``, covers those being made).

Every write is a compare-and-set on the revision the service last saw.  The
records are read back with a pull consumer sized from its own pending count
at creation: the push watcher behind ``StateStore.items`` can mark its
initial values done before a value still in flight arrives, and a pool
missed at start-up would be a transient pool forgotten.
"""

from __future__ import annotations

import contextlib

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from pydantic import BaseModel

from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.state import Conflict, StateStore
from shared.util.subjects import token

BUCKET = "virtbus_storage"
_D = ErrorDomain.STORAGE


class PoolRecord(BaseModel):
    """A pool as stored: XML of its definitions and its runtime flags."""

    xml: str
    new_xml: str | None = None
    persistent: bool = True
    active: bool = False
    autostart: bool = False


def _changed(what: str) -> VirtError:
    return VirtError(
        ErrorCode.OPERATION_FAILED,
        f"{what} was changed by another storage service for this host",
        _D,
    )


class StorageRegistry:
    """The bucket, seen from one host's service."""

    def __init__(self, store: StateStore, js: JetStreamContext, host: str) -> None:
        self._store = store
        self._js = js
        self._host = token(host)

    def _pool_key(self, uuid: str) -> str:
        return f"pool.{self._host}.{uuid}"

    async def pools(self) -> list[tuple[PoolRecord, int]]:
        """Every pool record of this host with its revision."""
        prefix = f"$KV.{BUCKET}."
        sub = await self._js.pull_subscribe(
            f"{prefix}pool.{self._host}.>",
            stream=f"KV_{BUCKET}",
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0,
            ),
        )
        records: list[tuple[PoolRecord, int]] = []
        try:
            remaining = (await sub.consumer_info()).num_pending or 0
            while remaining > 0:
                batch = await sub.fetch(min(remaining, 256), timeout=10)
                remaining -= len(batch)
                for msg in batch:
                    operation = (msg.headers or {}).get("KV-Operation")
                    if operation in ("DEL", "PURGE") or not msg.data:
                        continue
                    revision = msg.metadata.sequence.stream
                    records.append((PoolRecord.model_validate_json(msg.data), revision))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return records

    async def save_pool(self, uuid: str, record: PoolRecord, revision: int | None) -> int:
        """Store ``record``: create it (``revision`` None) or replace that revision."""
        data = record.model_dump_json().encode()
        try:
            if revision is None:
                return await self._store.create(self._pool_key(uuid), data)
            return await self._store.update(self._pool_key(uuid), data, revision)
        except Conflict as err:
            raise _changed(f"pool {uuid}") from err

    async def delete_pool(self, uuid: str, revision: int | None) -> None:
        try:
            await self._store.delete(self._pool_key(uuid), revision)
        except Conflict as err:
            raise _changed(f"pool {uuid}") from err
