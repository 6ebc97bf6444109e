"""The secrets that exist: persistent ones in the service's ledger, ephemeral ones in memory.

Keys of the ``secret`` ledger (``shared.util.ledger``): a persistent secret is
``secret.<usage type>.<usage id token>.<uuid>`` -> ``SecretRecord`` JSON, the
definition and the value sealed with the master key (usage ``none``: the id
token is ``_``).  The usage is part of the key so that one compare-and-set
settles a usage: a define checks the last sequence of every key of its usage
(``secret.<type>.<id>.*``), so of two concurrent defines of different
secrets with one usage exactly one is stored (libvirt refuses a second
secret for a usage in use), and each change is one message.

Every change and its event are that one ledger message; reads come from the
ledger's memory.  Ephemeral secrets (libvirt: never written to disk) are kept
in this process's memory only and are gone after a restart; their events are
stored as event-only ledger messages, so their ids are as unique as any.  The
registry is the one place that changes secrets; it raises libvirt's errors
for the cases libvirt refuses.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel

from services.secret.cipher import ValueCipher
from shared.conf.secret import SecretDef, SecretUsageType
from shared.conf.uuid import generate_uuid, parse_uuid
from shared.util.api import to_json
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.ledger import Conflict, Event, Ledger, Record
from shared.util.state import backoff
from shared.util.subjects import token

log = logging.getLogger(__name__)

_D = ErrorDomain.SECRET
_RETRIES = 60
_PREFIX = "secret."
T = TypeVar("T")


class SecretRecord(BaseModel):
    """A secret as stored: its definition and its value sealed with the master key."""

    definition: SecretDef
    sealed_value: str | None = None


def _usage_scope(d: SecretDef) -> str:
    """The key prefix shared by every secret with ``d``'s usage (ends with ``.``)."""
    if d.usage_type is SecretUsageType.NONE or d.usage_id is None:
        return f"{_PREFIX}none._."
    return f"{_PREFIX}{d.usage_type.value}.{token(d.usage_id)}."


def _secret_key(d: SecretDef) -> str:
    assert d.uuid is not None
    return _usage_scope(d) + d.uuid


def no_secret_uuid(uuid: str) -> VirtError:
    return VirtError(ErrorCode.NO_SECRET, f"no secret with matching uuid '{uuid}'", _D)


def _usage_clash(holder: str, usage_id: str | None) -> VirtError:
    return VirtError(
        ErrorCode.INTERNAL_ERROR,
        f"a secret with UUID {holder} already defined for use with {usage_id}",
        _D,
    )


def lifecycle(d: SecretDef, detail: str) -> Event:
    """A secret's lifecycle event (libvirt's VIR_SECRET_EVENT_DEFINED, ...)."""
    assert d.uuid is not None
    return Event(
        "secret",
        d.uuid,
        "lifecycle",
        detail,
        extra={"usage_type": d.usage_type.value, "usage_id": d.usage_id},
    )


def value_changed(d: SecretDef) -> Event:
    assert d.uuid is not None
    return Event("secret", d.uuid, "value-changed")


class Change(BaseModel):
    """The outcome of a define: the definition, and the one it replaced (None
    when the secret is new)."""

    definition: SecretDef
    previous: SecretDef | None = None


