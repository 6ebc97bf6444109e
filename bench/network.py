"""``python -m bench network``: a NAT network with DHCP defined, started, destroyed,
undefined; then the reads and a define with many networks defined.

Each run has a network namespace of its own, made for it and removed after:
for virtbus, nats-server and the network service run in it (the benchmark's
NATS connection is opened from inside it); for libvirt 9, a private
``libvirtd`` runs in it with its own tmpfs state folders (``/run/libvirt``,
``/var/lib/libvirt``, ``/etc/libvirt``, ...) in a private mount namespace, so
neither touches the host's network or a libvirtd already running.  Both
create the same network: a NAT network with a bridge, an address, a DHCP
range, dnsmasq and firewall rules (libvirt's iptables rules, virtbus's
nftables table).  The figures are each operation's median and 99th
percentile over the runs, as the client sees them (virtbus: a request on
the bus; libvirt: a call through its Python binding to libvirtd).

The second table has ``MANY`` inactive networks defined, in one fresh
namespace per side, and gives the median of ``READS`` calls of each: one
more network defined (and undefined again, untimed), the list, a look-up by
UUID and a dumpxml.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.libvirt_side import SYSTEM_PYTHON
from bench.load import drive
from bench.table import NO_LIBVIRT, Table, median, ms, percentile
from client.network import NetworkClient
from tests.integration.netns import NetLab

OPS = ("define", "start", "destroy", "undefine")
#: Networks defined for the second table, and calls of each operation timed there.
MANY = 200
READS = 30
MANY_OPS = ("define", "list", "lookup by UUID", "dumpxml")
WORKER = Path(__file__).with_name("network_libvirt.py")
_FOLDERS = (
    "/run/libvirt",
    "/var/lib/libvirt",
    "/etc/libvirt",
    "/var/cache/libvirt",
    "/var/log/libvirt",
)
# libvirtd in the run's namespace, on tmpfs state folders, then the worker
_LIBVIRT_RUN = """set -e
for d in {folders}; do mkdir -p "$d"; mount -t tmpfs tmpfs "$d"; done
libvirtd -d -p /run/libvirt/bench.pid
for i in $(seq 200); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.05; done
{python} {worker} "$1"
kill "$(cat /run/libvirt/bench.pid)"
"""


def network_xml(bridge: str) -> str:
    return (
        "<network><name>benchnet</name><forward mode='nat'/>"
        f"<bridge name='{bridge}' stp='on' delay='0'/>"
        "<ip address='192.168.199.1' netmask='255.255.255.0'><dhcp>"
        "<range start='192.168.199.2' end='192.168.199.254'/></dhcp></ip></network>"
    )


def many_xml(number: int, tag: str) -> str:
    """The ``number``-th network of the second table: bridge ``<tag><number>``, a /24 of its own."""
    subnet = f"10.{100 + number // 250}.{number % 250}"
    return (
        f"<network><name>many{number}</name><forward mode='nat'/>"
        f"<bridge name='{tag}{number}' stp='on' delay='0'/>"
        f"<ip address='{subnet}.1' netmask='255.255.255.0'/></network>"
    )


def many_job(tag: str) -> dict[str, list[str]]:
    """The second table's documents: the networks defined first, then those timed."""
    return {
        "defined": [many_xml(n, tag) for n in range(MANY)],
        "timed": [many_xml(n, tag) for n in range(MANY, MANY + READS)],
    }


async def virtbus_many(folder: Path) -> dict[str, list[float]]:
    """The second table's calls, in a fresh namespace: seconds of each."""
    lab = NetLab(folder)
    try:
        await lab.start()
        assert lab.nc is not None
        client = NetworkClient(lab.nc, lab.host)
        job = many_job("m" + lab.tag[-5:])
        uuids = [(await client.define(xml)).uuid for xml in job["defined"]]
        middle = MANY // 2
        out: dict[str, list[float]] = {op: [] for op in MANY_OPS}
        for number, xml in enumerate(job["timed"], start=MANY):
            began = time.perf_counter()
            await client.define(xml)
            out["define"].append(time.perf_counter() - began)
            await client.undefine(f"many{number}")
        reads: dict[str, Callable[[int], Awaitable[object]]] = {
            "list": lambda _: client.list_all(),
            "lookup by UUID": lambda _: client.lookup(uuid=uuids[middle]),
            "dumpxml": lambda _: client.dumpxml(f"many{middle}"),
        }
        for op, call in reads.items():
            out[op], _ = await drive(READS, 1, call)
        return out
    finally:
        await lab.close()


async def virtbus_run(folder: Path) -> dict[str, float]:
    """One run in a fresh namespace: the four operations' seconds."""
    lab = NetLab(folder)
    try:
        await lab.start()
        assert lab.nc is not None
        client = NetworkClient(lab.nc, lab.host)
        xml = network_xml("vbb" + lab.tag)
        out: dict[str, float] = {}
        for op, call in (
            ("define", lambda: client.define(xml)),
            ("start", lambda: client.start("benchnet")),
            ("destroy", lambda: client.destroy("benchnet")),
            ("undefine", lambda: client.undefine("benchnet")),
        ):
            began = time.perf_counter()
            await call()
            out[op] = time.perf_counter() - began
        return out
    finally:
        await lab.close()


