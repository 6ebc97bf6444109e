"""The soak loop: workers issue a mix of requests to every service and the agent while
a chaos task kills a random process with SIGKILL (``virtbus up`` restarts it) and,
for a window in the middle of the run, the pool's filesystem is full.  At the end,
with every process answering again, the outcome is checked against what was
acknowledged: nothing acknowledged is lost, no event is announced twice, no file
is left in the pool that is not a volume (nor a volume without its file)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from client.connection import Client
from client.events import subscribe
from client.network import NetworkClient
from client.storage import StorageClient
from client.storage_jobs import BlockJobClient
from shared.api.storage import VolRef
from shared.util import bus
from shared.util.errors import VirtError
from shared.util.natsserver import free_port
from tests.soak.stack import TARGETS, SoakStack, soak_stack, wait_all_answer

#: Give up on one request after this long (its outcome is then unknown).
_OP_TIMEOUT = 40.0
POOL = "soak"
FILLER = ".soak-filler"


@dataclass
class Op:
    kind: str
    name: str
    action: str
    ok: bool
    seconds: float
    #: "ok", "refused" (a VirtError), "no space", "no server" (its service was
    #: restarting) or "unknown" (timed out or the connection dropped: it may or
    #: may not have happened)
    outcome: str


@dataclass
class Report:
    seconds: float
    ops: list[Op] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    full_disk: bool = False
    full_disk_refusals: int = 0
    #: refusals by error code, objects checked at the end, lifecycle events read
    refusals: Counter[str] = field(default_factory=Counter)
    checked: int = 0
    events: int = 0

    @property
    def acknowledged(self) -> int:
        return sum(op.ok for op in self.ops)

    def p99(self) -> float:
        times = sorted(op.seconds for op in self.ops if op.ok)
        if not times:
            return 0.0
        return times[min(len(times) - 1, int(0.99 * len(times)))]

    def summary(self) -> str:
        outcomes = Counter(op.outcome for op in self.ops)
        kinds = Counter(op.kind for op in self.ops)
        kills = ", ".join(f"{k} {n}" for k, n in sorted(self.kills.items())) or "none"
        lines = [
            f"soak: {self.seconds:.0f} s",
            f"operations {len(self.ops)}, acknowledged {self.acknowledged}, "
            f"lost {len(self.lost)}, duplicated events {len(self.duplicated)}, "
            f"orphans {len(self.orphans)}, restarts {sum(self.kills.values())}, "
            f"p99 latency {self.p99() * 1000:.0f} ms",
            "  by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
            "  outcomes: " + ", ".join(f"{k} {n}" for k, n in sorted(outcomes.items())),
            f"  checked at the end: {self.checked} objects, {self.events} lifecycle events",
            f"  kill -9: {kills}",
            "  full disk: "
            + (
                f"yes, {self.full_disk_refusals} requests refused for lack of space"
                if self.full_disk
                else "not available (needs root to mount a small tmpfs)"
            ),
        ]
        for title, items in (
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("orphans", self.orphans),
        ):
            lines += [f"  {title}: {item}" for item in items[:20]]
        return "\n".join(lines)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.orphans)


class Workload:
    """The requests of the soak, one object name per life (define, then maybe undefine)."""

    def __init__(self, client: Client, host: str, pool_dir: Path, domains: Path) -> None:
        self.client = client
        self.storage = StorageClient(client.nc, host)
        self.network = NetworkClient(client.nc, host)
        self.jobs = BlockJobClient(client.nc, host)
        self.pool_dir = pool_dir
        self.domains = domains
        self.report: Report | None = None
        self._serial = 0
        self.secret_uuids: dict[str, str] = {}

    def _next(self, prefix: str) -> str:
        self._serial += 1
        return f"soak-{prefix}-{self._serial}"

    async def _do(self, kind: str, name: str, action: str, call: Awaitable[object]) -> bool:
        assert self.report is not None
        started = time.monotonic()
        outcome = "ok"
        try:
            async with asyncio.timeout(_OP_TIMEOUT):
                await call
        except VirtError as err:
            text = str(err).lower()
            if "no space" in text or "enospc" in text:
                outcome = "no space"
                self.report.full_disk_refusals += 1
            elif err.code.name == "NO_SERVER":
                outcome = "no server"  # restarting: the request reached no one
            elif err.code.name in ("OPERATION_TIMEOUT", "RPC", "INTERNAL_ERROR"):
                outcome = "unknown"
            else:
                outcome = "refused"
                self.report.refusals[f"{err.code.name}: {str(err)[:80]}"] += 1
        except (TimeoutError, OSError, ConnectionError):
            outcome = "unknown"
        except Exception:
            outcome = "unknown"
        elapsed = time.monotonic() - started
        self.report.ops.append(Op(kind, name, action, outcome == "ok", elapsed, outcome))
        return outcome == "ok"

    async def _life(
        self,
        rng: random.Random,
        kind: str,
        name: str,
        define: Awaitable[object],
        undefine: Callable[[], Awaitable[object]],
    ) -> None:
        """Define ``name``; once acknowledged, undefine it again half of the time."""
        if await self._do(kind, name, "define", define) and rng.random() < 0.5:
            await self._do(kind, name, "undefine", undefine())

    async def secret(self, rng: random.Random) -> None:
        name = self._next("secret")
        xml = (
            "<secret ephemeral='no' private='no'><usage type='ceph'>"
            f"<name>{name}</name></usage></secret>"
        )
        holder: dict[str, str] = {}

        async def define() -> None:
            holder["uuid"] = await self.client.secret.define(xml)
            self.secret_uuids[name] = holder["uuid"]

        if not await self._do("secret", name, "define", define()):
            return
        uuid = holder["uuid"]
        await self._do("secret", name, "set-value", self.client.secret.set_value(uuid, b"v"))
        if rng.random() < 0.5:
            await self._do("secret", name, "undefine", self.client.secret.undefine(uuid))

    async def volume(self, rng: random.Random) -> None:
        name = self._next("vol") + ".img"
        xml = (
            f"<volume><name>{name}</name><capacity unit='KiB'>256</capacity>"
            "<allocation unit='KiB'>256</allocation><target><format type='raw'/></target>"
            "</volume>"
        )
        ref = VolRef(pool=POOL, name=name)
        await self._life(
            rng, "volume", name, self.storage.vol_create(POOL, xml),
            lambda: self.storage.vol_delete(ref),
        )  # fmt: skip

    async def network_def(self, rng: random.Random) -> None:
        name = self._next("net")
        xml = f"<network><name>{name}</name></network>"
        await self._life(
            rng, "network", name, self.network.define(xml), lambda: self.network.undefine(name)
        )

    async def nwfilter(self, rng: random.Random) -> None:
        name = self._next("filter")
        xml = (
            f"<filter name='{name}' chain='root'><rule action='accept' direction='in'>"
            "<tcp dstportstart='22'/></rule></filter>"
        )
        await self._life(
            rng, "nwfilter", name, self.client.nwfilter.define(xml),
            lambda: self.client.nwfilter.undefine(name=name),
        )  # fmt: skip

    async def agent(self, rng: random.Random) -> None:
        await self._do("agent", "domains", "list", self.jobs.domains())

    def choices(self) -> list[Callable[[random.Random], Awaitable[None]]]:
        return [self.secret, self.volume, self.network_def, self.nwfilter, self.agent]


def _fill(folder: Path) -> None:
    """Fill the filesystem of ``folder`` up to its last byte."""
    fd = os.open(folder / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)


def _mount_small(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


async def _chaos(
    stack: SoakStack, rng: random.Random, report: Report, stop: asyncio.Event, every: float
) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.5 * every, 1.5 * every))
        if stop.is_set():
            return
        target = rng.choice(TARGETS)
        if stack.kill9(target):
            report.kills[target] += 1


async def _full_disk(
    pool_dir: Path, report: Report, start: float, length: float, stop: asyncio.Event
) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), start)
    if stop.is_set():
        return
    await asyncio.to_thread(_fill, pool_dir)
    report.full_disk = True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), length)
    (pool_dir / FILLER).unlink(missing_ok=True)


async def _worker(work: Workload, rng: random.Random, deadline: float) -> None:
    choices = work.choices()
    while time.monotonic() < deadline:
        await rng.choice(choices)(rng)


def _expected(report: Report, kind: str) -> dict[str, bool]:
    """For each name whose last request was acknowledged: whether it must exist."""
    last: dict[str, Op] = {}
    for op in report.ops:
        if op.kind == kind and op.action in ("define", "undefine"):
            last[op.name] = op
    return {name: op.action == "define" for name, op in last.items() if op.ok}


async def _check(work: Workload, report: Report) -> None:
    secrets = {s.usage_id for s in await work.client.secret.list()}
    volumes = {v.name for v in await work.storage.vol_list(POOL)}
    networks = {n.name for n in await work.network.list_all()}
    filters = {f.name for f in await work.client.nwfilter.list()}
    for kind, present in (
        ("secret", secrets),
        ("volume", volumes),
        ("network", networks),
        ("nwfilter", filters),
    ):
        for name, must_exist in _expected(report, kind).items():
            report.checked += 1
            if must_exist != (name in present):
                state = "missing" if must_exist else "still there"
                report.lost.append(f"{kind} {name}: acknowledged, {state}")
    files = {p.name for p in work.pool_dir.iterdir() if p.name != FILLER}
    report.orphans += [f"file {f} is no volume" for f in sorted(files - volumes)]
    report.orphans += [f"volume {v} has no file" for v in sorted(volumes - files)]
    seen: Counter[tuple[str, str, str, str | None]] = Counter()
    async with subscribe(work.client.nc, replay=True) as events:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                async for event in events:
                    d = event.data
                    if d.event == "lifecycle":
                        report.events += 1
                        seen[(d.object, d.name, d.event, d.detail)] += 1
    report.duplicated += [
        f"{obj} {name}: {detail} x{n}" for (obj, name, _, detail), n in seen.items() if n > 1
    ]


async def soak(
    seconds: float, folder: Path, *, seed: int, workers: int = 4, kill_every: float = 6.0
) -> Report:
    """Run the soak for ``seconds`` in ``folder`` (state, pool and domains)."""
    rng = random.Random(seed)
    report = Report(seconds)
    pool_dir = folder / "pool"
    small = _mount_small(pool_dir, "8m")
    domains = folder / "domains"
    domains.mkdir(parents=True, exist_ok=True)
    try:
        async with soak_stack(free_port(), folder / "state", domains) as stack:
            nc = await bus.connect(stack.url, "virtbus-soak", deadline=30)
            async with Client(nc, owned=True) as client:
                host = socket.gethostname()
                work = Workload(client, host, pool_dir, domains)
                work.report = report
                await work.storage.pool_define(
                    f"<pool type='dir'><name>{POOL}</name>"
                    f"<target><path>{pool_dir}</path></target></pool>"
                )
                await work.storage.pool_start(POOL)
                stop = asyncio.Event()
                deadline = time.monotonic() + seconds
                async with asyncio.TaskGroup() as tg:
                    chaos = tg.create_task(_chaos(stack, rng, report, stop, kill_every))
                    disk = None
                    if small:
                        disk = tg.create_task(
                            _full_disk(pool_dir, report, 0.4 * seconds, 0.2 * seconds, stop)
                        )
                    await asyncio.gather(
                        *(
                            _worker(work, random.Random(rng.random()), deadline)
                            for _ in range(workers)
                        )
                    )
                    stop.set()
                    await chaos
                    if disk is not None:
                        await disk
                (pool_dir / FILLER).unlink(missing_ok=True)
                await wait_all_answer(client.nc, stack.log)
                await work.storage.pool_refresh(POOL)
                await _check(work, report)
    finally:
        if small:
            _unmount(pool_dir)
    return report
