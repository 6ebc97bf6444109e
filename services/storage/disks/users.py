"""Which domain disks use a volume: the ``VolumeUsers`` side of
``services.storage.interface``, kept by the disks half for the volumes half.

A disk uses its source, every layer of its backing chain and, during a copy
or active commit, the mirror's chain (all in the inventory); a running job's
destination counts from the request on, before the agent reports the mirror.
"""

from __future__ import annotations

from services.storage.disks.index import JOB, DiskIndex
from services.storage.disks.store import JobRecord
from shared.api.storage import VolumeUser
from shared.conf.storage_pool_util import sanitize_path


class DiskUsers:
    """The inventory of this host and its block jobs, read for volume users.

    ``jobs`` is the job table itself: ``BlockJobs`` keeps its records in it."""

    def __init__(self, host: str, index: DiskIndex) -> None:
        self.host = host
        self.index = index
        self.jobs: dict[str, JobRecord] = {}

    def users(self, pool: str, name: str, path: str | None) -> list[VolumeUser]:
        found = self.index.users(path, pool, name)
        if path and self.jobs:
            seen = {(u.domain, u.disk) for u in found}
            found += [u for u in self._destinations(path) if (u.domain, u.disk) not in seen]
        return found

    def any_users(self) -> bool:
        return self.index.any_users() or any(r.active and r.destination for r in self.jobs.values())

    def users_of_path(self, path: str) -> list[VolumeUser]:
        """The disks using ``path``: the inventory's, and running jobs' destinations."""
        return self.index.users(path) + self._destinations(path)

    def _destinations(self, path: str) -> list[VolumeUser]:
        clean = sanitize_path(path)
        return [
            VolumeUser(host=self.host, domain=r.domain, disk=r.disk, role=JOB)
            for r in self.jobs.values()
            if r.active and r.destination and sanitize_path(r.destination) == clean
        ]
