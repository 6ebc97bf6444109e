"""Volumes as files in a pool folder: describing, creating, copying, wiping and resizing them
the way libvirt's local storage code does (storage_util.c).

These functions block (they stat, read and write files); the backends call
them through ``asyncio.to_thread``, except ``describe`` of one volume on a
local file system (see ``LocalBackend``).  Every path they are given has already been confined to
its pool.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from services.storage.pools.confine import has_control_chars
from services.storage.probe import ImageInfo, probe_file
from shared.conf.encryption import Encryption
from shared.conf.storage_pool_util import Permissions
from shared.conf.storage_volume import (
    BackingStore,
    StorageVolumeDef,
    Timestamp,
    Timestamps,
    VolumeTarget,
    VolumeType,
)
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE
#: Mode of a new volume file when its XML names none (VIR_STORAGE_DEFAULT_VOL_PERM_MODE).
DEFAULT_VOL_MODE = 0o600
#: Mode of a pool folder that build creates (VIR_STORAGE_DEFAULT_POOL_PERM_MODE).
DEFAULT_POOL_MODE = 0o711
_COPY_CHUNK = 1024 * 1024
_ZERO_CHUNK = 1024 * 1024


def system_error(err: OSError, message: str) -> VirtError:
    """libvirt's virReportSystemError: the message, then the errno text."""
    return VirtError(
        ErrorCode.SYSTEM_ERROR, f"{message}: {os.strerror(err.errno or 0)}", _D, raw=True
    )


def _stamp(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanoseconds=ns % 1_000_000_000)


def timestamps_of(st: os.stat_result) -> Timestamps:
    """atime, mtime, ctime from ``st``; btime 0, as libvirt writes it on Linux."""
    return Timestamps(
        atime=_stamp(st.st_atime_ns),
        mtime=_stamp(st.st_mtime_ns),
        ctime=_stamp(st.st_ctime_ns),
        btime=Timestamp(seconds=0),
    )


def permissions_of(st: os.stat_result) -> Permissions:
    return Permissions(mode=st.st_mode & 0o777, owner=st.st_uid, group=st.st_gid)


@dataclass(frozen=True)
class FsSizes:
    """A pool's capacity, allocation and free bytes (statvfs of its folder)."""

    capacity: int
    allocation: int
    available: int


def folder_sizes(path: str) -> FsSizes:
    try:
        sv = os.statvfs(path)
    except OSError as err:
        raise system_error(err, f"cannot statvfs path '{path}'") from err
    capacity = sv.f_frsize * sv.f_blocks
    available = sv.f_bfree * sv.f_frsize
    return FsSizes(capacity, capacity - available, available)


def _status_key(st: os.stat_result) -> tuple[int, ...]:
    """What ``describe`` shows of a stat, as plain numbers."""
    return (
        st.st_mode,
        st.st_uid,
        st.st_gid,
        st.st_size,
        st.st_blocks,
        st.st_atime_ns,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )


@dataclass(frozen=True, slots=True)
class Reading:
    """What ``read_volume`` found of a volume: its stat, its header, and its
    backing file's path, stat and format; ``key`` all of it that a definition
    shows, as plain values.  A volume read twice with equal keys is described
    alike, so a re-read that finds the same keeps the definition it had
    (``reread``)."""

    status: os.stat_result
    image: ImageInfo | None
    backing: tuple[str, os.stat_result | None, str] | None
    key: tuple[object, ...] = field(init=False)

    def __post_init__(self) -> None:
        backing = None
        if self.backing is not None:
            path, st, fmt = self.backing
            backing = (path, None if st is None else _status_key(st), fmt)
        object.__setattr__(self, "key", (_status_key(self.status), self.image, backing))


#: A volume's definition and the reading it was made from (None: not kept).
Seen = tuple[StorageVolumeDef, Reading | None]


def _read_backing(path: str, info: ImageInfo) -> tuple[str, os.stat_result | None, str] | None:
    if info.backing_path is None:
        return None
    backing = info.backing_path
    if "://" not in backing and not backing.startswith("/"):
        backing = os.path.join(os.path.dirname(path), backing)
    fmt = info.backing_format
    try:
        st: os.stat_result | None = os.stat(backing)
        if fmt is None:
            fmt = probe_file(backing).format
    except OSError:
        st = None
        fmt = fmt or "raw"
    return backing, st, fmt


