"""The rbd backend: the images of a Ceph RBD pool (libvirt's VIR_STORAGE_POOL_RBD).

libvirt talks to Ceph through librados; virtbus uses the ``rbd`` tool with
the pool's monitors, so a host without it reports the tool as missing.
"""

from __future__ import annotations

import json

from services.storage.backends.base import (
    Backend,
    CreateOptions,
    PoolScan,
    found_volume,
    placed,
)
from services.storage.confine import check_volume_name
from shared.conf.storage_pool import StoragePoolDef
from shared.conf.storage_pool_types import PoolType
from shared.conf.storage_volume import StorageVolumeDef, VolumeType


def _base(pool: StoragePoolDef) -> list[str]:
    argv = ["rbd", "--pool", str(pool.source.name)]
    monitors = ",".join(f"{h.name}:{h.port}" if h.port else h.name for h in pool.source.hosts)
    if monitors:
        argv += ["-m", monitors]
    if pool.source.auth is not None:
        argv += ["--id", pool.source.auth.username]
    return argv


class RbdBackend(Backend):
    """Images listed, created and removed with the rbd tool."""

    pool_type = PoolType.RBD
    builds_volumes = False

    async def check(self, pool: StoragePoolDef) -> bool:
        return False

    async def refresh(self, pool: StoragePoolDef, known: dict[str, StorageVolumeDef]) -> PoolScan:
        out = await self.runner.output([*_base(pool), "ls", "-l", "--format", "json"])
        volumes = []
        for image in json.loads(out or "[]"):
            name = str(image.get("image"))
            size = int(image.get("size", 0))
            path = f"{pool.source.name}/{name}"
            volumes.append(found_volume(name, path, VolumeType.NETWORK, size, "raw"))
        return PoolScan(0, sum(v.capacity for v in volumes), 0, volumes)

    def define_volume(self, pool: StoragePoolDef, vol: StorageVolumeDef) -> StorageVolumeDef:
        check_volume_name(vol.name)
        return placed(vol, f"{pool.source.name}/{vol.name}", VolumeType.NETWORK)

    async def build_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, options: CreateOptions
    ) -> None:
        size_mib = max(1, -(-vol.capacity // (1024 * 1024)))
        await self.runner.run([*_base(pool), "create", "--size", f"{size_mib}M", vol.name])

    async def delete_volume(self, pool: StoragePoolDef, vol: StorageVolumeDef) -> None:
        await self.runner.run([*_base(pool), "rm", vol.name])
