"""The block-job commands (blockcopy, blockcommit, blockpull, blockjob) with virsh's
options, messages and waiting.

As virsh does, a command with ``--wait`` (or ``--pivot``, ``--finish``,
``--keep-overlay``, ``--timeout``) follows the job until it is ready or over,
printing ``Block Copy: [ 45 %]`` progress on stderr with ``--verbose``, aborts
it on ``--timeout`` or Ctrl-C, then pivots or finishes it.  A pivot or an
abort waits for the job's end (unless ``--async``) and for the storage
service to hold the disk's new inventory, so the next command sees it.

Rates are virsh's: ``--bandwidth`` in MiB/s (a scaled value such as ``64M``
is bytes, rounded down to MiB/s), bytes with ``--bytes``; they go to the
service in bytes per second.
"""

from __future__ import annotations

import sys

from client.cli.output import error, print_json
from client.cli.pool_cmds import CommandFailed, pretty_capacity
from client.cli.secret_cmds import read_xml_file
from client.cli.table import Args, Command, Opt, attr_name, data, flag, number, string

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from client.cli.blockjob_wait import Waiting
    from client.storage_jobs import BlockJobClient, JobWatch
    from shared.api import storage_jobs as api

ULLONG_MAX = (1 << 64) - 1
ULONG_MAX = (1 << 64) - 1
_MIB = 1 << 20


class UsageError(Exception):
    """A command line virsh refuses before doing anything."""


def _exclusive(args: Args, *pairs: tuple[str, str]) -> None:
    for a, b in pairs:
        if getattr(args, attr_name(a)) and getattr(args, attr_name(b)):
            raise UsageError(f"Options --{a} and --{b} are mutually exclusive")


def bandwidth_bytes(text: str | None, in_bytes: bool) -> int:
    """vshBlockJobOptionBandwidth, in bytes per second (0: unlimited).  A plain
    number is MiB/s (bytes with ``in_bytes``); a negative one is, as virsh
    says, the maximum, which here means no limit; a scaled one is bytes."""
    from shared.conf.units import parse_c_unsigned, scale_integer
    from shared.util.errors import VirtError

    if text is None:
        return 0
    stripped = text.strip()
    if stripped.lstrip("-").isdigit():
        value = int(stripped)
        if value < 0:
            return 0
        if value > ULONG_MAX:
            raise UsageError(
                f"Scaled numeric value '{text}' for <--bandwidth> option is malformed or out "
                "of range"
            )
        return value if in_bytes else value * _MIB
    digits = len(stripped) - len(stripped.lstrip("0123456789"))
    number = parse_c_unsigned(stripped[:digits]) if digits else None
    try:
        if number is None:
            raise ValueError(text)
        scaled = scale_integer(number, stripped[digits:] or None, limit=ULONG_MAX)
    except (ValueError, VirtError) as err:
        raise UsageError(
            f"Scaled numeric value '{text}' for <--bandwidth> option is malformed or out of range"
        ) from err
    return scaled if in_bytes else (scaled >> 20) * _MIB


def _unsigned(text: str | None, name: str, limit: int = ULLONG_MAX) -> int:
    from shared.conf.units import parse_c_unsigned

    if text is None:
        return 0
    value = parse_c_unsigned(text.strip())
    if value is None or value > limit:
        raise UsageError(f"Numeric value '{text}' for <{name}> option is malformed or out of range")
    return value


def _timeout(text: str | None) -> float | None:
    """vshCommandOptTimeoutToMs: whole seconds above zero."""
    from shared.conf.units import parse_c_unsigned

    if text is None:
        return None
    value = parse_c_unsigned(text.strip())
    if value is None or value == 0 or value > (2**31 - 1) // 1000:
        raise UsageError(
            f"Numeric value '{text}' for <timeout> option is malformed or out of range"
        )
    return float(value)


