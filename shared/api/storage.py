"""The storage service's endpoints (libvirt's virStoragePool* and virStorageVol* API) and models.

Every endpoint is host-scoped: the request goes to the storage service of
the host named in the subject.  Pools are named by name, volumes by their
pool and name, as libvirt's virStoragePoolPtr and virStorageVolPtr are.
"""

from __future__ import annotations

import enum
from typing import TypeVar

from pydantic import BaseModel, Field

from shared.util.api import DEFAULT_TIMEOUT, Empty, Endpoint, memory_read

SERVICE = "storage"
#: Volume requests a storage service answers at once, per endpoint: a qemu-img
#: run does not hold up the next.  Pool requests are answered one at a time
#: (a definition is checked against the others, then stored).
VOLUME_CONCURRENCY = 8
#: Creating or cloning a volume may copy gigabytes; such calls wait longer.
LONG_TIMEOUT = 3600.0


class PoolState(enum.StrEnum):
    """virStoragePoolState."""

    INACTIVE = "inactive"
    BUILDING = "building"
    RUNNING = "running"
    DEGRADED = "degraded"
    INACCESSIBLE = "inaccessible"


class BuildMode(enum.StrEnum):
    """How pool-build (or create/start with a build) treats existing data.

    ``none``: no build; ``build``: build without a flag; ``overwrite`` and
    ``no_overwrite``: VIR_STORAGE_POOL_BUILD_OVERWRITE / _NO_OVERWRITE.
    """

    NONE = "none"
    BUILD = "build"
    OVERWRITE = "overwrite"
    NO_OVERWRITE = "no_overwrite"


class WipeAlgorithm(enum.StrEnum):
    """virStorageVolWipeAlgorithm, in libvirt's order."""

    ZERO = "zero"
    NNSA = "nnsa"
    DOD = "dod"
    BSI = "bsi"
    GUTMANN = "gutmann"
    SCHNEIER = "schneier"
    PFITZNER7 = "pfitzner7"
    PFITZNER33 = "pfitzner33"
    RANDOM = "random"
    TRIM = "trim"


class PoolInfo(BaseModel):
    """What virsh shows of a pool: identity, state and sizes (sizes only when active)."""

    name: str
    uuid: str
    type: str
    state: PoolState
    persistent: bool
    autostart: bool
    capacity: int = 0
    allocation: int = 0
    available: int = 0
    volumes: int = 0


class VolumeUser(BaseModel):
    """A domain disk that uses a volume, from the disk inventory its host's agent
    publishes: ``role`` is ``source`` (the disk's image), ``backing`` (a layer
    of its chain, ``index`` as in the disk XML), ``mirror`` (the destination of a
    copy or active commit) or ``job`` (the destination of a block job not yet
    running)."""

    host: str
    domain: str
    disk: str
    role: str
    index: int | None = None

    def label(self) -> str:
        """How listings name the user: ``web1/vda``."""
        return f"{self.domain}/{self.disk}"


def users_text(users: list[VolumeUser]) -> str:
    """How a message names the disks using something: ``domain 'web1' disk 'vda'``."""
    return ", ".join(sorted({f"domain '{u.domain}' disk '{u.disk}'" for u in users}))


class VolumeInfo(BaseModel):
    """What virsh shows of a volume: identity, type and sizes; and, which virsh
    cannot show, the domain disks using it (``users``)."""

    name: str
    pool: str
    key: str
    path: str
    type: str
    capacity: int = 0
    allocation: int = 0
    physical: int = 0
    users: list[VolumeUser] = Field(default_factory=list)


class PoolXmlRequest(BaseModel):
    xml: str
    build: BuildMode = BuildMode.NONE


class PoolRequest(BaseModel):
    pool: str = Field(description="pool name")


class PoolUuidRequest(BaseModel):
    uuid: str


class PoolBuildRequest(BaseModel):
    pool: str
    build: BuildMode = BuildMode.BUILD


class PoolAutostartRequest(BaseModel):
    pool: str
    autostart: bool


class PoolDumpXmlRequest(BaseModel):
    pool: str
    inactive: bool = False


