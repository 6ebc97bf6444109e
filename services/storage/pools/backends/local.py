"""Volumes as files in a folder: what the dir, fs and netfs backends share
(libvirt's storage_backend_fs.c volume half and storage_util.c's local helpers).

Raw volumes are made natively (truncate, fallocate, sparse copy); every
other format, and any clone involving one, goes through qemu-img with
libvirt's exact command line.  Every path is confined to the pool folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from services.storage.pools import files, qcow2
from services.storage.pools.backends.base import Backend, CreateOptions, PoolScan, placed
from services.storage.pools.confine import (
    check_volume_name,
    confined,
    confined_status,
    volume_path,
)
from services.storage.pools.pool_secrets import PoolSecrets
from services.storage.pools.qemu_img import QemuImgJob, qemu_img_create_commands
from services.storage.pools.runner import CommandRunner
from shared.api.storage import BuildMode, WipeAlgorithm
from shared.conf.storage_pool import StoragePoolDef
from shared.conf.storage_volume import StorageVolumeDef, VolumeType
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE
P = ParamSpec("P")
T = TypeVar("T")


def pool_root(pool: StoragePoolDef) -> str:
    assert pool.target is not None, "a local pool has a target"
    return pool.target.path


def _needs_qemu_img(vol: StorageVolumeDef) -> bool:
    return vol.type is VolumeType.FILE and (
        (vol.target.format or "raw") != "raw" or vol.target.encryption is not None
    )


class LocalBackend(Backend):
    """Folder-backed volumes; subclasses decide how the folder comes to be.

    Reading one volume's header (stat, open, two small reads: ~15 us from the
    page cache, what libvirt's refreshVol does in its RPC worker) runs on the
    event loop, like the lstat that confines every path: a thread's round
    trip costs ~80 us of CPU per call, more than the work itself.  A network
    file system (``inline_io`` False) may stall for seconds, so there every
    file access, the confinement's included, goes to a thread (``_io``): a
    stalled server holds up that request, not the service.  An unlink always
    goes to a thread: the filesystem frees the file's blocks meanwhile, and on
    the loop that wait held up every other request (8 deletes in flight:
    1,097/s on the loop, 1,296/s in threads, with less CPU on the loop).
    """

    builds_volumes = True
    delete_function = "virStorageBackendVolDeleteLocal"
    #: Whether a volume's file accesses run on the event loop: its reads, the
    #: confinement of its path, ``lexists``, ``chmod`` and the backing-store
    #: access check (netfs pools: False, all in threads).
    inline_io: bool = True

    def __init__(self, runner: CommandRunner, secrets: PoolSecrets | None = None) -> None:
        super().__init__(runner, secrets)
        #: Whether qcow2 images without options are written here (``qcow2``).
        self.qcow2 = qcow2.Qcow2Writer()

    async def _io(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``function`` on the event loop, or in a thread where the file system
        may stall (``inline_io`` False)."""
        if self.inline_io:
            return function(*args, **kwargs)
        return await asyncio.to_thread(function, *args, **kwargs)

    async def _confined(self, pool: StoragePoolDef, vol: StorageVolumeDef) -> str:
        """``vol``'s path, confined to the pool folder (``confine.confined``)."""
        return await self._io(confined, pool_root(pool), vol.target.path or "")

    # -- pools ---------------------------------------------------------------------

    async def build(self, pool: StoragePoolDef, mode: BuildMode) -> None:
        await asyncio.to_thread(_build_folder, pool)

    async def delete(self, pool: StoragePoolDef) -> None:
        root = pool_root(pool)
        try:
            await asyncio.to_thread(os.rmdir, root)
        except OSError as err:
            raise files.system_error(err, f"failed to remove pool '{root}'") from err

    async def refresh(self, pool: StoragePoolDef, known: dict[str, StorageVolumeDef]) -> PoolScan:
        root = pool_root(pool)

        def scan() -> PoolScan:
            volumes = files.scan_folder(root, known)
            try:
                st = os.stat(root)
            except OSError as err:
                raise files.system_error(err, f"cannot stat path '{root}'") from err
            sizes = files.folder_sizes(root)
            return PoolScan(
                sizes.capacity,
                sizes.allocation,
                sizes.available,
                volumes,
                files.permissions_of(st),
            )

        return await asyncio.to_thread(scan)

    # -- volumes -------------------------------------------------------------------

    async def define_volume(self, pool: StoragePoolDef, vol: StorageVolumeDef) -> StorageVolumeDef:
        fmt = vol.target.format
        kind = {"dir": VolumeType.DIR, "ploop": VolumeType.PLOOP}.get(fmt or "", VolumeType.FILE)
        check_volume_name(vol.name)
        path = volume_path(pool_root(pool), vol.name)
        if await self._io(os.path.lexists, path):
            raise VirtError(
                ErrorCode.OPERATION_INVALID, f"volume target path '{path}' already exists", _D
            )
        return placed(vol, path, kind)

    async def build_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, options: CreateOptions
    ) -> None:
        fmt = vol.target.format or "raw"
        path = await self._confined(pool, vol)
        mode = vol.target.permissions.mode
        if fmt == "raw" and vol.target.encryption is None:
            if options.prealloc_metadata:
                raise VirtError(
                    ErrorCode.CONFIG_UNSUPPORTED,
                    "metadata preallocation is not supported for raw volumes",
                    _D,
                )
            if vol.backing_store is not None:
                raise VirtError(
                    ErrorCode.NO_SUPPORT, "backing storage not supported for raw volumes", _D
                )
            await asyncio.to_thread(files.create_raw, path, vol.capacity, vol.allocation, mode)
        elif fmt == "dir":
            await asyncio.to_thread(files.create_dir, path, mode)
        elif fmt == "ploop":
            raise VirtError(
                ErrorCode.NO_SUPPORT, "ploop volumes need the ploop tools, not available", _D
            )
        else:
            if vol.backing_store is not None:
                await self._io(_check_backing, pool, vol)
            await self._qemu_img(
                vol,
                QemuImgJob(vol, None, options.prealloc_metadata, secret_path=options.secret_path),
            )

    async def build_volume_from(
        self,
        pool: StoragePoolDef,
        vol: StorageVolumeDef,
        source: StorageVolumeDef,
        options: CreateOptions,
    ) -> None:
        path = await self._confined(pool, vol)
        if _needs_qemu_img(vol) or _needs_qemu_img(source):
            job = QemuImgJob(
                vol,
                source,
                options.prealloc_metadata,
                secret_path=options.secret_path,
                input_secret_path=options.input_secret_path,
            )
            await self._qemu_img(vol, job)
            return
        if options.prealloc_metadata:
            raise VirtError(
                ErrorCode.CONFIG_UNSUPPORTED,
                "metadata preallocation is not supported for raw volumes",
                _D,
            )
        mode = vol.target.permissions.mode
        await asyncio.to_thread(files.create_raw, path, vol.capacity, vol.allocation, mode, source)

    async def _qemu_img(self, vol: StorageVolumeDef, job: QemuImgJob) -> None:
        """Run the job's commands, then set the mode libvirt sets; remove the file on failure.

        The image of a plain qcow2 command is written here once qemu-img has
        been seen to write the same bytes (``qcow2``).

        qemu-img's LUKS key setup times PBKDF2 by the thread's CPU time and gives
        up when a short run measures as zero ("Unable to get accurate CPU
        usage"), which a busy host makes likely: such a run is tried again.
        """
        path = vol.target.path or ""
        commands = qemu_img_create_commands(job)
        mode = vol.target.permissions.mode
        mode = files.DEFAULT_VOL_MODE if mode is None else mode
        capacity = qcow2.default_capacity(commands[0], job.tool) if len(commands) == 1 else None
        if capacity is not None and self.qcow2.agrees:
            try:
                await _to_the_end(qcow2.write_image, path, capacity, mode)
                return
            except OSError:
                pass  # nothing was left: qemu-img tries, and says why it cannot
            except BaseException:
                await _remove(path)
                raise
        for attempt in range(_PBKDF_ATTEMPTS):
            try:
                for argv in commands:
                    await self.runner.run(argv)
                # qemu-img creates with the umask's mode; libvirt then sets the volume's.
                await self._io(os.chmod, path, mode)
                if capacity is not None and self.qcow2.agrees is None:
                    same = await asyncio.to_thread(qcow2.same_as_written, path, capacity)
                    self.qcow2.learn(same, job.tool)
                return
            except VirtError as err:
                await _remove(path)
                if _PBKDF_FLAKE not in err.message or attempt == _PBKDF_ATTEMPTS - 1:
                    raise
            except BaseException:
                await _remove(path)
                raise

    async def refresh_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, seen: files.Seen | None = None
    ) -> files.Seen:
        path = vol.target.path or ""
        fresh = await self._io(_reread_confined, pool_root(pool), path, vol, seen)
        if fresh is None:
            raise VirtError(
                ErrorCode.SYSTEM_ERROR,
                f"cannot stat file '{path}': No such file or directory",
                _D,
            )
        return fresh

    async def delete_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, *, with_snapshots: bool = False
    ) -> None:
        self.refuse_flags(with_snapshots=with_snapshots)
        check_volume_name(vol.name)
        await asyncio.to_thread(files.remove, vol)

    async def resize_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, capacity: int, allocate: bool
    ) -> None:
        path = await self._confined(pool, vol)
        if (vol.target.format or "raw") == "raw" and vol.target.encryption is None:
            await asyncio.to_thread(files.resize_raw, path, capacity, allocate)
            return
        if allocate:
            raise VirtError(
                ErrorCode.OPERATION_UNSUPPORTED,
                "preallocate is only supported for raw type volume",
                _D,
            )
        argv = ["qemu-img", "resize"]
        if capacity < vol.capacity:
            argv.append("--shrink")
        await self.runner.run([*argv, path, str(capacity)])

    async def wipe_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, algorithm: WipeAlgorithm
    ) -> None:
        path = await self._confined(pool, vol)
        if algorithm is WipeAlgorithm.TRIM:
            raise VirtError(ErrorCode.ARGUMENT_UNSUPPORTED, "'trim' algorithm not supported", _D)
        if algorithm is WipeAlgorithm.ZERO:
            await asyncio.to_thread(files.wipe_zero, path, vol.allocation)
            return
        await self.runner.run(["scrub", "-f", "-p", algorithm.value, path])

    async def upload_target(self, pool: StoragePoolDef, vol: StorageVolumeDef) -> str:
        return await self._confined(pool, vol)

    download_source = upload_target


