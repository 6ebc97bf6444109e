"""What the storage service keeps in its ledger, per host.

Keys of the host's ledger (``shared.util.ledger``, service ``storage``):

* ``pool.<host>.<uuid>`` -> ``PoolRecord``: the pool's current definition
  (libvirt's config file, or its state file when active), a redefinition
  waiting for the pool to stop, and the persistent/active/autostart flags.

Volumes are not stored: the pool's storage says which exist (the creation
journal, ``journal.py``, covers those being made).

Every write is a compare-and-set on the revision the service last saw.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from shared.conf.storage_pool import StoragePoolDef, parse_storage_pool
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.ledger import Event, Ledger
from shared.util.state import Conflict
from shared.util.subjects import token

_D = ErrorDomain.STORAGE


class PoolRecord(BaseModel):
    """A pool as stored: XML of its definitions and its runtime flags."""

    xml: str
    new_xml: str | None = None
    persistent: bool = True
    active: bool = False
    autostart: bool = False


@dataclass(frozen=True)
class StoredPool:
    """A pool record with its definitions parsed, and the revision it was read at."""

    record: PoolRecord
    definition: StoragePoolDef
    new_definition: StoragePoolDef | None
    revision: int


def _decode(data: bytes) -> tuple[PoolRecord, StoragePoolDef, StoragePoolDef | None]:
    record = PoolRecord.model_validate_json(data)
    new = parse_storage_pool(record.new_xml) if record.new_xml else None
    return record, parse_storage_pool(record.xml), new


def _changed(what: str) -> VirtError:
    return VirtError(
        ErrorCode.OPERATION_FAILED,
        f"{what} was changed by another storage service for this host",
        _D,
    )


class StorageRegistry:
    """The ledger, seen from one host's service."""

    def __init__(self, ledger: Ledger, host: str) -> None:
        self._ledger = ledger
        self._host = token(host)

    def _pool_key(self, uuid: str) -> str:
        return f"pool.{self._host}.{uuid}"

    async def pools(self) -> list[StoredPool]:
        """Every pool of this host with its revision; a malformed one (its record
        or either definition does not parse) is skipped (``Ledger.decode``)."""
        return [
            StoredPool(record, definition, new, stored.seq)
            for stored, (record, definition, new) in self._ledger.decoded(
                f"pool.{self._host}.", _decode
            )
        ]

    async def save_pool(
        self, uuid: str, record: PoolRecord, revision: int | None, events: list[Event]
    ) -> int:
        """Store ``record`` with the ``events`` it announces, as one write: create
        it (``revision`` None) or replace that revision."""
        key = self._pool_key(uuid)
        data = record.model_dump_json().encode()
        if revision is None:
            if self._ledger.get(key) is not None:
                raise _changed(f"pool {uuid}")
            revision = self._ledger.seq(key)  # 0, or the tombstone of an undefined pool
        try:
            return await self._ledger.write(key, data, events, expect=revision, what=f"pool {uuid}")
        except Conflict as err:
            raise _changed(f"pool {uuid}") from err

    async def delete_pool(self, uuid: str, revision: int | None, events: list[Event]) -> None:
        try:
            await self._ledger.write(
                self._pool_key(uuid), None, events, expect=revision, what=f"pool {uuid}"
            )
        except Conflict as err:
            raise _changed(f"pool {uuid}") from err
