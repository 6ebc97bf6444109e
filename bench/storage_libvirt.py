"""libvirt's side of the storage benchmark, run by the system interpreter (python3-libvirt).

Like ``bench/secret_libvirt.py`` it is a script, not part of the bench package:
``bench.storage`` runs it as ``/usr/bin/python3 bench/storage_libvirt.py`` and
reads one JSON object from its stdout.  It works in a transient dir pool of its
own (named with the given prefix, in the given folder) and destroys it at the
end, also when a step fails; it never touches another pool.

``run --folder F --prefix P --volumes N --concurrency C --lists L``: seconds per
call and wall time of each phase: create N qcow2 volumes, list the pool's
volumes L times, list them L times with each one's info (part of what virsh's
vol-list --details asks), get each volume's info, delete them; C calls at a time, one
connection per worker thread (libvirtd serves five calls per client at once).
Exit 3 when the binding is missing, 4 when the daemon does not answer.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:
    import libvirt  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    libvirt = None

VOLUME_XML = (
    "<volume><name>{name}</name><capacity unit='G'>1</capacity>"
    "<target><format type='qcow2'/></target></volume>"
)


def _phase(
    conns: list[Any], count: int, work: Callable[[Any, int], None]
) -> tuple[list[float], float]:
    """Run ``work(conn, i)`` for i < count, one connection per thread; (latencies, wall)."""
    idle: queue.Queue[Any] = queue.Queue()
    for conn in conns:
        idle.put(conn)
    latencies: list[float] = []

    def one(i: int) -> None:
        conn = idle.get()
        try:
            start = time.perf_counter()
            work(conn, i)
            latencies.append(time.perf_counter() - start)
        finally:
            idle.put(conn)

    with ThreadPoolExecutor(max_workers=len(conns)) as pool:
        list(pool.map(lambda _: time.sleep(0.01), range(len(conns))))
        start = time.perf_counter()
        list(pool.map(one, range(count)))
        return latencies, time.perf_counter() - start


def _run(conn: Any, args: argparse.Namespace) -> dict[str, Any]:
    name = f"{args.prefix}pool"
    pool_xml = (
        f"<pool type='dir'><name>{name}</name><target><path>{args.folder}</path></target></pool>"
    )
    build = libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD
    conn.storagePoolCreateXML(pool_xml, build)
    conns = [libvirt.open(args.uri) for _ in range(args.concurrency)]
    try:
        pools = {id(c): c.storagePoolLookupByName(name) for c in conns}
        names = [f"vol{i:04d}.qcow2" for i in range(args.volumes)]
        result: dict[str, Any] = {}

        def create(c: Any, i: int) -> None:
            pools[id(c)].createXML(VOLUME_XML.format(name=names[i]), 0)

        def list_all(c: Any, _: int) -> None:
            if len(pools[id(c)].listAllVolumes(0)) != args.volumes:
                raise RuntimeError("libvirt listed a different number of volumes")

        def list_details(c: Any, _: int) -> None:
            volumes = pools[id(c)].listAllVolumes(0)
            if len([v.info() for v in volumes]) != args.volumes:
                raise RuntimeError("libvirt listed a different number of volumes")

        def info(c: Any, i: int) -> None:
            pools[id(c)].storageVolLookupByName(names[i]).info()

        def delete(c: Any, i: int) -> None:
            pools[id(c)].storageVolLookupByName(names[i]).delete(0)

        for phase, work, count in (
            ("create", create, args.volumes),
            ("list", list_all, args.lists),
            ("list --details", list_details, args.lists),
            ("info", info, args.volumes),
            ("delete", delete, args.volumes),
        ):
            latencies, wall = _phase(conns, count, work)
            result[phase] = {"latencies": latencies, "wall": wall, "count": count}
        return result
    finally:
        for c in conns:
            c.close()
        _destroy(conn, name)


def _destroy(conn: Any, name: str) -> None:
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        return
    for vol in pool.listAllVolumes(0):
        vol.delete(0)
    pool.destroy()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--uri", default="qemu:///system")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--volumes", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--lists", type=int, default=50)
    args = parser.parse_args()
    if libvirt is None:
        print("python3-libvirt is not installed", file=sys.stderr)
        return 3
    try:
        conn = libvirt.open(args.uri)
    except libvirt.libvirtError as err:
        print(err.get_error_message(), file=sys.stderr)
        return 4
    try:
        print(json.dumps(_run(conn, args)))
    except libvirt.libvirtError as err:
        print(err.get_error_message(), file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
