"""The destination of a block copy, prepared as libvirt's QEMU driver prepares one
(qemuDomainBlockCopyCommon): a path with a format (``--dest``), a ``<disk>``
with any storage source (``--xml``; a pool volume named by ``type='volume'`` is
resolved to its path), or a new volume of a pool made by the volume code with
the disk's size (virtbus's ``--pool --name``).  A destination another disk uses
is refused; a local one is checked as libvirt checks it.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from services.storage.interface import Volume, Volumes
from services.storage.probe import probe_file
from shared.api import storage_jobs as api
from shared.api.blockjob import destination_source
from shared.api.storage import VolumeUser, users_text
from shared.conf.disk_model import DiskDef
from shared.conf.disk_source import StorageSource, StorageType
from shared.conf.storage_pool_util import sanitize_path
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.QEMU


@dataclass(frozen=True)
class Destination:
    """What a copy command carries about its destination."""

    xml: str
    reuse_external: bool
    path: str | None
    created_volume: str | None = None


def destination_xml(kind: StorageType, path: str, fmt: str | None) -> str:
    """The ``<disk>`` virsh's blockcopy builds for ``--dest`` (its order: source, driver)."""
    w = XmlWriter()
    with w.block("disk", [("type", kind.value)]) as d:
        d.leaf("source", [("dev" if kind is StorageType.BLOCK else "file", path)])
        if fmt:
            d.leaf("driver", [("type", fmt)])
    return w.getvalue()


def check_local_destination(target: str, path: str, *, reuse: bool, blockdev: bool) -> None:
    """qemuDomainBlockCopyCommon's checks of a local destination before the copy."""
    try:
        st = os.stat(path)
    except FileNotFoundError as err:
        if reuse:
            raise VirtError(
                ErrorCode.SYSTEM_ERROR,
                f"missing destination file for disk {target}: {path}: No such file or directory",
                _D,
                raw=True,
            ) from err
        return
    except OSError as err:
        raise VirtError(
            ErrorCode.SYSTEM_ERROR,
            f"unable to stat for disk {target}: {path}: {err.strerror}",
            _D,
            raw=True,
        ) from err
    if stat.S_ISBLK(st.st_mode):
        return
    if st.st_size and not reuse:
        raise VirtError(
            ErrorCode.CONFIG_UNSUPPORTED,
            f"external destination file for disk {target} already exists and is not a "
            f"block device: {path}",
            _D,
        )
    if blockdev:
        raise VirtError(
            ErrorCode.INVALID_ARG,
            f"blockdev flag requested for disk {target}, but file '{path}' is not a block device",
            _D,
        )


