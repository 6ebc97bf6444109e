"""The logical backend: an LVM volume group whose logical volumes are the pool's volumes
(libvirt's VIR_STORAGE_POOL_LOGICAL), driven by the LVM tools with libvirt's arguments."""

from __future__ import annotations

import asyncio
import os

from services.storage.pools import files
from services.storage.pools.backends.base import (
    Backend,
    CreateOptions,
    PoolScan,
    found_volume,
    placed,
)
from services.storage.pools.backends.devices import require_empty
from services.storage.pools.confine import check_volume_name
from services.storage.pools.pool_commands import (
    logical_build_commands,
    logical_delete_commands,
    lvcreate_command,
    lvremove_commands,
    vgchange_command,
)
from shared.api.storage import BuildMode, WipeAlgorithm
from shared.conf.encryption import EncryptionFormat
from shared.conf.storage_pool import StoragePoolDef
from shared.conf.storage_pool_types import PoolType
from shared.conf.storage_volume import StorageVolumeDef, VolumeType
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE
_VGS_OPTIONS = ["--separator", ":", "--noheadings", "--units", "b", "--unbuffered", "--nosuffix"]
_LVS_FIELDS = "lv_name,origin,uuid,devices,segtype,stripes,seg_size,vg_extent_size,size,lv_attr"


def _target(pool: StoragePoolDef) -> str:
    assert pool.target is not None
    return pool.target.path


class LogicalBackend(Backend):
    """Volumes are made by lvcreate when defined; there is no separate build step."""

    pool_type = PoolType.LOGICAL
    has_check = True
    delete_function = "virStorageBackendLogicalDeleteVol"

    async def check(self, pool: StoragePoolDef) -> bool:
        return await asyncio.to_thread(os.path.exists, _target(pool))

    async def build(self, pool: StoragePoolDef, mode: BuildMode) -> None:
        """pvcreate each device (empty ones only, unless overwriting), then vgcreate;
        a device's first and last MiB are zeroed first so no old label lingers."""
        for device in pool.source.devices:
            if mode is not BuildMode.OVERWRITE:
                await require_empty(self.runner, device.path, "lvm2")
            await asyncio.to_thread(files.zero_ends, device.path, 1 << 20)
        for argv in logical_build_commands(pool):
            await self.runner.run(argv)

    async def start(self, pool: StoragePoolDef) -> None:
        await self.runner.run(vgchange_command(pool, activate=True))

    async def stop(self, pool: StoragePoolDef) -> None:
        await self.runner.run(vgchange_command(pool, activate=False))

    async def delete(self, pool: StoragePoolDef) -> None:
        for argv in logical_delete_commands(pool):
            await self.runner.run(argv)

    async def refresh(self, pool: StoragePoolDef, known: dict[str, StorageVolumeDef]) -> PoolScan:
        vg = str(pool.source.name)
        out = await self.runner.output(["vgs", *_VGS_OPTIONS, "--options", "vg_size,vg_free", vg])
        size_text, _, free_text = out.strip().partition(":")
        capacity, available = int(size_text or 0), int(free_text or 0)
        lvs = await self.runner.output(
            ["lvs", *_VGS_OPTIONS[:1], "#", *_VGS_OPTIONS[2:], "--options", _LVS_FIELDS, vg]
        )
        volumes: dict[str, StorageVolumeDef] = {}
        for line in lvs.splitlines():
            fields = line.strip().split("#")
            if len(fields) < 10 or fields[0] in volumes:
                continue
            name, uuid, size = fields[0], fields[2], int(fields[8] or 0)
            path = f"{_target(pool)}/{name}"
            volumes[name] = found_volume(name, path, VolumeType.BLOCK, size, key=uuid)
        return PoolScan(capacity, capacity - available, available, list(volumes.values()))

    async def define_volume(self, pool: StoragePoolDef, vol: StorageVolumeDef) -> StorageVolumeDef:
        enc = vol.target.encryption
        if enc is not None and enc.format is not EncryptionFormat.LUKS:
            raise VirtError(
                ErrorCode.CONFIG_UNSUPPORTED,
                "storage pool only supports LUKS encrypted volumes",
                _D,
            )
        check_volume_name(vol.name)
        return placed(vol, f"{_target(pool)}/{vol.name}", VolumeType.BLOCK)

    async def build_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, options: CreateOptions
    ) -> None:
        backing = vol.backing_store.path if vol.backing_store is not None else None
        await self.runner.run(
            lvcreate_command(pool, vol.name, vol.capacity, vol.allocation, backing)
        )

    async def delete_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, *, with_snapshots: bool = False
    ) -> None:
        self.refuse_flags(with_snapshots=with_snapshots)
        for argv in lvremove_commands(vol.target.path or ""):
            await self.runner.run(argv)

    async def wipe_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, algorithm: WipeAlgorithm
    ) -> None:
        if algorithm is not WipeAlgorithm.ZERO:
            await self.runner.run(["scrub", "-f", "-p", algorithm.value, vol.target.path or ""])
            return
        await asyncio.to_thread(files.wipe_zero, vol.target.path or "", vol.capacity)
