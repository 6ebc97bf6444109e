"""libvirt's side of ``python -m bench network``, timed.

Run by the system interpreter (it has libvirt's binding) inside the run's
own network and mount namespace, where ``bench/network.py`` started a
private ``libvirtd``.  Its argument is a JSON file: ``{"life": xml}`` times
one network's define, start, destroy and undefine (seconds of each, as one
JSON object); ``{"defined": [xml...], "timed": [xml...]}`` defines the first
networks, then times defining (and undefining, untimed) each of the others,
and as many calls of listAllNetworks, lookupByUUIDString and XMLDesc (a
list of seconds per operation).  Standard library and ``libvirt`` only.
"""

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import libvirt  # type: ignore[import-not-found]


def life(conn: Any, xml: str) -> dict[str, float]:
    out: dict[str, float] = {}
    start = time.perf_counter()
    net = conn.networkDefineXML(xml)
    out["define"] = time.perf_counter() - start
    start = time.perf_counter()
    net.create()
    out["start"] = time.perf_counter() - start
    start = time.perf_counter()
    net.destroy()
    out["destroy"] = time.perf_counter() - start
    start = time.perf_counter()
    net.undefine()
    out["undefine"] = time.perf_counter() - start
    return out


def timed(call: Callable[[], object], times: int) -> list[float]:
    seconds: list[float] = []
    for _ in range(times):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def many(conn: Any, defined: list[str], extra: list[str]) -> dict[str, list[float]]:
    nets = [conn.networkDefineXML(xml) for xml in defined]
    middle = nets[len(nets) // 2]
    uuid = middle.UUIDString()
    out: dict[str, list[float]] = {"define": []}
    for xml in extra:
        start = time.perf_counter()
        net = conn.networkDefineXML(xml)
        out["define"].append(time.perf_counter() - start)
        net.undefine()
    reads = len(extra)
    out["list"] = timed(conn.listAllNetworks, reads)
    out["lookup by UUID"] = timed(lambda: conn.networkLookupByUUIDString(uuid), reads)
    out["dumpxml"] = timed(lambda: middle.XMLDesc(0), reads)
    return out


def main() -> int:
    with open(sys.argv[1]) as f:
        job: dict[str, Any] = json.load(f)
    conn = libvirt.open("qemu:///system")
    try:
        life_only = "life" in job
        out = life(conn, job["life"]) if life_only else many(conn, job["defined"], job["timed"])
    finally:
        conn.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
