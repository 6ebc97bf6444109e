"""Running one CLI command: connect, call, turn ``VirtError`` into virsh's error lines.

Inside the interactive shell (``client.cli.shell``) every command reuses the
shell's one connection and event loop; a one-shot command opens its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from client.cli.output import error
from client.cli.table import Args

if TYPE_CHECKING:
    from client.connection import Client

Body = Callable[["Client"], Awaitable[int]]

#: Seconds a one-shot command waits for the server before giving up.
DEFAULT_CONNECT_TIMEOUT = 1.0


class Shared:
    """The interactive shell's connection: commands run on its loop, through its client."""

    def run(self, body: Body) -> int:
        raise NotImplementedError


#: Set by the interactive shell while it runs.
shared: Shared | None = None


def connect_timeout(args: Args) -> float:
    """``--connect-timeout``, else ``$VIRTBUS_CONNECT_TIMEOUT``, else one second."""
    import os

    if args.connect_timeout is not None:
        return float(args.connect_timeout)
    try:
        return float(os.environ.get("VIRTBUS_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT))
    except ValueError:
        return DEFAULT_CONNECT_TIMEOUT


def run(args: Args, body: Body, *, context: str | None = None) -> int:
    """Connect to ``args.connect``, run ``body``; exit status 1 with ``error:`` lines
    on failure (``context`` is virsh's first line, e.g. ``failed to get secret 'X'``)."""
    import asyncio

    from client.connection import Client
    from shared.util.errors import VirtError

    async def main() -> int:
        client = await Client.connect(args.connect, deadline=connect_timeout(args))
        try:
            return await body(client)
        finally:
            await client.close()

    try:
        if shared is not None:
            return shared.run(body)
        return asyncio.run(main())
    except VirtError as err:
        if context:
            error(context, str(err))
        else:
            error(str(err))
        # virsh ends a failed command with a blank line on stdout.
        print()
        return 1
