"""Per-role NATS credentials for a cluster, from the one permissions generator.

    python -m deploy.credentials --hosts hv1,hv2 --out ./secrets

writes, from ``shared.util.roles`` (the module the embedded server and the
tests use too):

* ``values-credentials.yaml``: the virtbus chart's ``credentials.roles``, one
  user and password per role (each service, ``agent@<host>`` per hypervisor,
  ``admin``, ``readonly``, ``operator``); the chart makes a Secret of each;
* ``nats-virtbus-auth.yaml``: the Secret the NATS chart's values mount, whose
  ``auth.conf`` holds the servers' ``authorization`` block with the same users
  and each role's permissions;
* ``auth.conf``: that block alone (bare hosts: include it in nats-server.conf).

Passwords already in ``--out`` are kept (so running it again after adding a
host changes nothing else); delete a role's line to rotate its password.
Files are written with mode 0600.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import yaml

from shared.util import roles
from shared.util.credentials import write_private

VALUES = "values-credentials.yaml"
AUTH = "auth.conf"
NATS_SECRET = "nats-virtbus-auth.yaml"


def passwords_for(hosts: list[str], known: dict[str, str]) -> dict[str, str]:
    """A password per role of a deployment on ``hosts``: the known ones kept."""
    return {
        role.name: known.get(role.name) or secrets.token_urlsafe(24)
        for role in roles.all_roles(hosts)
    }


def auth_conf(hosts: list[str], passwords: dict[str, str]) -> str:
    """nats-server's ``authorization`` block (JSON is valid nats-server syntax)."""
    block = roles.authorization(roles.all_roles(hosts), passwords)
    return "authorization: " + json.dumps(block, indent=2) + "\n"


def chart_values(hosts: list[str], passwords: dict[str, str]) -> dict[str, Any]:
    return {
        "credentials": {
            "roles": {
                role.name: {"user": role.user, "password": passwords[role.name]}
                for role in roles.all_roles(hosts)
            }
        }
    }


def _known(out: Path) -> dict[str, str]:
    path = out / VALUES
    if not path.exists():
        return {}
    found = yaml.safe_load(path.read_text()) or {}
    return {
        name: str(entry["password"])
        for name, entry in found.get("credentials", {}).get("roles", {}).items()
    }


def write(out: Path, hosts: list[str], namespace: str = "nats") -> dict[str, str]:
    """Write the three files into ``out``; returns the passwords by role."""
    passwords = passwords_for(hosts, _known(out))
    conf = auth_conf(hosts, passwords)
    write_private(out / VALUES, yaml.safe_dump(chart_values(hosts, passwords), sort_keys=True))
    write_private(out / AUTH, conf)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "nats-virtbus-auth", "namespace": namespace},
        "type": "Opaque",
        "stringData": {"auth.conf": conf},
    }
    write_private(out / NATS_SECRET, yaml.safe_dump(secret, sort_keys=False))
    return passwords


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", required=True, help="hypervisor node names, comma-separated")
    parser.add_argument("--out", type=Path, required=True, help="folder of the files")
    parser.add_argument("--nats-namespace", default="nats")
    args = parser.parse_args(argv)
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    passwords = write(args.out, hosts, args.nats_namespace)
    print(f"{len(passwords)} roles written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
