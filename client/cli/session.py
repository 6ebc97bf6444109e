"""Running one CLI command: connect, call, turn ``VirtError`` into virsh's error lines.

Inside the interactive shell (``client.cli.shell``) every command reuses the
shell's one connection and event loop; a one-shot command opens its own.
"""

from __future__ import annotations

from client.cli.output import end_failed, error
from client.cli.table import Args

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Any

    from client.cli.quick import Body as QuickBody
    from client.connection import Client

    Body = Callable[["Client"], Awaitable[int]]


def virt_error(err: BaseException) -> Any:
    """``err`` when it is a ``VirtError``, else None.  The quick path imports the
    errors module (and ``enum``, ``typing``) only once something fails, so when
    it is not loaded, no ``VirtError`` was raised."""
    import sys

    errors = sys.modules.get("shared.util.errors")
    return err if errors is not None and isinstance(err, errors.VirtError) else None


#: Seconds a one-shot command waits for the server before giving up.
DEFAULT_CONNECT_TIMEOUT = 1.0


class Shared:
    """The interactive shell's connection: commands run on its loop, through its client."""

    def run(self, body: Body) -> int:
        """Run ``body`` with the shell's client; its exit status."""
        raise NotImplementedError

    def run_calls(self, body: QuickBody, host: str | None) -> int:
        """Run a quick command's ``body`` over the shell's connection."""
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


def server_url(args: Args) -> str:
    """``-c URL``, else ``$VIRTBUS_NATS_URL``, else ``$NATS_URL``, else the local default."""
    import os

    return (
        args.connect
        or os.environ.get("VIRTBUS_NATS_URL")
        or os.environ.get("NATS_URL")
        or "nats://127.0.0.1:4222"
    )


def no_connect(url: str, err: BaseException) -> Exception:
    """The ``VirtError`` (``VIR_ERR_NO_CONNECT``) for a server that cannot be reached."""
    from shared.util.errors import ErrorCode, ErrorDomain, VirtError

    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return VirtError(
        ErrorCode.NO_CONNECT,
        f"cannot connect to NATS at {url}: {reason or type(err).__name__}",
        ErrorDomain.RPC,
        raw=True,
    )


def with_credentials(url: str, creds: str | None) -> tuple[str, str]:
    """``url`` (each of its servers) with the user and password of the admin's
    credentials file, found as ``shared.util.credfile`` finds it, unless it
    carries some; and the reply inbox prefix that user may read (``_INBOX.<role>``)."""
    from shared.util import credfile

    servers = [u.strip() for u in url.split(",") if u.strip()]
    if servers and "@" not in servers[0]:
        path = credfile.find_path("admin", creds)
        if path:
            with open(path) as f:
                userinfo = f.read().strip().split("://", 1)[-1].rpartition("@")[0]
            if userinfo:
                signed = []
                for server in servers:
                    scheme, sep, rest = server.rpartition("://")
                    signed.append(f"{scheme if sep else 'nats'}://{userinfo}@{rest}")
                servers = signed
    userinfo = servers[0].split("://", 1)[-1].rpartition("@")[0] if servers else ""
    user = userinfo.partition(":")[0]
    role = user[len("virtbus-") :] if user.startswith("virtbus-") else ""
    plain = role and all(c.isalnum() or c in "-_" for c in role)
    return ",".join(servers), f"_INBOX.{role}" if plain else "_INBOX"


def authentication_failed(url: str, had_credentials: bool) -> str:
    """The CLI's line for a server that refused us (as shared.util.bus words it)."""
    if had_credentials:
        return f"authentication failed: {url} refused the credentials"
    return (
        f"authentication failed: no credentials for {url}: give --creds FILE or "
        "VIRTBUS_CREDS, or run as root or as a member of group 'virtbus'"
    )


def check_reachable(url: str, timeout: float, creds: str | None = None) -> None:
    """Fail fast, once: raise ``no_connect`` unless a NATS server answers at ``url``
    within ``timeout`` (a server the wire client cannot speak to counts as one),
    or ``VIR_ERR_AUTH_FAILED`` when it refuses our credentials (or their absence)."""
    from client.cli.wire import Refused, Unsupported, Wire

    signed, inbox = with_credentials(url, creds)
    try:
        Wire(signed, timeout=timeout, inbox_prefix=inbox).close()
    except Unsupported:
        return
    except Refused as err:
        if "authorization violation" not in str(err).lower():
            raise no_connect(url, err) from err
        from shared.util.errors import ErrorCode, ErrorDomain, VirtError

        detail = authentication_failed(url, "@" in signed).partition(": ")[2]
        raise VirtError(ErrorCode.AUTH_FAILED, detail, ErrorDomain.RPC) from err
    except OSError as err:
        raise no_connect(url, err) from err


def connected(attempt: Callable[[], object]) -> bool:
    """Run ``attempt`` (a connection); when it raises ``VirtError``, print virsh's
    ``failed to connect to the hypervisor`` lines (an authentication failure: its
    own line alone) and return False."""
    try:
        attempt()
    except Exception as exc:
        err = virt_error(exc)
        if err is None:
            raise
        if err.name == "VIR_ERR_AUTH_FAILED":
            error(str(err))
        else:
            error("failed to connect to the hypervisor", str(err))
        end_failed()
        return False
    return True


def run(args: Args, body: Body, *, context: str | None = None) -> int:
    """Connect to ``args.connect``, run ``body``; exit status 1 with ``error:`` lines
    on failure (``context`` is virsh's first line, e.g. ``failed to get secret 'X'``,
    left out when the connection itself failed)."""
    import asyncio
    from pathlib import Path

    from client.connection import Client
    from shared.util.errors import VirtError

    url = server_url(args)
    connected = shared is not None

    async def main() -> int:
        nonlocal connected
        creds = Path(args.creds) if getattr(args, "creds", None) else None
        client = await Client.connect(url, creds=creds, deadline=connect_timeout(args))
        connected = True
        try:
            return await body(client)
        finally:
            await client.close()

    try:
        if shared is not None:
            return shared.run(body)
        return asyncio.run(main())
    except VirtError as err:
        if context and connected:
            error(context, str(err))
        else:
            error(str(err))
        # virsh ends a failed command with a blank line on stdout.
        end_failed()
        return 1
