"""The per-pool-type table (libvirt's poolTypeInfo): what each storage pool type's XML holds.

Parse, format and the storage backends all read ``POOL_TYPES`` instead of
testing the pool type: which ``<source>`` elements a type has (and requires),
its source format names and default, the volume format names its volumes
take and their default, whether it has a local ``<target>``, and its XML
namespace extension.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class PoolType(enum.StrEnum):
    """virStoragePoolType, in libvirt's order."""

    DIR = "dir"
    FS = "fs"
    NETFS = "netfs"
    LOGICAL = "logical"
    DISK = "disk"
    ISCSI = "iscsi"
    ISCSI_DIRECT = "iscsi-direct"
    SCSI = "scsi"
    MPATH = "mpath"
    RBD = "rbd"
    SHEEPDOG = "sheepdog"
    GLUSTER = "gluster"
    ZFS = "zfs"
    VSTORAGE = "vstorage"


class SourcePart(enum.Flag):
    """The ``<source>`` parts a pool type uses (VIR_STORAGE_POOL_SOURCE_*).

    A part in a type's set is formatted; HOST, DIR and ADAPTER are then also
    required, NAME defaults to the pool name, and DEVICE is required when it
    is the type's only part.  NETWORK marks a pool with no local target.
    """

    NONE = 0
    HOST = enum.auto()
    DEVICE = enum.auto()
    DIR = enum.auto()
    ADAPTER = enum.auto()
    NAME = enum.auto()
    INITIATOR_IQN = enum.auto()
    NETWORK = enum.auto()


class SourceMatch(enum.Enum):
    """How a pool's source is compared with another pool's to find two pools on one
    storage (the cases of virStoragePoolObjSourceFindDuplicate)."""

    #: never clashes
    NONE = enum.auto()
    #: a pool of the same type on the same directory (target path for dir, else
    #: source dir on a shared host)
    DIR = enum.auto()
    #: any DEVICE pool sharing a source device
    DEVICE = enum.auto()
    #: an iscsi pool with the same hosts sharing a source device
    ISCSI = enum.auto()
    #: a pool of the same type with the same source name
    NAME = enum.auto()


class StartCommand(enum.Enum):
    """The command that starts a pool of the type, if one of the command builders."""

    NONE = enum.auto()
    MOUNT = enum.auto()
    VGCHANGE = enum.auto()


@dataclass(frozen=True)
class FormatSet:
    """An ordered enum of format names (index = libvirt's number) and its default.

    ``parse_excludes`` are names that are formatted but refused on input
    (libvirt's virStorageVolumeFormatFromString refuses "none").
    """

    names: tuple[str, ...]
    default: str
    parse_excludes: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, names: str, default: str, parse_excludes: frozenset[str] = frozenset()
    ) -> FormatSet:
        """A format set from its space-separated names, in libvirt's order."""
        return cls(tuple(names.split()), default, parse_excludes)

    def accepts(self, name: str) -> bool:
        """True when ``name`` is a valid input value."""
        return name in self.names and name not in self.parse_excludes

    def index(self, name: str) -> int:
        """libvirt's enum number of ``name``."""
        return self.names.index(name)


@dataclass(frozen=True)
class PoolNamespace:
    """A pool XML namespace extension: ``<prefix:container><prefix:option .../>``.

    ``with_value``: options carry a non-empty ``value`` as well as a ``name``
    (rbd's config_opts); otherwise only a ``name`` (fs's mount_opts).
    """

    prefix: str
    uri: str
    container: str
    with_value: bool
    #: Words naming the options in libvirt's messages ("rbd", "fs mount").
    label: str


FS_NAMESPACE = PoolNamespace(
    prefix="fs",
    uri="http://libvirt.org/schemas/storagepool/fs/1.0",
    container="mount_opts",
    with_value=False,
    label="fs mount",
)
RBD_NAMESPACE = PoolNamespace(
    prefix="rbd",
    uri="http://libvirt.org/schemas/storagepool/rbd/1.0",
    container="config_opts",
    with_value=True,
    label="rbd",
)

#: Volume file formats (virStorageFileFormat); "none" is never accepted as input.
FILE_FORMATS = FormatSet.of(
    "none raw dir bochs cloop dmg iso vpc vdi fat vhd ploop cow qcow qcow2 qed vmdk",
    default="raw",
    parse_excludes=frozenset({"none"}),
)
#: Partition types of a disk pool's volumes (virStorageVolFormatDisk).
DISK_VOLUME_FORMATS = FormatSet.of(
    "none linux fat16 fat32 linux-swap linux-lvm linux-raid extended",
    default="none",
)
#: Qcow2 features a volume target may list, in libvirt's formatting order.
FILE_FEATURES = ("lazy_refcounts", "extended_l2")

FS_FORMATS = FormatSet.of(
    "auto ext2 ext3 ext4 ufs iso9660 udf gfs gfs2 vfat hfs+ xfs ocfs2 vmfs",
    default="auto",
)
NETFS_FORMATS = FormatSet.of("auto nfs glusterfs cifs", default="auto")
DISK_FORMATS = FormatSet(
    names=("unknown", "dos", "dvh", "gpt", "mac", "bsd", "pc98", "sun", "lvm2"),
    default="unknown",
)
LOGICAL_FORMATS = FormatSet.of("unknown lvm2", default="lvm2")


