"""``python -m bench nwfilter``: 100 clean-traffic bindings created, then all re-instantiated.

Each side runs in a network namespace of its own, made for the run and
removed after, holding a bridge with one port (veth) per binding:

* virtbus: nats-server and the nwfilter service run in the namespace (the
  benchmark's NATS connection is opened from inside it); each binding is one
  ``binding.create`` request; then the benchmark filter is redefined and the
  clock runs until the service reports every binding instantiated again.
  Measured for both backends (nftables, and libvirt's ebtables/iptables
  commands).
* libvirt 9: a private ``libvirtd`` in the namespace with tmpfs state folders
  (so neither the host's firewall nor a running libvirtd is touched); each
  binding is one ``virNWFilterBindingCreateXML`` call (what ``virsh
  nwfilter-binding-create`` does); the redefinition is one
  ``virNWFilterDefineXML``, which re-instantiates every binding before it
  returns.

Both sides get the same filters: virtbus's standard filters (libvirt is given
them first) and a filter ``bench`` referencing ``clean-traffic``, redefined
with one more rule.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.libvirt_side import SYSTEM_PYTHON
from bench.network import libvirt_reason
from bench.table import Table, median, ms, percentile
from client.nwfilter import NWFilterClient
from services.nwfilter.stdfilters import standard_filters
from shared.conf.nwfilter import format_nwfilter
from shared.util import bus
from shared.util.natsserver import EmbeddedNats
from tests.integration.netns import inside
from tests.integration.procs import ROOT, wait_for_service

WORKER = Path(__file__).with_name("nwfilter_libvirt.py")
HOST = "bench"
# libvirt refuses a redefinition that does not repeat the filter's UUID.
UUID = "<uuid>5bd2c1c6-3c5e-4f7a-9a43-0b1e2d3f4a5b</uuid>"
BEFORE = f"<filter name='bench'>{UUID}<filterref filter='clean-traffic'/></filter>"
AFTER = f"""<filter name='bench'>{UUID}<filterref filter='clean-traffic'/>
  <rule action='drop' direction='out' priority='100'><icmp/></rule>