class SecretRegistry:
    """Every operation on secrets, safe under concurrent requests and replicas."""

    def __init__(self, ledger: Ledger, cipher: ValueCipher) -> None:
        self._ledger = ledger
        self._cipher = cipher
        #: uuid -> (key, record) of persistent secrets, kept from the ledger's changes.
        self._persistent: dict[str, tuple[str, SecretRecord]] = {}
        #: (usage type, usage id) -> uuid of the persistent secret holding it.
        self._usages: dict[tuple[SecretUsageType, str], str] = {}
        self._ephemeral: dict[str, SecretRecord] = {}
        # Ephemeral secrets exist only here; one lock keeps their usage check
        # and insertion atomic within this process.
        self._ephemeral_lock = asyncio.Lock()
        self._listeners: list[Callable[[], None]] = []
        #: key -> (value, record) of this process's writes under way: the
        #: ledger hands each write back to ``_on_change`` as bytes, and the
        #: record need not be parsed again from them.
        self._writing: dict[str, tuple[bytes, SecretRecord]] = {}
        for record in ledger.items(_PREFIX):
            self._on_change(record.key, record)
        ledger.on_change(self._on_change)

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after any secret changed (metrics)."""
        self._listeners.append(listener)

    def _on_change(self, key: str, record: Record | None) -> None:
        if not key.startswith(_PREFIX):
            return
        uuid = key.rsplit(".", 1)[1]
        current = self._persistent.get(uuid)
        if current is not None and current[0] == key:
            del self._persistent[uuid]
            d = current[1].definition
            if d.usage_id is not None and self._usages.get((d.usage_type, d.usage_id)) == uuid:
                del self._usages[(d.usage_type, d.usage_id)]
        stored = None
        if record is not None:
            mine = self._writing.get(key)
            if mine is not None and mine[0] == record.value:
                stored = mine[1]
            else:
                stored = self._ledger.decode(record, SecretRecord.model_validate_json)
        if stored is not None:
            self._persistent[uuid] = (key, stored)
            d = stored.definition
            if d.usage_type is not SecretUsageType.NONE and d.usage_id is not None:
                self._usages[(d.usage_type, d.usage_id)] = uuid
        for listener in self._listeners:
            listener()

    def counts(self) -> tuple[int, int]:
        """(persistent, ephemeral) secrets known here."""
        return len(self._persistent), len(self._ephemeral)

    # -- look-ups (memory) ---------------------------------------------------------

    def _uuid(self, text: str) -> str:
        """The canonical UUID of ``text``; a UUID already in canonical form (the
        usual case: the one define returned) is found without parsing it."""
        if text in self._persistent or text in self._ephemeral:
            return text
        return parse_uuid(text) or text

    def _find(self, uuid: str) -> SecretRecord | None:
        found = self._persistent.get(uuid)
        if found is not None:
            return found[1]
        return self._ephemeral.get(uuid)

    def get(self, uuid_text: str) -> SecretDef:
        """The definition of a secret; ``VIR_ERR_NO_SECRET`` when there is none."""
        uuid = self._uuid(uuid_text)
        found = self._find(uuid)
        if found is None:
            raise no_secret_uuid(uuid_text)
        return found.definition

    def by_usage(self, usage_type: SecretUsageType, usage_id: str) -> SecretDef:
        holder = self._usages.get((usage_type, usage_id))
        if holder is not None:
            return self._persistent[holder][1].definition
        for record in self._ephemeral.values():
            d = record.definition
            if d.usage_type is usage_type and d.usage_id == usage_id:
                return d
        raise VirtError(ErrorCode.NO_SECRET, f"no secret with matching usage '{usage_id}'", _D)

    def _all_records(self) -> list[SecretRecord]:
        return [r for _, r in self._persistent.values()] + list(self._ephemeral.values())

    def all(self) -> list[SecretDef]:
        return [r.definition for r in self._all_records()]

    def _holder(self, new: SecretDef) -> str | None:
        """The UUID of another secret holding ``new``'s usage, if any."""
        if new.usage_type is SecretUsageType.NONE or new.usage_id is None:
            return None
        holder = self._usages.get((new.usage_type, new.usage_id))
        if holder is not None and holder != new.uuid:
            return holder
        for record in self._ephemeral.values():
            d = record.definition
            if d.uuid != new.uuid and d.usage_type is new.usage_type and d.usage_id == new.usage_id:
                return d.uuid
        return None

    # -- define / undefine ---------------------------------------------------------

    async def define(self, new: SecretDef) -> Change:
        """Add or update a secret as virSecretDefineXML does."""
        uuid = new.uuid or generate_uuid()
        new = new.model_copy(update={"uuid": uuid})
        if new.ephemeral:
            async with self._ephemeral_lock:
                return await self._retry(lambda: self._define_ephemeral(new), uuid)
        return await self._retry(lambda: self._define_persistent(new), uuid)

    async def _retry(self, attempt: Callable[[], Awaitable[T]], uuid: str) -> T:
        """Run ``attempt`` until it does not lose a compare-and-set (it decides
        again on the ledger's fresh view each time)."""
        for n in range(_RETRIES):
            try:
                return await attempt()
            except Conflict:
                await asyncio.sleep(backoff(n))
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

    async def _write(
        self, d: SecretDef, record: SecretRecord | None, events: Sequence[Event]
    ) -> None:
        # Secrets without a usage need not exclude each other: compare the key only.
        siblings = d.usage_type is not SecretUsageType.NONE and d.usage_id is not None
        await self._store(_secret_key(d), record, events, siblings=siblings)

    async def _store(
        self,
        key: str,
        record: SecretRecord | None,
        events: Sequence[Event],
        *,
        siblings: bool = False,
    ) -> None:
        """One ledger write of ``record`` (None: delete) under ``key``."""
        what = f"secret '{key.rsplit('.', 1)[1]}'"
        if record is None:
            await self._ledger.write(key, None, events, siblings=siblings, what=what)
            return
        value = to_json(record)
        self._writing[key] = (value, record)
        try:
            await self._ledger.write(key, value, events, siblings=siblings, what=what)
        finally:
            if self._writing.get(key, (None,))[0] is value:
                del self._writing[key]

    async def _define_persistent(self, new: SecretDef) -> Change:
        assert new.uuid is not None
        stored = self._persistent.get(new.uuid)
        carried = self._ephemeral.get(new.uuid)
        old = stored[1] if stored else carried
        if old is not None:
            self._check_redefine(old.definition, new)
        else:
            holder = self._holder(new)
            if holder is not None:
                raise _usage_clash(holder, new.usage_id)
        record = SecretRecord(definition=new, sealed_value=old.sealed_value if old else None)
        await self._write(new, record, [lifecycle(new, "Defined")])
        self._ephemeral.pop(new.uuid, None)
        return Change(definition=new, previous=old.definition if old else None)

    async def _define_ephemeral(self, new: SecretDef) -> Change:
        assert new.uuid is not None
        stored = self._persistent.get(new.uuid)
        old = self._ephemeral.get(new.uuid) or (stored[1] if stored else None)
        if old is not None:
            self._check_redefine(old.definition, new)
        else:
            holder = self._holder(new)
            if holder is not None:
                raise _usage_clash(holder, new.usage_id)
        event = lifecycle(new, "Defined")
        if stored is not None:
            # Turning a persistent secret ephemeral: libvirt deletes its config.
            await self._write(stored[1].definition, None, [event])
        else:
            await self._ledger.announce([event], what=f"secret '{new.uuid}'")
        self._ephemeral[new.uuid] = SecretRecord(
            definition=new, sealed_value=old.sealed_value if old else None
        )
        for listener in self._listeners:
            listener()
        return Change(definition=new, previous=old.definition if old else None)

    async def undefine(self, uuid_text: str) -> SecretDef:
        uuid = self._uuid(uuid_text)
        async with self._ephemeral_lock:
            record = self._ephemeral.get(uuid)
            if record is not None:
                await self._ledger.announce(
                    [lifecycle(record.definition, "Undefined")], what=f"secret '{uuid}'"
                )
                del self._ephemeral[uuid]
                for listener in self._listeners:
                    listener()
                return record.definition

        async def attempt() -> SecretDef:
            stored = self._persistent.get(uuid)
            if stored is None:
                raise no_secret_uuid(uuid_text)
            d = stored[1].definition
            await self._store(stored[0], None, [lifecycle(d, "Undefined")])
            return d

        return await self._retry(attempt, uuid)

    # -- values --------------------------------------------------------------------

    async def set_value(self, uuid_text: str, value: bytes) -> None:
        uuid = self._uuid(uuid_text)
        sealed = self._cipher.seal(uuid, value)
        async with self._ephemeral_lock:
            record = self._ephemeral.get(uuid)
            if record is not None:
                await self._ledger.announce(
                    [value_changed(record.definition)], what=f"secret '{uuid}'"
                )
                self._ephemeral[uuid] = record.model_copy(update={"sealed_value": sealed})
                return

        async def attempt() -> None:
            stored = self._persistent.get(uuid)
            if stored is None:
                raise no_secret_uuid(uuid_text)
            updated = stored[1].model_copy(update={"sealed_value": sealed})
            await self._store(stored[0], updated, [value_changed(updated.definition)])

        await self._retry(attempt, uuid)

    def get_value(self, uuid_text: str, *, internal: bool = False) -> bytes:
        """The value; refused for private secrets unless ``internal`` (libvirt's
        VIR_SECRET_GET_VALUE_INTERNAL_CALL)."""
        uuid = self._uuid(uuid_text)
        record = self._find(uuid)
        if record is None:
            raise no_secret_uuid(uuid_text)
        if record.definition.private and not internal:
            raise VirtError(ErrorCode.INVALID_SECRET, "secret is private", _D)
        if record.sealed_value is None:
            raise VirtError(ErrorCode.NO_SECRET, f"secret '{uuid}' does not have a value", _D)
        return self._cipher.open(uuid, record.sealed_value)


def encode_value(value: bytes) -> str:
    return base64.b64encode(value).decode()