class PoolListRequest(BaseModel):
    """virConnectListAllStoragePools' filters: None means either."""

    active: bool | None = None
    persistent: bool | None = None
    autostart: bool | None = None
    types: list[str] = Field(default_factory=list)


class PoolListReply(BaseModel):
    pools: list[PoolInfo] = Field(default_factory=list)


class XmlReply(BaseModel):
    xml: str


class VolRef(BaseModel):
    """A volume as virStorageVolPtr names it: its pool and its name."""

    pool: str
    name: str


class VolCreateRequest(BaseModel):
    pool: str
    xml: str
    prealloc_metadata: bool = False


class VolCreateFromRequest(BaseModel):
    pool: str
    xml: str
    source: VolRef
    prealloc_metadata: bool = False
    reflink: bool = False


class VolRequest(BaseModel):
    vol: VolRef


class VolDeleteRequest(VolRequest):
    """``force``: delete even when a domain disk uses the volume (virtbus only);
    ``delete_snapshots``: VIR_STORAGE_VOL_DELETE_WITH_SNAPSHOTS."""

    force: bool = False
    delete_snapshots: bool = False


class VolWipeRequest(BaseModel):
    """``force``: wipe even when a domain disk uses the volume (virtbus only)."""

    vol: VolRef
    algorithm: WipeAlgorithm = WipeAlgorithm.ZERO
    force: bool = False


class VolResizeRequest(BaseModel):
    """``force``: shrink even when a domain disk uses the volume (virtbus only)."""

    vol: VolRef
    capacity: int = Field(ge=0)
    allocate: bool = False
    delta: bool = False
    shrink: bool = False
    force: bool = False


class VolNameRequest(BaseModel):
    pool: str
    name: str


class VolKeyRequest(BaseModel):
    key: str


class VolPathRequest(BaseModel):
    path: str


class VolTransferRequest(BaseModel):
    """An upload or download of ``length`` bytes (0: to the end) from ``offset``;
    ``sparse`` sends holes as holes (VIR_STORAGE_VOL_*_SPARSE_STREAM)."""

    vol: VolRef
    offset: int = Field(0, ge=0)
    length: int = Field(0, ge=0)
    sparse: bool = False


class TransferReply(BaseModel):
    """Where to send the chunks, how big they may be and how many may be in flight."""

    subject: str
    length: int
    chunk_bytes: int
    window: int


class VolListRequest(BaseModel):
    """``details``: re-read each volume from its storage first (virsh's vol-list
    --details asks every volume's info, which libvirt refreshes)."""

    pool: str
    details: bool = False


class VolListReply(BaseModel):
    volumes: list[VolumeInfo] = Field(default_factory=list)


class VolumeBrief(BaseModel):
    """A volume as libvirt's listAllVolumes names it (name and key) with the
    path virsh's vol-list prints beside the name: no figures."""

    name: str
    key: str
    path: str


class VolBriefListReply(BaseModel):
    volumes: list[VolumeBrief] = Field(default_factory=list)


Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)


def _pool(
    name: str, request: type[Req], reply: type[Rep], timeout: float = DEFAULT_TIMEOUT
) -> Endpoint[Req, Rep]:
    return Endpoint(SERVICE, name, request, reply, host_scoped=True, timeout=timeout)


def _vol(
    name: str, request: type[Req], reply: type[Rep], timeout: float = DEFAULT_TIMEOUT
) -> Endpoint[Req, Rep]:
    return Endpoint(
        SERVICE,
        name,
        request,
        reply,
        host_scoped=True,
        timeout=timeout,
        concurrency=VOLUME_CONCURRENCY,
    )


