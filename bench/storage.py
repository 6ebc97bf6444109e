"""The storage benchmark: create, list, inspect and delete qcow2 volumes, beside libvirt.

``python -m bench.storage [--quick]`` prints one table.  virtbus's side runs a
real embedded nats-server and the storage service as its own process in a
temporary folder, and works through ``client.storage.StorageClient`` with
several requests in flight: create N qcow2 volumes (1 GiB each), list the
pool's volumes (names, keys and paths; libvirt's listAllVolumes returns
names and keys), list them with their figures re-read (libvirt: each
volume's info after listAllVolumes) and with the figures the service keeps
(virtbus only: libvirt has no such call), fetch each volume's info, delete
them.  libvirt's side does the same work against ``qemu:///system``
(``bench/storage_libvirt.py`` under the system interpreter, one connection
per worker thread).  Beside them, bare
``qemu-img create`` run the same number of times with the same concurrency:
libvirt cannot create a qcow2 volume faster than the tool it runs for each.
virtbus runs it for the first plain qcow2 volume of each pool type only, then writes the same
bytes itself (``services/storage/pools/qcow2.py``), so it is not bound by it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client as NATS

from bench.libvirt_side import PREFIX, SYSTEM_PYTHON, URI, Libvirt
from bench.load import drive
from bench.meter import Meter
from bench.stack import service_stack
from bench.table import Table, median, ms, percentile, rate
from client.storage import StorageClient
from shared.api.storage import BuildMode, VolRef
from shared.util.errors import VirtError

HOST = "bench-host"
POOL = "bench"
VOLUME_XML = (
    "<volume><name>{name}</name><capacity unit='G'>1</capacity>"
    "<target><format type='qcow2'/></target></volume>"
)
WORKER = Path(__file__).with_name("storage_libvirt.py")


def pool_xml(folder: Path) -> str:
    """The ``dir`` pool the benchmark's volumes are made in, under ``folder``."""
    return f"<pool type='dir'><name>{POOL}</name><target><path>{folder}</path></target></pool>"


@dataclass(frozen=True)
class Sizes:
    volumes: int
    concurrency: int
    lists: int


NORMAL = Sizes(volumes=500, concurrency=8, lists=50)
QUICK = Sizes(volumes=40, concurrency=8, lists=10)
#: The phases libvirt has no call for.
VIRTBUS_ONLY = ("list, kept figures",)


@dataclass
class Phase:
    """Seconds per call, and the phase's wall time for ``count`` calls."""

    latencies: list[float]
    wall: float
    count: int

    def cells(self) -> list[str]:
        per_second = self.count / self.wall if self.wall else 0.0
        return [ms(median(self.latencies)), ms(percentile(self.latencies, 99)), rate(per_second)]


Figures = dict[str, Phase]
#: One call of a phase, given its index.
Work = Callable[[int], Awaitable[object]]


def listing(call: Callable[[], Awaitable[Sequence[object]]], count: int) -> Work:
    """A phase's call that lists the pool (``call``) and checks it finds ``count``."""

    async def listed(_: int) -> None:
        if len(await call()) != count:
            raise RuntimeError("virtbus listed a different number of volumes")

    return listed


async def phase(count: int, concurrency: int, work: Work) -> Phase:
    """``work(i)`` for i < count, ``concurrency`` at a time; each call timed."""
    latencies, wall = await drive(count, concurrency, work)
    return Phase(latencies, wall, count)


# -- virtbus's side --------------------------------------------------------------------


def volume_name(number: int) -> str:
    """The ``number``-th volume's name, on every side."""
    return f"vol{number:04d}.qcow2"


async def probe_storage(nc: NATS) -> object:
    """A call the storage service answers once it serves."""
    return await StorageClient(nc, HOST).pool_list()


@asynccontextmanager
async def storage_stack(folder: Path, meter: Meter) -> AsyncIterator[StorageClient]:
    """An embedded nats-server and a storage service process under ``folder``
    (their processes told to ``meter``)."""
    stack = service_stack(folder, "storage", probe_storage, host=HOST, started=meter.started)
    async with stack as (_, nc):
        yield StorageClient(nc, HOST)


