"""The NATS authorization of a cluster deployment, written from ``shared.util.roles``.

``python -m shared.util.nats_auth --hosts node1,node2 --out DIR`` writes:

* ``auth.conf``: the ``authorization`` block for nats-server, the passwords
  read from the environment (``$VIRTBUS_PW_<ROLE>``);
* ``nats-users.yaml``: the Kubernetes Secret ``virtbus-nats-users`` with a
  random password per role and the URL each role connects with;
* ``values-auth.yaml``: NATS Helm chart values putting those passwords in the
  servers' environment and merging the authorization.

Every file is written with mode 0600.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from shared.util import roles
from shared.util.credentials import Credentials, write_private

SECRET_NAME = "virtbus-nats-users"


def secret_key(role: str) -> str:
    """The role's key in the Kubernetes Secret (keys allow ``[-._a-zA-Z0-9]``)."""
    return role.replace("@", ".")


def env_name(role: str) -> str:
    """The environment variable holding the role's password in the NATS pods."""
    return "VIRTBUS_PW_" + re.sub(r"[^A-Za-z0-9]", "_", role).upper()


def auth_conf(every: Sequence[roles.Role]) -> str:
    """The ``authorization`` block with ``$VIRTBUS_PW_<ROLE>`` passwords.

    A marker is put in place of each password and swapped for the unquoted
    variable, since nats-server resolves ``$NAME`` only outside quotes."""
    marker = "@@password:{}@@"
    block = roles.authorization(every, {r.name: marker.format(r.name) for r in every})
    text = json.dumps(block, indent=1)
    for role in every:
        text = text.replace(json.dumps(marker.format(role.name)), "$" + env_name(role.name))
    return f"authorization: {text}\n"


def users_secret(every: Sequence[roles.Role], server: str, namespace: str | None) -> str:
    """The Secret: ``<role>`` = password and ``<role>.url`` = the URL with it."""
    lines = ["apiVersion: v1", "kind: Secret", "metadata:", f"  name: {SECRET_NAME}"]
    if namespace:
        lines.append(f"  namespace: {namespace}")
    lines += ["type: Opaque", "stringData:"]
    for role in every:
        password = secrets.token_urlsafe(24)
        url = Credentials(role.user, password, server).url()
        lines.append(f"  {json.dumps(secret_key(role.name))}: {json.dumps(password)}")
        lines.append(f"  {json.dumps(secret_key(role.name) + '.url')}: {json.dumps(url)}")
    return "\n".join(lines) + "\n"


def helm_values(every: Sequence[roles.Role], conf: str) -> str:
    """NATS Helm chart values: the passwords as environment of the nats container,
    the authorization included from a config map key (``<< >>`` keeps it raw)."""
    env = [
        {
            "name": env_name(r.name),
            "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": secret_key(r.name)}},
        }
        for r in every
    ]
    values = {
        "container": {"env": env},
        "config": {
            "jetstream": {"enabled": True},
            "merge": {"authorization": "<< " + conf.split(":", 1)[1].strip() + " >>"},
        },
    }
    # JSON is YAML.
    return json.dumps(values, indent=2) + "\n"


def write(out: Path, hosts: Sequence[str], server: str, namespace: str | None = None) -> list[Path]:
    """Write the three files into ``out``; returns their paths."""
    every = roles.all_roles(hosts)
    conf = auth_conf(every)
    files = {
        "auth.conf": conf,
        "nats-users.yaml": users_secret(every, server, namespace),
        "values-auth.yaml": helm_values(every, conf),
    }
    written = []
    for name, text in files.items():
        write_private(out / name, text)
        written.append(out / name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.util.nats_auth", description=__doc__)
    parser.add_argument("--hosts", required=True, help="comma-separated hosts that run agents")
    parser.add_argument("--out", required=True, help="folder to write the files into")
    parser.add_argument("--server", default="nats://nats:4222", help="the URL processes use")
    parser.add_argument("--namespace", help="namespace of the Secret")
    args = parser.parse_args(argv)
    hosts = [h for h in args.hosts.split(",") if h]
    for path in write(Path(args.out), hosts, args.server, args.namespace):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