</filter>"""
_FOLDERS = ("/run/libvirt", "/var/lib/libvirt", "/etc/libvirt", "/var/cache/libvirt")
_LIBVIRT_RUN = """set -e
for d in {folders}; do mkdir -p "$d"; mount -t tmpfs tmpfs "$d"; done
libvirtd -d -p /run/libvirt/bench.pid
# the daemon goes with the run, whether the worker succeeds or not
trap 'kill "$(cat /run/libvirt/bench.pid)"' EXIT
for i in $(seq 200); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.05; done
{python} {worker} "$1"
"""


def binding_xml(i: int) -> str:
    return (
        "<filterbinding><owner><name>vm{i}</name>"
        f"<uuid>00000000-0000-4000-8000-{i:012d}</uuid></owner>"
        f"<portdev name='vnb{i}'/><mac address='52:54:00:aa:{i // 256:02x}:{i % 256:02x}'/>"
        f"<filterref filter='bench'><parameter name='IP' value='10.200.{i // 256}.{i % 256 + 1}'/>"
        "</filterref></filterbinding>"
    ).replace("{i}", str(i))


def _namespace(count: int) -> str:
    """A fresh namespace with bridge ``br0`` and ports ``vnb0``..."""
    ns = f"vbnf{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    lines = ["link set lo up", "link add br0 type bridge", "link set br0 up"]
    for i in range(count):
        lines += [f"link add vnb{i} type veth peer name vnp{i}", f"link set vnb{i} master br0 up"]
        lines.append(f"link set vnp{i} up")
    subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines), text=True, check=True)
    return ns


async def virtbus_run(folder: Path, count: int, backend: str) -> dict[str, object]:
    ns = _namespace(count)
    server: EmbeddedNats | None = None
    service: subprocess.Popen[bytes] | None = None
    nc = None
    try:
        with inside(ns):
            server = EmbeddedNats(folder / "nats", hosts=[HOST])
            await server.start()
            nc = await bus.connect(server.role_url("admin"), "virtbus-bench", deadline=10)
        log = open(folder / "nwfilter.log", "ab")  # noqa: SIM115, ASYNC230 - set-up, not timed
        service = subprocess.Popen(  # noqa: ASYNC220 - the service runs beside the loop
            [
                "ip", "netns", "exec", ns, sys.executable, "-m", "services.nwfilter",
                "--nats-url", server.url, "--state-dir", str(folder / "state"),
                "--creds", str(server.credentials.path("nwfilter")),
                "--host", HOST, "--firewall-backend", backend,
                "--reconcile-interval", "3600", "--log-format", "text",
            ],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
        )  # fmt: skip
        log.close()
        await wait_for_service(nc, "nwfilter", service)
        client = NWFilterClient(nc)
        await client.define(BEFORE)
        creates = []
        for i in range(count):
            began = time.perf_counter()
            await client.binding_create(HOST, binding_xml(i))
            creates.append(time.perf_counter() - began)
        before = {b.portdev: b.rules for b in await client.binding_list(HOST)}
        began = time.perf_counter()
        await client.define(AFTER)
        while True:
            now = await client.binding_list(HOST)
            if all(b.rules > before[b.portdev] for b in now):
                break
            await asyncio.sleep(0.02)
        redefine = time.perf_counter() - began
        return {"creates": creates, "redefine": redefine}
    finally:
        if nc is not None:
            await bus.close(nc)
        if service is not None:
            service.terminate()
            service.wait(timeout=30)
        if server is not None:
            await server.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)  # noqa: ASYNC221 - tear-down


def libvirt_run(folder: Path, count: int) -> dict[str, object]:
    ns = _namespace(count)
    try:
        plan = folder / "plan.json"
        plan.write_text(
            json.dumps(
                {
                    "filters": [format_nwfilter(f) for f in standard_filters()],
                    "before": BEFORE,
                    "after": AFTER,
                    "bindings": [binding_xml(i) for i in range(count)],
                }
            )
        )
        script = _LIBVIRT_RUN.format(
            folders=" ".join(_FOLDERS), python=SYSTEM_PYTHON, worker=WORKER
        )
        done = subprocess.run(
            ["ip", "netns", "exec", ns, "unshare", "-m", "sh", "-c", script, "sh", str(plan)],
            capture_output=True, text=True, timeout=1800, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
        result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
        return result
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _column(result: dict[str, object] | str, count: int) -> list[str]:
    if isinstance(result, str):
        return [result, "", "", "", ""]
    creates = result["creates"]
    redefine = result["redefine"]
    assert isinstance(creates, list) and isinstance(redefine, float)
    return [
        ms(median(creates)),
        ms(percentile(creates, 99)),
        ms(sum(creates)),
        ms(redefine / count),
        ms(redefine),
    ]


def run(count: int, backends: Sequence[str]) -> Table:
    columns: dict[str, dict[str, object] | str] = {}
    with tempfile.TemporaryDirectory(prefix="virtbus-bench-nwf-") as tmp:
        for backend in backends:
            folder = Path(tmp) / backend
            folder.mkdir()
            columns[f"virtbus {backend}"] = asyncio.run(virtbus_run(folder, count, backend))
        reason = libvirt_reason()
        folder = Path(tmp) / "libvirt"
        folder.mkdir()
        try:
            columns["libvirt 9"] = reason or libvirt_run(folder, count)
        except RuntimeError as err:
            columns["libvirt 9"] = f"n/a ({err})"
    table = Table(
        f"nwfilter: {count} clean-traffic bindings, each side in a fresh namespace",
        ["", *columns],
    )
    cells = {name: _column(result, count) for name, result in columns.items()}
    for row, label in enumerate(
        (
            "create, per binding (median)",
            "create, per binding (p99)",
            f"create, all {count}",
            "re-instantiate, per binding",
            f"re-instantiate all {count} after a redefinition",
        )
    ):
        table.add(label, *(cells[name][row] for name in columns))
    table.notes.append(
        "virtbus: a binding.create request over NATS each; the redefinition is timed until "
        "every binding reports its new rules"
    )
    table.notes.append(
        "libvirt 9: virNWFilterBindingCreateXML (virsh nwfilter-binding-create) each; "
        "virNWFilterDefineXML re-instantiates every binding before it returns"
    )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench nwfilter")
    parser.add_argument("--bindings", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="10 bindings")
    parser.add_argument(
        "--backend", action="append", choices=["nftables", "ebiptables"], help="virtbus backends"
    )
    args = parser.parse_args(argv)
    count = 10 if args.quick else args.bindings
    print(run(count, args.backend or ["nftables", "ebiptables"]).render(), flush=True)
    return 0
