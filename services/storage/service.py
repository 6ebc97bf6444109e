"""The storage service process: one per host, its endpoints, events and metrics.

Pools and volumes are handled by ``PoolManager`` and ``VolumeManager``; this
module wires them to the bus: each endpoint's handler, the lifecycle events
(pool events as libvirt's, volume events virtbus adds), the per-pool
gauges, the qemu-img/mount/... run-time histogram, the passphrase files of
encrypted volumes (from the secret service), and the periodic check that
pools still match their storage.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

from nats.aio.client import Client as NATS
from pydantic import Field

from services.storage.capabilities import format_pool_capabilities
from services.storage.disk_service import DiskService
from services.storage.journal import CreationJournal
from services.storage.objects import PoolObj, VolObj
from services.storage.pool_secrets import PoolSecrets, UsesSecrets
from services.storage.pools import PoolManager
from services.storage.registry import BUCKET, StorageRegistry
from services.storage.runner import CommandRunner
from services.storage.streams import CHUNK_BYTES, WINDOW, StreamServer
from services.storage.volumes import VolumeManager
from shared.api import secret as secret_api
from shared.api import storage as api
from shared.api import storage_jobs as jobs_api
from shared.conf.encryption import SecretLookup
from shared.conf.secret import SecretUsageType
from shared.conf.storage_pool import format_storage_pool
from shared.conf.storage_volume import StorageVolumeDef
from shared.util.api import Bound, Empty, call
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.process import ServiceProcess, Teardown
from shared.util.settings import ProcessSettings
from shared.util.state import StateStore

log = logging.getLogger(__name__)
_D = ErrorDomain.STORAGE
_COMMAND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 600)


class StorageSettings(ProcessSettings):
    """Settings of the storage service."""

    check_interval: float = Field(
        60.0, gt=0, description="seconds between checks that pools match their storage"
    )


def _watch_children_with_pidfd() -> None:
    """Reap qemu-img and the other tools through pidfds (Python 3.11's default
    starts a thread per child to wait for it; 3.12 uses pidfds by itself)."""
    if sys.version_info >= (3, 12) or not hasattr(asyncio, "PidfdChildWatcher"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return  # no pidfd support in this kernel
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


class StorageService(ServiceProcess[StorageSettings]):
    """libvirt's storage driver for the pools of one host."""

    name = "storage"
    description = "libvirt storage pools and volumes of one host"
    host_scoped = True
    endpoint_table = (*api.ENDPOINTS, *jobs_api.ENDPOINTS)

    def __init__(self, settings: StorageSettings, nc: NATS | None = None) -> None:
        super().__init__(settings, nc)
        m = self.metrics
        self._capacity = m.gauge("pool_capacity_bytes", "Pool capacity", ["pool"])
        self._allocation = m.gauge("pool_allocation_bytes", "Pool allocation", ["pool"])
        self._available = m.gauge("pool_available_bytes", "Pool free space", ["pool"])
        self._volume_count = m.gauge("pool_volumes", "Volumes in the pool", ["pool"])
        self._active = m.gauge("pool_active", "1 when the pool is running", ["pool"])
        self._commands = m.histogram(
            "command_duration_seconds",
            "Run time of external tools (qemu-img, mount, mkfs...)",
            ["tool"],
            buckets=_COMMAND_BUCKETS,
        )
        self._jobs_ended = m.counter("blockjobs_ended", "Block jobs ended, by phase", ["phase"])
        self._runner = CommandRunner(self._observe_command)
        self._pools: PoolManager | None = None
        self._volumes: VolumeManager | None = None
        self._streams: StreamServer | None = None
        self._disks: DiskService | None = None
        self._known_pools: set[str] = set()
        #: Secret values and the private folder their files are written in.
        self._secrets = PoolSecrets(self._secret_value, settings.state_dir / "secrets")

    @property
    def pools(self) -> PoolManager:
        assert self._pools is not None, "service not started"
        return self._pools

    @property
    def volumes(self) -> VolumeManager:
        assert self._volumes is not None, "service not started"
        return self._volumes

    @property
    def disks(self) -> DiskService:
        """The disk inventory and block jobs of this host."""
        assert self._disks is not None, "service not started"
        return self._disks

    def _observe_command(self, tool: str, seconds: float) -> None:
        self._commands.labels(tool=tool).observe(seconds)

    async def setup(self, stack: Teardown) -> None:
        _watch_children_with_pidfd()
        store = await StateStore.open(self.js, BUCKET, replicas=self.settings.stream_replicas)
        registry = StorageRegistry(store, self.settings.host)
        self._pools = PoolManager(registry, self._runner, self._pool_event)
        for kind in self._pools.supported:
            backend = self._pools.backend(kind)
            if isinstance(backend, UsesSecrets):
                backend.secrets = self._secrets
        journal = CreationJournal(self.settings.state_dir / "creating")
        self._volumes = VolumeManager(self._pools, journal, self._volume_event, self._secret_file)
        cleaned = await self._volumes.clean_unfinished()
        if cleaned:
            log.warning("removed %d half-made volumes left by an interrupted run", cleaned)
        await self._pools.load()
        self._streams = StreamServer(self.nc, self.settings.host, self.spawn)
        stack.push_async_callback(self._streams.close_all)
        self._disks = DiskService(
            self.nc,
            self.js,
            self.settings.host,
            store,
            self._volumes,
            self.events,
            reconcile_interval=self.settings.check_interval,
        )
        self._volumes.users = self._disks.volume_users
        self._disks.jobs.ended = lambda r: self._jobs_ended.labels(phase=r.phase.value).inc()
        await self._disks.start(self.spawn)
        self._update_metrics()
        self.spawn(self._check_forever(), "storage-check")

    async def _check_forever(self) -> None:
        """Pools whose storage went away outside virtbus become inactive."""
        while True:
            await asyncio.sleep(self.settings.check_interval)
            try:
                await self.pools.check_running()
            except VirtError as err:
                log.warning("pool check failed: %s", err)
            self._update_metrics()

    # -- events and metrics ----------------------------------------------------------

    def _update_metrics(self) -> None:
        names = set()
        for obj in self.pools.all():
            names.add(obj.name)
            d = obj.definition
            self._capacity.labels(pool=obj.name).set(d.capacity if obj.active else 0)
            self._allocation.labels(pool=obj.name).set(d.allocation if obj.active else 0)
            self._available.labels(pool=obj.name).set(d.available if obj.active else 0)
            self._volume_count.labels(pool=obj.name).set(len(obj.volumes))
            self._active.labels(pool=obj.name).set(1 if obj.active else 0)
        for gone in self._known_pools - names:
            for gauge in (
                self._capacity,
                self._allocation,
                self._available,
                self._volume_count,
                self._active,
            ):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
        self._known_pools = names

    async def _pool_event(self, obj: PoolObj, event: str, detail: str | None) -> None:
        self._update_metrics()
        await self.events.publish(
            "pool",
            obj.name,
            event,
            detail,
            extra={"uuid": obj.uuid, "type": obj.definition.type.value},
        )

    async def _volume_event(
        self, obj: PoolObj, vol: StorageVolumeDef, detail: str, extra: dict[str, Any]
    ) -> None:
        self._update_metrics()
        await self.events.publish(
            "volume",
            f"{obj.name}/{vol.name}",
            "lifecycle",
            detail,
            extra={
                "pool": obj.name,
                "volume": vol.name,
                "key": vol.key,
                "path": vol.target.path,
                **extra,
            },
        )

    # -- secrets of encrypted volumes and of pools' <auth> -------------------------------

    async def _secret_value(self, lookup: SecretLookup, usage: SecretUsageType) -> bytes:
        """The value of the secret ``lookup`` names (by uuid, or by usage id of ``usage``)."""
        uuid = lookup.uuid
        if uuid is None:
            info = await call(
                self.nc,
                secret_api.LOOKUP_BY_USAGE,
                secret_api.UsageRequest(usage_type=usage, usage_id=lookup.usage or ""),
            )
            uuid = info.uuid
        reply = await call(
            self.nc, secret_api.GET_VALUE_INTERNAL, secret_api.UuidRequest(uuid=uuid)
        )
        return base64.b64decode(reply.value)

    @contextlib.asynccontextmanager
    async def _secret_file(self, obj: PoolObj, vol: StorageVolumeDef) -> AsyncIterator[str]:
        """The passphrase of ``vol`` (from the secret service) in a private file,
        removed afterwards (libvirt's storageBackendCreateQemuImgSecretPath)."""
        enc = vol.target.encryption
        if enc is None or len(enc.secrets) != 1:
            raise VirtError(
                ErrorCode.INVALID_ARG,
                "A single <secret type='passphrase'...> element is expected in encryption "
                "description",
                _D,
            )
        value = await self._secret_value(enc.secrets[0].lookup, SecretUsageType.VOLUME)
        async with self._secrets.key_file(f"{obj.name}.{vol.name}.secret", value) as path:
            yield path

    # -- endpoints -------------------------------------------------------------------

    def endpoints(self) -> Sequence[Bound[Any, Any]]:
        return (
            api.POOL_DEFINE.bind(self.pool_define),
            api.POOL_CREATE.bind(self.pool_create),
            api.POOL_BUILD.bind(self.pool_build),
            api.POOL_START.bind(self.pool_start),
            api.POOL_DESTROY.bind(self.pool_destroy),
            api.POOL_DELETE.bind(self.pool_delete),
            api.POOL_UNDEFINE.bind(self.pool_undefine),
            api.POOL_AUTOSTART.bind(self.pool_autostart),
            api.POOL_REFRESH.bind(self.pool_refresh),
            api.POOL_INFO.bind(self.pool_info),
            api.POOL_LOOKUP_UUID.bind(self.pool_lookup_uuid),
            api.POOL_LOOKUP_VOLUME.bind(self.pool_lookup_volume),
            api.POOL_LIST.bind(self.pool_list),
            api.POOL_DUMPXML.bind(self.pool_dumpxml),
            api.POOL_CAPABILITIES.bind(self.pool_capabilities),
            api.VOL_CREATE.bind(self.vol_create),
            api.VOL_CREATE_FROM.bind(self.vol_create_from),
            api.VOL_DELETE.bind(self.vol_delete),
            api.VOL_WIPE.bind(self.vol_wipe),
            api.VOL_RESIZE.bind(self.vol_resize),
            api.VOL_INFO.bind(self.vol_info),
            api.VOL_DUMPXML.bind(self.vol_dumpxml),
            api.VOL_LOOKUP_NAME.bind(self.vol_lookup_name),
            api.VOL_LOOKUP_KEY.bind(self.vol_lookup_key),
            api.VOL_LOOKUP_PATH.bind(self.vol_lookup_path),
            api.VOL_LIST.bind(self.vol_list),
            api.VOL_UPLOAD.bind(self.vol_upload),
            api.VOL_DOWNLOAD.bind(self.vol_download),
            *self.disks.endpoints(),
        )

    async def pool_define(self, req: api.PoolXmlRequest) -> api.PoolInfo:
        return (await self.pools.define(req.xml)).info()

    async def pool_create(self, req: api.PoolXmlRequest) -> api.PoolInfo:
        return (await self.pools.create(req.xml, req.build)).info()

    async def pool_build(self, req: api.PoolBuildRequest) -> Empty:
        await self.pools.build(req.pool, req.build)
        return Empty()

    async def pool_start(self, req: api.PoolBuildRequest) -> Empty:
        await self.pools.start(req.pool, req.build)
        return Empty()

    async def pool_destroy(self, req: api.PoolRequest) -> Empty:
        await self.pools.destroy(req.pool)
        return Empty()

    async def pool_delete(self, req: api.PoolRequest) -> Empty:
        await self.pools.delete(req.pool)
        return Empty()

    async def pool_undefine(self, req: api.PoolRequest) -> Empty:
        await self.pools.undefine(req.pool)
        return Empty()

    async def pool_autostart(self, req: api.PoolAutostartRequest) -> Empty:
        await self.pools.set_autostart(req.pool, req.autostart)
        return Empty()

    async def pool_refresh(self, req: api.PoolRequest) -> Empty:
        await self.pools.refresh(req.pool)
        return Empty()

    async def pool_info(self, req: api.PoolRequest) -> api.PoolInfo:
        return self.pools.by_name(req.pool).info()

    async def pool_lookup_uuid(self, req: api.PoolUuidRequest) -> api.PoolInfo:
        return self.pools.by_uuid(req.uuid).info()

    async def pool_lookup_volume(self, req: api.VolRequest) -> api.PoolInfo:
        return self.pools.by_name(req.vol.pool).info()

    async def pool_list(self, req: api.PoolListRequest) -> api.PoolListReply:
        pools = [
            obj.info()
            for obj in self.pools.all()
            if (req.active is None or obj.active == req.active)
            and (req.persistent is None or obj.persistent == req.persistent)
            and (req.autostart is None or obj.autostart == req.autostart)
            and (not req.types or obj.definition.type.value in req.types)
        ]
        return api.PoolListReply(pools=pools)

    async def pool_dumpxml(self, req: api.PoolDumpXmlRequest) -> api.XmlReply:
        obj = self.pools.by_name(req.pool)
        d = obj.new_definition if req.inactive and obj.new_definition else obj.definition
        return api.XmlReply(xml=format_storage_pool(d))

    async def pool_capabilities(self, req: Empty) -> api.XmlReply:
        return api.XmlReply(xml=format_pool_capabilities(self.pools.supported))

    def _vol_info(self, found: tuple[PoolObj, VolObj]) -> api.VolumeInfo:
        obj, vol = found
        return obj.volume_info(vol.definition, self.volumes.users(obj, vol.definition))

    async def vol_create(self, req: api.VolCreateRequest) -> api.VolumeInfo:
        return self._vol_info(await self.volumes.create(req.pool, req.xml, req.prealloc_metadata))

    async def vol_create_from(self, req: api.VolCreateFromRequest) -> api.VolumeInfo:
        found = await self.volumes.create_from(
            req.pool, req.xml, req.source, req.prealloc_metadata, req.reflink
        )
        return self._vol_info(found)

    async def vol_delete(self, req: api.VolDeleteRequest) -> Empty:
        await self.volumes.delete(req.vol, force=req.force, with_snapshots=req.delete_snapshots)
        return Empty()

    async def vol_wipe(self, req: api.VolWipeRequest) -> Empty:
        await self.volumes.wipe(req.vol, req.algorithm, force=req.force)
        return Empty()

    async def vol_resize(self, req: api.VolResizeRequest) -> api.VolumeInfo:
        found = await self.volumes.resize(
            req.vol,
            req.capacity,
            allocate=req.allocate,
            delta=req.delta,
            shrink=req.shrink,
            force=req.force,
        )
        return self._vol_info(found)

    async def vol_info(self, req: api.VolRequest) -> api.VolumeInfo:
        obj, vol = self.volumes.find(req.vol)
        await self.volumes.refreshed(obj, vol)
        return self._vol_info((obj, vol))

    async def vol_dumpxml(self, req: api.VolRequest) -> api.XmlReply:
        return api.XmlReply(xml=await self.volumes.dumpxml(req.vol))

    async def vol_lookup_name(self, req: api.VolNameRequest) -> api.VolumeInfo:
        return self._vol_info(self.volumes.by_name(req.pool, req.name))

    async def vol_lookup_key(self, req: api.VolKeyRequest) -> api.VolumeInfo:
        return self._vol_info(self.volumes.by_key(req.key))

    async def vol_lookup_path(self, req: api.VolPathRequest) -> api.VolumeInfo:
        return self._vol_info(self.volumes.by_path(req.path))

    async def vol_list(self, req: api.VolListRequest) -> api.VolListReply:
        obj = self.pools.by_name(req.pool)
        obj.check_active()
        vols = sorted(obj.volumes.values(), key=lambda v: v.name.lower())
        infos = []
        for vol in vols:
            if req.details and not vol.building:
                with contextlib.suppress(VirtError):
                    await self.volumes.refreshed(obj, vol)
            infos.append(self._vol_info((obj, vol)))
        return api.VolListReply(volumes=infos)

    async def _transfer(self, req: api.VolTransferRequest, upload: bool) -> api.TransferReply:
        assert self._streams is not None, "service not started"
        obj, vol, path = self.volumes.begin_transfer(req.vol, upload=upload)

        async def closed(completed: bool) -> None:
            await self.volumes.end_transfer(obj, vol, uploaded=upload and completed)

        try:
            subject, length = await self._streams.open(
                path,
                upload=upload,
                offset=req.offset,
                length=req.length,
                sparse=req.sparse,
                on_close=closed,
            )
        except BaseException:
            await self.volumes.end_transfer(obj, vol, uploaded=False)
            raise
        return api.TransferReply(
            subject=subject, length=length, chunk_bytes=CHUNK_BYTES, window=WINDOW
        )

    async def vol_upload(self, req: api.VolTransferRequest) -> api.TransferReply:
        return await self._transfer(req, upload=True)

    async def vol_download(self, req: api.VolTransferRequest) -> api.TransferReply:
        return await self._transfer(req, upload=False)
