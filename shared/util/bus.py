"""The NATS connection every process and client opens.

``connect`` retries the first connection until its deadline (a service
started before its server waits for it), then lets nats-py reconnect
forever with jittered waits.  A server that refuses the credentials ends
the attempt at once.  ``close`` drains, so in-flight requests are answered
and published messages flushed.

A connection authenticates with the user and password of its URL or of the
credentials it is given (``shared.util.credentials``) and receives replies
on its role's own inbox prefix, the only inbox its permissions let it read.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import ssl
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import ParseResult

import nats
from nats.aio.client import NO_RESPONDERS_STATUS
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import Header

from shared.util.credentials import Credentials, split_url
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, not_private, send_refused

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


_PUBLISH_REFUSED = re.compile(r'permissions violation for publish to "([^"]+)"', re.IGNORECASE)


class _Waiter:
    """A request waiting for its reply: the task that sent it, cancelled (and
    the request answered with ``VIR_ERR_ACCESS_DENIED``) when the server
    refuses its publish."""

    __slots__ = ("refused", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.refused = False


#: Requests waiting on each connection, by subject (lower case, as nats-py
#: reports a refused one).
_waiting: weakref.WeakKeyDictionary[NATS, dict[str, set[_Waiter]]] = weakref.WeakKeyDictionary()


def _refused_publish(nc: NATS, err: Exception) -> bool:
    """Fail the requests waiting on the refused subject; True when there were any
    (their callers get the error, so it need not be logged)."""
    found = _PUBLISH_REFUSED.search(str(err))
    waiters = _waiting.get(nc, {}).get(found.group(1).lower(), set()) if found else set()
    for waiter in waiters:
        if not waiter.refused:
            waiter.refused = True
            waiter.task.cancel()
    return bool(waiters)


class _Replies:
    """One connection's replies to its requests: a single subscription on
    ``<inbox prefix>.<id>.*`` (as nats-py's own requests use) whose callback
    hands each reply to the future of its request.

    nats-py's ``request`` waits with ``asyncio.wait_for``, which costs the
    event loop one more turn per request than waiting on the future itself
    with a timer beside it, and draws random bytes from the kernel for every
    request; here a request's id is a count, unique under the inbox's own.
    """

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        #: The subscription's subject without its ``*``; empty until subscribed.
        self._prefix = ""
        self._subscribing = asyncio.Lock()
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._ids = itertools.count()

    async def _subscribe(self) -> None:
        """Subscribe once; concurrent first requests wait for the same subscription."""
        async with self._subscribing:
            if not self._prefix:
                prefix = self._nc.new_inbox() + "."
                await self._nc.subscribe(prefix + "*", cb=self._answer)
                self._prefix = prefix

    async def _answer(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def request(
        self, subject: str, payload: bytes, timeout: float, headers: dict[str, str] | None
    ) -> Msg:
        if not self._prefix:
            await self._subscribe()
        token = str(next(self._ids))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = future
        timer = loop.call_later(timeout, _expire, future)
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            msg = await future
        finally:
            timer.cancel()
            self._waiting.pop(token, None)
        if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS_STATUS:
            raise NoRespondersError
        return msg


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(NatsTimeoutError())


_replies: weakref.WeakKeyDictionary[NATS, _Replies] = weakref.WeakKeyDictionary()


async def roundtrip(
    nc: NATS,
    subject: str,
    payload: bytes,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> Msg:
    """``nc.request`` with one loop turn less (``_Replies``): every request on
    the request paths (API calls, ledger writes and reads, events) goes
    through here.  Raises nats-py's ``TimeoutError`` and ``NoRespondersError``
    as ``nc.request`` does."""
    replies = _replies.get(nc)
    if replies is None:
        replies = _replies[nc] = _Replies(nc)
    return await replies.request(subject, payload, timeout, headers)


async def request(nc: NATS, subject: str, payload: bytes, timeout: float) -> Msg:
    """``roundtrip``, except that a request the server's permissions refuse
    raises ``VirtError`` (``VIR_ERR_ACCESS_DENIED``) as soon as the server
    says so, instead of a timeout.  nats-py's errors pass through.

    The request runs in the caller's task (no task or wait of its own: each
    costs the event loop a turn per request); a refusal cancels that task,
    and the cancellation becomes the error unless someone else cancelled too.
    """
    task = asyncio.current_task()
    assert task is not None, "request() runs in a task"
    waiter = _Waiter(task)
    key = subject.lower()
    waiters = _waiting.setdefault(nc, {}).setdefault(key, set())
    waiters.add(waiter)
    try:
        reply = await roundtrip(nc, subject, payload, timeout)
    except asyncio.CancelledError:
        if waiter.refused and task.uncancel() == 0:
            raise send_refused(subject) from None
        raise
    finally:
        waiters.discard(waiter)
        if not waiters:
            _waiting.get(nc, {}).pop(key, None)
    return reply


class _Refused(Exception):
    """The server refused the credentials: retrying cannot help."""


class _TlsCloseNoise(logging.Filter):
    """nats-py reads through asyncio streams, whose protocol asks to keep a
    connection half open when the server closes it; over TLS asyncio cannot,
    and logs a warning about it at every close.  Nothing is wrong and nothing
    is lost, so the warning is dropped (it reached the CLI's stderr)."""

    NOISE = "returning true from eof_received() has no effect when using ssl"

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != self.NOISE


_TLS_CLOSE_NOISE = _TlsCloseNoise()


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client TLS context that verifies the server against ``ca_file`` (else the
    system's certificate authorities)."""
    logging.getLogger("asyncio").addFilter(_TLS_CLOSE_NOISE)
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


async def connect(
    url: str,
    name: str,
    *,
    creds: Credentials | None = None,
    tls_ca: Path | None = None,
    deadline: float = 30.0,
    on_reconnect: Callback | None = None,
    on_disconnect: Callback | None = None,
) -> NATS:
    """Connect to ``url`` as client ``name``; ``url`` may list a cluster's servers
    separated by commas (the first that answers is used, the others on failover).
    The connection authenticates with the user and password the URL carries,
    else ``creds``, else none; it speaks TLS verified against ``tls_ca`` when
    given or when the URL is ``tls://``.

    Raises ``VirtError``: ``VIR_ERR_AUTH_FAILED`` as soon as the server refuses
    the credentials (or their absence), ``VIR_ERR_NO_CONNECT`` when no server
    answered within ``deadline`` seconds.
    """

    connected = False
    last_error: list[Exception] = []
    parts = [split_url(u.strip()) for u in url.split(",") if u.strip()]
    servers = [server for server, _ in parts]
    server = ",".join(servers)
    creds = next((c for _, c in parts if c is not None), None) or creds
    # nats-py's annotation says int; it sleeps for any number of seconds.
    options: dict[str, Any] = {"reconnect_time_wait": 0.25}
    if creds is not None:
        options.update(user=creds.user, password=creds.password, inbox_prefix=creds.inbox_prefix)
    if tls_ca is not None or any(s.startswith("tls://") for s in servers):
        options["tls"] = tls_context(tls_ca)

    async def error_cb(err: Exception) -> None:
        if connected:
            if not _refused_publish(nc, err):
                log.warning("nats error: %s", err)
            return
        last_error[:] = [err]
        if "authorization violation" in str(err).lower():
            raise _Refused(str(err)) from err

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
    nc = NATS()
    try:
        await asyncio.wait_for(
            nc.connect(
                servers=servers,
                name=name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                ping_interval=10,
                max_outstanding_pings=3,
                error_cb=error_cb,
                reconnected_cb=reconnected_cb,
                disconnected_cb=disconnected_cb,
                **options,
            ),
            timeout=deadline,
        )
    except _Refused as err:
        await nc.close()
        if creds is None:
            detail = (
                f"no credentials for {server}: give --creds FILE or VIRTBUS_CREDS, "
                "or run as root or as a member of group 'virtbus'"
            )
        else:
            detail = f"{server} refused user '{creds.user}'"
        raise VirtError(ErrorCode.AUTH_FAILED, detail, ErrorDomain.RPC) from err
    except (TimeoutError, NoServersError, OSError) as err:
        await nc.close()
        cause = last_error[0] if last_error else err
        raise VirtError(
            ErrorCode.NO_CONNECT,
            f"cannot connect to NATS at {server}: {cause or type(cause).__name__}",
            ErrorDomain.RPC,
            raw=True,
        ) from err
    connected = True
    return nc


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def private_channel(nc: NATS) -> bool:
    """True when what ``nc`` sends cannot be read on the way: the connection
    speaks TLS, or the server is on this machine's loopback.  Between two
    connections (the server restarting), what is sent waits for the next one,
    to any server of the connection's pool: private when each of them is."""
    # The last server's word holds for its cluster: a client cannot connect
    # in the clear to a server that requires TLS.
    tls_required = bool(getattr(nc, "_server_info", {}).get("tls_required"))

    def private(url: ParseResult) -> bool:
        return url.scheme == "tls" or tls_required or (url.hostname or "") in _LOOPBACK

    url = nc.connected_url
    servers = [url] if url is not None else nc.servers
    return bool(servers) and all(private(server) for server in servers)


def require_private_channel(nc: NATS, what: str) -> None:
    """Refuse to send ``what`` in the clear over a network.

    Raises ``VirtError`` (``VIR_ERR_OPERATION_DENIED``) unless ``private_channel``."""
    if not private_channel(nc):
        raise not_private(what)


async def close(nc: NATS) -> None:
    """Drain and close ``nc``; a connection already closed is left as it is."""
    if nc.is_closed:
        return
    try:
        await asyncio.wait_for(nc.drain(), timeout=5)
    except (TimeoutError, nats.errors.ConnectionClosedError):
        await nc.close()