async def _conclude(
    jobs: BlockJobClient, watch: JobWatch, job: api.BlockJobInfo, *, pivot: bool, what: str
) -> None:
    """Pivot (or abort, keeping the source) a ready job and wait for its end."""
    from client.cli.blockjob_wait import wait_end
    from shared.api.blockjob import JobStatus
    from shared.util.errors import VirtError

    try:
        await jobs.abort(job.domain, job.disk, pivot=pivot)
        outcome = await wait_end(watch, job)
    except VirtError as err:
        raise CommandFailed(f"failed to {what} job for disk {job.disk}", str(err)) from err
    if outcome is JobStatus.FAILED:
        raise CommandFailed(f"failed to {what} job for disk {job.disk}")


async def _start_or_wait(
    jobs: BlockJobClient,
    watch: JobWatch,
    job: api.BlockJobInfo,
    args: Args,
    how: Waiting,
    kind: str,
    word: str,
) -> int | None:
    """Without waiting, virsh's ``<kind> started``; else wait as virsh does.  The
    exit status when the command ends here (aborted, failed, not waiting), None
    when the job is ready or complete.  A failure's reason, which virsh cannot
    know, follows on stderr."""
    from client.cli.blockjob_wait import Interrupt, wait_job
    from shared.api.blockjob import JobStatus

    if not how.blocking:
        if args.json:
            print_json(job.model_dump(mode="json"))
        else:
            print(f"{kind} started")
        return 0
    with Interrupt() as stop:
        result = await wait_job(jobs, watch, job, how, stop)
    if result is JobStatus.CANCELED:
        print(f"\n{word} aborted")
        return 1
    if result is JobStatus.FAILED:
        print(f"\n{word} failed")
        status = watch.status(job.job_id)
        if status is not None and status.error:
            error(status.error)
        return 1
    if result is JobStatus.READY:
        # As with libvirt, the disk's XML shows the mirror ready once we say so.
        await watch.settled(job.job_id, job.disk, ready=True)
    return None


def _blocking_checks(args: Args, blocking: bool, options: str) -> None:
    if blocking:
        return
    for name in ("verbose", "async"):
        if getattr(args, attr_name(name)):
            raise UsageError(f"--{name} requires at least one of {options}")


# ---- blockcopy ------------------------------------------------------------------------------


def print_xml(dest: str, fmt: str | None, blockdev: bool) -> str:
    """The ``<disk>`` virsh's blockcopy --print-xml shows for ``--dest``."""
    from shared.conf.xmlwriter import XmlWriter

    w = XmlWriter()
    with w.block("disk", [("type", "block" if blockdev else "file")]) as d:
        d.leaf("source", [("dev" if blockdev else "file", dest)])
        if fmt:
            d.leaf("driver", [("type", fmt)])
    return w.getvalue()


def copy_request(args: Args) -> api.BlockCopyRequest:
    from shared.api import storage_jobs as api

    dest = args.dest
    if args.raw:
        args.format = "raw"
    _exclusive(args, ("dest", "xml"), ("format", "xml"), ("blockdev", "xml"), ("pivot", "finish"))
    _exclusive(args, ("dest", "pool"), ("xml", "pool"))
    if bool(args.pool) != bool(args.name):
        raise UsageError("--pool and --name go together")
    if not dest and not args.xml and not args.pool:
        raise UsageError("need either --dest or --xml")
    xml = None
    if args.xml:
        xml = read_xml_file(args.xml)
        if xml is None:
            raise UsageError(f"cannot read {args.xml}")
    return api.BlockCopyRequest(
        domain=args.domain,
        disk=args.path,
        dest=dest,
        format=args.format,
        blockdev=args.blockdev,
        xml=xml,
        pool=args.pool,
        volume=args.name,
        shallow=args.shallow,
        reuse_external=args.reuse_external,
        bandwidth=bandwidth_bytes(args.bandwidth, args.bytes),
        granularity=_unsigned(args.granularity, "granularity", (1 << 32) - 1),
        buf_size=_unsigned(args.buf_size, "buf-size"),
        synchronous_writes=args.synchronous_writes,
    )