def read_volume(path: str, status: os.stat_result | None = None) -> Reading | None:
    """Read the file at ``path`` as a volume (``status``, when given, is a stat
    of it just taken); None when it is not one (a socket, a FIFO, a dangling
    link) or cannot be read."""
    try:
        st = os.stat(path) if status is None else status
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return Reading(st, None, None)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        return None
    try:
        info = probe_file(path)
    except OSError:
        return None
    return Reading(st, info, _read_backing(path, info))


def _backing_store(backing: tuple[str, os.stat_result | None, str] | None) -> BackingStore | None:
    if backing is None:
        return None
    path, st, fmt = backing
    perms, stamps = Permissions(), None
    if st is not None:
        perms, stamps = permissions_of(st), timestamps_of(st)
    return BackingStore(path=path, format=fmt, permissions=perms, timestamps=stamps)


def describe(
    path: str,
    name: str,
    known: StorageVolumeDef | None = None,
    status: os.stat_result | None = None,
) -> StorageVolumeDef | None:
    """The volume the file at ``path`` is, or None when it is not one (a socket,
    a FIFO, a dangling link).  ``known`` keeps what only the XML said
    (the encryption's secret); ``status``, when given, is a stat of ``path``
    just taken."""
    reading = read_volume(path, status)
    return None if reading is None else _definition(path, name, known, reading)


def reread(
    path: str,
    name: str,
    known: StorageVolumeDef,
    status: os.stat_result | None = None,
    seen: Seen | None = None,
) -> Seen | None:
    """``describe`` of a volume described before as ``known``, with what was
    read of it.  ``seen``, a definition and the reading it was made from, is
    returned as it is when it describes ``known`` and the file reads the same:
    the header is read each time, as libvirt's refreshVol reads it; only the
    models are not made again."""
    reading = read_volume(path, status)
    if reading is None:
        return None
    if seen is not None and seen[0] is known and seen[1] is not None and reading.key == seen[1].key:
        return seen
    return _definition(path, name, known, reading), reading


def _definition(
    path: str, name: str, known: StorageVolumeDef | None, reading: Reading
) -> StorageVolumeDef:
    st, info = reading.status, reading.image
    perms, stamps = permissions_of(st), timestamps_of(st)
    if info is None:
        return StorageVolumeDef(
            name=name,
            key=path,
            type=VolumeType.DIR,
            target=VolumeTarget(path=path, format="dir", permissions=perms, timestamps=stamps),
        )
    size = st.st_size
    capacity = info.capacity or size
    encryption = None
    if info.encryption is not None:
        capacity -= info.payload_offset
        encryption = Encryption(format=info.encryption)
        if known is not None and known.target.encryption is not None:
            encryption = known.target.encryption
    v3 = info.compat == "1.1"
    return StorageVolumeDef(
        name=name,
        key=path,
        type=VolumeType.BLOCK if stat.S_ISBLK(st.st_mode) else VolumeType.FILE,
        capacity=capacity,
        allocation=st.st_blocks * 512,
        has_allocation=True,
        physical=size,
        target=VolumeTarget(
            path=path,
            format=info.format,
            permissions=perms,
            timestamps=stamps,
            encryption=encryption,
            # libvirt 9.0.0 reports compat, cluster size and features of qcow2 v3 only.
            compat=info.compat if v3 else None,
            cluster_size=info.cluster_size if v3 else 0,
            features=info.features if v3 else None,
        ),
        backing_store=_backing_store(reading.backing),
    )


def scan_folder(root: str, known: dict[str, StorageVolumeDef]) -> list[StorageVolumeDef]:
    """Every volume in the pool folder ``root`` (libvirt's virStorageBackendRefreshLocal).

    Names with control characters are skipped, as libvirt skips them.  A
    symbolic link is listed under its own path, as libvirt lists it, wherever it
    points (a dangling one is not); changing the volume it names stays confined
    to the folder (``confine.confined``), so a link out can be read but not
    written through.
    """
    try:
        names = sorted(os.listdir(root))
    except OSError as err:
        raise system_error(err, f"cannot open directory '{root}'") from err
    volumes = []
    for name in names:
        if has_control_chars(name):
            continue
        path = f"{root.rstrip('/')}/{name}"
        vol = describe(path, name, known.get(name))
        if vol is not None:
            volumes.append(vol)
    return volumes


# ---- creating ---------------------------------------------------------------------


