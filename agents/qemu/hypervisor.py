"""The hypervisor side of the agent, as one small interface: a domain's live disks and
its block jobs.  ``QemuDomain`` (qemu_domain.py) implements it over QMP; a
libvirt-backed agent would implement it over libvirt's API.

Jobs are named by their virtbus job id; how the hypervisor names them is its own
business (QEMU: ``vbj-<id>``), but it must be deterministic so a restarted agent
finds its jobs again.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from shared.conf.disk_source import StorageSource


@dataclass(frozen=True)
class Layer:
    """One image of a disk's chain: its (format) node, the protocol node under it if
    any, where it is stored and its format."""

    node: str
    source: StorageSource
    virtual_size: int = 0
    protocol_node: str | None = None

    @property
    def nodes(self) -> list[str]:
        return [self.node] if self.protocol_node is None else [self.node, self.protocol_node]


@dataclass(frozen=True)
class LiveDisk:
    """A disk as the hypervisor runs it: its alias and its chain, active layer first."""

    alias: str
    chain: tuple[Layer, ...]

    @property
    def top(self) -> Layer:
        return self.chain[0]


class JobState(enum.StrEnum):
    """A job's state as QEMU's JobStatus names it (the ones the agent tells apart)."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    READY = "ready"
    STANDBY = "standby"
    WAITING = "waiting"
    PENDING = "pending"
    ABORTING = "aborting"
    CONCLUDED = "concluded"
    NULL = "null"


@dataclass(frozen=True)
class LiveJob:
    """A job the hypervisor holds: progress, rate, and the error it ended with."""

    job_id: str
    state: JobState
    cur: int = 0
    end: int = 0
    speed: int = 0
    error: str | None = None


@dataclass(frozen=True)
class JobEvent:
    """A job changed state (QEMU's JOB_STATUS_CHANGE); ``None`` ends the stream."""

    job_id: str
    state: JobState
    timestamp: float = 0.0


@dataclass(frozen=True)
class CopySpec:
    """A block copy of ``disk`` to ``destination`` (which exists unless ``create``)."""

    destination: StorageSource
    shallow: bool = False
    create: bool = True
    bandwidth: int = 0
    granularity: int = 0
    buf_size: int = 0
    synchronous_writes: bool = False


@dataclass(frozen=True)
class CommitSpec:
    """A commit of the layers from ``top`` down to just above ``base`` into ``base``."""

    top: Layer
    base: Layer
    active: bool
    backing_file: str | None = None
    bandwidth: int = 0


@dataclass(frozen=True)
class PullSpec:
    """A stream of the layers above ``base`` (all when None) into the active layer."""

    base: Layer | None
    backing_file: str | None = None
    bandwidth: int = 0


@dataclass
class Started:
    """What starting a job added to the hypervisor, to be removed if it ends without pivot."""

    added_nodes: list[str] = field(default_factory=list)


class Hypervisor(Protocol):
    """One running domain, as the agent needs it."""

    async def disks(self) -> dict[str, LiveDisk]:
        """Every disk by alias, with its live chain."""
        ...

    async def jobs(self) -> dict[str, LiveJob]:
        """Every virtbus job the hypervisor still holds, by job id."""
        ...

    def job_events(self) -> AsyncIterator[JobEvent | None]:
        """Job state changes as they happen; ``None`` once the connection is gone."""
        ...

    async def start_copy(self, job_id: str, disk: LiveDisk, spec: CopySpec) -> Started:
        """Start a mirror; idempotent for a job id that already exists."""
        ...

    async def start_commit(self, job_id: str, disk: LiveDisk, spec: CommitSpec) -> Started: ...

    async def start_pull(self, job_id: str, disk: LiveDisk, spec: PullSpec) -> Started: ...

    async def complete(self, job_id: str) -> None:
        """Pivot a ready copy or active commit."""
        ...

    async def cancel(self, job_id: str) -> None: ...

    async def set_speed(self, job_id: str, bandwidth: int) -> None: ...

    async def dismiss(self, job_id: str) -> None:
        """Forget a concluded job (after its outcome has been published)."""
        ...

    async def release(self, nodes: list[str]) -> None:
        """Close images the domain no longer uses (best effort)."""
        ...

    async def close(self) -> None: ...

    @property
    def connected(self) -> bool: ...
