"""The ``DiskDef`` model of a domain ``<disk>`` and its enums (domain_conf.h virDomainDiskDef)."""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict

from shared.conf.disk_address import DeviceInfo
from shared.conf.disk_mirror import DiskMirror
from shared.conf.disk_source import StorageSource, StorageType


class DiskDevice(enum.StrEnum):
    """virDomainDiskDevice: what the guest sees."""

    DISK = "disk"
    CDROM = "cdrom"
    FLOPPY = "floppy"
    LUN = "lun"


class DiskBus(enum.StrEnum):
    """virDomainDiskBus (``none``: not given, filled in from the target name)."""

    NONE = "none"
    IDE = "ide"
    FDC = "fdc"
    SCSI = "scsi"
    VIRTIO = "virtio"
    XEN = "xen"
    USB = "usb"
    UML = "uml"
    SATA = "sata"
    SD = "sd"


class DiskModel(enum.StrEnum):
    """virDomainDiskModel."""

    DEFAULT = "default"
    VIRTIO = "virtio"
    VIRTIO_TRANSITIONAL = "virtio-transitional"
    VIRTIO_NON_TRANSITIONAL = "virtio-non-transitional"


class SnapshotLocation(enum.StrEnum):
    """virDomainSnapshotLocation for the ``snapshot=`` attribute."""

    DEFAULT = "default"
    NO = "no"
    INTERNAL = "internal"
    EXTERNAL = "external"
    MANUAL = "manual"


class Sgio(enum.StrEnum):
    """virDomainDeviceSGIO."""

    DEFAULT = "default"
    FILTERED = "filtered"
    UNFILTERED = "unfiltered"


class StartupPolicy(enum.StrEnum):
    """virDomainStartupPolicy."""

    DEFAULT = "default"
    MANDATORY = "mandatory"
    REQUISITE = "requisite"
    OPTIONAL = "optional"


class Tray(enum.StrEnum):
    """virDomainDiskTray; ``closed`` is the default and is not written."""

    CLOSED = "closed"
    OPEN = "open"


class GeometryTrans(enum.StrEnum):
    """virDomainDiskGeometryTrans."""

    DEFAULT = "default"
    NONE = "none"
    AUTO = "auto"
    LBA = "lba"


class CacheMode(enum.StrEnum):
    """virDomainDiskCache."""

    DEFAULT = "default"
    NONE = "none"
    WRITETHROUGH = "writethrough"
    WRITEBACK = "writeback"
    DIRECTSYNC = "directsync"
    UNSAFE = "unsafe"


class ErrorPolicy(enum.StrEnum):
    """virDomainDiskErrorPolicy."""

    DEFAULT = "default"
    STOP = "stop"
    REPORT = "report"
    IGNORE = "ignore"
    ENOSPACE = "enospace"


class IoMode(enum.StrEnum):
    """virDomainDiskIo."""

    DEFAULT = "default"
    NATIVE = "native"
    THREADS = "threads"
    IO_URING = "io_uring"


class Discard(enum.StrEnum):
    """virDomainDiskDiscard."""

    DEFAULT = "default"
    UNMAP = "unmap"
    IGNORE = "ignore"


class DetectZeroes(enum.StrEnum):
    """virDomainDiskDetectZeroes."""

    DEFAULT = "default"
    OFF = "off"
    ON = "on"
    UNMAP = "unmap"


class DiskDriver(BaseModel):
    """``<driver>``, less the image format and metadata cache, which belong to the
    storage source (``DiskDef.source.format`` / ``metadata_cache_max_size``)."""

    model_config = ConfigDict(frozen=True)

    name: str | None = None
    cache: CacheMode | None = None
    error_policy: ErrorPolicy | None = None
    rerror_policy: ErrorPolicy | None = None
    io: IoMode | None = None
    ioeventfd: bool | None = None
    event_idx: bool | None = None
    copy_on_read: bool | None = None
    discard: Discard | None = None
    iothread: int | None = None
    detect_zeroes: DetectZeroes | None = None
    queues: int | None = None
    queue_size: int | None = None
    iommu: bool | None = None
    ats: bool | None = None
    packed: bool | None = None
    page_per_vq: bool | None = None


class DiskTarget(BaseModel):
    """``<target>``: the guest device name and bus, plus tray/removable/rotation."""

    model_config = ConfigDict(frozen=True)

    dev: str | None = None
    bus: DiskBus = DiskBus.NONE
    tray: Tray = Tray.CLOSED
    removable: bool | None = None
    rotation_rate: int | None = None