def blockcopy(args: Args) -> int:
    from client.cli.blockjob_wait import Waiting
    from client.cli.domain_cmds import run_jobs
    from client.storage_jobs import JobWatch

    try:
        timeout = _timeout(args.timeout)
        blocking = bool(args.wait or args.finish or args.pivot or timeout)
        request = copy_request(args)
        _blocking_checks(args, blocking, "--timeout, --wait, --pivot, or --finish")
    except UsageError as err:
        error(str(err))
        return 1
    if args.print_xml:
        if request.xml is not None:
            sys.stdout.write(request.xml)
        elif request.dest is not None:
            sys.stdout.write(print_xml(request.dest, request.format, request.blockdev))
        print()
        return 0

    async def body(jobs: BlockJobClient) -> int:
        async with JobWatch(jobs, args.domain) as watch:
            job = await jobs.copy(request)
            how = Waiting("Block Copy", args.verbose, timeout, args.async_, blocking)
            ended = await _start_or_wait(jobs, watch, job, args, how, "Block Copy", "Copy")
            if ended is not None:
                return ended
            if args.pivot:
                await _conclude(jobs, watch, job, pivot=True, what="pivot")
                message = "Successfully pivoted"
            elif args.finish:
                await _conclude(jobs, watch, job, pivot=False, what="finish")
                message = "Successfully copied"
            else:
                message = "Now in mirroring phase"
            print(f"\n{message}")
            return 0

    return run_jobs(args, body)


# ---- blockcommit ----------------------------------------------------------------------------


def blockcommit(args: Args) -> int:
    from client.cli.blockjob_wait import Waiting
    from client.cli.domain_cmds import run_jobs
    from client.storage_jobs import JobWatch
    from shared.api import storage_jobs as api
    from shared.api.blockjob import JobType

    try:
        _exclusive(args, ("pivot", "keep-overlay"))
        timeout = _timeout(args.timeout)
        active = bool(args.active or args.pivot or args.keep_overlay)
        blocking = bool(args.wait or args.pivot or args.keep_overlay or timeout)
        _blocking_checks(args, blocking, "--timeout, --wait, --pivot, or --keep-overlay")
        request = api.BlockCommitRequest(
            domain=args.domain,
            disk=args.path,
            top=args.top,
            base=args.base,
            active=active,
            shallow=args.shallow,
            keep_relative=args.keep_relative,
            bandwidth=bandwidth_bytes(args.bandwidth, args.bytes),
            delete=args.delete,
        )
    except UsageError as err:
        error(str(err))
        return 1

    async def body(jobs: BlockJobClient) -> int:
        async with JobWatch(jobs, args.domain) as watch:
            job = await jobs.commit(request)
            how = Waiting("Block commit", args.verbose, timeout, args.async_, blocking)
            kind = "Active Block Commit" if active else "Block Commit"
            ended = await _start_or_wait(jobs, watch, job, args, how, kind, "Commit")
            if ended is not None:
                return ended
            if job.type is not JobType.ACTIVE_COMMIT:
                await watch.settled(job.job_id, job.disk)
                message = "Commit complete"
            elif args.pivot:
                await _conclude(jobs, watch, job, pivot=True, what="pivot")
                message = "Successfully pivoted"
            elif args.keep_overlay:
                await _conclude(jobs, watch, job, pivot=False, what="finish")
                message = "Commit complete, overlay image kept"
            else:
                message = "Now in synchronized phase"
            print(f"\n{message}")
            return 0

    return run_jobs(args, body)


# ---- blockpull ------------------------------------------------------------------------------


def blockpull(args: Args) -> int:
    from client.cli.blockjob_wait import Waiting
    from client.cli.domain_cmds import run_jobs
    from client.storage_jobs import JobWatch
    from shared.api import storage_jobs as api

    try:
        for option in ("verbose", "async"):
            if getattr(args, attr_name(option)) and not args.wait:
                raise UsageError(f"Option --wait is required by option --{option}")
        timeout = _timeout(args.timeout)
        request = api.BlockPullRequest(
            domain=args.domain,
            disk=args.path,
            base=args.base,
            keep_relative=args.keep_relative,
            bandwidth=bandwidth_bytes(args.bandwidth, args.bytes),
        )
    except UsageError as err:
        error(str(err))
        return 1

    async def body(jobs: BlockJobClient) -> int:
        async with JobWatch(jobs, args.domain) as watch:
            job = await jobs.pull(request)
            how = Waiting("Block Pull", args.verbose, timeout, args.async_, args.wait)
            ended = await _start_or_wait(jobs, watch, job, args, how, "Block Pull", "Pull")
            if ended is not None:
                return ended
            await watch.settled(job.job_id, job.disk)
            print("\nPull complete")
            return 0

    return run_jobs(args, body)


