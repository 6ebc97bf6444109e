"""The storage service process, one per host: its two halves wired together.

* ``services.storage.pools``: pools and volumes (libvirt's storage driver);
  ``PoolManager``, ``VolumeManager`` and ``StreamServer`` answer the
  endpoints of ``shared.api.storage`` themselves.
* ``services.storage.disks``: the disk inventory and block jobs;
  ``DiskService`` answers those of ``shared.api.storage_jobs``.

They meet only through ``services.storage.interface``, each given the
other's side when it is made.  This module builds them, binds the endpoint
tables to their methods, and keeps what belongs to the process: the
lifecycle events (pool events as libvirt's, volume events virtbus adds), the
per-pool gauges, the run-time histogram of qemu-img/mount/..., and the
periodic check that pools still match their storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client as NATS
from prometheus_client import Gauge
from pydantic import Field

from services.storage.disks.index import DiskIndex
from services.storage.disks.service import DiskService
from services.storage.disks.store import JobRecord
from services.storage.disks.users import DiskUsers
from services.storage.pools.changes import StorageChanges
from services.storage.pools.journal import CreationJournal
from services.storage.pools.objects import PoolObj
from services.storage.pools.pool_secrets import PoolSecrets, secret_service, volume_secret_file
from services.storage.pools.pools import PoolManager
from services.storage.pools.registry import StorageRegistry
from services.storage.pools.runner import CommandRunner
from services.storage.pools.streams import StreamServer
from services.storage.pools.volumes import VolumeManager
from shared.api import storage as api
from shared.api import storage_jobs as jobs_api
from shared.conf.storage_volume import StorageVolumeDef
from shared.util.api import Bound
from shared.util.errors import ErrorDomain, VirtError
from shared.util.ledger import Event, Ledger
from shared.util.ledger_state import LedgerPublisher, LedgerState
from shared.util.process import ServiceProcess, Teardown
from shared.util.settings import ProcessSettings

log = logging.getLogger(__name__)
_D = ErrorDomain.STORAGE
_COMMAND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 600)


class StorageSettings(ProcessSettings):
    """Settings of the storage service."""

    check_interval: float = Field(
        60.0, gt=0, description="seconds between checks that pools match their storage"
    )
    backing_paths: str = Field(
        "",
        description="folders (':'-separated) a volume's backing store may lie under, "
        "besides the pools' volumes",
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
    """libvirt's storage driver for the pools of one host, with its disks' block jobs."""

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
        self._pools: PoolManager | None = None
        self._volumes: VolumeManager | None = None
        self._streams: StreamServer | None = None
        self._disks: DiskService | None = None
        self._publisher: LedgerPublisher | None = None
        #: pool -> its children of the five pool gauges, set on every volume
        #: event (labels() looks each up anew, under a lock).
        self._pool_gauges: dict[str, tuple[Gauge, ...]] = {}

    @property
    def pools(self) -> PoolManager:
        assert self._pools is not None, "service not started"
        return self._pools

    @property
    def volumes(self) -> VolumeManager:
        assert self._volumes is not None, "service not started"
        return self._volumes

    @property
    def streams(self) -> StreamServer:
        assert self._streams is not None, "service not started"
        return self._streams

    @property
    def publisher(self) -> LedgerPublisher:
        """This host's events, each stored through its ledger."""
        assert self._publisher is not None, "service not started"
        return self._publisher

    @property
    def disks(self) -> DiskService:
        """The disk inventory and block jobs of this host."""
        assert self._disks is not None, "service not started"
        return self._disks

    def _observe_command(self, tool: str, seconds: float) -> None:
        self._commands.labels(tool=tool).observe(seconds)

    def _job_ended(self, record: JobRecord) -> None:
        self._jobs_ended.labels(phase=record.phase.value).inc()

    async def setup(self, stack: Teardown) -> None:
        _watch_children_with_pidfd()
        host = self.settings.host
        # Pools, inventories, job records and every event of this host: its ledger.
        ledger = await self.open_ledger()
        store = LedgerState(ledger)
        self._publisher = LedgerPublisher(ledger)
        secrets = PoolSecrets(secret_service(self.nc), self.settings.state_dir / "secrets")
        users = DiskUsers(host, DiskIndex(host))
        runner = CommandRunner(self._observe_command)
        registry = StorageRegistry(ledger, host)
        events = _StorageEvents(self, ledger)
        journal = CreationJournal(self.settings.state_dir / "creating")
        changes = StorageChanges(journal, events)
        pools = PoolManager(
            registry,
            runner,
            secrets,
            changes,
            self._pool_event,
            self._pool_event_of,
            self._update_metrics,
        )
        volumes = VolumeManager(
            pools,
            journal,
            changes,
            events,
            users,
            volume_secret_file(secrets),
            backing_paths=tuple(p for p in self.settings.backing_paths.split(":") if p),
        )
        self._pools, self._volumes = pools, volumes
        cleaned = await volumes.clean_unfinished()
        if cleaned:
            log.warning("removed %d half-made volumes left by an interrupted run", cleaned)
        await pools.load()
        self._streams = StreamServer(self.nc, host, volumes, self.spawn)
        stack.push_async_callback(self._streams.close_all)
        self._disks = DiskService(
            self.nc,
            self.js,
            users,
            store,
            volumes,
            self._publisher,
            ended=self._job_ended,
            reconcile_interval=self.settings.check_interval,
        )
        await self._disks.start(self.spawn)
        self._update_metrics()
        self.spawn(self._check_forever(), "storage-check")

    def endpoints(self) -> Sequence[Bound[Any, Any]]:
        pools, volumes, streams = self.pools, self.volumes, self.streams
        return (
            api.POOL_DEFINE.bind(pools.define),
            api.POOL_CREATE.bind(pools.create),
            api.POOL_BUILD.bind(pools.build),
            api.POOL_START.bind(pools.start),
            api.POOL_DESTROY.bind(pools.destroy),
            api.POOL_DELETE.bind(pools.delete),
            api.POOL_UNDEFINE.bind(pools.undefine),
            api.POOL_AUTOSTART.bind(pools.autostart),
            api.POOL_REFRESH.bind(pools.refresh),
            api.POOL_INFO.bind(pools.info),
            api.POOL_LOOKUP_UUID.bind(pools.lookup_uuid),
            api.POOL_LOOKUP_VOLUME.bind(pools.lookup_volume),
            api.POOL_LIST.bind(pools.list_pools),
            api.POOL_DUMPXML.bind(pools.dumpxml),
            api.POOL_CAPABILITIES.bind(pools.capabilities),
            api.VOL_CREATE.bind(volumes.create),
            api.VOL_CREATE_FROM.bind(volumes.create_from),
            api.VOL_DELETE.bind(volumes.delete),
            api.VOL_WIPE.bind(volumes.wipe),
            api.VOL_RESIZE.bind(volumes.resize),
            api.VOL_INFO.bind(volumes.info),
            api.VOL_DUMPXML.bind(volumes.dumpxml),
            api.VOL_LOOKUP_NAME.bind(volumes.lookup_name),
            api.VOL_LOOKUP_KEY.bind(volumes.lookup_key),
            api.VOL_LOOKUP_PATH.bind(volumes.lookup_path),
            api.VOL_LIST.bind(volumes.list_volumes),
            api.VOL_BRIEF_LIST.bind(volumes.list_brief),
            api.VOL_UPLOAD.bind(streams.upload),
            api.VOL_DOWNLOAD.bind(streams.download),
            *self.disks.endpoints(),
        )

    async def _check_forever(self) -> None:
        """Pools whose storage went away outside virtbus become inactive."""
        while True:
            await asyncio.sleep(self.settings.check_interval)
            try:
                await self.pools.check_running()
            except VirtError as err:
                log.warning("pool check failed: %s", err)
            await self.volumes.settle_events()
            self._update_metrics()

    # -- events and metrics ----------------------------------------------------------

    def update_pool_metrics(self, obj: PoolObj) -> None:
        """The five gauges of one pool."""
        gauges = self._pool_gauges.get(obj.name)
        if gauges is None:
            gauges = self._pool_gauges[obj.name] = tuple(
                g.labels(pool=obj.name) for g in self._per_pool_gauges()
            )
        capacity, allocation, available, volumes, active = gauges
        d = obj.definition
        capacity.set(d.capacity if obj.active else 0)
        allocation.set(d.allocation if obj.active else 0)
        available.set(d.available if obj.active else 0)
        volumes.set(len(obj.volumes))
        active.set(1 if obj.active else 0)

    def _update_metrics(self) -> None:
        names = set()
        for obj in self.pools.all():
            names.add(obj.name)
            self.update_pool_metrics(obj)
        for gone in set(self._pool_gauges) - names:
            del self._pool_gauges[gone]
            for gauge in self._per_pool_gauges():
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)

    def _per_pool_gauges(self) -> tuple[Gauge, ...]:
        """The gauges labelled by pool, in ``update_pool_metrics``' order."""
        return (self._capacity, self._allocation, self._available, self._volume_count, self._active)

    @staticmethod
    def _pool_event_of(obj: PoolObj, event: str, detail: str | None) -> Event:
        return Event(
            "pool",
            obj.name,
            event,
            detail,
            extra={"uuid": obj.uuid, "type": obj.definition.type.value},
        )

    async def _pool_event(self, obj: PoolObj, event: str, detail: str | None) -> None:
        """A pool event that no change carries (a refresh, a transient pool that
        was never stored going)."""
        self._update_metrics()
        e = self._pool_event_of(obj, event, detail)
        await self.publisher.publish(e.object, e.name, e.event, e.detail, extra=e.extra)


class _StorageEvents:
    """``VolumeEvents`` (and the ``Announcer`` of ``StorageChanges``) of the
    storage service: the events of volume changes and of pool builds and
    deletions go to its ledger, and the pool's figures change with them."""

    def __init__(self, service: StorageService, ledger: Ledger) -> None:
        self._service = service
        self._ledger = ledger

    def of(self, obj: PoolObj, vol: StorageVolumeDef, detail: str, extra: dict[str, Any]) -> Event:
        fields = {"pool": obj.name, "volume": vol.name, "key": vol.key, "path": vol.target.path}
        return Event("volume", f"{obj.name}/{vol.name}", "lifecycle", detail, None, fields | extra)

    async def announce(self, obj: PoolObj | None, event: Event, key: str | None = None) -> None:
        if obj is not None:
            # A volume changes its own pool's figures only.
            self._service.update_pool_metrics(obj)
        what = f"{event.object} event"
        await self._ledger.announce([event], what=what, key=key)

    async def announced(self, key: str) -> bool:
        return await self._ledger.announced(key)
