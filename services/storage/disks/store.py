"""The disk inventory and the block jobs in the storage service's ledger.

Keys of the host's ledger (beside the pool records of registry.py):

* ``disks.<host>.<domain>`` -> ``DiskInventory``: the domain's disks as its
  agent last published them; written only when the generation is newer, so
  an event delivered late never replaces a newer reconcile.
* ``blockjob.<host>.<job_id>`` -> ``JobRecord``: a job from its request to
  its outcome.
* ``blockdisk.<host>.<domain>.<target>`` -> the job id holding the disk.
  Taking it is a compare-and-set create, so of two requests for one disk exactly one
  starts a job; it is deleted when the job ends.

Records are read through ``Ledger.decode``: a malformed one is skipped (and
counted) as if absent, so a newer inventory or a job's next state is written
over it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, Field

from shared.api.blockjob import Command, DiskInventory, Phase
from shared.api.storage_jobs import BlockJobInfo
from shared.util.ledger_state import LedgerState
from shared.util.state import Conflict
from shared.util.subjects import token


class JobRecord(BlockJobInfo):
    """A job as stored: what is shown of it plus its command and whether the stream
    has it (``sent``), the statuses already applied (each once), the images a
    commit with ``delete`` removes afterwards, and when it was asked for."""

    command: Command = Field(discriminator="kind")
    sent: bool = False
    phases: list[Phase] = Field(default_factory=list)
    delete_paths: list[str] = Field(default_factory=list)
    created: float = Field(default_factory=time.time)

    def info(self) -> BlockJobInfo:
        return BlockJobInfo.model_validate(self.model_dump(include=set(BlockJobInfo.model_fields)))


M = TypeVar("M", bound=BaseModel)


class DiskStore:
    """This host's inventory, jobs and disk claims in its ledger."""

    def __init__(self, store: LedgerState, host: str) -> None:
        self._store = store
        self._host = token(host)

    def _disks_key(self, domain: str) -> str:
        return f"disks.{self._host}.{token(domain)}"

    def _job_key(self, job_id: str) -> str:
        return f"blockjob.{self._host}.{token(job_id)}"

    def _claim_key(self, domain: str, target: str) -> str:
        return f"blockdisk.{self._host}.{token(domain)}.{token(target)}"

    def _all(self, prefix: str, model: type[M]) -> list[M]:
        """Every record under ``prefix``; malformed ones skipped (``Ledger.decode``)."""
        return [value for _, value in self._store.ledger.decoded(prefix, model.model_validate_json)]

    def _current(self, key: str, model: type[M]) -> M | None:
        """The record under ``key``; None when absent or malformed (``Ledger.decode``)."""
        return self._store.ledger.read(key, model.model_validate_json)

    # -- inventory ----------------------------------------------------------------------

    async def inventories(self) -> list[DiskInventory]:
        return self._all(f"disks.{self._host}.", DiskInventory)

    async def save_inventory(self, inventory: DiskInventory, *, same_ok: bool = False) -> bool:
        """Store ``inventory`` unless the stored one is newer (or as new, unless
        ``same_ok``); True when it was stored."""
        data = inventory.model_dump_json().encode()
        key = self._disks_key(inventory.domain)
        stored = [True]

        async def change(old: bytes | None) -> bytes | None:
            held = self._current(key, DiskInventory) if old is not None else None
            if old is not None and held is not None:
                current = held.generation
                newer = inventory.generation > current or (
                    same_ok and inventory.generation == current
                )
                if not newer:
                    stored[0] = False
                    return old
            stored[0] = True
            return data

        await self._store.mutate(key, change)
        return stored[0]

    async def delete_inventory(self, domain: str, generation: int) -> bool:
        """Forget the domain unless a newer inventory was stored since."""
        key = self._disks_key(domain)
        deleted = [True]

        async def change(old: bytes | None) -> bytes | None:
            held = self._current(key, DiskInventory) if old is not None else None
            if held is not None and held.generation > generation:
                deleted[0] = False
                return old
            return None

        await self._store.mutate(key, change)
        return deleted[0]

    # -- jobs -----------------------------------------------------------------------------

    async def jobs(self) -> list[JobRecord]:
        return self._all(f"blockjob.{self._host}.", JobRecord)

    async def save_job(self, record: JobRecord) -> None:
        await self._store.put(self._job_key(record.job_id), record.model_dump_json().encode())

    async def update_job(
        self, job_id: str, change: Callable[[JobRecord], Awaitable[bool]]
    ) -> JobRecord | None:
        """Apply ``change`` to the stored record under compare-and-set (it returns
        False to leave the record as it is); the record as stored after."""
        key = self._job_key(job_id)
        result: list[JobRecord | None] = [None]

        async def apply(old: bytes | None) -> bytes | None:
            record = result[0] = self._current(key, JobRecord) if old is not None else None
            if record is None:
                return old  # absent, or malformed: left for the job's owner to see
            return record.model_dump_json().encode() if await change(record) else old

        await self._store.mutate(key, apply)
        return result[0]

    async def delete_job(self, job_id: str) -> None:
        await self._store.delete(self._job_key(job_id))

    # -- disk claims ------------------------------------------------------------------------

    async def claim(self, domain: str, target: str, job_id: str) -> str | None:
        """Hold the disk for ``job_id``; None when taken, else the holder's job id."""
        try:
            await self._store.create(self._claim_key(domain, target), job_id.encode())
        except Conflict:
            entry = await self._store.get(self._claim_key(domain, target))
            return entry.value.decode(errors="replace") if entry is not None else ""
        return None

    async def release(self, domain: str, target: str, job_id: str) -> None:
        """Give the disk back if ``job_id`` still holds it."""

        async def change(old: bytes | None) -> bytes | None:
            if old is not None and old.decode(errors="replace") != job_id:
                return old
            return None

        await self._store.mutate(self._claim_key(domain, target), change)
