"""Every volume operation with libvirt's storage-driver rules: create, create-from
(clone), delete, wipe, resize, info, dumpxml and the name/key/path look-ups.

A creation first reserves the name in the pool's table, synchronously, so
that of concurrent requests exactly one gets it and the others get
``VIR_ERR_STORAGE_VOL_EXIST``; it is then recorded in the creation journal
until its ``Created`` event is stored, under a key the journal keeps: after
a crash, a creation whose event is stored stands and any other is removed,
so a volume exists exactly when its event does.
While a volume is built, the pool counts an async job and the volume is
``building``; while one is read or rewritten, it is ``in_use``; libvirt
refuses conflicting operations in both states.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

from services.storage.interface import Volume, VolumeUsers
from services.storage.pools.backends.base import CreateOptions
from services.storage.pools.changes import Announcer, StorageChanges
from services.storage.pools.confine import check_backing
from services.storage.pools.journal import CreationJournal
from services.storage.pools.objects import PoolObj, VolObj, list_json
from services.storage.pools.pool_secrets import SecretFiles
from services.storage.pools.pools import PoolManager
from shared.api import storage as api
from shared.api.storage import VolRef, VolumeUser, users_text
from shared.conf.storage_pool_util import sanitize_path
from shared.conf.storage_volume import (
    StorageVolumeDef,
    VolParseFlags,
    format_storage_volume,
    parse_storage_volume,
)
from shared.util.api import Empty, Encoded, to_json
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.events import MAX_AGE_SECONDS
from shared.util.ledger import Event

log = logging.getLogger(__name__)
_D = ErrorDomain.STORAGE
#: A creation journalled longer ago than this may have had its Created event
#: stored and expired (``MAX_AGE_SECONDS``, less an hour for clocks).
_UNKNOWABLE_AFTER = MAX_AGE_SECONDS - 3600


class VolumeEvents(Announcer, Protocol):
    """How volume changes become events (the service's ledger and metrics)."""

    def of(self, obj: PoolObj, vol: StorageVolumeDef, detail: str, extra: dict[str, Any]) -> Event:
        """The ``lifecycle`` event of ``vol`` with ``detail``."""


class _Undecided(VirtError):
    """A creation whose ``Created`` event may or may not be stored (the bus did
    not say): its journal record stays, for the next start to decide."""

    def __init__(self, name: str) -> None:
        super().__init__(
            ErrorCode.OPERATION_TIMEOUT,
            f"volume '{name}' was built, but the state store did not say whether its "
            "creation was recorded: the storage service decides when it next starts",
            _D,
        )


def in_use(name: str, users: list[VolumeUser]) -> VirtError:
    """libvirt's refusal of a change to a volume in use (its storage driver's
    "volume '%s' is still in use."), naming the domain disks that use it."""
    return VirtError(
        ErrorCode.OPERATION_INVALID, f"volume '{name}' is still in use by {users_text(users)}.", _D
    )


def volume_exists(name: str) -> VirtError:
    """libvirt's VIR_ERR_STORAGE_VOL_EXIST, worded as virsh prints it."""
    return VirtError(
        ErrorCode.STORAGE_VOL_EXIST, f"storage volume '{name}' exists already", _D, raw=True
    )


class VolumeManager:
    """The volumes of this host's active pools.  Its public coroutines are the
    volume endpoints of ``shared.api.storage``; it also keeps the ``Volumes``
    side of ``services.storage.interface`` for the block jobs."""

    def __init__(
        self,
        pools: PoolManager,
        journal: CreationJournal,
        changes: StorageChanges,
        events: VolumeEvents,
        users: VolumeUsers,
        secret_file: SecretFiles | None = None,
        backing_paths: tuple[str, ...] = (),
    ) -> None:
        self._pools = pools
        self._events = events
        self._backing_paths = backing_paths
        self._journal = journal
        self._changes = changes
        self._users = users
        self._secret_file = secret_file

    def users(self, obj: PoolObj, vol: StorageVolumeDef) -> list[VolumeUser]:
        """The domain disks using ``vol`` (from the disks half)."""
        return self._users.users(obj.name, vol.name, vol.target.path)

    def info_of(self, obj: PoolObj, vol: VolObj) -> Encoded[api.VolumeInfo]:
        """What is shown of a volume, with the disks using it, as a reply
        carries it: without users, the JSON kept with the volume."""
        users = self.users(obj, vol.definition)
        if users:
            return Encoded(to_json(obj.volume_info(vol, users)))
        return Encoded(obj.shown(vol).data)

    async def _check_backing(self, obj: PoolObj, vol: StorageVolumeDef) -> None:
        """A backing store must be a volume of a pool of this host, or lie under
        an administrator's ``backing_paths`` (a relative one is in ``obj``'s pool).
        Checked in a thread: links are resolved on every pool's file system."""
        if vol.backing_store is None:
            return
        path = vol.backing_store.path
        if not path.startswith("/") and "://" not in path:
            path = f"{(obj.definition.target.path if obj.definition.target else '')}/{path}"
        volumes = [
            v.definition.target.path
            for pool in self._pools.all()
            for v in pool.volumes.values()
            if v.definition.target.path and not v.building
        ]
        await asyncio.to_thread(check_backing, path, volumes, self._backing_paths)

    def check_unused(self, obj: PoolObj, vol: VolObj, force: bool) -> None:
        """Refuse to destroy data a domain disk uses, unless ``force``."""
        if force:
            return
        users = self.users(obj, vol.definition)
        if users:
            raise in_use(vol.name, users)

    # -- look-ups ------------------------------------------------------------------

    def find(self, ref: VolRef) -> tuple[PoolObj, VolObj]:
        """virStorageVolDefFromVol: the active pool and the volume of ``ref``."""
        obj = self._pools.by_name(ref.pool)
        obj.check_active()
        return obj, obj.volume(ref.name)

    def by_name(self, pool: str, name: str) -> tuple[PoolObj, VolObj]:
        return self.find(VolRef(pool=pool, name=name))

    def by_key(self, key: str) -> tuple[PoolObj, VolObj]:
        for obj in self._pools.all():
            if not obj.active:
                continue
            for vol in obj.volumes.values():
                if vol.definition.key == key:
                    return obj, vol
        raise VirtError(ErrorCode.NO_STORAGE_VOL, f"no storage vol with matching key {key}", _D)

    def by_path(self, path: str) -> tuple[PoolObj, VolObj]:
        clean = sanitize_path(path)
        for obj in self._pools.all():
            if not obj.active:
                continue
            for vol in obj.volumes.values():
                if vol.definition.target.path == clean:
                    return obj, vol
        shown = f"'{path}'" if path == clean else f"'{path}' ({clean})"
        raise VirtError(ErrorCode.NO_STORAGE_VOL, f"no storage vol with matching path {shown}", _D)

    async def refreshed(self, obj: PoolObj, vol: VolObj) -> StorageVolumeDef:
        """The volume re-read from its storage (libvirt's refreshVol before info/XML)."""
        backend = self._pools.backend(obj.definition.type)
        seen = await backend.refresh_volume(obj.definition, vol.definition, vol.seen)
        vol.definition, vol.seen = seen[0], seen
        return vol.definition

    # -- look-up endpoints ----------------------------------------------------------

    async def info(self, req: api.VolRequest) -> Encoded[api.VolumeInfo]:
        """virStorageVolGetInfo, re-read from the storage first."""
        obj, vol = self.find(req.vol)
        await self.refreshed(obj, vol)
        return self.info_of(obj, vol)

    async def dumpxml(self, req: api.VolRequest) -> api.XmlReply:
        """virStorageVolGetXMLDesc, re-read from the storage first."""
        obj, vol = self.find(req.vol)
        return api.XmlReply(
            xml=format_storage_volume(obj.definition, await self.refreshed(obj, vol))
        )

    async def lookup_name(self, req: api.VolNameRequest) -> Encoded[api.VolumeInfo]:
        """virStorageVolLookupByName."""
        return self.info_of(*self.by_name(req.pool, req.name))

    async def lookup_key(self, req: api.VolKeyRequest) -> Encoded[api.VolumeInfo]:
        """virStorageVolLookupByKey."""
        return self.info_of(*self.by_key(req.key))

    async def lookup_path(self, req: api.VolPathRequest) -> Encoded[api.VolumeInfo]:
        """virStorageVolLookupByPath."""
        return self.info_of(*self.by_path(req.path))

    async def list_volumes(self, req: api.VolListRequest) -> Encoded[api.VolListReply]:
        """virStoragePoolListAllVolumes with every volume's figures (``details``:
        each re-read first, as virsh's vol-list --details asks every volume's info)."""
        obj, listed = self._listed(req.pool)
        if req.details:
            for vol in listed:
                if not vol.building:
                    with contextlib.suppress(VirtError):
                        await self.refreshed(obj, vol)
        if self._users.any_users():
            parts = [self.info_of(obj, vol).data for vol in listed]
        else:
            # No disk uses any volume: each one's kept JSON as it is (a pool of
            # hundreds of volumes is listed without a users look-up or an
            # encoding per volume).
            parts = [obj.shown(vol).data for vol in listed]
        return Encoded(list_json(parts))

    async def list_brief(self, req: api.PoolRequest) -> Encoded[api.VolBriefListReply]:
        """virStoragePoolListAllVolumes as libvirt answers it: each volume's name
        and key, with its path; from memory."""
        obj, listed = self._listed(req.pool)
        return Encoded(list_json([obj.brief(vol) for vol in listed]))

    def _listed(self, pool: str) -> tuple[PoolObj, list[VolObj]]:
        """The active pool ``pool`` and its volumes, by name as virsh sorts them."""
        obj = self._pools.by_name(pool)
        obj.check_active()
        volumes = obj.volumes
        # The table is keyed by name: sorting its keys needs no Python key function.
        return obj, [volumes[name] for name in sorted(volumes, key=str.lower)]

    # -- the Volumes side of services.storage.interface -----------------------------

    @staticmethod
    def _volume(obj: PoolObj, vol: VolObj) -> Volume:
        d = vol.definition
        return Volume(obj.name, vol.name, d.target.path, d.type.value, d.target.format)

    def volume(self, pool: str, name: str) -> Volume:
        return self._volume(*self.by_name(pool, name))

    def volume_at(self, path: str) -> Volume:
        return self._volume(*self.by_path(path))

    async def create_volume(self, pool: str, xml: str) -> Volume:
        # The disks side builds the XML from the agent's inventory.
        return self._volume(*await self._create(pool, xml, False, disk_backing=True))

    async def delete_volume(self, pool: str, name: str) -> None:
        await self.delete(api.VolDeleteRequest(vol=VolRef(pool=pool, name=name), force=True))

    # -- creation ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _secrets(
        self,
        obj: PoolObj,
        vol: StorageVolumeDef,
        source: tuple[PoolObj, StorageVolumeDef] | None,
        options: CreateOptions,
    ) -> AsyncIterator[CreateOptions]:
        """``options`` with secret files for whichever of the volumes is encrypted,
        removed afterwards."""
        async with contextlib.AsyncExitStack() as stack:
            paths: list[str | None] = [None, None]
            for i, pair in enumerate([(obj, vol), source]):
                if pair is None or pair[1].target.encryption is None:
                    continue
                pool, volume = pair
                if self._secret_file is None:
                    raise VirtError(
                        ErrorCode.CONFIG_UNSUPPORTED,
                        "storage pool does not support encrypted volumes",
                        _D,
                    )
                paths[i] = await stack.enter_async_context(self._secret_file(pool.name, volume))
            yield dataclasses.replace(options, secret_path=paths[0], input_secret_path=paths[1])

    @contextlib.asynccontextmanager
    async def _reserve(
        self, obj: PoolObj, vol: StorageVolumeDef, event_key: str
    ) -> AsyncIterator[VolObj]:
        """Hold the name in the pool table and in the journal while the volume is
        built and its ``Created`` event (under ``event_key``) stored.

        The table entry is taken before the first await, so the check for an
        existing name and the reservation cannot interleave in this process.
        On failure the entry is dropped; on success it stays (no longer building).
        """
        if vol.name in obj.volumes:
            raise volume_exists(vol.name)
        reserved = VolObj(vol, building=True)
        obj.volumes[vol.name] = reserved
        obj.asyncjobs += 1
        try:
            if not self._journal.begin(obj.uuid, vol.name, vol.target.path, event_key):
                raise volume_exists(vol.name)
            decided = True
            try:
                yield reserved
            except _Undecided:
                decided = False
                raise
            finally:
                if decided:
                    self._journal.end(obj.uuid, vol.name)
        except BaseException:
            if obj.volumes.get(vol.name) is reserved:
                del obj.volumes[vol.name]
            raise
        finally:
            obj.asyncjobs -= 1
            reserved.building = False

    async def _finish(
        self, obj: PoolObj, reserved: VolObj, vol: StorageVolumeDef, key: str, extra: dict[str, Any]
    ) -> None:
        """Read back what was built and store its ``Created`` event; a volume that
        cannot be read, or whose event is not stored, is removed again.  When
        the bus cannot say whether the event is stored, the volume and its
        journal record stay for the next start to decide (``_Undecided``)."""
        backend = self._pools.backend(obj.definition.type)
        try:
            reserved.seen = await backend.refresh_volume(obj.definition, vol)
            reserved.definition = reserved.seen[0]
        except BaseException:
            with contextlib.suppress(VirtError):
                await backend.delete_volume(obj.definition, vol)
            raise
        self._pools.adjust_sizes(obj, reserved.definition.allocation)
        try:
            await self._event(obj, reserved.definition, "Created", extra, key)
        except BaseException as err:
            # The request fails (or was cancelled); the volume stays only when
            # its event was stored after all (an answer lost on the way).
            try:
                stored = await self._events.announced(key)
            except Exception as lookup:
                self._pools.adjust_sizes(obj, -reserved.definition.allocation)
                raise _Undecided(vol.name) from lookup
            if stored:
                if isinstance(err, Exception):
                    return
                raise
            self._pools.adjust_sizes(obj, -reserved.definition.allocation)
            with contextlib.suppress(VirtError):
                await backend.delete_volume(obj.definition, reserved.definition)
            raise

    async def _event(
        self,
        obj: PoolObj,
        vol: StorageVolumeDef,
        detail: str,
        extra: dict[str, Any],
        key: str | None = None,
    ) -> None:
        await self._events.announce(obj, self._events.of(obj, vol, detail, extra), key)

    async def create(self, req: api.VolCreateRequest) -> Encoded[api.VolumeInfo]:
        """virStorageVolCreateXML."""
        return self.info_of(*await self._create(req.pool, req.xml, req.prealloc_metadata))

    async def _create(
        self, pool: str, xml: str, prealloc_metadata: bool, *, disk_backing: bool = False
    ) -> tuple[PoolObj, VolObj]:
        """``disk_backing``: the XML's backing store is a domain disk's own backing
        image (a shallow block copy's new volume), taken from the agent's
        inventory rather than from a client."""
        obj = self._pools.by_name(pool)
        obj.check_active()
        backend = self._pools.backend(obj.definition.type)
        vol = parse_storage_volume(xml, obj.definition, VolParseFlags.OPT_CAPACITY)
        if not vol.capacity and not backend.builds_volumes:
            raise VirtError(
                ErrorCode.NO_SUPPORT, "volume capacity required for this storage pool", _D
            )
        if vol.name in obj.volumes:
            raise volume_exists(vol.name)
        vol = await backend.define_volume(obj.definition, vol.model_copy(update={"key": None}))
        if not disk_backing:
            await self._check_backing(obj, vol)
        key = uuid.uuid4().hex
        async with self._reserve(obj, vol, key) as reserved:
            flags = CreateOptions(prealloc_metadata=prealloc_metadata)
            async with self._secrets(obj, vol, None, flags) as options:
                await backend.build_volume(obj.definition, vol, options)
            await self._finish(obj, reserved, vol, key, {})
        return obj, reserved

    async def create_from(self, req: api.VolCreateFromRequest) -> Encoded[api.VolumeInfo]:
        """virStorageVolCreateXMLFrom: a new volume holding a copy of ``source``."""
        pool, xml, source = req.pool, req.xml, req.source
        prealloc_metadata, reflink = req.prealloc_metadata, req.reflink
        obj = self._pools.by_name(pool)
        src_pool = obj if source.pool == obj.name else self._pools.by_name(source.pool)
        obj.check_active()
        src_pool.check_active()
        backend = self._pools.backend(obj.definition.type)
        src = src_pool.volume(source.name)
        vol = parse_storage_volume(xml, obj.definition, VolParseFlags.NO_CAPACITY)
        if vol.name in obj.volumes:
            raise VirtError(
                ErrorCode.INTERNAL_ERROR, f"storage volume name '{vol.name}' already in use.", _D
            )
        src.check_built()
        src_def = await self.refreshed(src_pool, src)
        capacity = max(vol.capacity, src_def.capacity)
        allocation = vol.allocation if vol.has_allocation else capacity
        vol = vol.model_copy(update={"capacity": capacity, "allocation": allocation, "key": None})
        vol = await backend.define_volume(obj.definition, vol)
        await self._check_backing(obj, vol)
        key = uuid.uuid4().hex
        async with self._reserve(obj, vol, key) as reserved:
            src.in_use += 1
            if src_pool is not obj:
                src_pool.asyncjobs += 1
            try:
                flags = CreateOptions(prealloc_metadata=prealloc_metadata, reflink=reflink)
                async with self._secrets(obj, vol, (src_pool, src_def), flags) as options:
                    await backend.build_volume_from(obj.definition, vol, src_def, options)
            finally:
                src.in_use -= 1
                if src_pool is not obj:
                    src_pool.asyncjobs -= 1
            await self._finish(obj, reserved, vol, key, {"source": f"{src_pool.name}/{src.name}"})
        return self.info_of(obj, reserved)

    # -- changes -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _busy(self, obj: PoolObj, vol: VolObj) -> AsyncIterator[None]:
        """Mark ``vol`` in use (and its pool busy) for the length of a job."""
        vol.check_idle()
        vol.in_use += 1
        obj.asyncjobs += 1
        try:
            yield
        finally:
            vol.in_use -= 1
            obj.asyncjobs -= 1

    async def delete(self, req: api.VolDeleteRequest) -> Empty:
        """virStorageVolDelete (``delete_snapshots``: VIR_STORAGE_VOL_DELETE_WITH_SNAPSHOTS);
        a volume a domain disk uses only with ``force``."""
        obj, vol = self.find(req.vol)
        backend = self._pools.backend(obj.definition.type)
        vol.check_idle()
        self.check_unused(obj, vol, req.force)
        # The Deleted event is journalled with the deletion: once the storage is
        # gone, the event is stored whatever happens next (here, or by the next
        # start, or by the periodic check when the state store refused it).
        deleted = self._events.of(obj, vol.definition, "Deleted", {})
        path = vol.definition.target.path
        async with (
            self._busy(obj, vol),
            self._changes.journalled(obj.uuid, vol.name, path, deleted, deletion=True) as key,
        ):
            await backend.delete_volume(
                obj.definition, vol.definition, with_snapshots=req.delete_snapshots
            )
        if obj.volumes.get(vol.name) is vol:
            del obj.volumes[vol.name]
        self._pools.adjust_sizes(obj, -vol.definition.allocation)
        await self._changes.announce(obj, vol.name, key, deleted)
        return Empty()

    async def wipe(self, req: api.VolWipeRequest) -> Empty:
        """virStorageVolWipePattern; a volume a domain disk uses only with ``force``."""
        obj, vol = self.find(req.vol)
        backend = self._pools.backend(obj.definition.type)
        vol.check_idle()
        self.check_unused(obj, vol, req.force)
        event = self._events.of(obj, vol.definition, "Wiped", {"algorithm": req.algorithm.value})
        path = vol.definition.target.path
        async with self._busy(obj, vol):
            async with self._changes.journalled(obj.uuid, vol.name, path, event) as key:
                await backend.wipe_volume(obj.definition, vol.definition, req.algorithm)
            with contextlib.suppress(VirtError):
                await self.refreshed(obj, vol)
        await self._changes.announce(obj, vol.name, key, event)
        return Empty()

    async def resize(self, req: api.VolResizeRequest) -> Encoded[api.VolumeInfo]:
        """virStorageVolResize, with libvirt's checks in its order; shrinking a volume
        a domain disk uses only with ``force`` (growing it is harmless)."""
        capacity, allocate, delta, shrink = req.capacity, req.allocate, req.delta, req.shrink
        obj, vol = self.find(req.vol)
        backend = self._pools.backend(obj.definition.type)
        vol.check_idle()
        current = vol.definition
        if delta:
            if shrink:
                target = current.capacity - min(capacity, current.capacity)
            else:
                target = current.capacity + capacity
        else:
            target = capacity
        if target < current.allocation:
            raise VirtError(
                ErrorCode.INVALID_ARG, "can't shrink capacity below existing allocation", _D
            )
        if target < current.capacity and not shrink:
            raise VirtError(
                ErrorCode.INVALID_ARG,
                "Can't shrink capacity below current capacity unless shrink flag "
                "explicitly specified",
                _D,
            )
        if target < current.capacity:
            self.check_unused(obj, vol, req.force)
        grow = target - current.allocation if allocate else 0
        if grow > obj.definition.available:
            raise VirtError(ErrorCode.OPERATION_FAILED, "Not enough space left in storage pool", _D)
        event = self._events.of(obj, current, "Resized", {"capacity": target})
        async with self._busy(obj, vol):
            async with self._changes.journalled(
                obj.uuid, vol.name, current.target.path, event
            ) as key:
                await backend.resize_volume(obj.definition, current, target, allocate)
            with contextlib.suppress(VirtError):
                await self.refreshed(obj, vol)
        if allocate:
            self._pools.adjust_sizes(obj, grow)
        await self._changes.announce(obj, vol.name, key, event)
        return self.info_of(obj, vol)

    async def begin_transfer(self, ref: VolRef, *, upload: bool) -> tuple[PoolObj, VolObj, str]:
        """Hold a volume for an upload or a download; its file, confined to the pool.
        Every successful call is matched by ``end_transfer``."""
        obj, vol = self.find(ref)
        backend = self._pools.backend(obj.definition.type)
        confined = backend.upload_target if upload else backend.download_source
        path = await confined(obj.definition, vol.definition)
        # Held from here on, with no wait in between; the volume may have gone
        # or been made again meanwhile (its path is taken to be the same, the
        # pool's folder and its name: it is not compared).
        obj, vol = self.find(ref)
        if upload:
            vol.check_idle()
            event = self._events.of(obj, vol.definition, "Uploaded", {})
            key = self._changes.begin(obj.uuid, vol.name, vol.definition.target.path, event)
            vol.uploading = key, event
        else:
            vol.check_built()
        vol.in_use += 1
        obj.asyncjobs += 1
        return obj, vol, path

    async def end_transfer(self, obj: PoolObj, vol: VolObj, *, uploaded: bool) -> None:
        """Release the volume; after a completed upload, re-read it and say so
        (an upload that did not complete has no event, as a failed change)."""
        vol.in_use -= 1
        obj.asyncjobs -= 1
        change, vol.uploading = vol.uploading, None
        if change is None:
            return
        key, event = change
        if not uploaded:
            self._changes.failed(obj.uuid, vol.name, key)
            return
        self._changes.done(obj.uuid, vol.name, key)
        if obj.volumes.get(vol.name) is vol:
            with contextlib.suppress(VirtError):
                await self.refreshed(obj, vol)
        await self._changes.announce(obj, vol.name, key, event)

    # -- recovery ------------------------------------------------------------------

    async def clean_unfinished(self) -> int:
        """Settle the changes a crash interrupted: a creation whose ``Created``
        event is stored had completed and stands, what any other left is
        removed; a deletion whose storage went gets its ``Deleted`` event; a
        content change gets its event, with ``interrupted`` unless it was
        recorded as done.  How many creations were removed."""
        removed = 0
        for change in self._journal.unfinished():
            if change.deleted is not None or change.changed is not None:
                await self._changes.settle(change)
                continue
            if change.event_key is not None and await self._events.announced(change.event_key):
                log.warning(
                    "volume %s of pool %s was created before an interruption",
                    change.name,
                    change.pool_uuid,
                )
            elif time.time() - change.started > _UNKNOWABLE_AFTER:
                # Its Created event, if it was stored, has expired with the
                # event retention: whether the creation completed can no
                # longer be told, and removing a volume a client was told
                # exists would lose data.  It stays.
                log.warning(
                    "kept volume %s of pool %s: its creation was interrupted more than"
                    " the event retention ago, and whether it completed is unknown",
                    change.name,
                    change.pool_uuid,
                )
            else:
                if change.path:
                    await asyncio.to_thread(_remove_partial, change.path)
                log.warning("removed half-made volume %s of pool %s", change.name, change.pool_uuid)
                removed += 1
            self._journal.end(change.pool_uuid, change.name)
        return removed

    async def settle_events(self) -> None:
        """Store the events the state store refused when their changes were made
        (called periodically; ``StorageChanges.settle_refused``)."""
        await self._changes.settle_refused(self._busy_name)

    def _busy_name(self, pool_uuid: str, name: str) -> bool:
        """Whether a request of this process is changing ``name`` right now."""
        obj = self._pools.pools.get(pool_uuid)
        vol = obj.volumes.get(name) if obj is not None else None
        return vol is not None and (vol.building or vol.in_use > 0)


def _remove_partial(path: str) -> None:
    """Remove a half-made volume file; never a link, a folder or a device."""
    if os.path.isfile(path) and not os.path.islink(path):
        with contextlib.suppress(OSError):
            os.unlink(path)
