"""The lease helper dnsmasq runs on every lease change (its ``--dhcp-script``).

Run as ``leasehelper.py STATUS_FILE ACTION [MAC IP [HOSTNAME]]`` by a small
wrapper the service writes per network.  ``add``/``old`` record a lease,
``del`` drops it, ``init`` prints the leases still valid in dnsmasq's lease
file format (dnsmasq runs with ``--leasefile-ro`` and asks the helper at
start, so a restarted dnsmasq keeps its leases).  The status file is a JSON
list with the keys libvirt's leases helper uses; the service watches it and
turns each change into a lease event.  Standard library only: dnsmasq waits
for the helper, so it must start fast.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

Lease = dict[str, Any]


def read_leases(path: Path) -> list[Lease]:
    """The leases of a status file; an empty list when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text() or "[]")
    except (FileNotFoundError, ValueError):
        return []
    return [lease for lease in data if isinstance(lease, dict) and "ip-address" in lease]


def lock_path(path: Path) -> Path:
    """The file whose lock serialises the helpers writing status file ``path``."""
    return path.with_name(path.name + ".lock")


def _write(path: Path, leases: list[Lease]) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(json.dumps(leases, indent=2) + "\n")
    os.replace(tmp, path)


def _valid(lease: Lease, now: int) -> bool:
    expiry = int(lease.get("expiry-time", 0))
    return expiry == 0 or expiry > now


def _lease_from_env(mac: str, ip: str, hostname: str | None) -> Lease:
    env = os.environ
    expires = env.get("DNSMASQ_LEASE_EXPIRES")
    if expires is None:
        length = int(env.get("DNSMASQ_LEASE_LENGTH", "0") or 0)
        expiry = int(time.time()) + length if length else 0
    else:
        expiry = int(expires)
    lease: Lease = {"ip-address": ip, "expiry-time": expiry}
    if ":" in ip:
        # DHCPv6: the second argument is the client's DUID
        lease["client-id"] = mac
        lease["iaid"] = env.get("DNSMASQ_IAID")
        lease["server-duid"] = env.get("DNSMASQ_SERVER_DUID")
        mac = env.get("DNSMASQ_MAC", "")
    elif env.get("DNSMASQ_CLIENT_ID"):
        lease["client-id"] = env["DNSMASQ_CLIENT_ID"]
    if mac:
        lease["mac-address"] = mac
    name = hostname or env.get("DNSMASQ_SUPPLIED_HOSTNAME")
    if name:
        lease["hostname"] = name
    return lease


def _init_text(leases: list[Lease]) -> str:
    """dnsmasq's lease file: IPv4 lines, then ``duid SERVER`` and the IPv6 lines."""
    v4 = [x for x in leases if ":" not in x["ip-address"]]
    v6 = [x for x in leases if ":" in x["ip-address"]]
    lines = [
        f"{x['expiry-time']} {x.get('mac-address', '*')} {x['ip-address']} "
        f"{x.get('hostname') or '*'} {x.get('client-id') or '*'}"
        for x in v4
    ]
    if v6:
        duid = next((x["server-duid"] for x in v6 if x.get("server-duid")), None)
        if duid:
            lines.append(f"duid {duid}")
        lines += [
            f"{x['expiry-time']} {x.get('iaid') or 0} {x['ip-address']} "
            f"{x.get('hostname') or '*'} {x.get('client-id') or '*'}"
            for x in v6
        ]
    return "".join(line + "\n" for line in lines)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: leasehelper.py STATUS_FILE ACTION [MAC IP [HOSTNAME]]", file=sys.stderr)
        return 2
    path, action = Path(argv[0]), argv[1]
    now = int(time.time())
    with open(lock_path(path), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        leases = [x for x in read_leases(path) if _valid(x, now)]
        if action == "init":
            sys.stdout.write(_init_text(leases))
            return 0
        if action not in ("add", "old", "del") or len(argv) < 4:
            return 0  # dnsmasq's other actions (tftp, arp...) carry no lease
        mac, ip = argv[2], argv[3]
        hostname = argv[4] if len(argv) > 4 else None
        leases = [x for x in leases if x["ip-address"] != ip]
        if action != "del":
            leases.append(_lease_from_env(mac, ip, hostname))
        _write(path, leases)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
