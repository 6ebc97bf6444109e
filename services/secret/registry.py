"""The secrets that exist: persistent ones in the KV bucket, ephemeral ones in memory.

Keys of the ``virtbus_secret`` bucket:

* ``secret.<uuid>`` -> ``SecretRecord`` JSON: the definition and the sealed value;
* ``usage.<type>.<id token>`` -> ``{"uuid", "at"}``: the secret holding that
  usage and when it claimed it.  Claiming a usage is a KV ``create``, so of
  two concurrent defines with one usage exactly one wins (libvirt refuses a
  second secret for a usage in use).

Ephemeral secrets (libvirt: never written to disk) are kept in this process's
memory only and are gone after a restart.  The registry is the one place
that changes secrets; it raises libvirt's errors for the cases libvirt refuses.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

from pydantic import BaseModel

from services.secret.cipher import ValueCipher
from shared.conf.secret import SecretDef, SecretUsageType
from shared.conf.uuid import generate_uuid, parse_uuid
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.state import Conflict, StateStore, backoff
from shared.util.subjects import token

_D = ErrorDomain.SECRET
_RETRIES = 60
#: A usage claim whose secret was never stored is taken over after this long.
CLAIM_GRACE_SECONDS = 60.0


class SecretRecord(BaseModel):
    """A secret as stored: its definition and its value sealed with the master key."""

    definition: SecretDef
    sealed_value: str | None = None


def _secret_key(uuid: str) -> str:
    return f"secret.{uuid}"


def _usage_key(usage_type: SecretUsageType, usage_id: str) -> str:
    return f"usage.{usage_type.value}.{token(usage_id)}"


def _claim(uuid: str) -> bytes:
    return json.dumps({"uuid": uuid, "at": time.time()}).encode()


def _parse_claim(value: bytes) -> tuple[str, float]:
    """The UUID holding a usage and when it claimed it."""
    doc = json.loads(value)
    return str(doc["uuid"]), float(doc["at"])


def no_secret_uuid(uuid: str) -> VirtError:
    return VirtError(ErrorCode.NO_SECRET, f"no secret with matching uuid '{uuid}'", _D)


def _usage_clash(holder: str, usage_id: str | None) -> VirtError:
    return VirtError(
        ErrorCode.INTERNAL_ERROR,
        f"a secret with UUID {holder} already defined for use with {usage_id}",
        _D,
    )


class Change(BaseModel):
    """The outcome of a change, for the event it publishes (revision for the id)."""

    definition: SecretDef
    revision: int
    #: The definition before a define (None when the secret is new).
    previous: SecretDef | None = None


class SecretRegistry:
    """Every operation on secrets, safe under concurrent requests and replicas."""

    def __init__(self, store: StateStore, cipher: ValueCipher) -> None:
        self._store = store
        self._cipher = cipher
        self._ephemeral: dict[str, SecretRecord] = {}
        self._ephemeral_revision = 0
        # Ephemeral secrets exist only here; one lock keeps their usage check
        # and insertion atomic within this process.
        self._ephemeral_lock = asyncio.Lock()

    # -- look-ups ----------------------------------------------------------------

    async def _load(self, uuid: str) -> tuple[SecretRecord, int] | None:
        if uuid in self._ephemeral:
            return self._ephemeral[uuid], 0
        entry = await self._store.get(_secret_key(uuid))
        if entry is None:
            return None
        return SecretRecord.model_validate_json(entry.value), entry.revision

    async def get(self, uuid_text: str) -> SecretDef:
        """The definition of a secret; ``VIR_ERR_NO_SECRET`` when there is none."""
        uuid = parse_uuid(uuid_text) or uuid_text
        found = await self._load(uuid)
        if found is None:
            raise no_secret_uuid(uuid_text)
        return found[0].definition

    async def by_usage(self, usage_type: SecretUsageType, usage_id: str) -> SecretDef:
        for record in self._ephemeral.values():
            d = record.definition
            if d.usage_type is usage_type and d.usage_id == usage_id:
                return d
        entry = await self._store.get(_usage_key(usage_type, usage_id))
        if entry is not None:
            found = await self._load(_parse_claim(entry.value)[0])
            if found is not None:
                return found[0].definition
        raise VirtError(ErrorCode.NO_SECRET, f"no secret with matching usage '{usage_id}'", _D)

    async def all(self) -> list[SecretDef]:
        persistent = [
            SecretRecord.model_validate_json(e.value).definition
            for e in await self._store.items("secret.")
        ]
        return persistent + [r.definition for r in self._ephemeral.values()]

    # -- define / undefine ---------------------------------------------------------

    async def define(self, new: SecretDef) -> Change:
        """Add or update a secret as virSecretDefineXML does."""
        generated = new.uuid is None
        uuid = new.uuid or generate_uuid()
        new = new.model_copy(update={"uuid": uuid})
        if new.ephemeral:
            async with self._ephemeral_lock:
                return await self._define_ephemeral(new)
        for attempt in range(_RETRIES):
            try:
                # A UUID we just generated names no stored secret: skip that read.
                return await self._define_persistent(new, known_new=generated and attempt == 0)
            except Conflict:
                await asyncio.sleep(backoff(attempt))  # a concurrent change: decide again
        raise VirtError(ErrorCode.OPERATION_FAILED, f"secret '{uuid}' kept changing", _D)

    def _check_redefine(self, old: SecretDef, new: SecretDef) -> None:
        if old.usage_type is not new.usage_type or old.usage_id != new.usage_id:
            raise VirtError(
                ErrorCode.INTERNAL_ERROR,
                f"a secret with UUID {old.uuid} is already defined for use with {old.usage_id}",
                _D,
            )
        if old.private and not new.private:
            raise VirtError(
                ErrorCode.INTERNAL_ERROR, "cannot change private flag on existing secret", _D
            )

    def _ephemeral_holder(self, new: SecretDef) -> str | None:
        """The UUID of another ephemeral secret holding ``new``'s usage, if any."""
        if new.usage_type is SecretUsageType.NONE or new.usage_id is None:
            return None
        for record in self._ephemeral.values():
            d = record.definition
            if d.uuid != new.uuid and d.usage_type is new.usage_type and d.usage_id == new.usage_id:
                return d.uuid
        return None

    async def _usage_holder(self, new: SecretDef) -> str | None:
        """The UUID of another live secret holding ``new``'s usage, if any."""
        if new.usage_type is SecretUsageType.NONE or new.usage_id is None:
            return None
        ephemeral = self._ephemeral_holder(new)
        if ephemeral is not None:
            return ephemeral
        entry = await self._store.get(_usage_key(new.usage_type, new.usage_id))
        if entry is None:
            return None
        holder, _ = _parse_claim(entry.value)
        if holder != new.uuid and await self._store.get(_secret_key(holder)) is not None:
            return holder
        return None

    async def _claim_usage(self, new: SecretDef) -> None:
        """Take ``new``'s usage in KV; exactly one of concurrent claimants wins."""
        if new.usage_type is SecretUsageType.NONE or new.usage_id is None:
            return
        assert new.uuid is not None
        key = _usage_key(new.usage_type, new.usage_id)
        claim = _claim(new.uuid)
        for attempt in range(_RETRIES):
            entry = await self._store.get(key)
            if entry is None:
                try:
                    await self._store.create(key, claim)
                    return
                except Conflict:
                    await asyncio.sleep(backoff(attempt))
                    continue
            holder, claimed_at = _parse_claim(entry.value)
            if holder == new.uuid:
                return
            # A claim without its secret is either a define still under way
            # (it stores the secret right after claiming) or one that crashed
            # in between; only a claim that old is taken over.
            if (
                await self._store.get(_secret_key(holder)) is not None
                or time.time() - claimed_at < CLAIM_GRACE_SECONDS
            ):
                raise _usage_clash(holder, new.usage_id)
            try:
                await self._store.update(key, claim, entry.revision)
                return
            except Conflict:
                await asyncio.sleep(backoff(attempt))
                continue
        raise Conflict(key)

    async def _release_usage(self, d: SecretDef) -> None:
        if d.usage_type is SecretUsageType.NONE or d.usage_id is None:
            return
        key = _usage_key(d.usage_type, d.usage_id)
        entry = await self._store.get(key)
        if entry is not None and _parse_claim(entry.value)[0] == d.uuid:
            try:
                await self._store.delete(key, entry.revision)
            except Conflict:
                pass  # someone else claimed it meanwhile: theirs now

    async def _define_persistent(self, new: SecretDef, *, known_new: bool = False) -> Change:
        assert new.uuid is not None
        if new.uuid in self._ephemeral:
            old_record = self._ephemeral[new.uuid]
            self._check_redefine(old_record.definition, new)
        entry = None if known_new else await self._store.get(_secret_key(new.uuid))
        if entry is not None:
            old = SecretRecord.model_validate_json(entry.value)
            self._check_redefine(old.definition, new)
            record = SecretRecord(definition=new, sealed_value=old.sealed_value)
            revision = await self._store.update(
                _secret_key(new.uuid), record.model_dump_json().encode(), entry.revision
            )
            return Change(definition=new, revision=revision, previous=old.definition)
        holder = self._ephemeral_holder(new)
        if holder is not None:
            raise _usage_clash(holder, new.usage_id)
        await self._claim_usage(new)  # decides against stored secrets
        carried = self._ephemeral.pop(new.uuid, None)
        record = SecretRecord(
            definition=new, sealed_value=carried.sealed_value if carried else None
        )
        try:
            revision = await self._store.create(
                _secret_key(new.uuid), record.model_dump_json().encode()
            )
        except Conflict:
            if carried is not None:
                self._ephemeral[new.uuid] = carried
            raise
        return Change(
            definition=new,
            revision=revision,
            previous=carried.definition if carried else None,
        )

    async def _define_ephemeral(self, new: SecretDef) -> Change:
        assert new.uuid is not None
        old = self._ephemeral.get(new.uuid)
        stored = await self._store.get(_secret_key(new.uuid))
        if old is not None:
            self._check_redefine(old.definition, new)
        elif stored is not None:
            self._check_redefine(SecretRecord.model_validate_json(stored.value).definition, new)
        else:
            holder = await self._usage_holder(new)
            if holder is not None:
                raise _usage_clash(holder, new.usage_id)
        sealed = old.sealed_value if old else None
        previous = old.definition if old else None
        if stored is not None:
            # Turning a persistent secret ephemeral: libvirt deletes its config.
            prior = SecretRecord.model_validate_json(stored.value)
            sealed = prior.sealed_value
            previous = prior.definition
            await self._store.delete(_secret_key(new.uuid), stored.revision)
            await self._release_usage(prior.definition)
        self._ephemeral[new.uuid] = SecretRecord(definition=new, sealed_value=sealed)
        self._ephemeral_revision += 1
        return Change(definition=new, revision=self._ephemeral_revision, previous=previous)

    async def undefine(self, uuid_text: str) -> Change:
        uuid = parse_uuid(uuid_text) or uuid_text
        async with self._ephemeral_lock:
            if uuid in self._ephemeral:
                record = self._ephemeral.pop(uuid)
                self._ephemeral_revision += 1
                return Change(definition=record.definition, revision=self._ephemeral_revision)
        entry = await self._store.get(_secret_key(uuid))
        if entry is None:
            raise no_secret_uuid(uuid_text)
        record = SecretRecord.model_validate_json(entry.value)
        try:
            await self._store.delete(_secret_key(uuid), entry.revision)
        except Conflict as err:
            raise VirtError(
                ErrorCode.OPERATION_FAILED, f"secret '{uuid}' changed while undefining it", _D
            ) from err
        await self._release_usage(record.definition)
        return Change(definition=record.definition, revision=entry.revision + 1)

    # -- values --------------------------------------------------------------------

    async def set_value(self, uuid_text: str, value: bytes) -> Change:
        uuid = parse_uuid(uuid_text) or uuid_text
        sealed = self._cipher.seal(uuid, value)
        if uuid in self._ephemeral:
            record = self._ephemeral[uuid]
            self._ephemeral[uuid] = record.model_copy(update={"sealed_value": sealed})
            self._ephemeral_revision += 1
            return Change(definition=record.definition, revision=self._ephemeral_revision)
        for attempt in range(_RETRIES):
            entry = await self._store.get(_secret_key(uuid))
            if entry is None:
                raise no_secret_uuid(uuid_text)
            record = SecretRecord.model_validate_json(entry.value)
            updated = record.model_copy(update={"sealed_value": sealed})
            try:
                revision = await self._store.update(
                    _secret_key(uuid), updated.model_dump_json().encode(), entry.revision
                )
            except Conflict:
                await asyncio.sleep(backoff(attempt))
                continue
            return Change(definition=record.definition, revision=revision)
        raise VirtError(ErrorCode.OPERATION_FAILED, f"secret '{uuid}' kept changing", _D)

    async def get_value(self, uuid_text: str, *, internal: bool = False) -> bytes:
        """The value; refused for private secrets unless ``internal`` (libvirt's
        VIR_SECRET_GET_VALUE_INTERNAL_CALL)."""
        uuid = parse_uuid(uuid_text) or uuid_text
        found = await self._load(uuid)
        if found is None:
            raise no_secret_uuid(uuid_text)
        record = found[0]
        if record.definition.private and not internal:
            raise VirtError(ErrorCode.INVALID_SECRET, "secret is private", _D)
        if record.sealed_value is None:
            raise VirtError(ErrorCode.NO_SECRET, f"secret '{uuid}' does not have a value", _D)
        return self._cipher.open(uuid, record.sealed_value)


def encode_value(value: bytes) -> str:
    return base64.b64encode(value).decode()