def _open_new(path: str, mode: int) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    except OSError as err:
        raise system_error(err, f"Failed to create file '{path}'") from err
    os.fchmod(fd, mode)
    return fd


def _copy_sparse(src_path: str, fd: int, length: int) -> None:
    """Copy ``length`` bytes of ``src_path`` into ``fd``, seeking over zero blocks."""
    zero = bytes(_COPY_CHUNK)
    with open(src_path, "rb", buffering=0) as src:
        offset = 0
        while offset < length:
            chunk = src.read(min(_COPY_CHUNK, length - offset))
            if not chunk:
                break
            if chunk != zero[: len(chunk)]:
                os.pwrite(fd, chunk, offset)
            offset += len(chunk)


def create_raw(
    path: str,
    capacity: int,
    allocation: int,
    mode: int | None,
    source: StorageVolumeDef | None = None,
) -> None:
    """A raw file of ``capacity`` bytes with ``allocation`` bytes reserved, or a copy
    of ``source``'s data (libvirt's storageBackendCreateRaw/createRawFile).

    A partly made file is removed on failure.
    """
    fd = _open_new(path, DEFAULT_VOL_MODE if mode is None else mode)
    try:
        need_alloc = not (source is not None and allocation < source.capacity)
        os.ftruncate(fd, capacity)
        if allocation and need_alloc:
            try:
                os.posix_fallocate(fd, 0, allocation)
            except OSError as err:
                if err.errno not in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise system_error(
                        err, f"cannot allocate {allocation} bytes in file '{path}'"
                    ) from err
        if source is not None and source.target.path:
            _copy_sparse(source.target.path, fd, source.capacity)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _remove_quietly(path)
        raise
    os.close(fd)


def create_dir(path: str, mode: int | None) -> None:
    try:
        os.mkdir(path, DEFAULT_VOL_MODE if mode is None else mode)
    except OSError as err:
        raise system_error(err, f"cannot create path '{path}'") from err


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove(vol: StorageVolumeDef) -> None:
    """Delete a volume's file or folder; one already gone is not an error (libvirt)."""
    path = vol.target.path or ""
    try:
        if vol.type is VolumeType.DIR:
            os.rmdir(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as err:
        what = "cannot remove directory" if vol.type is VolumeType.DIR else "cannot unlink file"
        raise system_error(err, f"{what} '{path}'") from err


# ---- wiping and resizing ----------------------------------------------------------


def wipe_zero(path: str, allocation: int) -> None:
    """libvirt's zero wipe: a sparse file is emptied and re-extended, anything else
    has its first ``allocation`` bytes overwritten with zeros."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as err:
        raise system_error(err, f"Failed to open storage volume with path '{path}'") from err
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_blocks < st.st_size // 512:
            os.ftruncate(fd, 0)
            os.ftruncate(fd, st.st_size)
        else:
            zero = bytes(_ZERO_CHUNK)
            offset = 0
            while offset < allocation:
                offset += os.pwrite(fd, zero[: min(_ZERO_CHUNK, allocation - offset)], offset)
        os.fsync(fd)
    except OSError as err:
        raise system_error(err, f"Failed to wipe storage volume with path '{path}'") from err
    finally:
        os.close(fd)


def resize_raw(path: str, capacity: int, allocate: bool) -> None:
    """virFileResize: grow or shrink; ``allocate`` reserves the whole new size, as
    libvirt does (not only the bytes added)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as err:
        raise system_error(err, f"Unable to open '{path}'") from err
    try:
        size = os.fstat(fd).st_size
        if allocate and capacity > size:
            os.posix_fallocate(fd, 0, capacity)
        else:
            os.ftruncate(fd, capacity)
    except OSError as err:
        raise system_error(err, f"Failed to truncate file '{path}'") from err
    finally:
        os.close(fd)


def zero_ends(path: str, length: int) -> None:
    """Zero the first and last ``length`` bytes of a device (a partition table's
    places, as virStorageBackendZeroPartitionTable does)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as err:
        raise system_error(err, f"Failed to open storage volume with path '{path}'") from err
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        zero = bytes(min(length, size))
        os.pwrite(fd, zero, 0)
        os.pwrite(fd, zero, max(size - len(zero), 0))
        os.fsync(fd)
    except OSError as err:
        raise system_error(err, f"Failed to wipe storage volume with path '{path}'") from err
    finally:
        os.close(fd)
