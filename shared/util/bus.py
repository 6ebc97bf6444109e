"""The NATS connection every process and client opens.

``connect`` retries the first connection until its deadline (a service
started before its server waits for it), then lets nats-py reconnect
forever with jittered waits.  ``close`` drains, so
in-flight requests are answered and published messages flushed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client as NATS
from nats.errors import NoServersError

from shared.util.errors import ErrorCode, ErrorDomain, VirtError

log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None]]


async def settle(nc: NATS) -> None:
    """Return once the server has applied every command this connection sent.

    nats-py writes a flush's PING straight to the socket, while subscriptions
    and publishes wait in its pending buffer for its flusher task, so the PONG
    can come back before the server has seen them: a request sent from another
    connection right after a service subscribed then finds no responders (seen
    in about one start in ten here).  The first flush gives the flusher its
    turn; the second PING follows everything written before it.
    """
    await nc.flush()
    await nc.flush()


async def connect(
    url: str,
    name: str,
    *,
    deadline: float = 30.0,
    on_reconnect: Callback | None = None,
    on_disconnect: Callback | None = None,
) -> NATS:
    """Connect to ``url`` as client ``name``; ``url`` may list a cluster's servers
    separated by commas (the first that answers is used, the others on failover).

    Raises ``VirtError`` (``VIR_ERR_NO_CONNECT``) when no server answered
    within ``deadline`` seconds.
    """

    connected = False
    last_error: list[Exception] = []

    async def error_cb(err: Exception) -> None:
        if connected:
            log.warning("nats error: %s", err)
        else:
            last_error[:] = [err]

    async def reconnected_cb() -> None:
        log.info("nats reconnected", extra={"url": url})
        if on_reconnect is not None:
            await on_reconnect()

    async def disconnected_cb() -> None:
        if connected:
            log.info("nats disconnected", extra={"url": url})
        if on_disconnect is not None:
            await on_disconnect()

    # nats-py retries the first connection forever when reconnects are
    # unlimited (with its jittered wait between attempts); the deadline bounds it.
    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers=[u.strip() for u in url.split(",") if u.strip()],
                name=name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                ping_interval=10,
                max_outstanding_pings=3,
                error_cb=error_cb,
                reconnected_cb=reconnected_cb,
                disconnected_cb=disconnected_cb,
            ),
            timeout=deadline,
        )
    except (TimeoutError, NoServersError, OSError) as err:
        cause = last_error[0] if last_error else err
        raise VirtError(
            ErrorCode.NO_CONNECT,
            f"cannot connect to NATS at {url}: {cause or type(cause).__name__}",
            ErrorDomain.RPC,
            raw=True,
        ) from err
    connected = True
    return nc


async def close(nc: NATS) -> None:
    """Drain and close ``nc``; a connection already closed is left as it is."""
    if nc.is_closed:
        return
    try:
        await asyncio.wait_for(nc.drain(), timeout=5)
    except (TimeoutError, nats.errors.ConnectionClosedError):
        await nc.close()
