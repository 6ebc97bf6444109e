"""The disk and block-job contract between the storage service (the job controller) and
host agents (which run jobs in their hypervisor): events only, no request/reply.

Three flows, all in the ``VIRTBUS_EVENTS`` stream:

* **Inventory** (agent -> everyone): ``virtbus.event.agent.<host>.domain.<name>``,
  event ``inventory`` with a ``DiskInventory`` in ``extra`` whenever a domain
  appears or its disks change, ``undefined`` when it goes.
* **Commands** (storage -> one agent): ``virtbus.event.storage.<host>.blockjob.<domain>``,
  the event named after the command's ``kind`` with the command in ``extra``.
  Start commands (copy, commit, pull) carry every parameter of ``virsh
  blockcopy/blockcommit/blockpull``; control commands (pivot, abort, set-speed)
  name the job.  Each job has an id chosen by the storage service.
* **Status** (agent -> everyone): on the domain's agent subject, event
  ``block-job-2`` with libvirt's VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2 fields in a
  ``BlockJobStatus`` and ``detail`` as ``virsh event`` prints it (``Block Copy
  for vda ready``); ``block-job-progress`` carries cur/end while a job runs.

Each event is stored by the ledger change that carries it (``shared.util.ledger``):
its id is that change's, and a publish repeated after a crash is stored once.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from shared.conf.disk import parse_disk
from shared.conf.disk_source import StorageSource

#: Event names.
INVENTORY = "inventory"
UNDEFINED = "undefined"
BLOCK_JOB_2 = "block-job-2"
BLOCK_JOB_PROGRESS = "block-job-progress"

#: A job id: usable as a QEMU job id after a prefix (a letter first, then
#: letters, digits, '-', '.', '_').
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class JobType(enum.StrEnum):
    """virDomainBlockJobType, by its constant's suffix."""

    PULL = "PULL"
    COPY = "COPY"
    COMMIT = "COMMIT"
    ACTIVE_COMMIT = "ACTIVE_COMMIT"

    @property
    def code(self) -> int:
        return _TYPE_CODES[self]

    @property
    def label(self) -> str:
        """virsh's name of the job (``Block Copy``)."""
        return _TYPE_LABELS[self]


_TYPE_CODES = {JobType.PULL: 1, JobType.COPY: 2, JobType.COMMIT: 3, JobType.ACTIVE_COMMIT: 4}
_TYPE_LABELS = {
    JobType.PULL: "Block Pull",
    JobType.COPY: "Block Copy",
    JobType.COMMIT: "Block Commit",
    JobType.ACTIVE_COMMIT: "Active Block Commit",
}


class JobStatus(enum.StrEnum):
    """virConnectDomainEventBlockJobStatus, by its constant's suffix."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    READY = "READY"

    @property
    def code(self) -> int:
        return list(JobStatus).index(self)

    @property
    def label(self) -> str:
        """virsh's word for the status (``ready``)."""
        return self.value.lower()


class Phase(enum.StrEnum):
    """What a status event reports; ``pivoted`` is a completion that switched the disk."""

    PROGRESS = "progress"
    READY = "ready"
    COMPLETED = "completed"
    PIVOTED = "pivoted"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def status(self) -> JobStatus | None:
        """The BLOCK_JOB_2 status of the phase (none for progress)."""
        return _PHASE_STATUS.get(self)


_PHASE_STATUS = {
    Phase.READY: JobStatus.READY,
    Phase.COMPLETED: JobStatus.COMPLETED,
    Phase.PIVOTED: JobStatus.COMPLETED,
    Phase.FAILED: JobStatus.FAILED,
    Phase.CANCELLED: JobStatus.CANCELED,
}


# --- inventory ---------------------------------------------------------------------------


class DiskInventory(BaseModel):
    """A domain's disks as its host agent sees them.

    ``disks`` are ``<disk>`` elements in libvirt's live form: ``<alias>``, the
    ``<backingStore>`` chain read from the hypervisor (``index=`` on each
    layer, the bottom one 1), and a ``<mirror>`` while a copy or active commit
    runs.  ``live`` is false when the agent has the domain's XML but no
    hypervisor connection (the chain is then the XML's own).  ``generation``
    grows by one with each published change of the domain.
    """

    host: str
    domain: str
    disks: list[str]
    live: bool = True
    generation: int = 0


class DomainUndefined(BaseModel):
    """The ``extra`` of an ``undefined`` event: the domain's XML is gone."""

    host: str
    domain: str
    generation: int


# --- commands ------------------------------------------------------------------------------


class CommandKind(enum.StrEnum):
    COPY = "copy"
    COMMIT = "commit"
    PULL = "pull"
    PIVOT = "pivot"
    ABORT = "abort"
    SET_SPEED = "set-speed"


class _Command(BaseModel):
    """What every command names: the job, the domain and the disk (its target, ``vda``)."""

    job_id: Annotated[str, Field(pattern=JOB_ID_PATTERN)]
    domain: str
    disk: str


class CopyOptions(BaseModel):
    """How a block copy runs: the fields virDomainBlockCopy's request and the
    agent's copy command share (defined here once, for both).  Sizes and rates
    are bytes (virsh's MiB/s converted by the caller)."""

    shallow: bool = False
    reuse_external: bool = False
    bandwidth: Annotated[int, Field(ge=0)] = 0
    granularity: Annotated[int, Field(ge=0)] = 0
    buf_size: Annotated[int, Field(ge=0)] = 0
    synchronous_writes: bool = False

    def copy_options(self) -> dict[str, Any]:
        """These fields alone, to build the other model from one."""
        return {name: getattr(self, name) for name in CopyOptions.model_fields}


