"""The domain disk commands (domblklist, disk-dumpxml), from the storage service's
disk inventory, printing what virsh prints; and the runner the block-job
commands share.

Every command talks to the storage service of one host (``--host``, else the
only host with a storage service, else this machine), which keeps the disks
that host's agent publishes.
"""

from __future__ import annotations

import sys

from client.cli import blockjob_cmds
from client.cli.output import print_json, table
from client.cli.pool_cmds import run_on_host
from client.cli.table import Args, Command, Group, data, flag

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from client.storage_jobs import BlockJobClient

    Body = Callable[["BlockJobClient"], Awaitable[int]]


def run_jobs(args: Args, body: Body) -> int:
    """Run ``body`` against the chosen host's storage service; ``CommandFailed`` and
    ``VirtError`` become virsh's ``error:`` lines and exit status 1."""
    from client.storage_jobs import BlockJobClient

    return run_on_host(args, BlockJobClient, body)


def domblklist(args: Args) -> int:
    from client.storage_jobs import disk_rows

    async def body(jobs: BlockJobClient) -> int:
        inventory = await jobs.domain_disks(args.domain)
        rows = disk_rows(inventory)
        if args.json:
            print_json(rows)
            return 0
        if args.details:
            headers = ["Type", "Device", "Target", "Source"]
            cells = [[r["type"], r["device"], r["target"], r["source"]] for r in rows]
        else:
            headers = ["Target", "Source"]
            cells = [[r["target"], r["source"]] for r in rows]
        sys.stdout.write(table(headers, cells))
        return 0

    return run_jobs(args, body)


def disk_dumpxml(args: Args) -> int:
    async def body(jobs: BlockJobClient) -> int:
        disk = await jobs.disk_dumpxml(args.domain, args.target)
        if args.json:
            print_json(disk.model_dump())
            return 0
        sys.stdout.write(disk.xml if disk.xml.endswith("\n") else disk.xml + "\n")
        return 0

    return run_jobs(args, body)


GROUP = Group(
    "Domain Management",
    "domain",
    (
        *blockjob_cmds.COMMANDS,
        Command(
            "disk-dumpxml",
            "a domain disk as the storage service's inventory holds it (virtbus)",
            disk_dumpxml,
            (
                data("domain", "domain name"),
                data("target", "disk target (vda) or source path"),
            ),
        ),
        Command(
            "domblklist",
            "list all domain blocks",
            domblklist,
            (
                data("domain", "domain name, id or uuid"),
                flag("inactive", "get inactive rather than running configuration"),
                flag("details", "additionally display the type and device value"),
            ),
            description="Get the summary of block devices for a domain.",
        ),
    ),
)
