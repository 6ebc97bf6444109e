"""``virtbus status``: the services on the bus with their endpoints' figures."""

from __future__ import annotations

import argparse
import sys

from client.cli.output import print_json, table
from client.cli.session import run
from client.connection import Client
from client.status import services


def status(args: argparse.Namespace) -> int:
    async def body(c: Client) -> int:
        found = await services(c.nc, args.wait)
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
