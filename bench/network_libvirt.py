"""libvirt's side of ``python -m bench network``: one network's life, timed.

Run by the system interpreter (it has libvirt's binding) inside the run's
own network and mount namespace, where ``bench/network.py`` started a
private ``libvirtd``.  Prints the seconds of define, start, destroy and
undefine as one JSON object.  Standard library and ``libvirt`` only.
"""

import json
import sys
import time

import libvirt  # type: ignore[import-not-found]


def main() -> int:
    xml = sys.argv[1]
    conn = libvirt.open("qemu:///system")
    try:
        out = {}
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
    finally:
        conn.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
