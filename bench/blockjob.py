"""The block-job benchmark: a block copy of a 1 GiB disk through virtbus against
``qemu-img convert`` of the same image, and the latency of QEMU's BLOCK_JOB_READY
to a subscriber of the bus.

``python -m bench.blockjob [--quick] [--runs N]`` prints one table.  It runs a real
embedded nats-server, the storage service and the QEMU agent as their own
processes, and a ``qemu-system-x86_64 -S`` (TCG) whose disk is a qcow2 on a raw
base holding real data (the base written whole with qemu-io, 64 MiB per
pattern, the qcow2 with a few regions of its own).  Each run:

* the floor: ``qemu-img convert -t unsafe -O qcow2`` of the disk's image chain
  to a new file; no copy can move the same bytes faster than the tool that only
  copies.  ``unsafe`` because a mirror does not flush its target either before
  READY; the default cache mode (which flushes at the end, so its time depends
  on the disk's write-back) is shown beside it;
* virtbus: ``blockjob.copy`` to a new qcow2 through the client API (storage
  service -> command event -> agent -> QMP blockdev-mirror), timed to the
  READY status at a subscriber, then pivoted and timed to the pivot's end as
  the storage service reports it in its inventory;
* the latency from QEMU's BLOCK_JOB_READY (the QMP event's own timestamp, read
  on a second monitor) to the arrival of the agent's ``block-job-2`` event at
  a subscriber of the event stream.

The next run copies the disk the previous one pivoted to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from agents.qemu.qmp_client import QmpClient
from bench.table import Table, median, ms
from client.storage_jobs import BlockJobClient, JobWatch
from shared.api import storage_jobs as api
from shared.api.blockjob import JobStatus
from shared.util import bus
from shared.util.errors import ErrorCode, VirtError
from shared.util.natsserver import EmbeddedNats
from shared.util.roles import agent_role

HOST = "bench-host"
DOMAIN = "bench1"
TARGET = "vda"
ALIAS = "virtio-disk0"
MIB = 1 << 20
_ROOT = Path(__file__).resolve().parent.parent
_READY_TIMEOUT = 60.0
_JOB_TIMEOUT = 900.0
#: What the storage service answers while it or the inventory is not there yet.
_NOT_YET = (ErrorCode.NO_SERVER, ErrorCode.NO_DOMAIN, ErrorCode.OPERATION_TIMEOUT)

DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='KiB'>131072</memory>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{top}'/>
      <target dev='{target}' bus='virtio'/>
      <alias name='{alias}'/>
    </disk>
  </devices>
</domain>
"""


@dataclass
class Run:
    """One run's seconds: the floor, virtbus to READY and to the pivot's end, and
    BLOCK_JOB_READY to the subscriber."""

    floor: float
    flushed: float
    dispatch: float
    ready: float
    conclude: float
    pivoted: float
    latency: float


@dataclass
class Figures:
    size: int
    runs: list[Run] = field(default_factory=list)


