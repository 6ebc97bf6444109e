"""``virtbus status``: the services on the bus with their endpoints' figures."""

from __future__ import annotations

import sys

from client.cli.output import print_json, table
from client.cli.session import run
from client.cli.table import Args, Command, number

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from client.connection import Client


def status(args: Args) -> int:
    from client.status import services

    wait = 0.5 if args.wait is None else args.wait

    async def body(c: Client) -> int:
        found = await services(c.nc, wait)
        if args.json:
            print_json([s.model_dump() for s in found])
            return 0
        rows = [[s.name, s.version, s.host or "-", s.id] for s in found]
        sys.stdout.write(table(["Service", "Version", "Host", "Id"], rows))
        for s in found:
            print(f" {s.name} ({s.id}) endpoints:")
            ep_rows = [
                [e.name, e.subject, str(e.requests), str(e.errors), f"{e.average_ms:.3f}"]
                for e in s.endpoints
            ]
            sys.stdout.write(
                table(["Endpoint", "Subject", "Requests", "Errors", "Avg ms"], ep_rows)
            )
        return 0

    return run(args, body)


COMMAND = Command(
    "status",
    "list the services on the bus",
    status,
    (number("wait", "seconds to wait for answers (default 0.5)", real=True),),
    description="List the services answering on the bus, with each endpoint's figures.",
)
