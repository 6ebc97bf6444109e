"""The NATS connection every process and client opens.

``connect`` retries the first connection with exponential backoff until its
deadline (a service started before its server waits for it), then lets
nats-py reconnect forever with jittered waits.  ``close`` drains, so
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


async def connect(
    url: str,
    name: str,
    *,
    deadline: float = 30.0,
    on_reconnect: Callback | None = None,
    on_disconnect: Callback | None = None,
) -> NATS:
    """Connect to ``url`` as client ``name``.

    Raises ``VirtError`` (``VIR_ERR_NO_CONNECT``) when no server answered
    within ``deadline`` seconds.
    """

    async def error_cb(err: Exception) -> None:
        log.warning("nats error: %s", err)

    async def reconnected_cb() -> None:
        log.info("nats reconnected", extra={"url": url})
        if on_reconnect is not None:
            await on_reconnect()

    async def disconnected_cb() -> None:
        log.info("nats disconnected", extra={"url": url})
        if on_disconnect is not None:
            await on_disconnect()

    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    wait = 0.05
    while True:
        try:
            return await nats.connect(
                servers=[url],
                name=name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                ping_interval=10,
                max_outstanding_pings=3,
                error_cb=error_cb,
                reconnected_cb=reconnected_cb,
                disconnected_cb=disconnected_cb,
            )
        except (NoServersError, OSError, TimeoutError) as err:
            if loop.time() + wait > end:
                raise VirtError(
                    ErrorCode.NO_CONNECT,
                    f"cannot connect to NATS at {url}: {err or type(err).__name__}",
                    ErrorDomain.RPC,
                    raw=True,
                ) from err
            await asyncio.sleep(wait)
            wait = min(wait * 2, 2.0)


async def close(nc: NATS) -> None:
    """Drain and close ``nc``; a connection already closed is left as it is."""
    if nc.is_closed:
        return
    try:
        await asyncio.wait_for(nc.drain(), timeout=5)
    except (TimeoutError, nats.errors.ConnectionClosedError):
        await nc.close()