class DiskGeometry(BaseModel):
    """``<geometry cyls heads secs trans?>``."""

    model_config = ConfigDict(frozen=True)

    cyls: int = 0
    heads: int = 0
    secs: int = 0
    trans: GeometryTrans | None = None


class DiskBlockIo(BaseModel):
    """``<blockio logical_block_size? physical_block_size?>``."""

    model_config = ConfigDict(frozen=True)

    logical_block_size: int | None = None
    physical_block_size: int | None = None


#: The numeric ``<iotune>`` children in libvirt's output order; ``size_iops_sec``
#: and ``group_name`` are written between the first twelve and the ``*_length`` ones.
IOTUNE_FIELDS: tuple[str, ...] = (
    "total_bytes_sec",
    "read_bytes_sec",
    "write_bytes_sec",
    "total_iops_sec",
    "read_iops_sec",
    "write_iops_sec",
    "total_bytes_sec_max",
    "read_bytes_sec_max",
    "write_bytes_sec_max",
    "total_iops_sec_max",
    "read_iops_sec_max",
    "write_iops_sec_max",
    "size_iops_sec",
    "total_bytes_sec_max_length",
    "read_bytes_sec_max_length",
    "write_bytes_sec_max_length",
    "total_iops_sec_max_length",
    "read_iops_sec_max_length",
    "write_iops_sec_max_length",
)


class DiskIotune(BaseModel):
    """``<iotune>``: throttling limits (0 = unset) and the throttle group name."""

    model_config = ConfigDict(frozen=True)

    total_bytes_sec: int = 0
    read_bytes_sec: int = 0
    write_bytes_sec: int = 0
    total_iops_sec: int = 0
    read_iops_sec: int = 0
    write_iops_sec: int = 0
    total_bytes_sec_max: int = 0
    read_bytes_sec_max: int = 0
    write_bytes_sec_max: int = 0
    total_iops_sec_max: int = 0
    read_iops_sec_max: int = 0
    write_iops_sec_max: int = 0
    size_iops_sec: int = 0
    total_bytes_sec_max_length: int = 0
    read_bytes_sec_max_length: int = 0
    write_bytes_sec_max_length: int = 0
    total_iops_sec_max_length: int = 0
    read_iops_sec_max_length: int = 0
    write_iops_sec_max_length: int = 0
    group_name: str | None = None

    def has_any(self) -> bool:
        """virDomainBlockIoTuneInfoHasAny: some limit is set."""
        return any(getattr(self, name) for name in IOTUNE_FIELDS)

    def limits(self) -> tuple[int, ...]:
        """The numeric limits, for comparing two disks of one throttle group."""
        return tuple(getattr(self, name) for name in IOTUNE_FIELDS)


class DiskDef(BaseModel):
    """What a ``<disk>`` element says (virDomainDiskDef).

    ``source`` is the storage source with its backing chain; its ``type`` is the
    disk's ``type=``, its ``format`` the ``<driver type=...>``.  ``auth_on_disk`` /
    ``encryption_on_disk`` remember whether ``<auth>``/``<encryption>`` were
    children of ``<disk>`` (old placement) rather than of ``<source>``, so they
    are written back where they were.  ``mirror`` is live state: the destination
    of a running block copy or active commit.  A pivot is
    ``disk.model_copy(update={"source": disk.mirror.source, "mirror": None})``.
    """

    model_config = ConfigDict(frozen=True)

    device: DiskDevice = DiskDevice.DISK
    model: DiskModel | None = None
    rawio: bool | None = None
    sgio: Sgio | None = None
    snapshot: SnapshotLocation | None = None
    driver: DiskDriver = DiskDriver()
    source: StorageSource = StorageSource()
    startup_policy: StartupPolicy | None = None
    auth_on_disk: bool = False
    encryption_on_disk: bool = False
    backend_domain: str | None = None
    geometry: DiskGeometry | None = None
    blockio: DiskBlockIo | None = None
    mirror: DiskMirror | None = None
    target: DiskTarget = DiskTarget()
    iotune: DiskIotune = DiskIotune()
    readonly: bool = False
    shareable: bool = False
    transient: bool = False
    transient_share_backing: bool | None = None
    serial: str | None = None
    wwn: str | None = None
    vendor: str | None = None
    product: str | None = None
    info: DeviceInfo = DeviceInfo()

    @property
    def type(self) -> StorageType:
        """The disk's ``type=``: its source's storage type."""
        return self.source.type

    @property
    def dst(self) -> str | None:
        """The target device name (``<target dev=...>``)."""
        return self.target.dev

    @property
    def bus(self) -> DiskBus:
        """The target bus."""
        return self.target.bus
