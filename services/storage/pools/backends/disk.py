"""The disk backend: a whole disk whose partitions are the pool's volumes
(libvirt's VIR_STORAGE_POOL_DISK), labelled and read with parted."""

from __future__ import annotations

import asyncio
import os

from services.storage.pools.backends.base import Backend, PoolScan, found_volume
from services.storage.pools.backends.devices import require_no_label
from services.storage.pools.pool_commands import parted_label_command
from shared.api.storage import BuildMode
from shared.conf.storage_pool import StoragePoolDef
from shared.conf.storage_pool_types import PoolType
from shared.conf.storage_volume import StorageVolumeDef, VolumeType
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE


class DiskBackend(Backend):
    """Runs while its device exists; volumes are listed from parted's machine output."""

    pool_type = PoolType.DISK
    has_check = True

    def _device(self, pool: StoragePoolDef) -> str:
        if not pool.source.devices:
            raise VirtError(ErrorCode.INTERNAL_ERROR, "missing source device", _D)
        return pool.source.devices[0].path

    async def check(self, pool: StoragePoolDef) -> bool:
        return await asyncio.to_thread(os.path.exists, self._device(pool))

    async def build(self, pool: StoragePoolDef, mode: BuildMode) -> None:
        if mode is not BuildMode.OVERWRITE:
            fmt = pool.source.format or "dos"
            await require_no_label(self.runner, self._device(pool), fmt)
        await self.runner.run(parted_label_command(pool))

    async def refresh(self, pool: StoragePoolDef, known: dict[str, StorageVolumeDef]) -> PoolScan:
        device = self._device(pool)
        out = await self.runner.output(["parted", "-m", device, "unit", "B", "print", "--script"])
        lines = [line.rstrip(";") for line in out.splitlines() if line.strip()]
        capacity = 0
        volumes: list[StorageVolumeDef] = []
        base = os.path.basename(device)
        separator = "p" if base[-1:].isdigit() else ""
        for line in lines[1:]:
            fields = line.split(":")
            if fields[0] == device:
                capacity = int(fields[1].rstrip("B") or 0)
                continue
            if not fields[0].isdigit() or len(fields) < 4:
                continue
            size = int(fields[3].rstrip("B") or 0)
            name = f"{base}{separator}{fields[0]}"
            path = f"/dev/{name}"
            volumes.append(found_volume(name, path, VolumeType.BLOCK, size, "none"))
        allocation = sum(v.capacity for v in volumes)
        return PoolScan(capacity, allocation, max(capacity - allocation, 0), volumes)