def _tool(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def make_chain(images: Path, size: int) -> Path:
    """A raw base of ``size`` bytes written whole, under a qcow2 with regions of its own."""
    images.mkdir(parents=True, exist_ok=True)
    base, top = images / "base.raw", images / "top.qcow2"
    _tool("qemu-img", "create", "-q", "-f", "raw", str(base), str(size))
    step = 64 * MIB
    writes = [f"write -P {0x10 + i % 0xE0:#x} {offset} {min(step, size - offset)}"
              for i, offset in enumerate(range(0, size, step))]  # fmt: skip
    _tool("qemu-io", "-f", "raw", *[a for w in writes for a in ("-c", w)], str(base))
    _tool("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(top))
    regions = [f"write -P 0xab {offset} {MIB}" for offset in range(0, size, size // 8)]
    _tool("qemu-io", "-f", "qcow2", *[a for w in regions for a in ("-c", w)], str(top))
    return top


@contextlib.asynccontextmanager
async def _process(module: str, log: Path, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    handle = await asyncio.to_thread(log.open, "wb")
    with handle:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args, "--log-level", "WARNING",
            cwd=_ROOT, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@contextlib.asynccontextmanager
async def _qemu(folder: Path, top: Path, domains: Path) -> AsyncIterator[QmpClient]:
    """QEMU with the disk; yields a client on its second monitor (the agent has the first)."""
    await asyncio.to_thread(domains.mkdir, parents=True, exist_ok=True)
    agent_qmp, own_qmp = domains / f"{DOMAIN}.qmp", folder / "bench.qmp"
    base = top.with_name("base.raw")
    argv = [
        "qemu-system-x86_64", "-S", "-machine", "q35,accel=tcg", "-nodefaults",
        "-display", "none", "-m", "128",
        "-qmp", f"unix:{agent_qmp},server=on,wait=off",
        "-qmp", f"unix:{own_qmp},server=on,wait=off",
        "-blockdev", f"driver=file,filename={base},node-name=base-file",
        "-blockdev", "driver=raw,file=base-file,node-name=base-fmt",
        "-blockdev", f"driver=file,filename={top},node-name=top-file",
        "-blockdev", "driver=qcow2,file=top-file,backing=base-fmt,node-name=top-fmt",
        "-device", f"virtio-blk-pci,drive=top-fmt,id={ALIAS}",
    ]  # fmt: skip
    log = await asyncio.to_thread((folder / "qemu.log").open, "wb")
    with log:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=log, stderr=subprocess.STDOUT)
    qmp = QmpClient("bench")
    try:
        for _ in range(400):
            if own_qmp.exists() and agent_qmp.exists():
                break
            if proc.returncode is not None:
                raise RuntimeError("qemu-system-x86_64 exited; see qemu.log")
            await asyncio.sleep(0.05)
        await qmp.connect(str(own_qmp))
        xml = DOMAIN_XML.format(name=DOMAIN, top=top, target=TARGET, alias=ALIAS)
        await asyncio.to_thread((domains / f"{DOMAIN}.xml").write_text, xml)
        yield qmp
    finally:
        await qmp.disconnect()
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def _wait_inventory(jobs: BlockJobClient) -> str:
    """Until the storage service holds the domain; the path of its disk."""
    end = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < end:
        try:
            inventory = await jobs.domain_disks(DOMAIN)
            if inventory.live:
                return _source(await jobs.disk_dumpxml(DOMAIN, TARGET))
        except VirtError as err:
            if err.code not in (
                ErrorCode.NO_SERVER,
                ErrorCode.NO_DOMAIN,
                ErrorCode.OPERATION_TIMEOUT,
            ):
                raise
        await asyncio.sleep(0.2)
    raise RuntimeError(f"no inventory of {DOMAIN} within {_READY_TIMEOUT:.0f}s")


def _source(disk: api.DiskXmlReply) -> str:
    start = disk.xml.index("<source file='") + len("<source file='")
    return disk.xml[start : disk.xml.index("'", start)]


async def _floor(source: str, dest: Path, cache: str) -> float:
    """``qemu-img convert`` of the disk's chain (read while QEMU holds it: -U)."""
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", "convert", "-U", "-t", cache, "-O", "qcow2", source, str(dest),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"qemu-img convert failed: {err.decode().strip()}")
    return time.perf_counter() - start


async def _qemu_times(qmp: QmpClient, job_id: str, *wanted: str) -> dict[str, float]:
    """QEMU's timestamps of the agent's job (``vbj-<id>``): BLOCK_JOB_READY, and each
    JOB_STATUS_CHANGE by its status (``created``, ``concluded``...)."""
    times: dict[str, float] = {}
    async with asyncio.timeout(10):
        while not all(name in times for name in wanted):
            event = await qmp.events.get()
            if event is None:
                raise RuntimeError("QMP monitor closed")
            if event.name == "BLOCK_JOB_READY" and event.data.get("device") == f"vbj-{job_id}":
                times.setdefault("ready", event.timestamp)
            elif event.name == "JOB_STATUS_CHANGE" and event.data.get("id") == f"vbj-{job_id}":
                times.setdefault(str(event.data.get("status")), event.timestamp)
    return times


async def _one_run(jobs: BlockJobClient, qmp: QmpClient, folder: Path, index: int) -> Run:
    source = _source(await jobs.disk_dumpxml(DOMAIN, TARGET))
    floor_file = folder / f"floor{index}.qcow2"
    # Each copy starts with no dirty pages of the one before being written back,
    # after one unmeasured copy (the first after new files are written runs
    # several times slower, whichever tool makes it).
    await _floor(source, floor_file, "unsafe")
    await asyncio.to_thread(floor_file.unlink)
    await asyncio.to_thread(os.sync)
    floor = await _floor(source, floor_file, "unsafe")
    await asyncio.to_thread(floor_file.unlink)
    await asyncio.to_thread(os.sync)
    flushed = await _floor(source, floor_file, "writeback")
    await asyncio.to_thread(floor_file.unlink)
    await asyncio.to_thread(os.sync)
    while not qmp.events.empty():
        qmp.events.get_nowait()
    dest = folder / "images" / f"copy{index}.qcow2"
    request = api.BlockCopyRequest(domain=DOMAIN, disk=TARGET, dest=str(dest), format="qcow2")
    async with JobWatch(jobs, DOMAIN) as watch:
        start, wall = time.perf_counter(), time.time()
        job = await jobs.copy(request)
        arrived = 0.0
        async with asyncio.timeout(_JOB_TIMEOUT):
            while (status := watch.status(job.job_id)) is None:
                await watch.changed(1.0)
            arrived = time.time()
        ready = time.perf_counter() - start
        if status.status is not JobStatus.READY:
            raise RuntimeError(f"the copy ended {status.phase.value}: {status.error}")
        pivot_wall = time.time()
        await jobs.abort(DOMAIN, TARGET, pivot=True)
        async with asyncio.timeout(_JOB_TIMEOUT):
            while (end := watch.status(job.job_id, after=JobStatus.READY)) is None:
                await watch.changed(1.0)
        if end.status is not JobStatus.COMPLETED:
            raise RuntimeError(f"the pivot ended {end.phase.value}: {end.error}")
        await watch.settled(job.job_id, TARGET)
        pivoted = time.perf_counter() - start
    qemu = await _qemu_times(qmp, job.job_id, "created", "ready", "concluded")
    if index > 0 or not source.endswith("top.qcow2"):
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, source)
    return Run(
        floor=floor,
        flushed=flushed,
        dispatch=qemu["created"] - wall,
        ready=ready,
        conclude=qemu["concluded"] - pivot_wall,
        pivoted=pivoted,
        latency=arrived - qemu["ready"],
    )


async def measure(folder: Path, size: int, runs: int) -> Figures:
    top = await asyncio.to_thread(make_chain, folder / "images", size)
    server = EmbeddedNats(folder / "nats", hosts=[HOST])
    await server.start()
    figures = Figures(size)
    creds = server.credentials
    try:
        common = ["--nats-url", server.url, "--http-port", "0", "--host", HOST]
        storage_log, agent_log = folder / "storage.log", folder / "agent.log"
        domains = folder / "domains"
        async with (
            _process(
                "services.storage",
                storage_log,
                *common,
                *["--state-dir", str(folder / "s"), "--creds", str(creds.path("storage"))],
            ),
            _process(
                "agents.qemu",
                agent_log,
                *common,
                "--creds",
                str(creds.path(agent_role(HOST))),
                "--state-dir",
                str(folder / "a"),
                "--domains-dir",
                str(domains),
                "--poll-interval",
                "0.1",
            ),  # fmt: skip
            _qemu(folder, top, domains) as qmp,
        ):
            nc = await bus.connect(server.role_url("admin"), "virtbus-bench")
            try:
                jobs = BlockJobClient(nc, HOST)
                await _wait_inventory(jobs)
                for index in range(runs):
                    figures.runs.append(await _one_run(jobs, qmp, folder, index))
            finally:
                await bus.close(nc)
    finally:
        await server.stop()
    return figures


def _seconds(value: float) -> str:
    return f"{value:.2f} s"


def _rate(size: int, seconds: float) -> str:
    return f"{size / MIB / seconds:,.0f} MiB/s" if seconds else "-"


def render(figures: Figures) -> Table:
    size, runs = figures.size, figures.runs
    table = Table(
        f"block copy of a {size // MIB} MiB disk with data, {len(runs)} run(s), medians",
        ["", "time", "rate", "x floor"],
    )
    floor = median([r.floor for r in runs])
    for label, values in (
        ("qemu-img convert -t unsafe (floor)", [r.floor for r in runs]),
        ("qemu-img convert, flushed at the end", [r.flushed for r in runs]),
        ("virtbus blockcopy: request -> READY", [r.ready for r in runs]),
        ("virtbus blockcopy: request -> pivoted", [r.pivoted for r in runs]),
    ):
        value = median(values)
        table.add(label, _seconds(value), _rate(size, value), f"{value / floor:.2f}")
    for label, values in (
        ("copy request -> QEMU job created", [r.dispatch for r in runs]),
        ("pivot request -> QEMU job concluded", [r.conclude for r in runs]),
        ("BLOCK_JOB_READY -> subscriber", [r.latency for r in runs]),
    ):
        table.add(label, ms(median(values)), f"worst {ms(max(values))}", "")
    table.notes.append(
        "READY: the agent's block-job-2 event at a subscriber of the stream; pivoted: the "
        "pivot's end held by the storage service's inventory"
    )
    table.notes.append(
        "latency: QEMU's own event timestamp to the subscriber's clock (same host); each "
        "run copies the disk the previous run pivoted to; sync before each copy, one "
        "unmeasured convert first"
    )
    return table


def run(quick: bool, runs: int | None = None) -> Table:
    size = 256 * MIB if quick else 1024 * MIB
    count = runs or (1 if quick else 3)
    with tempfile.TemporaryDirectory(prefix="virtbus-bench-blockjob-") as tmp:
        return render(asyncio.run(measure(Path(tmp), size, count)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.blockjob", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="256 MiB once instead of 1 GiB")
    parser.add_argument("--runs", type=int, help="how many copies (default 3, quick 1)")
    args = parser.parse_args(argv)
    try:
        print(run(args.quick, args.runs).render(), flush=True)
    except (RuntimeError, VirtError, subprocess.CalledProcessError) as err:
        print(f"error: block-job benchmark: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