POOL_DEFINE = _pool("pool.define", PoolXmlRequest, PoolInfo)
POOL_CREATE = _pool("pool.create", PoolXmlRequest, PoolInfo, LONG_TIMEOUT)
POOL_BUILD = _pool("pool.build", PoolBuildRequest, Empty, LONG_TIMEOUT)
POOL_START = _pool("pool.start", PoolBuildRequest, Empty, LONG_TIMEOUT)
POOL_DESTROY = _pool("pool.destroy", PoolRequest, Empty)
POOL_DELETE = _pool("pool.delete", PoolRequest, Empty, LONG_TIMEOUT)
POOL_UNDEFINE = _pool("pool.undefine", PoolRequest, Empty)
POOL_AUTOSTART = _pool("pool.autostart", PoolAutostartRequest, Empty)
POOL_REFRESH = _pool("pool.refresh", PoolRequest, Empty, LONG_TIMEOUT)
POOL_INFO = memory_read(SERVICE, "pool.info", PoolRequest, PoolInfo, host_scoped=True)
POOL_LOOKUP_UUID = memory_read(
    SERVICE, "pool.lookup.uuid", PoolUuidRequest, PoolInfo, host_scoped=True
)
POOL_LOOKUP_VOLUME = memory_read(
    SERVICE, "pool.lookup.volume", VolRequest, PoolInfo, host_scoped=True
)
POOL_LIST = memory_read(SERVICE, "pool.list", PoolListRequest, PoolListReply, host_scoped=True)
POOL_DUMPXML = memory_read(SERVICE, "pool.dumpxml", PoolDumpXmlRequest, XmlReply, host_scoped=True)
POOL_CAPABILITIES = memory_read(SERVICE, "pool.capabilities", Empty, XmlReply, host_scoped=True)
VOL_CREATE = _vol("vol.create", VolCreateRequest, VolumeInfo, LONG_TIMEOUT)
VOL_CREATE_FROM = _vol("vol.create.from", VolCreateFromRequest, VolumeInfo, LONG_TIMEOUT)
VOL_DELETE = _vol("vol.delete", VolDeleteRequest, Empty)
VOL_WIPE = _vol("vol.wipe", VolWipeRequest, Empty, LONG_TIMEOUT)
VOL_RESIZE = _vol("vol.resize", VolResizeRequest, VolumeInfo, LONG_TIMEOUT)
VOL_INFO = _vol("vol.info", VolRequest, VolumeInfo)
VOL_DUMPXML = _vol("vol.dumpxml", VolRequest, XmlReply)
VOL_LOOKUP_NAME = memory_read(
    SERVICE, "vol.lookup.name", VolNameRequest, VolumeInfo, host_scoped=True
)
VOL_LOOKUP_KEY = memory_read(SERVICE, "vol.lookup.key", VolKeyRequest, VolumeInfo, host_scoped=True)
VOL_LOOKUP_PATH = memory_read(
    SERVICE, "vol.lookup.path", VolPathRequest, VolumeInfo, host_scoped=True
)
VOL_LIST = _vol("vol.list", VolListRequest, VolListReply)
VOL_BRIEF_LIST = memory_read(
    SERVICE, "vol.brief.list", PoolRequest, VolBriefListReply, host_scoped=True
)
VOL_UPLOAD = _vol("vol.upload", VolTransferRequest, TransferReply)
VOL_DOWNLOAD = _vol("vol.download", VolTransferRequest, TransferReply)

#: Every pool and volume endpoint of the storage service.
ENDPOINTS = (
    POOL_DEFINE,
    POOL_CREATE,
    POOL_BUILD,
    POOL_START,
    POOL_DESTROY,
    POOL_DELETE,
    POOL_UNDEFINE,
    POOL_AUTOSTART,
    POOL_REFRESH,
    POOL_INFO,
    POOL_LOOKUP_UUID,
    POOL_LOOKUP_VOLUME,
    POOL_LIST,
    POOL_DUMPXML,
    POOL_CAPABILITIES,
    VOL_CREATE,
    VOL_CREATE_FROM,
    VOL_DELETE,
    VOL_WIPE,
    VOL_RESIZE,
    VOL_INFO,
    VOL_DUMPXML,
    VOL_LOOKUP_NAME,
    VOL_LOOKUP_KEY,
    VOL_LOOKUP_PATH,
    VOL_LIST,
    VOL_BRIEF_LIST,
    VOL_UPLOAD,
    VOL_DOWNLOAD,
)