def _reread_confined(
    root: str, path: str, vol: StorageVolumeDef, seen: files.Seen | None
) -> files.Seen | None:
    """``files.reread`` of a path once it is confined to ``root``, with the
    status the confinement read of it (not read again)."""
    return files.reread(path, vol.name, vol, confined_status(root, path), seen)


_PBKDF_FLAKE = "Unable to get accurate CPU usage"
# The flake is a run too short for the kernel's CPU-time ticks (a quarter of
# runs on a tick-accounted VM has been seen); ten tries make a failure rare.
_PBKDF_ATTEMPTS = 10


async def _to_the_end(function: Callable[P, None], *args: P.args, **kwargs: P.kwargs) -> None:
    """``function`` in a thread; cancelled, the call still waits for the thread to
    finish before the cancellation propagates (so what it made can be removed)."""
    work = asyncio.ensure_future(asyncio.to_thread(function, *args, **kwargs))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait({work})
        raise


async def _remove(path: str) -> None:
    """Remove a half-made volume file, even while the request is being cancelled."""
    with contextlib.suppress(OSError):
        await asyncio.shield(asyncio.to_thread(os.unlink, path))


def _check_backing(pool: StoragePoolDef, vol: StorageVolumeDef) -> None:
    """libvirt's access check on a backing store (relative paths are in the pool)."""
    backing = vol.backing_store
    assert backing is not None
    path = backing.path if backing.path.startswith("/") else f"{pool_root(pool)}/{backing.path}"
    if not os.access(path, os.R_OK):
        raise VirtError(
            ErrorCode.SYSTEM_ERROR,
            f"inaccessible backing store volume {backing.path}: No such file or directory",
            _D,
        )


def _build_folder(pool: StoragePoolDef) -> None:
    """virStorageBackendBuildLocal: the parents with default modes, then the folder
    with the XML's mode (or 0711 when it is new), owner and group."""
    assert pool.target is not None
    root = pool.target.path
    if not root.startswith("/"):
        raise VirtError(ErrorCode.INVALID_ARG, f"path '{root}' is not absolute", _D)
    parent = os.path.dirname(root)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as err:
        raise files.system_error(err, f"cannot create path '{parent}'") from err
    perms = pool.target.permissions
    mode = perms.mode
    if mode is None and not os.path.exists(root):
        mode = files.DEFAULT_POOL_MODE
    try:
        os.makedirs(root, exist_ok=True)
        if mode is not None:
            os.chmod(root, mode)
        if perms.owner is not None or perms.group is not None:
            os.chown(
                root,
                perms.owner if perms.owner is not None else -1,
                perms.group if perms.group is not None else -1,
            )
    except OSError as err:
        raise files.system_error(err, f"cannot create path '{root}'") from err
