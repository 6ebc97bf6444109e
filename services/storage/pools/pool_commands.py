"""The commands libvirt 9.0.0 runs to start, stop and build pools (storage_util.c,
storage_backend_fs.c, storage_backend_logical.c), as pure builders.

Only fs and netfs pools (mount) and logical pools (vgchange) have a start
command; ``pool_start_command`` refuses every other type.  Program names are
parameters: the service passes the path it found, tests pass the bare name.
"""

from __future__ import annotations

import sys

from shared.conf.storage_pool import StoragePoolDef
from shared.conf.storage_pool_types import POOL_TYPES, PoolType, StartCommand
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE

#: Mount options libvirt always adds, by host OS (storage_util.c default_mount_opts).
DEFAULT_MOUNT_OPTIONS = {"linux": "nodev,nosuid,noexec", "freebsd": "nosuid,noexec", "other": ""}


def host_platform() -> str:
    """``linux``, ``freebsd`` or ``other``: the key of this host's mount options."""
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform.startswith("freebsd"):
        return "freebsd"
    return "other"


def check_fs_source(pool: StoragePoolDef) -> None:
    """virStorageBackendFileSystemIsValid: one host and a dir (netfs), one device (fs)."""
    source = pool.source
    if pool.type is PoolType.NETFS:
        if len(source.hosts) != 1:
            raise VirtError(
                ErrorCode.CONFIG_UNSUPPORTED, "expected exactly 1 host for the storage pool", _D
            )
        if not source.hosts[0].name:
            raise VirtError(ErrorCode.INTERNAL_ERROR, "missing source host", _D)
        if source.dir is None:
            raise VirtError(ErrorCode.INTERNAL_ERROR, "missing source path", _D)
        return
    if len(source.devices) != 1:
        if not source.devices:
            raise VirtError(ErrorCode.INTERNAL_ERROR, "missing source device", _D)
        raise VirtError(
            ErrorCode.CONFIG_UNSUPPORTED, "expected exactly 1 device for the storage pool", _D
        )


def fs_pool_source(pool: StoragePoolDef) -> str:
    """What is mounted: ``host:dir``, ``//host/dir`` for CIFS, or the device path."""
    source = pool.source
    if pool.type is PoolType.NETFS:
        host, path = source.hosts[0].name, source.dir
        if source.format == "cifs":
            return f"//{host}/{path}"
        return f"{host}:{path}"
    return source.devices[0].path


def _mount_options(pool: StoragePoolDef, platform: str, extra: str | None) -> list[str]:
    """``-o`` with the defaults, the type's own option and the XML's mount_opts."""
    opts = [o for o in (DEFAULT_MOUNT_OPTIONS[platform], extra) if o]
    # libvirt logs the pool as tainted by custom mount options; the service does too.
    opts += [o.name for o in pool.namespace_options]
    return ["-o", ",".join(opts)] if opts else []


def mount_command(
    pool: StoragePoolDef, *, program: str = "mount", platform: str | None = None
) -> list[str]:
    """The mount command of an fs or netfs pool (virStorageBackendFileSystemMountCmd)."""
    check_fs_source(pool)
    platform = platform or host_platform()
    assert pool.target is not None
    src, target = fs_pool_source(pool), pool.target.path
    fmt = pool.source.format
    nfs_vers = None
    if pool.type is PoolType.NETFS and pool.source.protocol_ver:
        nfs_vers = f"nfsvers={pool.source.protocol_ver}"
    argv = [program]
    if pool.type is PoolType.NETFS and fmt == "auto":
        # 'mount -t auto' cannot tell nfs or cifs; plain 'mount' can.
        return argv + _mount_options(pool, platform, nfs_vers) + [src, target]
    if pool.type is PoolType.NETFS and fmt == "glusterfs":
        extra: str | None = "direct-io-mode=1"
    elif pool.type is PoolType.NETFS and fmt == "cifs":
        extra = "guest"
    else:
        extra = nfs_vers
    return argv + _mount_options(pool, platform, extra) + ["-t", str(fmt), src, target]


