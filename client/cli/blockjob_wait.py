"""Waiting for a block job as virsh does (virshBlockJobWait): poll the job's info
every half second, printing ``Block Copy: [ 45 %]`` on stderr when asked, until
its first BLOCK_JOB_2 status; abort it on the timeout or on Ctrl-C.  After a
pivot or an abort, wait for the outcome as virDomainBlockJobAbort does without
VIR_DOMAIN_BLOCK_JOB_ABORT_ASYNC, then for the storage service to hold the
disk's new inventory."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass

from client.cli.pool_cmds import CommandFailed
from client.storage_jobs import BlockJobClient, JobWatch
from shared.api import storage_jobs as api
from shared.api.blockjob import JobStatus
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

#: How long a synchronous abort or pivot waits for the job's end.
_END_TIMEOUT = 120.0


def progress_text(label: str, cur: int, end: int) -> str:
    """virshPrintJobProgress (virsh 9.0): whole percent, 100 only when done."""
    remaining = end - cur
    if remaining == 0:
        percent = 100
    else:
        percent = int(100.0 - remaining * 100.0 / end) if end else 0
        percent = min(percent, 99)
    return f"\r{label}: [{percent:3d} %]"


def _show_progress(label: str, cur: int, end: int) -> None:
    sys.stdout.flush()
    sys.stderr.write(progress_text(label, cur, end))
    sys.stderr.flush()


@dataclass
class Waiting:
    """How one command waits: its progress label, verbosity, timeout, abort mode."""

    label: str
    verbose: bool
    timeout: float | None
    async_abort: bool
    blocking: bool = True


class Interrupt:
    """Ctrl-C while waiting aborts the job, as in virsh, instead of ending the command."""

    def __init__(self) -> None:
        self.caught = asyncio.Event()

    def __enter__(self) -> Interrupt:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self.caught.set)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)


async def wait_job(
    jobs: BlockJobClient, watch: JobWatch, job: api.BlockJobInfo, how: Waiting, stop: Interrupt
) -> JobStatus:
    """virshBlockJobWait: until the job is ready or over (its first BLOCK_JOB_2
    status), printing progress; aborted at the timeout or on Ctrl-C."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    last = (0, 0)
    result: JobStatus | None = None
    while result is None:
        info = await jobs.info(job.domain, job.disk)
        status = watch.status(job.job_id)
        if status is not None and status.status is not None:
            result = status.status
            break
        if info is None or info.job_id != job.job_id:
            ended = await jobs.job(job.domain, job.job_id)
            if ended is not None and not ended.active and ended.phase.status is not None:
                result = ended.phase.status
                break
        elif how.verbose and (info.cur, info.end) != last:
            _show_progress(how.label, info.cur, info.end)
            last = (info.cur, info.end)
        timed_out = how.timeout is not None and loop.time() - started > how.timeout
        if stop.caught.is_set() or timed_out:
            try:
                await jobs.abort(job.domain, job.disk)
            except VirtError as err:
                raise CommandFailed(f"failed to abort job for disk '{job.disk}'", str(err)) from err
            if not how.async_abort:
                await wait_end(watch, job)
            result = JobStatus.CANCELED
            break
        await watch.changed(0.5)
    if how.verbose and result in (JobStatus.COMPLETED, JobStatus.READY):
        _show_progress(how.label, 1, 1)
    return result


async def wait_end(watch: JobWatch, job: api.BlockJobInfo) -> JobStatus:
    """Until the job's outcome (after a pivot or an abort), as virDomainBlockJobAbort
    waits without VIR_DOMAIN_BLOCK_JOB_ABORT_ASYNC, then until the storage
    service holds the disk's new inventory."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _END_TIMEOUT
    while True:
        status = watch.status(job.job_id, after=JobStatus.READY)
        if status is not None and status.status is not None:
            if status.status is not JobStatus.FAILED:
                await watch.settled(job.job_id, job.disk)
            elif status.error:
                raise VirtError(
                    ErrorCode.OPERATION_FAILED, status.error, ErrorDomain.QEMU, raw=True
                )
            return status.status
        if loop.time() > deadline:
            raise CommandFailed(f"no outcome of the block job on disk {job.disk} yet")
        await watch.changed(0.5)
