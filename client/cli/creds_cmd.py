"""``virtbus creds ROLE``: a role's connection details for an external tool.

Prints the NATS URL carrying the role's user and password, as the local
stack made them (readable by root, and for the client roles by group
``virtbus``); ``--file`` writes it to a file of mode 0600 instead, which
``--creds`` and ``VIRTBUS_CREDS`` take.
"""

from __future__ import annotations

from pathlib import Path

from client.cli.output import error, print_json
from client.cli.table import Args
from client.connection import default_url
from shared.util import credentials, roles
from shared.util.errors import VirtError


def creds(args: Args) -> int:
    try:
        roles.role_named(args.role)
    except ValueError as err:
        error(str(err))
        return 1
    try:
        found = credentials.find_stored(args.role)
    except VirtError as err:
        error(str(err))
        return 1
    if found is None:
        where = ", ".join(str(d) for d in credentials.search_dirs())
        error(f"no credentials of role '{args.role}' readable here (looked in {where})")
        return 1
    url = found.url(args.connect or default_url(found))
    if args.file:
        credentials.write_private(Path(args.file), url + "\n")
    elif args.json:
        print_json(
            {"role": args.role, "user": found.user, "url": url, "inbox_prefix": found.inbox_prefix}
        )
    else:
        print(url)
    return 0