@dataclass(frozen=True)
class PoolTypeInfo:
    """Everything that differs between pool types, for parse, format and backends."""

    source: SourcePart = SourcePart.NONE
    #: Source ``<format type=.../>`` names; None: the type has no source format.
    pool_formats: FormatSet | None = None
    #: Volume ``<format type=.../>`` names; None: volumes have no format.
    volume_formats: FormatSet | None = None
    #: ``<target><path>`` computed from the source name ("{}" stands for it);
    #: None: read from the XML (and required) when the type has a target.
    target_path_template: str | None = None
    #: A ``<source>`` element must hold ``<name>`` (rbd).
    source_name_required: bool = False
    #: ``<source><dir>`` when the XML gives none.
    default_source_dir: str | None = None
    #: ``<features><cow state=.../>`` is allowed.
    supports_cow: bool = False
    #: ``<initiator><iqn>`` is required.
    requires_initiator: bool = False
    namespace: PoolNamespace | None = None
    #: how two pools of this type are found to share their storage
    source_match: SourceMatch = SourceMatch.NONE
    #: mount for fs/netfs, vgchange for logical
    start_command: StartCommand = StartCommand.NONE

    @property
    def source_has_name(self) -> bool:
        """Whether the source has a ``<name>`` (defaulting to the pool name and back)."""
        return SourcePart.NAME in self.source

    @property
    def has_target(self) -> bool:
        """Whether pools of this type have a local ``<target>`` (path, permissions)."""
        return SourcePart.NETWORK not in self.source


_S = SourcePart
POOL_TYPES: dict[PoolType, PoolTypeInfo] = {
    PoolType.DIR: PoolTypeInfo(
        volume_formats=FILE_FORMATS, supports_cow=True, source_match=SourceMatch.DIR
    ),
    PoolType.FS: PoolTypeInfo(
        source=_S.DEVICE,
        pool_formats=FS_FORMATS,
        volume_formats=FILE_FORMATS,
        supports_cow=True,
        namespace=FS_NAMESPACE,
        source_match=SourceMatch.DEVICE,
        start_command=StartCommand.MOUNT,
    ),
    PoolType.NETFS: PoolTypeInfo(
        source=_S.HOST | _S.DIR,
        pool_formats=NETFS_FORMATS,
        volume_formats=FILE_FORMATS,
        namespace=FS_NAMESPACE,
        source_match=SourceMatch.DIR,
        start_command=StartCommand.MOUNT,
    ),
    PoolType.LOGICAL: PoolTypeInfo(
        source=_S.NAME | _S.DEVICE,
        pool_formats=LOGICAL_FORMATS,
        target_path_template="/dev/{}",
        source_match=SourceMatch.DEVICE,
        start_command=StartCommand.VGCHANGE,
    ),
    PoolType.DISK: PoolTypeInfo(
        source=_S.DEVICE,
        pool_formats=DISK_FORMATS,
        volume_formats=DISK_VOLUME_FORMATS,
        source_match=SourceMatch.DEVICE,
    ),
    PoolType.ISCSI: PoolTypeInfo(
        source=_S.HOST | _S.DEVICE | _S.INITIATOR_IQN, source_match=SourceMatch.ISCSI
    ),
    PoolType.ISCSI_DIRECT: PoolTypeInfo(
        source=_S.HOST | _S.DEVICE | _S.NETWORK | _S.INITIATOR_IQN,
        requires_initiator=True,
        source_match=SourceMatch.DIR,
    ),
    PoolType.SCSI: PoolTypeInfo(source=_S.ADAPTER),
    PoolType.MPATH: PoolTypeInfo(),
    PoolType.RBD: PoolTypeInfo(
        source=_S.HOST | _S.NETWORK | _S.NAME,
        volume_formats=FILE_FORMATS,
        source_name_required=True,
        namespace=RBD_NAMESPACE,
        source_match=SourceMatch.NAME,
    ),
    PoolType.SHEEPDOG: PoolTypeInfo(
        source=_S.HOST | _S.NETWORK | _S.NAME, source_match=SourceMatch.NAME
    ),
    PoolType.GLUSTER: PoolTypeInfo(
        source=_S.HOST | _S.NETWORK | _S.NAME | _S.DIR,
        volume_formats=FILE_FORMATS,
        default_source_dir="/",
        source_match=SourceMatch.DIR,
    ),
    PoolType.ZFS: PoolTypeInfo(
        source=_S.NAME | _S.DEVICE,
        target_path_template="/dev/zvol/{}",
        source_match=SourceMatch.DEVICE,
    ),
    PoolType.VSTORAGE: PoolTypeInfo(
        source=_S.NAME, volume_formats=FILE_FORMATS, source_match=SourceMatch.NAME
    ),
}

#: netfs format names by number, used in one libvirt message about <protocol>.
NETFS_FORMAT_NAMES = NETFS_FORMATS.names
