"""The domain disk commands (domblklist, disk-dumpxml), from the storage service's
disk inventory, printing what virsh prints; and the runner the block-job
commands share.

Every command talks to the storage service of one host (``--host``, else the
only host with a storage service, else this machine), which keeps the disks
that host's agent publishes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

from client.cli.output import print_json, table
from client.cli.pool_cmds import run_on_host
from client.storage_jobs import BlockJobClient, disk_rows

Body = Callable[[BlockJobClient], Awaitable[int]]


def run_jobs(args: argparse.Namespace, body: Body) -> int:
    """Run ``body`` against the chosen host's storage service; ``CommandFailed`` and
    ``VirtError`` become virsh's ``error:`` lines and exit status 1."""
    return run_on_host(args, BlockJobClient, body)


def domblklist(args: argparse.Namespace) -> int:
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


def disk_dumpxml(args: argparse.Namespace) -> int:
    async def body(jobs: BlockJobClient) -> int:
        disk = await jobs.disk_dumpxml(args.domain, args.target)
        if args.json:
            print_json(disk.model_dump())
            return 0
        sys.stdout.write(disk.xml if disk.xml.endswith("\n") else disk.xml + "\n")
        return 0

    return run_jobs(args, body)