class CopyCommand(CopyOptions, _Command):
    """virsh blockcopy / virDomainBlockCopy.

    ``destination`` is a ``<disk>`` element describing the copy (virDomainBlockCopy's
    destxml): its ``type=``, ``<driver type=...>`` and ``<source>`` of any storage
    type, and optionally its ``<backingStore>``.  Without ``reuse_external`` the
    agent creates a file destination (with the source's backing file when
    ``shallow``); with it the destination must exist with the right content.
    Sizes and rates are bytes (virsh's MiB/s converted by the caller).
    """

    kind: Literal[CommandKind.COPY] = CommandKind.COPY
    destination: str


class CommitCommand(_Command):
    """virsh blockcommit / virDomainBlockCommit.

    ``top`` and ``base`` name layers as virsh does: a path, or ``vda[N]`` (a
    layer's ``index=``); ``top`` absent is the active layer, ``base`` absent the
    bottom (or, with ``shallow``, the layer below ``top``).  ``active`` must be
    set to commit the active layer (the job then waits for a pivot).
    """

    kind: Literal[CommandKind.COMMIT] = CommandKind.COMMIT
    top: str | None = None
    base: str | None = None
    active: bool = False
    shallow: bool = False
    keep_relative: bool = False
    bandwidth: Annotated[int, Field(ge=0)] = 0


class PullCommand(_Command):
    """virsh blockpull / virDomainBlockRebase without a copy: ``base`` as in commit."""

    kind: Literal[CommandKind.PULL] = CommandKind.PULL
    base: str | None = None
    keep_relative: bool = False
    bandwidth: Annotated[int, Field(ge=0)] = 0


class PivotCommand(_Command):
    """virsh blockjob --pivot: complete a copy or active commit and switch the disk
    (sent before the job is ready, it pivots as soon as it is)."""

    kind: Literal[CommandKind.PIVOT] = CommandKind.PIVOT


class AbortCommand(_Command):
    """virsh blockjob --abort: cancel the job, leaving the disk on its source."""

    kind: Literal[CommandKind.ABORT] = CommandKind.ABORT


class SetSpeedCommand(_Command):
    """virsh blockjob --bandwidth: the job's rate limit in bytes per second (0: none)."""

    kind: Literal[CommandKind.SET_SPEED] = CommandKind.SET_SPEED
    bandwidth: Annotated[int, Field(ge=0)]


StartCommand = Annotated[CopyCommand | CommitCommand | PullCommand, Field(discriminator="kind")]
Command = Annotated[
    CopyCommand | CommitCommand | PullCommand | PivotCommand | AbortCommand | SetSpeedCommand,
    Field(discriminator="kind"),
]


class _CommandBox(BaseModel):
    command: Command


START_KINDS = frozenset({CommandKind.COPY, CommandKind.COMMIT, CommandKind.PULL})


def parse_command(extra: dict[str, Any]) -> Command:
    """The command in a command event's ``extra``; raises pydantic's ``ValidationError``."""
    return _CommandBox.model_validate({"command": extra}).command


def destination_source(xml: str) -> StorageSource:
    """The storage source a copy command's ``destination`` describes; raises ``VirtError``."""
    disk = parse_disk(xml, active=True)
    return disk.source


# --- status --------------------------------------------------------------------------------


class BlockJobStatus(BaseModel):
    """The ``extra`` of ``block-job-2`` and ``block-job-progress`` events.

    ``disk`` is the target (libvirt's BLOCK_JOB_2 ``disk``); ``type`` and
    ``status`` are libvirt's, with their numbers in ``type_code`` and
    ``status_code``; ``status`` is absent on progress.  ``cur``/``end`` are
    virDomainBlockJobInfo's; ``error`` says why a job failed.
    """

    job_id: str
    domain: str
    disk: str
    type: JobType
    type_code: int
    phase: Phase
    status: JobStatus | None = None
    status_code: int | None = None
    cur: int = 0
    end: int = 0
    bandwidth: int = 0
    error: str | None = None


def job_status(
    job_id: str,
    domain: str,
    disk: str,
    job_type: JobType,
    phase: Phase,
    *,
    cur: int = 0,
    end: int = 0,
    bandwidth: int = 0,
    error: str | None = None,
) -> BlockJobStatus:
    status = phase.status
    return BlockJobStatus(
        job_id=job_id,
        domain=domain,
        disk=disk,
        type=job_type,
        type_code=job_type.code,
        phase=phase,
        status=status,
        status_code=status.code if status is not None else None,
        cur=cur,
        end=end,
        bandwidth=bandwidth,
        error=error,
    )


def status_event_name(status: BlockJobStatus) -> str:
    return BLOCK_JOB_PROGRESS if status.phase is Phase.PROGRESS else BLOCK_JOB_2


def status_detail(status: BlockJobStatus) -> str:
    """As virsh prints it: ``Block Copy for vda ready`` (block-job-2), or
    ``Block Copy: [ 45 %]`` as ``virsh blockjob --info`` does for progress."""
    if status.status is None:
        percent = int(100 * status.cur / status.end) if status.end else 0
        return f"{status.type.label}: [{percent:3d} %]"
    return f"{status.type.label} for {status.disk} {status.status.label}"


def status_event_id(status: BlockJobStatus) -> str:
    if status.phase is Phase.PROGRESS:
        return f"blockjob-{status.job_id}-progress-{status.cur}-{status.end}"
    return f"blockjob-{status.job_id}-{status.phase.value}"
