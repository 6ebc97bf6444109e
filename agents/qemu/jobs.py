"""Running block jobs: commands from the storage service in, QEMU job states in,
BLOCK_JOB_2 status events and disk changes out.

Every step is idempotent and recorded (records.py) before or right after it
touches QEMU, and every job is left in QEMU until its outcome is published
(``auto-dismiss: false``), so a command delivered twice, a job event missed while
the agent was down, or a crash between two steps all end in one outcome
published once: ``reconcile`` compares the records with QEMU's job list.
"""

from __future__ import annotations

import logging
import os.path
from collections.abc import Awaitable, Callable

from agents.qemu.domains import Domain
from agents.qemu.hypervisor import (
    CommitSpec,
    CopySpec,
    JobState,
    Layer,
    LiveDisk,
    LiveJob,
    PullSpec,
)
from agents.qemu.inventory import chain_source, rewrite_disk, source_for
from agents.qemu.qmp_client import QmpCommandError
from agents.qemu.records import MIRROR_READY, AgentStore, JobRecord, RecordState, status_event
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
    destination_source,
    job_status,
)
from shared.conf.disk_mirror import DiskMirror
from shared.conf.disk_source import TERMINATOR, StorageSource
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.ledger import Event

log = logging.getLogger(__name__)

PublishStatus = Callable[[BlockJobStatus], Awaitable[None]]
PublishInventory = Callable[[Domain], Awaitable[None]]


class Retry(Exception):
    """The command cannot be handled yet (domain unknown or not connected): deliver later."""