def unmount_command(pool: StoragePoolDef, *, program: str = "umount") -> list[str]:
    """The command that stops an fs or netfs pool."""
    assert pool.target is not None
    return [program, pool.target.path]


def vgchange_command(
    pool: StoragePoolDef, *, activate: bool, program: str = "vgchange"
) -> list[str]:
    """Activate or deactivate a logical pool's volume group (virStorageBackendLogicalChangeCmd)."""
    return [program, "-aly" if activate else "-aln", str(pool.source.name)]


def pool_start_command(
    pool: StoragePoolDef, *, program: str | None = None, platform: str | None = None
) -> list[str]:
    """The command that starts ``pool``: mount for fs/netfs, vgchange for logical.

    Raises ``VirtError`` (``VIR_ERR_NO_SUPPORT``) for any other pool type,
    which libvirt starts without such a command or not from this table.
    """
    start = POOL_TYPES[pool.type].start_command
    if start is StartCommand.MOUNT:
        return mount_command(pool, program=program or "mount", platform=platform)
    if start is StartCommand.VGCHANGE:
        return vgchange_command(pool, activate=True, program=program or "vgchange")
    raise VirtError(
        ErrorCode.NO_SUPPORT, f"pool type '{pool.type.value}' has no mount or activate command", _D
    )


# ---- building and tearing down ----------------------------------------------------

#: The flag that makes each mkfs overwrite an existing file system (libvirt's choice).
_MKFS_FORCE = {"xfs": "-f", "ext2": "-F", "ext3": "-F", "ext4": "-F", "vfat": "-I"}


def mkfs_command(pool: StoragePoolDef, *, program: str = "mkfs") -> list[str]:
    """The command that formats an fs pool's device (virStorageBackendExecuteMKFS)."""
    if not pool.source.devices:
        raise VirtError(
            ErrorCode.INVALID_ARG,
            f"No source device specified when formatting pool '{pool.name}'",
            _D,
        )
    fmt = str(pool.source.format)
    argv = [program, "-t", fmt]
    if fmt in _MKFS_FORCE:
        argv.append(_MKFS_FORCE[fmt])
    return [*argv, pool.source.devices[0].path]


def logical_build_commands(pool: StoragePoolDef) -> list[list[str]]:
    """pvcreate on each device, then vgcreate (virStorageBackendLogicalBuildPool)."""
    devices = [d.path for d in pool.source.devices]
    return [*(["pvcreate", d] for d in devices), ["vgcreate", str(pool.source.name), *devices]]


def logical_delete_commands(pool: StoragePoolDef) -> list[list[str]]:
    """vgremove, then pvremove on each device (virStorageBackendLogicalDeletePool)."""
    return [
        ["vgremove", "-f", str(pool.source.name)],
        *(["pvremove", d.path] for d in pool.source.devices),
    ]


def lvcreate_command(
    pool: StoragePoolDef, name: str, capacity: int, allocation: int, backing: str | None
) -> list[str]:
    """virStorageBackendLogicalLVCreate: a thin snapshot when allocation < capacity."""
    argv = ["lvcreate", "--name", name, "-L"]
    if capacity != allocation:
        argv += [f"{-(-(allocation or 1) // 1024)}K", "--type", "snapshot", "--virtualsize"]
    argv.append(f"{-(-capacity // 1024)}K")
    argv += ["-s", backing] if backing else [str(pool.source.name)]
    return argv


def lvremove_commands(path: str) -> list[list[str]]:
    """Deactivate, then remove a logical volume (virStorageBackendLogicalDeleteVol)."""
    return [["lvchange", "-aln", path], ["lvremove", "-f", path]]


def parted_label_command(pool: StoragePoolDef) -> list[str]:
    """Write a disk pool's partition table (virStorageBackendDiskBuildPool)."""
    fmt = pool.source.format or "dos"
    label = "msdos" if fmt in ("dos", "unknown") else fmt
    return ["parted", pool.source.devices[0].path, "mklabel", "--script", label]
