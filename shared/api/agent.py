"""A host agent's endpoints (``agent-qemu``, host-scoped): what it sees of its domains
and their block jobs.  Jobs themselves are started by events (shared.api.blockjob)."""

from __future__ import annotations

from pydantic import BaseModel

from shared.api.blockjob import BlockJobStatus, DiskInventory
from shared.util.api import Empty, Endpoint

SERVICE = "agent-qemu"


class DomainSummary(BaseModel):
    """One domain of the agent: its name, whether the hypervisor answers, its disks and jobs."""

    name: str
    live: bool
    disks: int
    jobs: int


class DomainList(BaseModel):
    domains: list[DomainSummary]


class DomainRef(BaseModel):
    domain: str


class JobList(BaseModel):
    """Running jobs (``phase`` progress or ready) with their latest cur/end."""

    jobs: list[BlockJobStatus]


class JobListRequest(BaseModel):
    domain: str | None = None


DOMAIN_LIST: Endpoint[Empty, DomainList] = Endpoint(
    SERVICE, "domain.list", Empty, DomainList, host_scoped=True
)
DOMAIN_DISKS: Endpoint[DomainRef, DiskInventory] = Endpoint(
    SERVICE, "domain.disks", DomainRef, DiskInventory, host_scoped=True
)
JOB_LIST: Endpoint[JobListRequest, JobList] = Endpoint(
    SERVICE, "job.list", JobListRequest, JobList, host_scoped=True
)

#: Every endpoint of a host agent.
ENDPOINTS = (DOMAIN_LIST, DOMAIN_DISKS, JOB_LIST)
