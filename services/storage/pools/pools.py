"""Every pool operation with libvirt's storage-driver rules (storage_driver.c,
virstorageobj.c): define, create, build, start, destroy, delete, undefine,
autostart, refresh, look-ups and the reconciliation on start.

``PoolManager`` owns the ``PoolObj`` table of this host and is the only
code that changes it; each change is one ledger write, its event with it.
A build or a deletion changes the storage only: it is journalled with its
event (``StorageChanges``).
A pool's ``lock`` serialises its state changes; volume jobs run outside it
and are counted in ``asyncjobs``, as libvirt does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from services.storage.pools.backends import BACKENDS
from services.storage.pools.backends.base import Backend
from services.storage.pools.capabilities import format_pool_capabilities
from services.storage.pools.changes import StorageChanges
from services.storage.pools.journal import POOL
from services.storage.pools.objects import PoolObj, VolObj
from services.storage.pools.pool_secrets import PoolSecrets
from services.storage.pools.registry import PoolRecord, StorageRegistry
from services.storage.pools.runner import CommandRunner
from shared.api import storage as api
from shared.api.storage import BuildMode
from shared.conf.storage_pool import StoragePoolDef, format_storage_pool, parse_storage_pool
from shared.conf.storage_pool_types import POOL_TYPES, PoolType, SourceMatch
from shared.conf.uuid import parse_uuid
from shared.util.api import Empty
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.ledger import Event

log = logging.getLogger(__name__)
_D = ErrorDomain.STORAGE

#: (pool, virsh event name, detail): published after each change.
PoolEvent = Callable[[PoolObj, str, str | None], Awaitable[None]]
#: A lifecycle change a record write announces: (event, detail).
Change = tuple[str, str | None]
DEFINED: Change = ("lifecycle", "Defined")
STARTED: Change = ("lifecycle", "Started")
STOPPED: Change = ("lifecycle", "Stopped")
UNDEFINED: Change = ("lifecycle", "Undefined")


def _dir_match(a: StoragePoolDef, b: StoragePoolDef) -> bool:
    if a.type is PoolType.DIR:
        return a.target is not None and b.target is not None and a.target.path == b.target.path
    hosts_a = {h.name for h in a.source.hosts}
    return a.source.dir == b.source.dir and bool(hosts_a & {h.name for h in b.source.hosts})


def _device_match(a: StoragePoolDef, b: StoragePoolDef) -> bool:
    return bool({d.path for d in a.source.devices} & {d.path for d in b.source.devices})


def sources_clash(a: StoragePoolDef, b: StoragePoolDef) -> bool:
    """Whether two pools use the same storage (virStoragePoolObjSourceFindDuplicate)."""
    match = POOL_TYPES[a.type].source_match
    if match is SourceMatch.DEVICE:
        return POOL_TYPES[b.type].source_match is match and _device_match(a, b)
    if a.type is not b.type:
        return False
    if match is SourceMatch.DIR:
        return _dir_match(a, b)
    if match is SourceMatch.ISCSI:
        return _device_match(a, b) and a.source.hosts == b.source.hosts
    if match is SourceMatch.NAME:
        return a.source.name == b.source.name
    return False


class PoolManager:
    """The pools of one host."""

    def __init__(
        self,
        registry: StorageRegistry,
        runner: CommandRunner,
        secrets: PoolSecrets,
        changes: StorageChanges,
        on_event: PoolEvent,
        describe: Callable[[PoolObj, str, str | None], Event],
        changed: Callable[[], None],
    ) -> None:
        """``changes`` journals a build or a deletion with its event;
        ``on_event`` stores an event that no change carries; ``describe``
        gives the event a record change carries in the same write, ``changed``
        is told after such a write."""
        self._registry = registry
        self._changes = changes
        self._describe = describe
        self._changed = changed
        self._backends: dict[PoolType, Backend] = {
            t: cls(runner, secrets) for t, cls in BACKENDS.items()
        }
        self._on_event = on_event
        self.pools: dict[str, PoolObj] = {}

    # -- look-ups ------------------------------------------------------------------

    def backend(self, pool_type: PoolType) -> Backend:
        """The backend of ``pool_type``; libvirt's error when the host has none."""
        backend = self._backends.get(pool_type)
        if backend is None:
            number = list(PoolType).index(pool_type)
            raise VirtError(
                ErrorCode.INTERNAL_ERROR,
                f"missing backend for pool type {number} ({pool_type.value})",
                _D,
            )
        return backend

    @property
    def supported(self) -> list[PoolType]:
        return list(self._backends)

    def by_name(self, name: str) -> PoolObj:
        for obj in self.pools.values():
            if obj.name == name:
                return obj
        raise VirtError(
            ErrorCode.NO_STORAGE_POOL, f"no storage pool with matching name '{name}'", _D
        )

    def by_uuid(self, text: str) -> PoolObj:
        uuid = parse_uuid(text) or text
        obj = self.pools.get(uuid)
        if obj is None:
            raise VirtError(
                ErrorCode.NO_STORAGE_POOL, f"no storage pool with matching uuid '{text}'", _D
            )
        return obj

    def all(self) -> list[PoolObj]:
        return sorted(self.pools.values(), key=lambda o: o.name.lower())

    # -- look-up endpoints ----------------------------------------------------------

    async def info(self, req: api.PoolRequest) -> api.PoolInfo:
        """virStoragePoolGetInfo."""
        return self.by_name(req.pool).info()

    async def lookup_uuid(self, req: api.PoolUuidRequest) -> api.PoolInfo:
        """virStoragePoolLookupByUUID."""
        return self.by_uuid(req.uuid).info()

    async def lookup_volume(self, req: api.VolRequest) -> api.PoolInfo:
        """virStoragePoolLookupByVolume."""
        return self.by_name(req.vol.pool).info()

    async def list_pools(self, req: api.PoolListRequest) -> api.PoolListReply:
        """virConnectListAllStoragePools with its filters."""
        pools = [
            obj.info()
            for obj in self.all()
            if (req.active is None or obj.active == req.active)
            and (req.persistent is None or obj.persistent == req.persistent)
            and (req.autostart is None or obj.autostart == req.autostart)
            and (not req.types or obj.definition.type.value in req.types)
        ]
        return api.PoolListReply(pools=pools)

    async def dumpxml(self, req: api.PoolDumpXmlRequest) -> api.XmlReply:
        """virStoragePoolGetXMLDesc (``inactive``: the definition the next start uses)."""
        obj = self.by_name(req.pool)
        d = obj.new_definition if req.inactive and obj.new_definition else obj.definition
        return api.XmlReply(xml=format_storage_pool(d))

    async def capabilities(self, _: Empty) -> api.XmlReply:
        """virConnectGetStoragePoolCapabilities."""
        return api.XmlReply(xml=format_pool_capabilities(self.supported))

    # -- persistence ---------------------------------------------------------------

    def _record(self, obj: PoolObj) -> PoolRecord:
        return PoolRecord(
            xml=format_storage_pool(obj.definition),
            new_xml=format_storage_pool(obj.new_definition) if obj.new_definition else None,
            persistent=obj.persistent,
            active=obj.active,
            autostart=obj.autostart,
        )

    async def _save(self, obj: PoolObj, change: Change | None = None) -> None:
        """Store the pool's record, with the event of ``change`` in the same write."""
        events = [self._describe(obj, *change)] if change else []
        obj.revision = await self._registry.save_pool(
            obj.uuid, self._record(obj), obj.revision, events
        )
        if change:
            self._changed()

    async def _forget(self, obj: PoolObj, change: Change | None = None) -> None:
        if obj.revision is not None:
            events = [self._describe(obj, *change)] if change else []
            await self._registry.delete_pool(obj.uuid, obj.revision, events)
            if change:
                self._changed()
        elif change:
            await self._on_event(obj, *change)  # never stored: the event alone
        self.pools.pop(obj.uuid, None)

    async def _update_inactive(self, obj: PoolObj, change: Change | None = None) -> None:
        """virStoragePoolUpdateInactive: a transient pool goes, a pending definition applies."""
        obj.volumes.clear()
        if not obj.persistent:
            await self._forget(obj, change)
            return
        if obj.new_definition is not None:
            obj.definition, obj.new_definition = obj.new_definition, None
        await self._save(obj, change)

    # -- adding (define / create) ------------------------------------------------------

    def _check_duplicate(self, new: StoragePoolDef, check_active: bool) -> PoolObj | None:
        """virStoragePoolObjIsDuplicate: the existing pool of this UUID, or None."""
        obj = self.pools.get(new.uuid)
        if obj is not None:
            if obj.name != new.name:
                raise VirtError(
                    ErrorCode.OPERATION_FAILED,
                    f"pool '{obj.name}' is already defined with uuid {obj.uuid}",
                    _D,
                )
            if check_active:
                if obj.active:
                    raise VirtError(
                        ErrorCode.OPERATION_INVALID, f"pool is already active as '{obj.name}'", _D
                    )
                obj.check_not_starting()
            return obj
        for other in self.pools.values():
            if other.name == new.name:
                raise VirtError(
                    ErrorCode.OPERATION_FAILED,
                    f"pool '{new.name}' already exists with uuid {other.uuid}",
                    _D,
                )
        return None

    def _check_source(self, new: StoragePoolDef) -> None:
        for other in self.pools.values():
            if other.uuid != new.uuid and sources_clash(other.definition, new):
                raise VirtError(
                    ErrorCode.OPERATION_FAILED,
                    f"Storage source conflict with pool: '{other.name}'",
                    _D,
                )

    def _parse(self, xml: str) -> StoragePoolDef:
        new = parse_storage_pool(xml)
        if "\n" in new.name:
            raise VirtError(ErrorCode.XML_DETAIL, "invalid char in name: 0x0a", _D)
        self.backend(new.type)
        return new

    async def define(self, req: api.PoolXmlRequest) -> api.PoolInfo:
        """virStoragePoolDefineXML: add a persistent pool or replace its definition."""
        new = self._parse(req.xml)
        obj = self._check_duplicate(new, check_active=False)
        self._check_source(new)
        if obj is None:
            obj = PoolObj(definition=new, persistent=True)
            self.pools[new.uuid] = obj
            try:
                await self._save(obj, DEFINED)
            except BaseException:
                self.pools.pop(new.uuid, None)
                raise
        else:
            async with obj.lock:
                if obj.active:
                    obj.new_definition = new
                else:
                    obj.definition = new
                obj.persistent = True
                await self._save(obj, DEFINED)
        return obj.info()

    async def create(self, req: api.PoolXmlRequest) -> api.PoolInfo:
        """virStoragePoolCreateXML: start a transient pool (or a defined inactive one)."""
        new = self._parse(req.xml)
        obj = self._check_duplicate(new, check_active=True)
        self._check_source(new)
        if obj is None:
            obj = PoolObj(definition=new, persistent=False)
            self.pools[new.uuid] = obj
        else:
            obj.new_definition = obj.definition
            obj.definition = new
        async with obj.lock:
            await self._start_locked(obj, req.build)
        return obj.info()

    # -- lifecycle -----------------------------------------------------------------

    async def _start_locked(self, obj: PoolObj, build: BuildMode) -> None:
        backend = self.backend(obj.definition.type)
        obj.starting = True
        try:
            if build is not BuildMode.NONE:
                await backend.build(obj.definition, build)
            await backend.start(obj.definition)
            try:
                await self._refresh_locked(obj, backend)
            except BaseException:
                await self._stop_quietly(obj, backend)
                raise
            obj.active = True
            await self._save(obj, STARTED)
        except BaseException:
            obj.active = False
            await self._update_inactive(obj)
            raise
        finally:
            obj.starting = False

    async def _stop_quietly(self, obj: PoolObj, backend: Backend) -> None:
        try:
            await backend.stop(obj.definition)
        except VirtError as err:
            log.warning("stopping pool %s after a failed refresh: %s", obj.name, err)

    async def start(self, req: api.PoolBuildRequest) -> Empty:
        """virStoragePoolCreate (pool-start)."""
        obj = self.by_name(req.pool)
        async with obj.lock:
            self.backend(obj.definition.type)
            obj.check_inactive()
            obj.check_not_starting()
            await self._start_locked(obj, req.build)
        return Empty()

    async def build(self, req: api.PoolBuildRequest) -> Empty:
        """virStoragePoolBuild: only an inactive pool is built."""
        obj = self.by_name(req.pool)
        async with obj.lock:
            backend = self.backend(obj.definition.type)
            obj.check_inactive()
            obj.check_not_starting()
            event = self._describe(obj, "lifecycle", "Created")
            obj.starting = True
            try:
                async with self._changes.journalled(obj.uuid, POOL, None, event) as key:
                    await backend.build(obj.definition, req.build)
            finally:
                obj.starting = False
        await self._changes.announce(obj, POOL, key, event)
        return Empty()

    async def destroy(self, req: api.PoolRequest) -> Empty:
        """virStoragePoolDestroy: stop; a transient pool disappears."""
        obj = self.by_name(req.pool)
        async with obj.lock:
            backend = self.backend(obj.definition.type)
            obj.check_running()
            await backend.stop(obj.definition)
            obj.active = False
            await self._update_inactive(obj, STOPPED)
        return Empty()

    async def delete(self, req: api.PoolRequest) -> Empty:
        """virStoragePoolDelete: remove the pool's storage; the pool must be inactive."""
        obj = self.by_name(req.pool)
        async with obj.lock:
            backend = self.backend(obj.definition.type)
            obj.check_stopped()
            event = self._describe(obj, "lifecycle", "Deleted")
            async with self._changes.journalled(obj.uuid, POOL, None, event) as key:
                await backend.delete(obj.definition)
        await self._changes.announce(obj, POOL, key, event)
        return Empty()

    async def undefine(self, req: api.PoolRequest) -> Empty:
        """virStoragePoolUndefine: forget an inactive pool."""
        obj = self.by_name(req.pool)
        async with obj.lock:
            obj.check_stopped()
            await self._forget(obj, UNDEFINED)
        return Empty()

    async def autostart(self, req: api.PoolAutostartRequest) -> Empty:
        """virStoragePoolSetAutostart."""
        obj = self.by_name(req.pool)
        async with obj.lock:
            if not obj.persistent:
                raise VirtError(ErrorCode.INTERNAL_ERROR, "pool has no config file", _D)
            if obj.autostart != req.autostart:
                obj.autostart = req.autostart
                await self._save(obj)
        return Empty()

    async def refresh(self, req: api.PoolRequest) -> Empty:
        """virStoragePoolRefresh; a failed refresh stops the pool, as in libvirt."""
        obj = self.by_name(req.pool)
        async with obj.lock:
            backend = self.backend(obj.definition.type)
            obj.check_running()
            try:
                await self._refresh_locked(obj, backend)
            except VirtError:
                await self._stop_quietly(obj, backend)
                obj.active = False
                await self._update_inactive(obj, STOPPED)
                raise
        await self._on_event(obj, "refresh", None)
        return Empty()

    async def _refresh_locked(self, obj: PoolObj, backend: Backend) -> None:
        known = {name: v.definition for name, v in obj.volumes.items()}
        scan = await backend.refresh(obj.definition, known)
        update: dict[str, object] = {
            "capacity": scan.capacity,
            "allocation": scan.allocation,
            "available": scan.available,
        }
        if scan.target_permissions is not None and obj.definition.target is not None:
            target = obj.definition.target
            perms = target.permissions.model_copy(
                update={
                    "mode": scan.target_permissions.mode,
                    "owner": scan.target_permissions.owner,
                    "group": scan.target_permissions.group,
                }
            )
            update["target"] = target.model_copy(update={"permissions": perms})
        obj.definition = obj.definition.model_copy(update=update)
        building = {n: v for n, v in obj.volumes.items() if v.building}
        obj.volumes = {v.name: VolObj(v) for v in scan.volumes if v.name not in building}
        obj.volumes.update(building)

    def adjust_sizes(self, obj: PoolObj, allocated: int) -> None:
        """Account for ``allocated`` more bytes used by volumes (negative when freed)."""
        d = obj.definition
        obj.definition = d.model_copy(
            update={
                "allocation": max(d.allocation + allocated, 0),
                "available": max(d.available - allocated, 0),
            }
        )

    # -- reconciliation ------------------------------------------------------------

    async def load(self) -> None:
        """Read this host's pools from the ledger and make their state match their storage
        (libvirt's storagePoolUpdateAllState), then autostart (storageDriverAutostart)."""
        for stored in await self._registry.pools():
            self.pools[stored.definition.uuid] = PoolObj(
                definition=stored.definition,
                persistent=stored.record.persistent,
                active=stored.record.active,
                autostart=stored.record.autostart,
                new_definition=stored.new_definition,
                revision=stored.revision,
            )
        for obj in list(self.pools.values()):
            await self._reconcile(obj)
        for obj in self.all():
            if obj.autostart and not obj.active:
                await self._autostart(obj)

    async def _reconcile(self, obj: PoolObj) -> None:
        """Active exactly when the backend says the storage is running."""
        was_active = obj.active
        backend = self._backends.get(obj.definition.type)
        running = False
        async with obj.lock:
            if backend is not None:
                try:
                    running = await backend.check(obj.definition)
                    if running:
                        await self._refresh_locked(obj, backend)
                except VirtError as err:
                    log.error("Failed to restart storage pool '%s': %s", obj.name, err)
                    running = False
            obj.active = running
            if running:
                if not was_active:
                    await self._save(obj, STARTED)
            else:
                await self._update_inactive(obj, STOPPED if was_active else None)

    async def _autostart(self, obj: PoolObj) -> None:
        try:
            async with obj.lock:
                await self._start_locked(obj, BuildMode.NONE)
        except VirtError as err:
            log.error("Failed to autostart storage pool '%s': %s", obj.name, err)

    async def check_running(self) -> None:
        """The periodic check: an active pool whose storage went away becomes inactive."""
        for obj in list(self.pools.values()):
            if obj.active and not obj.starting and obj.asyncjobs == 0:
                backend = self._backends.get(obj.definition.type)
                if backend is None or not backend.has_check:
                    continue
                if not await backend.check(obj.definition):
                    async with obj.lock:
                        if not obj.active:
                            continue
                        obj.active = False
                        await self._update_inactive(obj, STOPPED)
