"""What the agent remembers of each block job and each domain's inventory, in its
host's ledger (``shared.util.ledger``, service ``agent``): enough for a restarted
agent to carry on where it stopped without publishing anything twice.

A record changes together with the event it announces, in one ledger message:
a job's ``block-job-2`` status with the phase it adds to ``published``, an
inventory with the mark of its generation.  So an event exists exactly when its
record says it was published, whenever the agent dies."""

from __future__ import annotations

import enum
import hashlib
import json

from pydantic import BaseModel, Field

from shared.api.blockjob import (
    BlockJobStatus,
    CommitCommand,
    CopyCommand,
    JobType,
    Phase,
    PullCommand,
    status_detail,
    status_event_name,
)
from shared.conf.disk_mirror import MirrorJob, MirrorState
from shared.conf.disk_source import StorageSource
from shared.util.ledger import Conflict, Event, Ledger
from shared.util.subjects import DOMAIN_KIND, token

_RETRIES = 10


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


def status_event(status: BlockJobStatus) -> Event:
    """The ``block-job-2`` (or progress) event of a job's status."""
    return Event(
        DOMAIN_KIND,
        status.domain,
        status_event_name(status),
        status_detail(status),
        extra=status.model_dump(mode="json"),
    )


class AgentStore:
    """The agent's records in its host's ledger; reads come from the ledger's memory.

    The agent is the only writer of its host's records; a write that finds the
    key moved (a second agent of the host, or the same one restarted while a
    write was in flight) re-reads it and writes again.
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    @staticmethod
    def _job_key(job_id: str) -> str:
        return f"job.{token(job_id)}"

    @staticmethod
    def _mark_key(domain: str) -> str:
        return f"inventory.{token(domain)}"

    def jobs(self) -> list[JobRecord]:
        """Every job recorded; a malformed record is skipped (``Ledger.decode``)."""
        return [job for _, job in self._ledger.decoded("job.", JobRecord.model_validate_json)]

    async def save_job(self, record: JobRecord, events: list[Event] | None = None) -> None:
        await self._put(self._job_key(record.job_id), record, events or [])

    def mark(self, domain: str) -> InventoryMark:
        """The domain's last inventory mark; none (publish again) when there is
        none or it is malformed (``Ledger.decode``)."""
        mark = self._ledger.read(self._mark_key(domain), InventoryMark.model_validate_json)
        return InventoryMark() if mark is None else mark

    async def save_mark(
        self, domain: str, mark: InventoryMark, events: list[Event] | None = None
    ) -> None:
        await self._put(self._mark_key(domain), mark, events or [])

    async def _put(self, key: str, value: BaseModel, events: list[Event]) -> None:
        """Store ``value`` under ``key`` whatever it held, with ``events``, as one write."""
        data = value.model_dump_json().encode()
        for _ in range(_RETRIES):
            try:
                await self._ledger.write(key, data, events, what=f"agent record {key}")
                return
            except Conflict:
                continue  # the ledger re-read the key: write over it again
        raise Conflict(key)