async def measure_virtbus(folder: Path, sizes: Sizes) -> Figures:
    meter = Meter()
    async with storage_stack(folder, meter) as storage:
        await storage.pool_create(pool_xml(folder / "pool"), BuildMode.BUILD)
        names = [volume_name(i) for i in range(sizes.volumes)]
        n = sizes.volumes
        work: dict[str, tuple[int, Work]] = {
            "create": (
                sizes.volumes,
                lambda i: storage.vol_create(POOL, VOLUME_XML.format(name=names[i])),
            ),
            "list": (sizes.lists, listing(lambda: storage.vol_list_brief(POOL), n)),
            "list --details": (
                sizes.lists,
                listing(lambda: storage.vol_list(POOL, details=True), n),
            ),
            "list, kept figures": (sizes.lists, listing(lambda: storage.vol_list(POOL), n)),
            "info": (
                sizes.volumes,
                lambda i: storage.vol_info(VolRef(pool=POOL, name=names[i])),
            ),
            "delete": (
                sizes.volumes,
                lambda i: storage.vol_delete(VolRef(pool=POOL, name=names[i])),
            ),
        }
        figures: Figures = {}
        for name, (count, call) in work.items():
            # Each phase starts once the last one's background work (its events
            # being forwarded) is done, as libvirt's phases start with nothing left.
            await meter.settle()
            figures[name] = await phase(count, sizes.concurrency, call)
        return figures


# -- the floor and libvirt -------------------------------------------------------------


async def measure_qemu_img(folder: Path, sizes: Sizes) -> Phase:
    """Bare ``qemu-img create`` with the same options libvirt passes."""
    await asyncio.to_thread(folder.mkdir)

    async def create(i: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            "qemu-img", "create", "-f", "qcow2", "-o", "compat=0.10",
            str(folder / volume_name(i)), "1048576K",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        if await proc.wait() != 0:
            raise RuntimeError("qemu-img create failed")

    return await phase(sizes.volumes, sizes.concurrency, create)


def measure_libvirt(folder: Path, sizes: Sizes) -> Figures:
    argv = [
        SYSTEM_PYTHON, str(WORKER), "run", "--uri", URI, "--prefix", PREFIX,
        "--folder", str(folder), "--volumes", str(sizes.volumes),
        "--concurrency", str(sizes.concurrency), "--lists", str(sizes.lists),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"libvirt worker exited {done.returncode}")
    data = json.loads(done.stdout)
    return {name: Phase(**figures) for name, figures in data.items()}


def run(quick: bool) -> Table:
    sizes = QUICK if quick else NORMAL
    libvirt = Libvirt.find()
    with tempfile.TemporaryDirectory(prefix="virtbus-bench-storage-") as tmp:
        folder = Path(tmp)
        ours = asyncio.run(measure_virtbus(folder / "virtbus", sizes))
        floor = asyncio.run(measure_qemu_img(folder / "floor", sizes))
        theirs: Figures | None = None
        reason = libvirt.reason
        if libvirt.version:
            try:
                theirs = measure_libvirt(folder / "libvirt", sizes)
            except (RuntimeError, subprocess.TimeoutExpired) as err:
                reason = f"n/a ({err})"
    table = Table(
        f"storage: {sizes.volumes} qcow2 volumes of 1 GiB, {sizes.concurrency} requests in flight",
        ["", "virtbus", libvirt.label, "qemu-img create"],
    )
    for name, figures in ours.items():
        mine = figures.cells()
        if name in VIRTBUS_ONLY:
            other = ["no such call"] * 3
        else:
            other = theirs[name].cells() if theirs else [reason or "n/a"] * 3
        bare = floor.cells() if name == "create" else ["", "", ""]
        for i, stat in enumerate(("median", "p99", "throughput")):
            table.add(f"{name}, {stat}", mine[i], other[i], bare[i])
    table.notes.append(
        "latencies are per call under load (all in flight at once); throughput is calls "
        "per second of wall time"
    )
    table.notes.append(
        f"list = one call returning all {sizes.volumes} volumes' names, keys and paths; "
        "libvirt: listAllVolumes (names and keys)"
    )
    table.notes.append(
        "list --details = each volume re-read, with its figures: virtbus in one call; "
        "libvirt: listAllVolumes, then each volume's info"
    )
    table.notes.append(
        "list, kept figures = one call returning every volume's figures as the service "
        "keeps them (vol_list without details)"
    )
    table.notes.append(
        "create: libvirt runs qemu-img for each volume; virtbus for the first, then "
        "writes the same image itself"
    )
    table.notes.append(
        "virtbus: each phase starts once the service and nats-server are idle (the last "
        "phase's events forwarded); a throughput counts the calls answered"
    )
    if libvirt.started:
        table.notes.append("libvirtd was not running and was started for this run")
    if shutil.which("qemu-img") is None:
        table.notes.append("qemu-img is not installed: nothing could be created")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few volumes instead of 500")
    args = parser.parse_args(argv)
    try:
        print(run(args.quick).render(), flush=True)
    except (RuntimeError, VirtError) as err:
        print(f"error: storage benchmark: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