def _libvirt_worker(folder: Path, job: Mapping[str, object]) -> Any:
    """Run the libvirt worker on ``job`` in a fresh namespace with a private
    libvirtd; what it printed.  Raises RuntimeError when it fails."""
    lab = NetLab(folder)
    ns = lab.add_ns(lab.ns)
    job_file = folder / "job.json"
    try:
        job_file.write_text(json.dumps(job))
        script = _LIBVIRT_RUN.format(
            folders=" ".join(_FOLDERS), python=SYSTEM_PYTHON, worker=WORKER
        )
        done = subprocess.run(
            ["ip", "netns", "exec", ns, "sh", "-c", script, "sh", str(job_file)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        asyncio.run(lab.close())


def libvirt_run(folder: Path) -> dict[str, float]:
    """One run of libvirt 9 in a fresh namespace; raises RuntimeError when it fails."""
    result: dict[str, float] = _libvirt_worker(folder, {"life": network_xml("lvb0")})
    return result


def libvirt_many(folder: Path) -> dict[str, list[float]]:
    """The second table's calls on libvirt 9; raises RuntimeError when it fails."""
    result: dict[str, list[float]] = _libvirt_worker(folder, many_job("lvm"))
    return result


def libvirt_reason() -> str | None:
    """Why libvirt cannot be measured here, None when it can."""
    if not shutil.which("libvirtd") or not Path(SYSTEM_PYTHON).is_file():
        return NO_LIBVIRT
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import libvirt"], capture_output=True, check=False
    )
    return None if probe.returncode == 0 else "n/a (no libvirt Python binding)"


def _cells(samples: list[dict[str, float]], op: str) -> tuple[str, str]:
    values = [s[op] if op != "total" else sum(s[o] for o in OPS) for s in samples]
    return ms(median(values)), ms(percentile(values, 99))


def run(runs: int) -> list[Table]:
    virtbus: list[dict[str, float]] = []
    libvirt: list[dict[str, float]] = []
    reason = libvirt_reason()
    with tempfile.TemporaryDirectory(prefix="virtbus-bench-net-") as tmp:
        for i in range(runs):
            folder = Path(tmp) / f"v{i}"
            folder.mkdir()
            virtbus.append(asyncio.run(virtbus_run(folder)))
            if reason is None:
                folder = Path(tmp) / f"l{i}"
                folder.mkdir()
                try:
                    libvirt.append(libvirt_run(folder))
                except RuntimeError as err:
                    reason = f"n/a ({err})"
        folder = Path(tmp) / "vmany"
        folder.mkdir()
        ours = asyncio.run(virtbus_many(folder))
        theirs: dict[str, list[float]] | str
        if reason is not None:
            theirs = reason
        else:
            folder = Path(tmp) / "lmany"
            folder.mkdir()
            try:
                theirs = libvirt_many(folder)
            except RuntimeError as err:
                theirs = f"n/a ({err})"
    return [_life_table(runs, virtbus, libvirt, reason), _many_table(ours, theirs)]


def _many_table(ours: dict[str, list[float]], theirs: dict[str, list[float]] | str) -> Table:
    table = Table(
        f"network: {MANY} networks defined, median of {READS} calls each",
        ["operation", "virtbus median", "libvirt median"],
    )
    for op in MANY_OPS:
        table.add(
            op, ms(median(ours[op])), theirs if isinstance(theirs, str) else ms(median(theirs[op]))
        )
    table.notes.append(
        "define: one more network (undefined again, untimed); list: virtbus's net.list "
        "(each network's name, UUID, state, autostart, persistence and bridge) against "
        "libvirt's listAllNetworks (handles: name and UUID); lookup by UUID and dumpxml: "
        "the middle network"
    )
    return table


def _life_table(
    runs: int,
    virtbus: list[dict[str, float]],
    libvirt: list[dict[str, float]],
    reason: str | None,
) -> Table:
    table = Table(
        f"network: NAT network with DHCP, {runs} runs, each in a fresh namespace",
        ["operation", "virtbus median", "virtbus p99", "libvirt median", "libvirt p99"],
    )
    for op in (*OPS, "total"):
        mine = _cells(virtbus, op)
        theirs = _cells(libvirt, op) if libvirt and reason is None else (reason or "", "")
        table.add(op, *mine, *theirs)
    table.notes.append(
        "virtbus: nftables backend, request/reply over NATS; libvirt 9: iptables rules, "
        "its Python binding over libvirtd's socket"
    )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench network")
    parser.add_argument("--runs", type=int, default=20, help="runs of each side")
    parser.add_argument("--quick", action="store_true", help="5 runs")
    args = parser.parse_args(argv)
    for table in run(5 if args.quick else args.runs):
        print(table.render(), flush=True)
    return 0
