"""What the agent remembers of each block job and each domain's inventory, in its KV
bucket (``virtbus_agent_qemu``): enough for a restarted agent to carry on where it
stopped without publishing anything twice."""

from __future__ import annotations

import enum
import hashlib
import json

from pydantic import BaseModel, Field

from shared.api.blockjob import CommitCommand, CopyCommand, JobType, Phase, PullCommand
from shared.conf.disk_mirror import MirrorJob, MirrorState
from shared.conf.disk_source import StorageSource
from shared.util.state import StateStore
from shared.util.subjects import token

BUCKET = "virtbus_agent_qemu"


class RecordState(enum.StrEnum):
    """starting (command taken, job maybe not yet in QEMU), running, ready, pivoting,
    aborting, finished (outcome published, job dismissed)."""

    STARTING = "starting"
    RUNNING = "running"
    READY = "ready"
    PIVOTING = "pivoting"
    ABORTING = "aborting"
    FINISHED = "finished"


#: ``ready=`` of the disk's ``<mirror>`` in each state.
MIRROR_READY = {
    RecordState.STARTING: MirrorState.NONE,
    RecordState.RUNNING: MirrorState.NONE,
    RecordState.READY: MirrorState.YES,
    RecordState.PIVOTING: MirrorState.PIVOT,
    RecordState.ABORTING: MirrorState.ABORT,
}


class JobRecord(BaseModel):
    """One job: its command, what it did to QEMU, and which outcomes were published.

    ``drop_nodes`` are the format nodes that leave the disk's chain when the job
    succeeds (how a restarted agent tells a pivot that happened from one that
    did not); ``chain_nodes`` every node of the chain when the job started (those
    no longer used afterwards are closed); ``added_nodes`` what the job opened
    (closed again unless the disk switched to them).
    """

    command: CopyCommand | CommitCommand | PullCommand = Field(discriminator="kind")
    alias: str
    job_type: JobType
    state: RecordState = RecordState.STARTING
    pivot_requested: bool = False
    abort_requested: bool = False
    published: list[Phase] = Field(default_factory=list)
    added_nodes: list[str] = Field(default_factory=list)
    chain_nodes: list[str] = Field(default_factory=list)
    drop_nodes: list[str] = Field(default_factory=list)
    mirror: StorageSource | None = None
    #: the node a copy or active commit switches the disk to
    target_node: str | None = None
    cur: int = 0
    end: int = 0
    bandwidth: int = 0
    error: str | None = None

    @property
    def job_id(self) -> str:
        return self.command.job_id

    @property
    def domain(self) -> str:
        return self.command.domain

    @property
    def disk(self) -> str:
        return self.command.disk

    @property
    def mirror_job(self) -> MirrorJob | None:
        if self.job_type is JobType.COPY:
            return MirrorJob.COPY
        if self.job_type is JobType.ACTIVE_COMMIT:
            return MirrorJob.ACTIVE_COMMIT
        return None

    @property
    def active(self) -> bool:
        return self.state is not RecordState.FINISHED


class InventoryMark(BaseModel):
    """The last inventory published for a domain: its generation and content digest."""

    generation: int = 0
    digest: str = ""


def digest(disks: list[str], live: bool) -> str:
    return hashlib.sha256(json.dumps([disks, live]).encode()).hexdigest()


class AgentStore:
    """The agent's records, keyed by host so that agents of several hosts share a bucket."""

    def __init__(self, store: StateStore, host: str) -> None:
        self._store = store
        self._host = token(host)

    def _job_key(self, job_id: str) -> str:
        return f"job.{self._host}.{token(job_id)}"

    def _mark_key(self, domain: str) -> str:
        return f"inventory.{self._host}.{token(domain)}"

    async def jobs(self) -> list[JobRecord]:
        entries = await self._store.items(f"job.{self._host}.")
        return [JobRecord.model_validate_json(e.value) for e in entries]

    async def save_job(self, record: JobRecord) -> None:
        await self._put(self._job_key(record.job_id), record)

    async def mark(self, domain: str) -> InventoryMark:
        entry = await self._store.get(self._mark_key(domain))
        return InventoryMark.model_validate_json(entry.value) if entry else InventoryMark()

    async def save_mark(self, domain: str, mark: InventoryMark) -> None:
        await self._put(self._mark_key(domain), mark)

    async def _put(self, key: str, value: BaseModel) -> None:
        """Store ``value`` under ``key`` whatever it held."""
        await self._store.put(key, value.model_dump_json().encode())
