"""The runtime objects of the storage service: pools and volumes as libvirt's
virStoragePoolObj and the volume list hold them, and their look-ups.

A ``PoolObj`` keeps the definition in force (``definition``, with the sizes
of the last refresh when active), a redefinition waiting for the pool to
stop (``new_definition``), and what libvirt keeps beside a definition:
active, persistent, autostart, starting, and the count of jobs in flight.
The definition is not the runtime state: only the managers change either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.storage.pools.files import Seen
from shared.api.storage import PoolInfo, PoolState, VolumeBrief, VolumeInfo, VolumeUser
from shared.conf.storage_pool import StoragePoolDef
from shared.conf.storage_volume import StorageVolumeDef
from shared.util.api import to_json
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.ledger import Event

_D = ErrorDomain.STORAGE


#: What a ``VolumeInfo`` shows of a definition: name, key, path, type,
#: capacity, allocation, physical.
ShownFields = tuple[str, str, str, str, int, int, int]


def _shown_fields(vol: StorageVolumeDef) -> ShownFields:
    return (
        vol.name,
        vol.key or "",
        vol.target.path or "",
        vol.type.value,
        vol.capacity,
        vol.allocation,
        vol.physical,
    )


def list_json(volumes: Iterable[bytes]) -> bytes:
    """The JSON of ``VolListReply(volumes=...)`` from the volumes' own
    (``Shown.data``), or of ``VolBriefListReply`` from theirs (``Shown.brief``)."""
    return b'{"volumes":[' + b",".join(volumes) + b"]}"


@dataclass(slots=True)
class Shown:
    """What a volume shows (``VolumeInfo``), kept with the definition and pool
    name it was made for: ``fields`` the definition's shown fields, ``info``
    the model, ``data`` its JSON as a reply carries it, ``brief`` the JSON of
    its ``VolumeBrief`` once a brief list asked for it (``PoolObj.brief``)."""

    definition: StorageVolumeDef
    pool: str
    fields: ShownFields
    info: VolumeInfo
    data: bytes
    brief: bytes | None = None


@dataclass
class VolObj:
    """A volume of an active pool; ``building`` while being created, ``in_use``
    counts jobs reading or writing it (clone source, wipe, upload...)."""

    definition: StorageVolumeDef
    building: bool = False
    in_use: int = 0
    #: The journal key and event of the upload under way (``VolumeManager.begin_transfer``).
    uploading: tuple[str, Event] | None = None
    #: The definition and what was read of the volume's storage to make it
    #: (``files.reread``): a re-read that finds the same keeps the definition.
    seen: Seen | None = field(default=None, repr=False, compare=False)
    #: The model and JSON of what the volume shows, made once per change of
    #: it, so that listing a pool builds and encodes none (``PoolObj.shown``).
    shown: Shown | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.definition.name

    def check_idle(self) -> None:
        """Refuse a change while the volume is used or still being made (libvirt's words)."""
        if self.in_use:
            raise VirtError(
                ErrorCode.OPERATION_INVALID, f"volume '{self.name}' is still in use.", _D
            )
        self.check_built()

    def check_built(self) -> None:
        if self.building:
            raise VirtError(
                ErrorCode.OPERATION_INVALID,
                f"volume '{self.name}' is still being allocated.",
                _D,
            )


@dataclass
class PoolObj:
    """A pool of this host."""

    definition: StoragePoolDef
    persistent: bool
    active: bool = False
    autostart: bool = False
    new_definition: StoragePoolDef | None = None
    starting: bool = False
    asyncjobs: int = 0
    revision: int | None = None
    volumes: dict[str, VolObj] = field(default_factory=dict)
    #: Serialises this pool's state changes (start, stop, build, refresh...).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def uuid(self) -> str:
        return self.definition.uuid

    def check_active(self) -> None:
        if not self.active:
            raise VirtError(
                ErrorCode.OPERATION_INVALID, f"storage pool '{self.name}' is not active", _D
            )

    def check_inactive(self, still: bool = False) -> None:
        """Refuse when active: "is still active" (delete, undefine) or "is already active"."""
        if self.active:
            word = "still" if still else "already"
            raise VirtError(
                ErrorCode.OPERATION_INVALID, f"storage pool '{self.name}' is {word} active", _D
            )

    def check_not_starting(self) -> None:
        if self.starting:
            raise VirtError(
                ErrorCode.OPERATION_INVALID, f"storage pool '{self.name}' is starting up", _D
            )

    def check_no_jobs(self) -> None:
        if self.asyncjobs > 0:
            raise VirtError(
                ErrorCode.INTERNAL_ERROR,
                f"pool '{self.name}' has asynchronous jobs running.",
                _D,
            )

    def check_stopped(self) -> None:
        """Before delete and undefine: inactive, not starting, no jobs running."""
        self.check_inactive(still=True)
        self.check_not_starting()
        self.check_no_jobs()

    def check_running(self) -> None:
        """Before destroy and refresh: active, not starting, no jobs running."""
        self.check_active()
        self.check_not_starting()
        self.check_no_jobs()

    def volume(self, name: str) -> VolObj:
        """The volume ``name``; ``VIR_ERR_NO_STORAGE_VOL`` when there is none."""
        vol = self.volumes.get(name)
        if vol is None:
            raise VirtError(
                ErrorCode.NO_STORAGE_VOL, f"no storage vol with matching name '{name}'", _D
            )
        return vol

    def info(self) -> PoolInfo:
        d = self.definition
        return PoolInfo(
            name=d.name,
            uuid=d.uuid,
            type=d.type.value,
            state=PoolState.RUNNING if self.active else PoolState.INACTIVE,
            persistent=self.persistent,
            autostart=self.autostart,
            capacity=d.capacity,
            allocation=d.allocation,
            available=d.available,
            volumes=len(self.volumes),
        )

    def shown(self, vol: VolObj) -> Shown:
        """What ``vol`` shows, without the disks using it.

        Kept with the volume until what it shows (or the pool's name) changes:
        vol-info re-reads the volume before each answer, which makes a new
        definition, mostly with the same figures.  The same objects are
        returned each time, so callers must not change them.
        """
        definition, shown = vol.definition, vol.shown
        if shown is None or shown.definition is not definition or shown.pool != self.name:
            fields = _shown_fields(definition)
            if shown is None or shown.pool != self.name or shown.fields != fields:
                info = self._volume_info(fields)
                shown = Shown(definition, self.name, fields, info, to_json(info))
            else:
                shown.definition = definition
            vol.shown = shown
        return shown

    def brief(self, vol: VolObj) -> bytes:
        """The JSON of ``vol``'s ``VolumeBrief``, kept with what it shows."""
        shown = self.shown(vol)
        if shown.brief is None:
            info = shown.info
            shown.brief = to_json(VolumeBrief(name=info.name, key=info.key, path=info.path))
        return shown.brief

    def volume_info(self, vol: VolObj, users: list[VolumeUser] | None = None) -> VolumeInfo:
        """What is shown of ``vol``, with the domain disks using it (``users``);
        without users, the kept model (``shown``), which callers must not change."""
        info = self.shown(vol).info
        return info.model_copy(update={"users": users}) if users else info

    def _volume_info(self, fields: ShownFields) -> VolumeInfo:
        name, key, path, kind, capacity, allocation, physical = fields
        # The validating constructor (pydantic-core) costs 1.9 us here against
        # 3.0 us for model_construct, which is Python.
        return VolumeInfo(
            name=name,
            pool=self.name,
            key=key,
            path=path,
            type=kind,
            capacity=capacity,
            allocation=allocation,
            physical=physical,
        )