class JobController:
    """The agent's jobs, by job id, mirrored in its ledger."""

    def __init__(
        self,
        store: AgentStore,
        domains: dict[str, Domain],
        publish_status: PublishStatus,
        publish_inventory: PublishInventory,
    ) -> None:
        self._store = store
        self._domains = domains
        self._publish_status = publish_status
        self._publish_inventory = publish_inventory
        self.records: dict[str, JobRecord] = {}

    async def load(self) -> None:
        self.records = {r.job_id: r for r in self._store.jobs()}

    def active(self, domain: str) -> list[JobRecord]:
        return [r for r in self.records.values() if r.domain == domain and r.active]

    def mirror_for(self, domain: str, alias: str) -> DiskMirror | None:
        """The ``<mirror>`` a disk carries while a copy or active commit runs on it."""
        for record in self.active(domain):
            job = record.mirror_job
            if record.alias == alias and job is not None and record.mirror is not None:
                return DiskMirror(source=record.mirror, job=job, ready=MIRROR_READY[record.state])
        return None

    async def _save(self, record: JobRecord, events: list[Event] | None = None) -> None:
        self.records[record.job_id] = record
        await self._store.save_job(record, events)

    async def _publish(self, record: JobRecord, phase: Phase, error: str | None = None) -> None:
        """Publish ``phase`` once per job: the status event and the record that
        lists it as published are one write, so a crash repeats neither."""
        if phase in record.published:
            return
        event = status_event(self._status(record, phase, error))
        record.published.append(phase)
        await self._save(record, [event])

    def _status(self, record: JobRecord, phase: Phase, error: str | None = None) -> BlockJobStatus:
        return job_status(
            record.job_id,
            record.domain,
            record.disk,
            record.job_type,
            phase,
            cur=record.cur,
            end=record.end,
            bandwidth=record.bandwidth,
            error=error,
        )

    def running(self, domain: str | None = None) -> list[BlockJobStatus]:
        phase = {RecordState.READY: Phase.READY}
        return [
            self._status(r, phase.get(r.state, Phase.PROGRESS))
            for r in self.records.values()
            if r.active and (domain is None or r.domain == domain)
        ]

    # -- commands -------------------------------------------------------------------------

    async def handle(self, command: Command) -> None:
        """Carry out one command; raises ``Retry`` when it must wait for its domain."""
        domain = self._domains.get(command.domain)
        if domain is None or not domain.live:
            raise Retry(f"domain '{command.domain}' is not connected")
        async with domain.lock:
            if isinstance(command, CopyCommand | CommitCommand | PullCommand):
                await self._start(domain, command)
                return
            record = self.records.get(command.job_id)
            if record is None:
                raise Retry(f"no job '{command.job_id}' (yet)")
            if not record.active:
                log.info("command for a finished job", extra={"job": command.job_id})
                return
            if isinstance(command, PivotCommand):
                await self._pivot(domain, record)
            elif isinstance(command, AbortCommand):
                await self._abort(domain, record)
            elif isinstance(command, SetSpeedCommand):
                assert domain.hypervisor is not None
                await domain.hypervisor.set_speed(record.job_id, command.bandwidth)
                record.bandwidth = command.bandwidth
                await self._save(record)

    async def _start(
        self, domain: Domain, command: CopyCommand | CommitCommand | PullCommand
    ) -> None:
        record = self.records.get(command.job_id)
        if record is not None and record.state is not RecordState.STARTING:
            return  # delivered again after it was started
        hv = domain.hypervisor
        assert hv is not None
        try:
            disk = domain.disk_by_target(command.disk)
            if disk is None or disk.info.alias is None:
                raise VirtError(
                    ErrorCode.INVALID_ARG,
                    f"disk '{command.disk}' not found in domain '{domain.name}'",
                    ErrorDomain.DOMAIN,
                )
            live = (await hv.disks()).get(disk.info.alias)
            if live is None:
                raise VirtError(
                    ErrorCode.INTERNAL_ERROR,
                    f"disk '{command.disk}' (alias '{disk.info.alias}') is not in QEMU",
                    ErrorDomain.QEMU,
                )
            for other in self.active(domain.name):
                if other.disk == command.disk and other.job_id != command.job_id:
                    raise VirtError(
                        ErrorCode.BLOCK_COPY_ACTIVE,
                        f"disk '{command.disk}' already in active block job",
                        ErrorDomain.DOMAIN,
                    )
            if record is None:
                record = await self._plan(command, disk.info.alias, live)
                await self._save(record)
            started = await self._run(record, live)
            record.added_nodes = started
            if record.job_type is JobType.COPY and started:
                record.target_node = started[0]
            record.state = RecordState.RUNNING
            await self._save(record)
        except (VirtError, QmpCommandError) as err:
            message = err.message if isinstance(err, VirtError) else err.desc
            failed = record or await self._plan_failed(command, domain)
            failed.state = RecordState.FINISHED
            failed.error = message
            await self._publish(failed, Phase.FAILED, message)
            await self._save(failed)
            return
        await self._publish_inventory(domain)

    async def _plan(
        self, command: CopyCommand | CommitCommand | PullCommand, alias: str, live: LiveDisk
    ) -> JobRecord:
        """The record of a new job: its type, what leaves the chain, its mirror."""
        chain_nodes = await _chain_nodes(live)
        if isinstance(command, CopyCommand):
            dest = destination_source(command.destination)
            if command.shallow and dest.backing_store is None:
                dest = dest.model_copy(update={"backing_store": _below(live, 0)})
            return JobRecord(
                command=command,
                alias=alias,
                job_type=JobType.COPY,
                chain_nodes=chain_nodes,
                drop_nodes=[live.top.node],
                mirror=dest.model_copy(update={"backing_store": dest.backing_store or TERMINATOR}),
                bandwidth=command.bandwidth,
            )
        if isinstance(command, CommitCommand):
            top, base = _commit_layers(command, live)
            top_index = live.chain.index(top)
            active = top_index == 0
            if active and not command.active:
                raise VirtError(
                    ErrorCode.INVALID_ARG,
                    f"commit of '{command.disk}' active layer requires active flag",
                    ErrorDomain.DOMAIN,
                )
            base_index = live.chain.index(base)
            drop = [layer.node for layer in live.chain[top_index:base_index]]
            return JobRecord(
                command=command,
                alias=alias,
                job_type=JobType.ACTIVE_COMMIT if active else JobType.COMMIT,
                chain_nodes=chain_nodes,
                drop_nodes=drop,
                mirror=_from(live, base_index) if active else None,
                target_node=base.node if active else None,
                bandwidth=command.bandwidth,
            )
        base_index = _base_index(command.base, command.disk, live, len(live.chain))
        return JobRecord(
            command=command,
            alias=alias,
            job_type=JobType.PULL,
            chain_nodes=chain_nodes,
            drop_nodes=[layer.node for layer in live.chain[1:base_index]],
            bandwidth=command.bandwidth,
        )

    async def _plan_failed(
        self, command: CopyCommand | CommitCommand | PullCommand, domain: Domain
    ) -> JobRecord:
        kind = {
            CopyCommand: JobType.COPY,
            CommitCommand: JobType.ACTIVE_COMMIT
            if getattr(command, "active", False)
            else JobType.COMMIT,
            PullCommand: JobType.PULL,
        }[type(command)]
        disk = domain.disk_by_target(command.disk)
        alias = disk.info.alias if disk is not None and disk.info.alias else command.disk
        return JobRecord(command=command, alias=alias, job_type=kind)

    async def _run(self, record: JobRecord, live: LiveDisk) -> list[str]:
        domain = self._domains[record.domain]
        hv = domain.hypervisor
        assert hv is not None
        command = record.command
        if isinstance(command, CopyCommand):
            started = await hv.start_copy(
                record.job_id,
                live,
                CopySpec(
                    destination=destination_source(command.destination),
                    shallow=command.shallow,
                    create=not command.reuse_external,
                    bandwidth=command.bandwidth,
                    granularity=command.granularity,
                    buf_size=command.buf_size,
                    synchronous_writes=command.synchronous_writes,
                ),
            )
        elif isinstance(command, CommitCommand):
            top, base = _commit_layers(command, live)
            started = await hv.start_commit(
                record.job_id,
                live,
                CommitSpec(
                    top=top,
                    base=base,
                    active=record.job_type is JobType.ACTIVE_COMMIT,
                    backing_file=_relative(base, live, command.keep_relative),
                    bandwidth=command.bandwidth,
                ),
            )
        else:
            index = _base_index(command.base, command.disk, live, len(live.chain))
            pull_base = live.chain[index] if index < len(live.chain) else None
            started = await hv.start_pull(
                record.job_id,
                live,
                PullSpec(
                    base=pull_base,
                    backing_file=_relative(pull_base, live, command.keep_relative),
                    bandwidth=command.bandwidth,
                ),
            )
        return started.added_nodes

    async def _pivot(self, domain: Domain, record: JobRecord) -> None:
        if record.mirror_job is None:
            log.warning("pivot of a job that has no mirror", extra={"job": record.job_id})
            return
        record.pivot_requested = True
        if record.state is RecordState.READY:
            record.state = RecordState.PIVOTING
            await self._save(record)
            assert domain.hypervisor is not None
            await domain.hypervisor.complete(record.job_id)
            await self._publish_inventory(domain)
        else:
            await self._save(record)

    async def _abort(self, domain: Domain, record: JobRecord) -> None:
        record.abort_requested = True
        if record.state is not RecordState.PIVOTING:
            record.state = RecordState.ABORTING
        await self._save(record)
        assert domain.hypervisor is not None
        try:
            await domain.hypervisor.cancel(record.job_id)
        except QmpCommandError as err:
            # already concluding: its JOB_STATUS_CHANGE settles the outcome
            log.info("cancel refused", extra={"job": record.job_id, "reason": err.desc})
        await self._publish_inventory(domain)

    async def fail(self, command: CopyCommand | CommitCommand | PullCommand, reason: str) -> None:
        """Report a start command that could not be carried out as a failed job."""
        domain = self._domains.get(command.domain)
        record = self.records.get(command.job_id)
        if record is None:
            record = (
                await self._plan_failed(command, domain)
                if domain is not None
                else JobRecord(command=command, alias=command.disk, job_type=_type_of(command))
            )
        record.state = RecordState.FINISHED
        record.error = reason
        await self._publish(record, Phase.FAILED, reason)
        await self._save(record)

    # -- QEMU's side ----------------------------------------------------------------------

    async def on_job_state(self, domain: Domain, job_id: str, state: JobState) -> None:
        """A JOB_STATUS_CHANGE of one of our jobs."""
        record = self.records.get(job_id)
        if record is None or not record.active:
            return
        if state not in (JobState.READY, JobState.STANDBY, JobState.CONCLUDED):
            return
        async with domain.lock:
            hv = domain.hypervisor
            assert hv is not None
            job = (await hv.jobs()).get(job_id)
            if state is JobState.CONCLUDED:
                await self._on_concluded(domain, record, job)
            else:
                await self._on_ready(domain, record, job)

    async def reconcile(self, domain: Domain) -> None:
        """Bring every unfinished job of ``domain`` in line with what QEMU holds now."""
        hv = domain.hypervisor
        assert hv is not None
        async with domain.lock:
            live_jobs = await hv.jobs()
            for record in self.active(domain.name):
                job = live_jobs.get(record.job_id)
                if job is None:
                    if record.state is not RecordState.STARTING:
                        await self._on_concluded(domain, record, None)
                    continue
                self._progress(record, job)
                if job.state in (JobState.READY, JobState.STANDBY):
                    await self._on_ready(domain, record, job, retry=True)
                elif job.state is JobState.CONCLUDED:
                    await self._on_concluded(domain, record, job)
                elif record.state is RecordState.ABORTING:
                    await self._abort(domain, record)

    async def refresh_progress(self, domain: Domain) -> None:
        """Publish cur/end of the domain's running jobs when they moved."""
        hv = domain.hypervisor
        if hv is None or not self.active(domain.name):
            return
        live_jobs = await hv.jobs()
        for record in self.active(domain.name):
            job = live_jobs.get(record.job_id)
            if job is None or job.state is JobState.CONCLUDED:
                continue
            if (job.cur, job.end) != (record.cur, record.end):
                self._progress(record, job)
                await self._publish_status(self._status(record, Phase.PROGRESS))

    @staticmethod
    def _progress(record: JobRecord, job: LiveJob) -> None:
        record.cur, record.end = job.cur, job.end
        record.bandwidth = job.speed or record.bandwidth

    async def _on_ready(
        self, domain: Domain, record: JobRecord, job: LiveJob | None, *, retry: bool = False
    ) -> None:
        """``job`` is QEMU's view of the job, as the caller just queried it."""
        hv = domain.hypervisor
        assert hv is not None
        if record.state is RecordState.RUNNING or record.state is RecordState.STARTING:
            record.state = RecordState.READY
            await self._save(record)
        if job is not None:
            self._progress(record, job)
        await self._publish(record, Phase.READY)
        if record.state is RecordState.READY and record.pivot_requested:
            await self._pivot(domain, record)
        elif retry and record.state is RecordState.PIVOTING:
            try:
                await hv.complete(record.job_id)
            except QmpCommandError as err:
                # already completing (a mirror stays 'ready' through its last sync)
                log.debug("complete refused", extra={"job": record.job_id, "reason": err.desc})
        elif retry and record.state is RecordState.ABORTING:
            await self._abort(domain, record)
        await self._publish_inventory(domain)

    async def _on_concluded(self, domain: Domain, record: JobRecord, job: LiveJob | None) -> None:
        """``job`` is QEMU's view of the job as the caller just queried it (None: gone)."""
        hv = domain.hypervisor
        assert hv is not None
        error = None
        if job is not None:
            self._progress(record, job)
            error = job.error
            # Dismissed before the chain is read: QEMU 7.2 crashes in
            # query-named-block-nodes while a concluded stream job is kept.  A
            # crash from here on finds the job gone and decides from the chain.
            try:
                await hv.dismiss(record.job_id)
            except QmpCommandError as err:
                log.info("dismiss refused", extra={"job": record.job_id, "reason": err.desc})
        disks = await hv.disks()
        live = disks.get(record.alias)
        in_chain = {layer.node for layer in live.chain} if live is not None else set()
        # A mirror that completed after job-complete has switched (QEMU's word);
        # after a restart that lost the job, the chain tells.
        completed = job is not None and error is None and not record.abort_requested
        switched = (completed and record.pivot_requested) or (
            bool(record.drop_nodes) and not (set(record.drop_nodes) & in_chain)
        )
        alias = record.alias
        target = record.target_node
        if switched and target is not None and (live is None or live.top.node != target):
            # qemu-storage-daemon: the alias named the old top node; the disk is
            # now the target node, and its alias becomes that node's name.
            live, alias = disks.get(target), target
        if switched:
            phase, error = (Phase.PIVOTED if record.mirror_job else Phase.COMPLETED), None
        elif record.abort_requested:
            phase, error = Phase.CANCELLED, None
        elif error is None and job is not None and record.mirror_job is not None:
            # a mirror completed without switching: cancelled after it was ready
            phase = Phase.CANCELLED
        elif error is None and job is not None and not record.drop_nodes:
            phase = Phase.COMPLETED  # nothing was to leave the chain
        else:
            phase = Phase.FAILED
            error = error or "block job ended without switching the disk"
        if switched and live is not None:
            disk = domain.disk_by_target(record.disk)
            if disk is not None:
                renamed = disk.model_copy(
                    update={"info": disk.info.model_copy(update={"alias": alias})}
                )
                domain.write_xml(rewrite_disk(domain.xml, record.alias, source_for(renamed, live)))
            used = set(await _chain_nodes(live))
            await hv.release([n for n in record.chain_nodes if n not in used])
        else:
            await hv.release(record.added_nodes)
        record.error = error
        await self._publish(record, phase, error)
        record.state = RecordState.FINISHED
        await self._save(record)
        await self._publish_inventory(domain)


