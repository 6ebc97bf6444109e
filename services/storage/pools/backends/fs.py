"""The fs backend: a block device's file system mounted on the pool folder
(libvirt's VIR_STORAGE_POOL_FS); netfs shares everything but the source."""

from __future__ import annotations

import asyncio
import os

from services.storage.pools.backends.devices import require_empty
from services.storage.pools.backends.local import LocalBackend, pool_root
from services.storage.pools.pool_commands import (
    check_fs_source,
    fs_pool_source,
    mkfs_command,
    mount_command,
    unmount_command,
)
from shared.api.storage import BuildMode
from shared.conf.storage_pool import StoragePoolDef
from shared.conf.storage_pool_types import PoolType
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE
MOUNTS = "/proc/self/mounts"


def _unescape(field: str) -> str:
    """A /proc/mounts field with its octal escapes (\\040 for a blank) decoded."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def is_mounted(source: str, target: str, mounts: str = MOUNTS) -> bool:
    """Whether ``source`` is mounted on ``target`` (virStorageBackendFileSystemIsMounted)."""
    try:
        with open(mounts, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if (
                    len(fields) >= 2
                    and _unescape(fields[1]) == target
                    and _unescape(fields[0]) == source
                ):
                    return True
    except OSError as err:
        raise VirtError(
            ErrorCode.SYSTEM_ERROR, f"cannot read mount list '{mounts}': {err.strerror}", _D
        ) from err
    return False


class FsBackend(LocalBackend):
    """Mounts the source on start, unmounts on stop; mkfs when built with a flag."""

    pool_type = PoolType.FS
    has_check = True

    async def _mounted(self, pool: StoragePoolDef) -> bool:
        check_fs_source(pool)
        return await asyncio.to_thread(is_mounted, fs_pool_source(pool), pool_root(pool))

    async def check(self, pool: StoragePoolDef) -> bool:
        return await self._mounted(pool)

    async def build(self, pool: StoragePoolDef, mode: BuildMode) -> None:
        await super().build(pool, mode)
        if mode in (BuildMode.OVERWRITE, BuildMode.NO_OVERWRITE):
            await self._make_file_system(pool, mode)

    async def _make_file_system(self, pool: StoragePoolDef, mode: BuildMode) -> None:
        """virStorageBackendMakeFileSystem: mkfs, after a probe unless overwriting."""
        argv = mkfs_command(pool)
        device, fmt = argv[-1], str(pool.source.format)
        if not await asyncio.to_thread(os.path.exists, device):
            raise VirtError(
                ErrorCode.OPERATION_INVALID,
                f"Source device does not exist when formatting pool '{pool.name}'",
                _D,
            )
        if mode is BuildMode.NO_OVERWRITE:
            await require_empty(self.runner, device, fmt)
        await self.runner.run(argv)

    async def start(self, pool: StoragePoolDef) -> None:
        if await self._mounted(pool):
            raise VirtError(
                ErrorCode.OPERATION_INVALID, f"Target '{pool_root(pool)}' is already mounted", _D
            )
        await self.runner.run(mount_command(pool))

    async def stop(self, pool: StoragePoolDef) -> None:
        if not await self._mounted(pool):
            return
        await self.runner.run(unmount_command(pool))
