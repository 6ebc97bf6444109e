"""The storage service's disk and block-job endpoints (libvirt's virDomainBlockCopy,
virDomainBlockCommit, virDomainBlockPull/Rebase, virDomainBlockJobAbort,
virDomainBlockJobSetSpeed, virDomainGetBlockJobInfo, and the disks of
virDomainGetXMLDesc) and their models.

Host-scoped like every storage endpoint: the storage service of a host keeps
the disk inventory its agent publishes and controls the block jobs of that
host's domains.  A disk is named as virsh names it: by its target (``vda``)
or by the path of its source.  Job requests return once the job is recorded
and its command is in the event stream; the job's progress and end are the
agent's ``block-job-2`` events (shared.api.blockjob) and ``blockjob.info``.
Rates are bytes per second (virsh's MiB/s are converted by the caller).
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import BaseModel, Field

from shared.api.blockjob import CopyOptions, DiskInventory, JobType, Phase
from shared.api.storage import SERVICE
from shared.util.api import Empty, Endpoint


class DomainSummary(BaseModel):
    """A domain of the host's inventory."""

    name: str
    disks: int
    live: bool
    generation: int


class DomainListReply(BaseModel):
    domains: list[DomainSummary] = Field(default_factory=list)


class DomainRef(BaseModel):
    domain: str


class DiskRef(BaseModel):
    """A disk of a domain: its target (``vda``) or its source's path."""

    domain: str
    disk: str


class DiskXmlReply(BaseModel):
    """One ``<disk>`` as the inventory holds it (live form, ``<mirror>`` included)."""

    target: str
    xml: str
    generation: int


class BlockCopyRequest(CopyOptions):
    """virDomainBlockCopy.  The destination is one of: ``dest`` (a path, with
    ``format`` and ``blockdev`` as virsh's options), ``xml`` (a ``<disk>`` with
    any storage source; ``type='volume'`` is resolved to the volume's path), or
    ``pool`` + ``volume`` (a new volume of that pool, made by the service with
    the disk's size and ``format``, default the disk's own; with ``shallow`` it
    is made on the disk's backing image)."""

    domain: str
    disk: str
    dest: str | None = None
    format: str | None = None
    blockdev: bool = False
    xml: str | None = None
    pool: str | None = None
    volume: str | None = None


class BlockCommitRequest(BaseModel):
    """virDomainBlockCommit.  ``top``/``base`` name layers as virsh does (a path,
    ``vda[N]``); ``delete`` removes the committed images once the job completed
    (VIR_DOMAIN_BLOCK_COMMIT_DELETE, which libvirt's QEMU driver refuses; here
    the storage service does it, for images no other disk uses)."""

    domain: str
    disk: str
    top: str | None = None
    base: str | None = None
    active: bool = False
    shallow: bool = False
    keep_relative: bool = False
    bandwidth: Annotated[int, Field(ge=0)] = 0
    delete: bool = False


class BlockPullRequest(BaseModel):
    """virDomainBlockPull / virDomainBlockRebase without a copy."""

    domain: str
    disk: str
    base: str | None = None
    keep_relative: bool = False
    bandwidth: Annotated[int, Field(ge=0)] = 0


class BlockJobAbortRequest(BaseModel):
    """virDomainBlockJobAbort: cancel the disk's job, or with ``pivot`` switch the
    disk to the copy (VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)."""

    domain: str
    disk: str
    pivot: bool = False


class BlockJobSpeedRequest(BaseModel):
    """virDomainBlockJobSetSpeed in bytes per second (0: unlimited)."""

    domain: str
    disk: str
    bandwidth: Annotated[int, Field(ge=0)]


class BlockJobInfo(BaseModel):
    """A block job as the storage service knows it.

    ``phase`` is the last status the agent reported (``progress`` until it is
    ready or ended); ``pivot_requested``/``abort_requested`` say a pivot or an
    abort was asked for; ``active`` is false once the job ended.  ``cur`` and
    ``end`` are virDomainBlockJobInfo's.  ``created_volume`` names the pool
    volume made as the copy's destination (``pool/name``).
    """

    job_id: str
    host: str
    domain: str
    disk: str
    type: JobType
    type_code: int
    phase: Phase = Phase.PROGRESS
    active: bool = True
    cur: int = 0
    end: int = 0
    bandwidth: int = 0
    destination: str | None = None
    created_volume: str | None = None
    pivot_requested: bool = False
    abort_requested: bool = False
    error: str | None = None


class BlockJobInfoReply(BaseModel):
    """The disk's running job, or none (virsh: ``No current block job for vda``)."""

    job: BlockJobInfo | None = None


class BlockJobListRequest(BaseModel):
    domain: str | None = None
    all: bool = False


class BlockJobListReply(BaseModel):
    jobs: list[BlockJobInfo] = Field(default_factory=list)


Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)


#: Requests of one endpoint answered at once: a job request may create its
#: destination volume or wait on the agent.
CONCURRENCY = 8


def _ep(name: str, request: type[Req], reply: type[Rep]) -> Endpoint[Req, Rep]:
    return Endpoint(SERVICE, name, request, reply, host_scoped=True, concurrency=CONCURRENCY)


DOMAIN_LIST = _ep("domain.list", Empty, DomainListReply)
DOMAIN_DISKS = _ep("domain.disks", DomainRef, DiskInventory)
DISK_DUMPXML = _ep("disk.dumpxml", DiskRef, DiskXmlReply)
BLOCK_COPY = _ep("blockjob.copy", BlockCopyRequest, BlockJobInfo)
BLOCK_COMMIT = _ep("blockjob.commit", BlockCommitRequest, BlockJobInfo)
BLOCK_PULL = _ep("blockjob.pull", BlockPullRequest, BlockJobInfo)
BLOCK_JOB_ABORT = _ep("blockjob.abort", BlockJobAbortRequest, BlockJobInfo)
BLOCK_JOB_SPEED = _ep("blockjob.speed", BlockJobSpeedRequest, BlockJobInfo)
BLOCK_JOB_INFO = _ep("blockjob.info", DiskRef, BlockJobInfoReply)
BLOCK_JOB_LIST = _ep("blockjob.list", BlockJobListRequest, BlockJobListReply)

#: Every disk and block-job endpoint of the storage service.
ENDPOINTS = (
    DOMAIN_LIST,
    DOMAIN_DISKS,
    DISK_DUMPXML,
    BLOCK_COPY,
    BLOCK_COMMIT,
    BLOCK_PULL,
    BLOCK_JOB_ABORT,
    BLOCK_JOB_SPEED,
    BLOCK_JOB_INFO,
    BLOCK_JOB_LIST,
)
