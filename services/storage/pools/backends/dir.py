"""The dir backend: a pool is a folder of volume files (libvirt's VIR_STORAGE_POOL_DIR)."""

from __future__ import annotations

import asyncio
import os

from services.storage.pools.backends.local import LocalBackend, pool_root
from shared.conf.storage_pool import StoragePoolDef
from shared.conf.storage_pool_types import PoolType


class DirBackend(LocalBackend):
    """Nothing to start or stop: the pool runs while its folder exists."""

    pool_type = PoolType.DIR
    has_check = True

    async def check(self, pool: StoragePoolDef) -> bool:
        return await asyncio.to_thread(os.path.exists, pool_root(pool))
