"""Running one CLI command: connect, call, turn ``VirtError`` into virsh's error lines."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

from client.cli.output import error
from client.connection import Client
from shared.util.errors import VirtError

Body = Callable[[Client], Awaitable[int]]


def run(args: argparse.Namespace, body: Body, *, context: str | None = None) -> int:
    """Connect to ``args.connect``, run ``body``; exit status 1 with ``error:`` lines
    on failure (``context`` is virsh's first line, e.g. ``failed to get secret 'X'``)."""

    async def main() -> int:
        client = await Client.connect(args.connect)
        try:
            return await body(client)
        finally:
            await client.close()

    try:
        return asyncio.run(main())
    except VirtError as err:
        if context:
            error(context, str(err))
        else:
            error(str(err))
        return 1