# ---- blockjob -------------------------------------------------------------------------------


def _info_text(job: api.BlockJobInfo, raw: bool, in_bytes: bool) -> tuple[str, str]:
    """(stderr, stdout) of ``blockjob --info`` for a running job, as virsh 9.0 prints."""
    from client.cli.blockjob_wait import progress_text

    label = job.type.label
    if raw:
        bandwidth = job.bandwidth if in_bytes else job.bandwidth >> 20
        return "", (f" type={label}\n bandwidth={bandwidth}\n cur={job.cur}\n end={job.end}\n")
    out = ""
    if job.bandwidth:
        pretty, unit = pretty_capacity(job.bandwidth).split(" ")
        value = float(pretty)
        out = f"    Bandwidth limit: {job.bandwidth} bytes/s ({value:.3f} {unit}/s)"
    return progress_text(label, job.cur, job.end), out + "\n"


def blockjob(args: Args) -> int:
    from client.cli.blockjob_wait import wait_end
    from client.cli.domain_cmds import run_jobs
    from client.storage_jobs import JobWatch
    from shared.api.blockjob import JobStatus

    try:
        _exclusive(args, ("raw", "abort"), ("raw", "pivot"), ("raw", "async"))
        _exclusive(args, ("raw", "bandwidth"), ("info", "abort"), ("info", "pivot"))
        _exclusive(args, ("info", "async"), ("info", "bandwidth"), ("bytes", "abort"))
        _exclusive(args, ("bytes", "pivot"), ("bytes", "async"))
        bandwidth = (
            bandwidth_bytes(args.bandwidth, args.bytes) if args.bandwidth is not None else None
        )
    except UsageError as err:
        error(str(err))
        return 1

    async def body(jobs: BlockJobClient) -> int:
        if bandwidth is not None:
            job = await jobs.set_speed(args.domain, args.path, bandwidth)
            if args.json:
                print_json(job.model_dump(mode="json"))
            else:
                print()
            return 0
        if args.abort or args.pivot or args.async_:
            async with JobWatch(jobs, args.domain) as watch:
                job = await jobs.abort(args.domain, args.path, pivot=args.pivot)
                if not args.async_:
                    outcome = await wait_end(watch, job)
                    if outcome is JobStatus.FAILED:
                        status = watch.status(job.job_id)
                        raise CommandFailed(
                            (status.error if status else None) or "block job failed"
                        )
            if args.json:
                print_json(job.model_dump(mode="json"))
            else:
                print()
            return 0
        current = await jobs.info(args.domain, args.path)
        if args.json:
            print_json(current.model_dump(mode="json") if current is not None else None)
            return 0
        if current is None:
            if not args.raw:
                print(f"No current block job for {args.path}")
            else:
                print()
            return 0
        err, out = _info_text(current, args.raw, args.bytes)
        if err:
            sys.stdout.flush()
            sys.stderr.write(err)
            sys.stderr.flush()
        sys.stdout.write(out + "\n")
        return 0

    return run_jobs(args, body)


# ---- the table ------------------------------------------------------------------------------

_DOMAIN = data("domain", "domain name, id or uuid")
_PATH = data("path", "fully-qualified path of disk")
_BANDWIDTH = number("bandwidth", "bandwidth limit in MiB/s", text=True)
_BYTES = flag("bytes", "the bandwidth limit is in bytes/s rather than MiB/s")
_VERBOSE = flag("verbose", "with --wait, display the progress")
_ASYNC = flag("async", "with --wait, don't wait for cancel to finish")
_KEEP_RELATIVE = flag("keep-relative", "keep the backing chain relatively referenced")


