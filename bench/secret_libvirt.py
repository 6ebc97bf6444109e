"""libvirt's side of the secret benchmark, run by the system interpreter (python3-libvirt).

It is a script, not part of the bench package: the venv has no libvirt binding,
so ``bench.libvirt_side`` runs it as ``/usr/bin/python3 bench/secret_libvirt.py``
and reads one JSON object from its stdout.  It needs only the standard library
and ``libvirt``.  Every secret it defines carries a usage name starting with the
given prefix, and it undefines exactly those (also leftovers of a run that was
killed), never anyone else's.

Commands (all take ``--uri`` and ``--prefix``):

* ``probe``: ``{"version": "9.0.0"}``; exit 3 when the binding is missing, 4 when
  the daemon does not answer.
* ``run --sequences N --throughput M --concurrency C --value-size B --xml-template T``:
  the figures (seconds) of N sequential define + set-value + get-value sequences
  and the wall time of M more run C at a time, one connection per worker thread.
* ``prepare --xml-template T --value-size B``: one secret with a value, ``{"uuid": ...}``.
* ``cleanup``: undefine this benchmark's secrets, ``{"removed": n}``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:
    import libvirt  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    libvirt = None

_WARMUP = 5
#: libvirtd serves at most five calls of one client at a time (max_client_requests),
#: so concurrency comes from one connection per worker thread, as separate clients.
Timings = dict[str, list[float]]


def _secret_xml(template: str, prefix: str) -> str:
    ident = str(uuid.uuid4())
    return template.format(uuid=ident, usage=prefix + ident)


def _sequence(conn: Any, template: str, prefix: str, value: bytes, timings: Timings | None) -> None:
    """define, setValue, value; appends each call's duration to ``timings``."""
    t0 = time.perf_counter()
    secret = conn.secretDefineXML(_secret_xml(template, prefix), 0)
    t1 = time.perf_counter()
    secret.setValue(value, 0)
    t2 = time.perf_counter()
    if secret.value(0) != value:
        raise RuntimeError("libvirt returned a different secret value")
    t3 = time.perf_counter()
    if timings is not None:
        timings["define"].append(t1 - t0)
        timings["set_value"].append(t2 - t1)
        timings["get_value"].append(t3 - t2)
        timings["sequence"].append(t3 - t0)


def _cleanup(conn: Any, prefix: str) -> int:
    removed = 0
    for secret in conn.listAllSecrets(0):
        if (secret.usageID() or "").startswith(prefix):
            secret.undefine()
            removed += 1
    return removed


def _throughput(args: argparse.Namespace, value: bytes) -> float:
    """Wall time of ``args.throughput`` sequences, ``args.concurrency`` at a time."""
    idle: queue.Queue[Any] = queue.Queue()
    conns = [libvirt.open(args.uri) for _ in range(args.concurrency)]
    for conn in conns:
        idle.put(conn)

    def one(_: int) -> None:
        conn = idle.get()
        try:
            _sequence(conn, args.xml_template, args.prefix, value, None)
        finally:
            idle.put(conn)

    try:
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            # Start every worker thread before the clock does.
            list(pool.map(lambda _: time.sleep(0.01), range(args.concurrency)))
            start = time.perf_counter()
            list(pool.map(one, range(args.throughput)))
            return time.perf_counter() - start
    finally:
        for conn in conns:
            conn.close()


def _run(conn: Any, args: argparse.Namespace) -> dict[str, Any]:
    value = os.urandom(args.value_size)
    timings: Timings = {"define": [], "set_value": [], "get_value": [], "sequence": []}
    _cleanup(conn, args.prefix)
    try:
        for _ in range(_WARMUP):
            _sequence(conn, args.xml_template, args.prefix, value, None)
        for _ in range(args.sequences):
            _sequence(conn, args.xml_template, args.prefix, value, timings)
        elapsed = _throughput(args, value)
    finally:
        _cleanup(conn, args.prefix)
    return {**timings, "throughput_seconds": elapsed, "throughput_sequences": args.throughput}


def _prepare(conn: Any, args: argparse.Namespace) -> dict[str, Any]:
    secret = conn.secretDefineXML(_secret_xml(args.xml_template, args.prefix), 0)
    secret.setValue(os.urandom(args.value_size), 0)
    return {"uuid": secret.UUIDString()}


def _version(conn: Any) -> dict[str, Any]:
    number = conn.getLibVersion()
    return {"version": f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["probe", "run", "prepare", "cleanup"])
    parser.add_argument("--uri", default="qemu:///system")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--xml-template", default="")
    parser.add_argument("--sequences", type=int, default=0)
    parser.add_argument("--throughput", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--value-size", type=int, default=32)
    args = parser.parse_args()
    if libvirt is None:
        print("python3-libvirt is not installed", file=sys.stderr)
        return 3
    try:
        conn = libvirt.open(args.uri)
    except libvirt.libvirtError as err:
        print(err.get_error_message(), file=sys.stderr)
        return 4
    commands: dict[str, Callable[[Any, argparse.Namespace], dict[str, Any]]] = {
        "probe": lambda c, _: _version(c),
        "run": _run,
        "prepare": _prepare,
        "cleanup": lambda c, a: {"removed": _cleanup(c, a.prefix)},
    }
    try:
        print(json.dumps(commands[args.command](conn, args)))
    except libvirt.libvirtError as err:
        print(err.get_error_message(), file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
