"""Block jobs as the storage service controls them: validate a request against the
disk inventory, prepare the destination, record the job, and send its command
to the disk's host agent; then follow the agent's status events to the end.

A job holds its disk from the request to its outcome (a ledger claim, see
store.py), so a second job on a busy disk is refused with libvirt's
error.  Every status is applied once (the record keeps the phases seen), and
what follows an outcome (the claim released, committed images deleted) is
idempotent, so an event delivered twice, or again after a restart, changes
nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from services.storage.disks.destinations import Destinations
from services.storage.disks.index import DomainDisks, commit_layers, no_disk
from services.storage.disks.store import DiskStore, JobRecord
from services.storage.disks.users import DiskUsers
from services.storage.interface import Volumes
from shared.api import storage_jobs as api
from shared.api.blockjob import (
    AbortCommand,
    BlockJobStatus,
    Command,
    CommitCommand,
    CopyCommand,
    JobType,
    Phase,
    PivotCommand,
    PullCommand,
    SetSpeedCommand,
)
from shared.api.storage import users_text
from shared.conf.disk_model import DiskDef
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.events import MAX_AGE_SECONDS
from shared.util.ledger_state import LedgerPublisher
from shared.util.subjects import BLOCKJOB_KIND

log = logging.getLogger(__name__)
_D = ErrorDomain.QEMU
#: Statuses after which the job is over.
TERMINAL = frozenset({Phase.COMPLETED, Phase.PIVOTED, Phase.FAILED, Phase.CANCELLED})
#: Seconds between stored copies of a running job's progress (events come each second).
_PROGRESS_SAVE_SECONDS = 5.0
_TWO_PHASE = frozenset({JobType.COPY, JobType.ACTIVE_COMMIT})
#: libvirt's names of job types in "job type '%s' does not support pivot".
_TYPE_NAMES = {
    JobType.PULL: "pull",
    JobType.COPY: "copy",
    JobType.COMMIT: "commit",
    JobType.ACTIVE_COMMIT: "active-commit",
}


def no_job(target: str) -> VirtError:
    return VirtError(ErrorCode.INVALID_ARG, f"disk {target} does not have an active block job", _D)


def busy(target: str, two_phase: bool) -> VirtError:
    """qemuDomainDiskBlockJobIsActive: a mirror (copy, active commit) is
    VIR_ERR_BLOCK_COPY_ACTIVE, any other job VIR_ERR_OPERATION_UNSUPPORTED."""
    code = ErrorCode.BLOCK_COPY_ACTIVE if two_phase else ErrorCode.OPERATION_UNSUPPORTED
    return VirtError(code, f"disk '{target}' already in active block job", _D)


class BlockJobs:
    """The block jobs of this host's domains."""

    def __init__(
        self,
        users: DiskUsers,
        store: DiskStore,
        volumes: Volumes,
        publisher: LedgerPublisher,
        ended: Callable[[JobRecord], None],
    ) -> None:
        self.host = users.host
        self._index = users.index
        self._store = store
        self._volumes = volumes
        self._publisher = publisher
        #: The job table, shared with ``users`` (a destination is a volume user).
        self.records = users.jobs
        self._destinations = Destinations(volumes, users.users_of_path)
        self._saved_progress: dict[str, float] = {}
        #: Told each job that ends here, once, with its final phase (the service's metric).
        self.ended = ended

    async def load(self) -> None:
        """The jobs as stored: a start command a crash kept from the stream is sent;
        ended jobs older than the event stream keeps are forgotten, and the
        follow-ups of the others done (an outcome applied just before a crash
        may have left them undone)."""
        self.records.clear()
        self.records.update({r.job_id: r for r in await self._store.jobs()})
        oldest = time.time() - MAX_AGE_SECONDS
        for record in list(self.records.values()):
            if record.active:
                if not record.sent:
                    try:
                        await self._send_start(record)
                    except Exception as err:
                        # the next start tries again; the job waits meanwhile
                        log.warning(
                            "block job command not sent",
                            extra={"job": record.job_id, "error": str(err)},
                        )
                continue
            if record.created < oldest:
                await self._store.delete_job(record.job_id)
                del self.records[record.job_id]
                continue
            await self._after_end(record)

    # -- look-ups -----------------------------------------------------------------------

    def active_job(self, domain: str, target: str) -> JobRecord | None:
        for record in self.records.values():
            if record.active and record.domain == domain and record.disk == target:
                return record
        return None

    def jobs(self, domain: str | None = None, *, finished: bool = False) -> list[JobRecord]:
        found = [
            r
            for r in self.records.values()
            if (domain is None or r.domain == domain) and (finished or r.active)
        ]
        return sorted(found, key=lambda r: r.created)

    def _disk(self, domain: str, name: str) -> tuple[DomainDisks, DiskDef, str]:
        entry = self._index.get(domain)
        _, disk = entry.disk(name)
        target = disk.target.dev
        if target is None:
            raise no_disk(name)
        return entry, disk, target

    # -- starting -----------------------------------------------------------------------

    async def copy(self, req: api.BlockCopyRequest) -> api.BlockJobInfo:
        """virDomainBlockCopy."""
        _, disk, target = self._disk(req.domain, req.disk)
        self._check_idle(disk, target)
        job_id = self._new_id()
        async with self._claimed(req.domain, target, job_id):
            dest = await self._destinations.prepare(req, disk, target)
            options = req.copy_options() | {"reuse_external": dest.reuse_external}
            command = CopyCommand(
                job_id=job_id, domain=req.domain, disk=target, destination=dest.xml, **options
            )
            record = self._record(command, JobType.COPY, req.bandwidth)
            record.destination = dest.path
            record.created_volume = dest.created_volume
            return await self._start(record)

    async def commit(self, req: api.BlockCommitRequest) -> api.BlockJobInfo:
        """virDomainBlockCommit (``delete``: see BlockCommitRequest)."""
        _, disk, target = self._disk(req.domain, req.disk)
        self._check_idle(disk, target)
        top_at, base_at = commit_layers(disk, req.top, req.base, shallow=req.shallow)
        if top_at == 0 and not req.active:
            raise VirtError(
                ErrorCode.INVALID_ARG, f"commit of '{target}' active layer requires active flag", _D
            )
        chain = disk.source.chain()
        job_id = self._new_id()
        async with self._claimed(req.domain, target, job_id):
            command = CommitCommand(
                job_id=job_id,
                domain=req.domain,
                disk=target,
                top=req.top,
                base=req.base,
                active=req.active,
                shallow=req.shallow,
                keep_relative=req.keep_relative,
                bandwidth=req.bandwidth,
            )
            kind = JobType.ACTIVE_COMMIT if top_at == 0 else JobType.COMMIT
            record = self._record(command, kind, req.bandwidth)
            if top_at == 0:
                record.destination = chain[base_at].path
            if req.delete:
                record.delete_paths = [
                    layer.path for layer in chain[top_at:base_at] if layer.is_local and layer.path
                ]
            return await self._start(record)

    async def pull(self, req: api.BlockPullRequest) -> api.BlockJobInfo:
        """virDomainBlockPull / virDomainBlockRebase without copy."""
        _, disk, target = self._disk(req.domain, req.disk)
        self._check_idle(disk, target)
        job_id = self._new_id()
        async with self._claimed(req.domain, target, job_id):
            command = PullCommand(
                job_id=job_id,
                domain=req.domain,
                disk=target,
                base=req.base,
                keep_relative=req.keep_relative,
                bandwidth=req.bandwidth,
            )
            return await self._start(self._record(command, JobType.PULL, req.bandwidth))

    def _check_idle(self, disk: DiskDef, target: str) -> None:
        if disk.mirror is not None:
            raise busy(target, True)

    @staticmethod
    def _new_id() -> str:
        return uuid.uuid4().hex[:16]

    def _record(self, command: Command, kind: JobType, bandwidth: int) -> JobRecord:
        return JobRecord(
            job_id=command.job_id,
            host=self.host,
            domain=command.domain,
            disk=command.disk,
            type=kind,
            type_code=kind.code,
            bandwidth=bandwidth,
            command=command,
        )

    @contextlib.asynccontextmanager
    async def _claimed(self, domain: str, target: str, job_id: str) -> AsyncIterator[None]:
        """Hold the disk for ``job_id`` while the job is set up; released again if
        setting up fails (a started job keeps it until its outcome)."""
        for _ in range(3):
            holder = await self._store.claim(domain, target, job_id)
            if holder is None:
                break
            record = self.records.get(holder)
            if record is not None and record.active:
                raise busy(target, record.type in _TWO_PHASE)
            # a claim left by a job that ended (or a half-made start): take it over
            await self._store.release(domain, target, holder)
        else:
            raise busy(target, False)
        try:
            yield
        except BaseException:
            await self._store.release(domain, target, job_id)
            raise

    async def _start(self, record: JobRecord) -> api.BlockJobInfo:
        """Record the job, then send its command (a failed send ends the job)."""
        await self._store.save_job(record)
        self.records[record.job_id] = record
        try:
            await self._send_start(record)
        except Exception as err:
            await self._end(record, Phase.FAILED, f"command not sent: {err}")
            raise VirtError(
                ErrorCode.OPERATION_FAILED, f"block job command not sent: {err}", _D
            ) from err
        log.info(
            "block job started",
            extra={"job": record.job_id, "domain": record.domain, "disk": record.disk},
        )
        return record.info()

    async def _send_start(self, record: JobRecord) -> None:
        """Send the job's start command and note that the stream has it.  Sent again
        after a crash in between: within the stream's duplicate window it is
        stored once, and the agent takes a start it already made as done."""
        await self._send(record.command)

        async def sent(r: JobRecord) -> bool:
            r.sent = True
            return True

        await self._update(record.job_id, sent)

    async def _update(
        self, job_id: str, change: Callable[[JobRecord], Awaitable[bool]]
    ) -> JobRecord | None:
        """Apply ``change`` to the stored job (DiskStore.update_job) and keep the
        record as stored after; None when the job is not stored."""
        updated = await self._store.update_job(job_id, change)
        if updated is not None:
            self.records[job_id] = updated
        return updated

    async def _send(self, command: Command) -> None:
        await self._publisher.publish(
            BLOCKJOB_KIND,
            command.domain,
            command.kind.value,
            extra=command.model_dump(mode="json"),
        )

    # -- control ----------------------------------------------------------------------------

    async def abort(self, req: api.BlockJobAbortRequest) -> api.BlockJobInfo:
        """virDomainBlockJobAbort, with or without PIVOT."""
        _, _, target = self._disk(req.domain, req.disk)
        record = self.active_job(req.domain, target)
        if record is None:
            raise no_job(target)
        if req.pivot:
            if record.type not in _TWO_PHASE:
                raise VirtError(
                    ErrorCode.OPERATION_INVALID,
                    f"job type '{_TYPE_NAMES[record.type]}' does not support pivot",
                    _D,
                )
            if record.phase is not Phase.READY:
                raise VirtError(
                    ErrorCode.BLOCK_COPY_ACTIVE, f"disk '{target}' not ready for pivot yet", _D
                )
            command: Command = PivotCommand(job_id=record.job_id, domain=req.domain, disk=target)
        else:
            command = AbortCommand(job_id=record.job_id, domain=req.domain, disk=target)

        async def mark(r: JobRecord) -> bool:
            if req.pivot:
                r.pivot_requested = True
            else:
                r.abort_requested = True
            return True

        updated = await self._update(record.job_id, mark)
        await self._send(command)
        return (updated or record).info()

    async def set_speed(self, req: api.BlockJobSpeedRequest) -> api.BlockJobInfo:
        """virDomainBlockJobSetSpeed."""
        _, _, target = self._disk(req.domain, req.disk)
        record = self.active_job(req.domain, target)
        if record is None:
            raise no_job(target)
        await self._send(
            SetSpeedCommand(
                job_id=record.job_id, domain=req.domain, disk=target, bandwidth=req.bandwidth
            )
        )

        async def mark(r: JobRecord) -> bool:
            r.bandwidth = req.bandwidth
            return True

        updated = await self._update(record.job_id, mark)
        return (updated or record).info()

    def info(self, req: api.DiskRef) -> api.BlockJobInfoReply:
        """virDomainGetBlockJobInfo: the disk's running job, if any."""
        _, _, target = self._disk(req.domain, req.disk)
        record = self.active_job(req.domain, target)
        return api.BlockJobInfoReply(job=record.info() if record is not None else None)

    def note_progress(self, status: BlockJobStatus) -> None:
        """What the agent's job list says of a running job now, kept in memory: its
        cur/end, and that it is ready (its READY event may still be on its way
        here, and a pivot right after the event must not be refused)."""
        record = self.records.get(status.job_id)
        if record is None or not record.active:
            return
        record.cur, record.end = status.cur, status.end
        record.bandwidth = status.bandwidth or record.bandwidth
        if status.phase is Phase.READY and record.phase is Phase.PROGRESS:
            record.phase = Phase.READY

    # -- the agent's statuses ----------------------------------------------------------------

    async def on_status(self, status: BlockJobStatus) -> None:
        """A ``block-job-2`` or ``block-job-progress`` of the agent."""
        record = self.records.get(status.job_id)
        if record is None:
            return  # not a job of this service (or forgotten): nothing to follow
        if status.phase is Phase.PROGRESS:
            await self._progress(record, status)
            return
        phase = status.phase

        async def apply(r: JobRecord) -> bool:
            if phase in r.phases or not r.active:
                return False
            r.phases.append(phase)
            r.phase = phase
            r.cur, r.end = status.cur, status.end
            r.bandwidth = status.bandwidth or r.bandwidth
            r.error = status.error
            if phase in TERMINAL:
                r.active = False
            return True

        updated = await self._update(record.job_id, apply)
        if updated is None:
            return
        if not updated.active:
            self.ended(updated)
            await self._after_end(updated)

    async def _progress(self, record: JobRecord, status: BlockJobStatus) -> None:
        if not record.active:
            return
        record.cur, record.end = status.cur, status.end
        record.bandwidth = status.bandwidth or record.bandwidth
        now = time.monotonic()
        if now - self._saved_progress.get(record.job_id, 0.0) < _PROGRESS_SAVE_SECONDS:
            return
        self._saved_progress[record.job_id] = now

        async def apply(r: JobRecord) -> bool:
            if not r.active:
                return False
            r.cur, r.end, r.bandwidth = record.cur, record.end, record.bandwidth
            return True

        await self._update(record.job_id, apply)

    async def _end(self, record: JobRecord, phase: Phase, error: str | None) -> None:
        async def apply(r: JobRecord) -> bool:
            if not r.active:
                return False
            r.phases.append(phase)
            r.phase, r.active, r.error = phase, False, error
            return True

        updated = await self._update(record.job_id, apply)
        if updated is not None:
            self.ended(updated)
        await self._after_end(updated or record)

    async def _after_end(self, record: JobRecord) -> None:
        """What follows an outcome, each step idempotent: the disk's claim goes, and a
        commit with ``delete`` removes the images it emptied."""
        self._saved_progress.pop(record.job_id, None)
        await self._store.release(record.domain, record.disk, record.job_id)
        if record.delete_paths and record.phase in (Phase.COMPLETED, Phase.PIVOTED):
            for path in record.delete_paths:
                await self._delete_image(record, path)

            async def done(r: JobRecord) -> bool:
                r.delete_paths = []
                return True

            await self._update(record.job_id, done)

    async def _delete_image(self, record: JobRecord, path: str) -> None:
        others = [
            u for u in self._index.users(path) if (u.domain, u.disk) != (record.domain, record.disk)
        ]
        if others:
            log.warning(
                "committed image kept: used by %s", users_text(others), extra={"path": path}
            )
            return
        try:
            vol = self._volumes.volume_at(path)
        except VirtError:
            pass
        else:
            await self._volumes.delete_volume(vol.pool, vol.name)
            return
        if await asyncio.to_thread(_remove_file, path):
            log.info("committed image deleted", extra={"path": path})


def _remove_file(path: str) -> bool:
    """Remove a regular file (never a link, a folder or a device); True if removed."""
    if os.path.isfile(path) and not os.path.islink(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            return True
    return False