def _timeout_opt(what: str) -> Opt:
    return number("timeout", what, text=True)


COMMANDS = (
    Command(
        "blockcommit",
        "Start a block commit operation.",
        blockcommit,
        (
            _DOMAIN,
            _PATH,
            _BANDWIDTH,
            string("base", "path of base file to commit into (default bottom of chain)"),
            flag("shallow", "use backing file of top as base"),
            string("top", "path of top file to commit from (default top of chain)"),
            flag("active", "trigger two-stage active commit of top file"),
            flag("delete", "delete files that were successfully committed"),
            flag("wait", "wait for job to complete (with --active, wait for job to sync)"),
            _VERBOSE,
            _timeout_opt("implies --wait, abort if copy exceeds timeout (in seconds)"),
            flag("pivot", "implies --active --wait, pivot when commit is synced"),
            flag("keep-overlay", "implies --active --wait, quit when commit is synced"),
            _ASYNC,
            _KEEP_RELATIVE,
            _BYTES,
        ),
        description="Commit changes from a snapshot down to its backing image.",
    ),
    Command(
        "blockcopy",
        "Start a block copy operation.",
        blockcopy,
        (
            _DOMAIN,
            data("path", "fully-qualified path of source disk"),
            string("dest", "path of the copy to create", "file"),
            _BANDWIDTH,
            flag("shallow", "make the copy share a backing chain"),
            flag("reuse-external", "reuse existing destination"),
            flag("blockdev", "copy destination is block device instead of regular file"),
            flag("wait", "wait for job to reach mirroring phase"),
            _VERBOSE,
            _timeout_opt("implies --wait, abort if copy exceeds timeout (in seconds)"),
            flag("pivot", "implies --wait, pivot when mirroring starts"),
            flag("finish", "implies --wait, quit when mirroring starts"),
            _ASYNC,
            string("xml", "filename containing XML description of the copy destination", "file"),
            string("format", "format of the destination file"),
            number("granularity", "power-of-two granularity to use during the copy", text=True),
            number("buf-size", "maximum amount of in-flight data during the copy", text=True),
            _BYTES,
            flag("transient-job", "the copy job is not persisted if VM is turned off"),
            flag(
                "synchronous-writes",
                "the copy job forces guest writes to be synchronously written to the destination",
            ),
            flag(
                "print-xml",
                "print the XML used to start the copy job instead of starting the job",
            ),
            flag("raw", "the destination is raw, as --format raw (virtbus)"),
            string("pool", "copy into a new volume of this pool (virtbus)", "pool"),
            string("name", "name of that new volume (virtbus)"),
        ),
        description="Copy a disk backing image chain to dest.",
    ),
    Command(
        "blockjob",
        "Manage active block operations",
        blockjob,
        (
            _DOMAIN,
            _PATH,
            flag("abort", "abort the active job on the specified disk"),
            flag("async", "implies --abort; request but don't wait for job end"),
            flag("pivot", "implies --abort; conclude and pivot a copy or commit job"),
            flag("info", "get active job information for the specified disk"),
            flag("bytes", "get/set bandwidth in bytes rather than MiB/s"),
            flag("raw", "implies --info; output details rather than human summary"),
            number("bandwidth", "set the bandwidth limit in MiB/s", text=True),
        ),
        description="Query, adjust speed, or cancel active block operations.",
    ),
    Command(
        "blockpull",
        "Populate a disk from its backing image.",
        blockpull,
        (
            _DOMAIN,
            _PATH,
            _BANDWIDTH,
            string("base", "path of backing file in chain for a partial pull"),
            flag("wait", "wait for job to finish"),
            _VERBOSE,
            _timeout_opt("with --wait, abort if pull exceeds timeout (in seconds)"),
            _ASYNC,
            _KEEP_RELATIVE,
            _BYTES,
        ),
        description="Populate a disk from its backing image.",
    ),
)