class Destinations:
    """Prepares copy destinations; ``users_of(path)`` says which disks use a path."""

    def __init__(self, volumes: Volumes, users_of: Callable[[str], list[VolumeUser]]) -> None:
        self._volumes = volumes
        self._users_of = users_of

    async def prepare(self, req: api.BlockCopyRequest, disk: DiskDef, target: str) -> Destination:
        given = sum(1 for x in (req.dest, req.xml, req.pool or req.volume) if x)
        if given != 1:
            raise VirtError(
                ErrorCode.INVALID_ARG,
                "a block copy needs one destination: a path, an XML description, or a pool "
                "and a volume name",
                _D,
            )
        fmt = req.format or (disk.source.format.value if disk.source.format else None)
        if req.dest is not None:
            kind = StorageType.BLOCK if req.blockdev else StorageType.FILE
            path = sanitize_path(req.dest)
            await self._check_free(path, target, reuse=req.reuse_external, blockdev=req.blockdev)
            return Destination(destination_xml(kind, path, fmt), req.reuse_external, path)
        if req.xml is not None:
            return await self._xml_destination(req, target)
        if not req.pool or not req.volume:
            raise VirtError(
                ErrorCode.INVALID_ARG, "a pool volume destination needs a pool and a name", _D
            )
        return await self._volume_destination(req, disk, target, fmt)

    async def _check_free(self, path: str, target: str, *, reuse: bool, blockdev: bool) -> None:
        users = self._users_of(path)
        if users:
            raise VirtError(
                ErrorCode.OPERATION_INVALID,
                f"destination '{path}' is in use by {users_text(users)}",
                _D,
            )
        await asyncio.to_thread(
            check_local_destination, target, path, reuse=reuse, blockdev=blockdev
        )

    async def _xml_destination(self, req: api.BlockCopyRequest, target: str) -> Destination:
        assert req.xml is not None
        src = destination_source(req.xml)
        if src.type is StorageType.VOLUME:
            if src.pool is None or not src.pool.pool or not src.pool.volume:
                raise VirtError(
                    ErrorCode.XML_ERROR, "missing pool or volume of the copy destination", _D
                )
            vol = self._volumes.volume(src.pool.pool, src.pool.volume)
            fmt = src.format.value if src.format else vol.format
            return await self._volume_as_destination(vol, fmt, target, reuse=True)
        if src.is_local and src.path:
            path = sanitize_path(src.path)
            blockdev = src.type is StorageType.BLOCK
            await self._check_free(path, target, reuse=req.reuse_external, blockdev=blockdev)
            return Destination(req.xml, req.reuse_external, path)
        if not req.reuse_external:
            raise VirtError(
                ErrorCode.OPERATION_UNSUPPORTED,
                "non-file destination not supported yet",
                _D,
            )
        return Destination(req.xml, True, None)

    async def _volume_destination(
        self, req: api.BlockCopyRequest, disk: DiskDef, target: str, fmt: str | None
    ) -> Destination:
        assert req.pool is not None and req.volume is not None
        if req.reuse_external:
            vol = self._volumes.volume(req.pool, req.volume)
            return await self._volume_as_destination(vol, fmt, target, reuse=True)
        capacity = await self._capacity(disk, target)
        xml = volume_xml(req.volume, capacity, fmt, disk.source if req.shallow else None)
        vol = await self._volumes.create_volume(req.pool, xml)
        created = await self._volume_as_destination(vol, fmt, target, reuse=True)
        return Destination(created.xml, True, created.path, created_volume=f"{vol.pool}/{vol.name}")

    async def _volume_as_destination(
        self, vol: Volume, fmt: str | None, target: str, *, reuse: bool
    ) -> Destination:
        path = vol.path
        if not path:
            raise VirtError(
                ErrorCode.OPERATION_UNSUPPORTED,
                f"volume '{vol.name}' of pool '{vol.pool}' has no path to copy to",
                _D,
            )
        kind = StorageType.BLOCK if vol.type == "block" else StorageType.FILE
        await self._check_free(path, target, reuse=reuse, blockdev=False)
        return Destination(destination_xml(kind, path, fmt or vol.format), True, path)

    async def _capacity(self, disk: DiskDef, target: str) -> int:
        src = disk.source
        if not src.is_local or not src.path:
            raise VirtError(
                ErrorCode.OPERATION_UNSUPPORTED,
                f"the size of disk '{target}' is unknown: give a destination that exists",
                _D,
            )
        path = src.path
        info = await asyncio.to_thread(probe_file, path)
        if info.capacity is not None:
            return info.capacity
        return (await asyncio.to_thread(os.stat, path)).st_size


def volume_xml(name: str, capacity: int, fmt: str | None, source: StorageSource | None) -> str:
    """A new volume for a copy; with ``source`` (shallow) on the source's backing image."""
    w = XmlWriter()
    with w.block("volume") as v:
        v.text("name", name)
        v.text("capacity", capacity)
        if fmt:
            with v.block("target") as t:
                t.leaf("format", [("type", fmt)])
        backing = source.backing_store if source is not None else None
        if backing is not None and not backing.is_terminator and backing.path:
            with v.block("backingStore") as b:
                b.text("path", backing.path)
                if backing.format:
                    b.leaf("format", [("type", backing.format.value)])
    return w.getvalue()
