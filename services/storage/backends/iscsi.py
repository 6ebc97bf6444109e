"""The iscsi backend: the LUNs of an iSCSI target, logged in with iscsiadm
(libvirt's VIR_STORAGE_POOL_ISCSI)."""

from __future__ import annotations

import asyncio
import os

from services.storage.backends.base import Backend, PoolScan
from services.storage.pool_commands import iscsi_commands
from shared.conf.storage_pool import StoragePoolDef
from shared.conf.storage_pool_types import PoolType
from shared.conf.storage_volume import StorageVolumeDef, VolumeTarget, VolumeType

BY_PATH = "/dev/disk/by-path"


def _luns(target: str) -> list[str]:
    try:
        names = sorted(os.listdir(BY_PATH))
    except OSError:
        return []
    return [n for n in names if f"-iscsi-{target}-lun-" in n]


class IscsiBackend(Backend):
    """Logs in on start and out on stop; the LUN devices are the volumes."""

    pool_type = PoolType.ISCSI
    has_check = True

    async def check(self, pool: StoragePoolDef) -> bool:
        return bool(await asyncio.to_thread(_luns, pool.source.devices[0].path))

    async def start(self, pool: StoragePoolDef) -> None:
        for argv in iscsi_commands(pool, login=True):
            await self.runner.run(argv)

    async def stop(self, pool: StoragePoolDef) -> None:
        for argv in iscsi_commands(pool, login=False):
            await self.runner.run(argv)

    async def refresh(self, pool: StoragePoolDef, known: dict[str, StorageVolumeDef]) -> PoolScan:
        volumes = []
        for name in await asyncio.to_thread(_luns, pool.source.devices[0].path):
            path = f"{BY_PATH}/{name}"
            lun = name.rsplit("-lun-", 1)[1]
            volumes.append(
                StorageVolumeDef(
                    name=f"unit:0:0:{lun}",
                    key=path,
                    type=VolumeType.BLOCK,
                    target=VolumeTarget(path=path),
                )
            )
        return PoolScan(0, 0, 0, volumes)