def _type_of(command: CopyCommand | CommitCommand | PullCommand) -> JobType:
    if isinstance(command, CopyCommand):
        return JobType.COPY
    if isinstance(command, CommitCommand):
        return JobType.ACTIVE_COMMIT if command.active else JobType.COMMIT
    return JobType.PULL


# -- choosing layers ------------------------------------------------------------------------


async def _chain_nodes(live: LiveDisk) -> list[str]:
    return [node for layer in live.chain for node in layer.nodes]


def _below(live: LiveDisk, index: int) -> StorageSource:
    """The source of the chain below layer ``index`` (the terminator at the bottom)."""
    rest = live.chain[index + 1 :]
    return chain_source(rest) if rest else TERMINATOR


def _from(live: LiveDisk, index: int) -> StorageSource:
    return chain_source(live.chain[index:])


def _layer_index(spec: str, target: str, live: LiveDisk) -> int:
    """Position in the chain (0: active) of a layer named as virsh names one: a path,
    ``vda[N]`` or ``N`` with N its ``index=`` (the bottom layer is 1)."""
    text = spec
    if text.startswith(f"{target}[") and text.endswith("]"):
        text = text[len(target) + 1 : -1]
    if text.isdigit():
        position = len(live.chain) - int(text)
        if 0 <= position < len(live.chain):
            return position
    else:
        for position, layer in enumerate(live.chain):
            if layer.source.path == spec:
                return position
    raise VirtError(
        ErrorCode.INVALID_ARG,
        f"could not find image '{spec}' in chain for '{target}'",
        ErrorDomain.DOMAIN,
    )


def _base_index(base: str | None, target: str, live: LiveDisk, default: int) -> int:
    return default if base is None else _layer_index(base, target, live)


def _commit_layers(command: CommitCommand, live: LiveDisk) -> tuple[Layer, Layer]:
    top = 0 if command.top is None else _layer_index(command.top, command.disk, live)
    if command.base is not None:
        base = _layer_index(command.base, command.disk, live)
    elif command.shallow:
        base = top + 1
    else:
        base = len(live.chain) - 1
    if base <= top or base >= len(live.chain):
        raise VirtError(
            ErrorCode.INVALID_ARG,
            f"invalid base for top '{live.chain[top].source.path}' of disk '{command.disk}'",
            ErrorDomain.DOMAIN,
        )
    return live.chain[top], live.chain[base]


def _relative(base: Layer | None, live: LiveDisk, keep_relative: bool) -> str | None:
    """With keep-relative, ``base``'s path relative to the active layer's folder (what
    QEMU writes as the new backing name)."""
    if not keep_relative or base is None or base.source.path is None:
        return None
    if live.top.source.path is None:
        return None
    return os.path.relpath(base.source.path, os.path.dirname(live.top.source.path))
