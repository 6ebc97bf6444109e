"""The interface every pool backend implements (libvirt's virStorageBackend).

A backend acts on the pool's real storage and reports what is there; it
never keeps state of its own.  An operation a backend lacks answers with
libvirt's ``VIR_ERR_NO_SUPPORT`` message for it, except ``build``, ``start``
and ``stop``, which libvirt treats as nothing to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from services.storage.pools.files import Seen
from services.storage.pools.pool_secrets import PoolSecrets
from services.storage.pools.runner import CommandRunner
from shared.api.storage import BuildMode, WipeAlgorithm
from shared.conf.storage_pool import StoragePoolDef
from shared.conf.storage_pool_types import PoolType
from shared.conf.storage_pool_util import Permissions
from shared.conf.storage_volume import StorageVolumeDef, VolumeTarget, VolumeType
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE


def no_support(message: str) -> VirtError:
    return VirtError(ErrorCode.NO_SUPPORT, message, _D)


def found_volume(
    name: str, path: str, kind: VolumeType, size: int = 0, fmt: str | None = None, key: str = ""
) -> StorageVolumeDef:
    """A volume a refresh found whole: fully allocated, its key its path unless given."""
    return StorageVolumeDef(
        name=name,
        key=key or path,
        type=kind,
        capacity=size,
        allocation=size,
        has_allocation=True,
        target=VolumeTarget(path=path, format=fmt),
    )


def placed(vol: StorageVolumeDef, path: str, kind: VolumeType) -> StorageVolumeDef:
    """``vol`` at ``path`` with its type, and its path as key (libvirt's createVol)."""
    target = vol.target.model_copy(update={"path": path})
    return vol.model_copy(update={"type": kind, "key": path, "target": target})


@dataclass(frozen=True)
class PoolScan:
    """What a refresh found: sizes, volumes, and the target folder's permissions."""

    capacity: int
    allocation: int
    available: int
    volumes: list[StorageVolumeDef] = field(default_factory=list)
    target_permissions: Permissions | None = None


@dataclass(frozen=True)
class CreateOptions:
    """Flags and secrets of a volume creation (VIR_STORAGE_VOL_CREATE_*)."""

    prealloc_metadata: bool = False
    reflink: bool = False
    secret_path: str | None = None
    input_secret_path: str | None = None


class Backend:
    """One pool type's storage operations; subclasses override what they support."""

    pool_type: ClassVar[PoolType]
    #: Whether volumes are built after being defined (libvirt's buildVol); a
    #: backend without it needs a capacity in the volume XML.
    builds_volumes: ClassVar[bool] = False
    #: Whether ``check`` can tell a running pool (libvirt's checkPool exists).
    has_check: ClassVar[bool] = False
    #: libvirt's function deleting this type's volumes, which refuses
    #: VIR_STORAGE_VOL_DELETE_WITH_SNAPSHOTS by name; None where a volume's
    #: snapshots can go with it (rbd).
    delete_function: ClassVar[str | None] = None

    def __init__(self, runner: CommandRunner, secrets: PoolSecrets | None = None) -> None:
        self.runner = runner
        #: Where the secret of a pool's ``<auth>`` comes from (iSCSI CHAP, cephx).
        self.secrets = secrets

    def _pool_secrets(self) -> PoolSecrets:
        if self.secrets is None:
            # Without a secret service there is no value to give the tool.
            raise VirtError(
                ErrorCode.INTERNAL_ERROR, "no secret service to fetch the pool's auth secret", _D
            )
        return self.secrets

    # -- pools ---------------------------------------------------------------------

    async def check(self, pool: StoragePoolDef) -> bool:
        """Whether the pool's storage is running now (libvirt's checkPool);
        backends without a check report inactive."""
        return False

    async def build(self, pool: StoragePoolDef, mode: BuildMode) -> None:
        """Prepare the pool's storage (a folder, a file system, a volume group)."""

    async def start(self, pool: StoragePoolDef) -> None:
        """Make the storage usable (mount, activate)."""

    async def stop(self, pool: StoragePoolDef) -> None:
        """Undo ``start``."""

    async def delete(self, pool: StoragePoolDef) -> None:
        """Remove what ``build`` made."""
        raise no_support("pool does not support pool deletion")

    async def refresh(self, pool: StoragePoolDef, known: dict[str, StorageVolumeDef]) -> PoolScan:
        """Sizes and volumes as the storage has them now."""
        raise NotImplementedError

    # -- volumes -------------------------------------------------------------------

    async def define_volume(self, pool: StoragePoolDef, vol: StorageVolumeDef) -> StorageVolumeDef:
        """The volume with its type, target path and key set (libvirt's createVol);
        refuses a volume that cannot exist in this pool."""
        raise no_support("storage pool does not support volume creation")

    async def build_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, options: CreateOptions
    ) -> None:
        """Create the volume's storage; on failure nothing of it remains."""
        raise no_support("storage pool does not support volume creation")

    async def build_volume_from(
        self,
        pool: StoragePoolDef,
        vol: StorageVolumeDef,
        source: StorageVolumeDef,
        options: CreateOptions,
    ) -> None:
        """Create the volume as a copy of ``source``; on failure nothing of it remains."""
        raise no_support("storage pool does not support volume creation from an existing volume")

    async def refresh_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, seen: Seen | None = None
    ) -> Seen:
        """The volume as its storage describes it now, with what was read of it
        (None where nothing is kept); ``seen`` is the last such pair, returned
        as it is when the storage reads the same."""
        return vol, None

    async def delete_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, *, with_snapshots: bool = False
    ) -> None:
        """Delete ``vol`` (and its snapshots, ``with_snapshots``, where supported)."""
        raise no_support("storage pool does not support vol deletion")

    def refuse_flags(self, *, with_snapshots: bool) -> None:
        """virCheckFlags in this type's volume deletion: ``with_snapshots`` is
        refused where the type has no snapshots to delete."""
        if with_snapshots and self.delete_function is not None:
            raise VirtError(
                ErrorCode.INVALID_ARG,
                f"unsupported flags (0x2) in function {self.delete_function}",
                _D,
                raw=True,
            )

    async def resize_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, capacity: int, allocate: bool
    ) -> None:
        raise no_support("storage pool does not support changing of volume capacity")

    async def wipe_volume(
        self, pool: StoragePoolDef, vol: StorageVolumeDef, algorithm: WipeAlgorithm
    ) -> None:
        raise no_support("storage pool doesn't support volume wiping")

    async def upload_target(self, pool: StoragePoolDef, vol: StorageVolumeDef) -> str:
        """The file an upload writes (confined to the pool)."""
        raise no_support("storage pool doesn't support volume upload")

    async def download_source(self, pool: StoragePoolDef, vol: StorageVolumeDef) -> str:
        """The file a download reads (confined to the pool)."""
        raise no_support("storage pool doesn't support volume download")
