"""libvirt's side of ``python -m bench nwfilter``: bindings created, then re-instantiated.

Run by the system interpreter (it has libvirt's binding) inside the run's own
network and mount namespace, where ``bench/nwfilter.py`` started a private
``libvirtd``.  Arguments: a JSON file with the filters to define first (the
same standard filters virtbus installs), the benchmark filter before and
after its redefinition, and the bindings.  Prints the seconds of each
binding's creation and of the redefinition (libvirt re-instantiates every
binding inside the define call) as one JSON object.  Standard library and
``libvirt`` only.
"""

import json
import sys
import time

import libvirt  # type: ignore[import-not-found]


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        plan = json.load(f)
    conn = libvirt.open("qemu:///system")
    try:
        for xml in plan["filters"]:
            conn.nwfilterDefineXML(xml)
        conn.nwfilterDefineXML(plan["before"])
        creates = []
        for xml in plan["bindings"]:
            start = time.perf_counter()
            conn.nwfilterBindingCreateXML(xml, 0)
            creates.append(time.perf_counter() - start)
        start = time.perf_counter()
        conn.nwfilterDefineXML(plan["after"])
        redefine = time.perf_counter() - start
    finally:
        conn.close()
    print(json.dumps({"creates": creates, "redefine": redefine}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
