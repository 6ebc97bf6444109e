"""Typed request/reply endpoints: one table shared by the services and the client.

An ``Endpoint`` names an operation (``define``, ``pool.define``) of a service,
the pydantic models of its request and reply, and how many of its requests a
service runs at once.  Each ``shared/api`` module lists its service's endpoints
in one table (``ENDPOINTS``).  A service binds every endpoint of its table to
the method that answers it (``ENDPOINT.bind(self.method)``, type-checked:
the method takes the request model and returns the reply model, or
``Encoded``, that model's JSON already made); the process
runtime (``shared.util.process``) serves the bindings with ``answer``; the
client sends with ``call``.  Every reply is a model's JSON as pydantic makes
it; the replies put together from parts (the two volume lists, their
volumes' kept JSON joined) are tested to be the same bytes as their models'.

Errors cross the bus as the micro error headers (``Nats-Service-Error-Code``:
libvirt's error number; ``Nats-Service-Error``: the message) plus a JSON body
with the code, its name, the domain and the message.  ``call`` raises them as
``VirtError``.  Anything unexpected in a handler is logged with the request id
and answered as ``VIR_ERR_INTERNAL_ERROR`` without the exception's text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER, Request
from pydantic import BaseModel, ValidationError

from shared.util import bus
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.subjects import api_subject
from shared.util.tasks import cancel_until_done

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

    from shared.util.metrics import ProcessMetrics

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)

#: The reply subject of the request a handler is answering: the asking
#: connection's inbox, for handlers that bind what they open to that
#: connection (``requester``).
_REPLY_TO: ContextVar[str | None] = ContextVar("virtbus_reply_to", default=None)


def requester() -> str | None:
    """The connection that sent the request being handled, as the prefix its
    replies share (``bus.roundtrip`` receives every reply of a connection on
    ``<inbox prefix>.<nuid>.<n>``); None outside a request."""
    reply = _REPLY_TO.get()
    return reply.rpartition(".")[0] or None if reply else None


#: Extra header naming the libvirt error (``VIR_ERR_NO_SECRET``).
ERROR_NAME_HEADER = "Virtbus-Error-Name"
DEFAULT_TIMEOUT = 30.0
#: Header of a request whose caller wants heartbeats while it waits: their inbox.
HEARTBEAT_HEADER = "Virtbus-Heartbeat"
#: Seconds between two heartbeats of a request under way.
HEARTBEAT_SECONDS = 1.0
#: A caller that heard no heartbeat for this long takes the service for dead.
HEARTBEAT_LOST_SECONDS = 5.0
#: Calls that may wait longer than this (the long volume and pool operations)
#: ask for heartbeats.
HEARTBEAT_AFTER = 60.0


class Empty(BaseModel):
    """A request or reply with no fields."""


@dataclass(frozen=True, slots=True)
class Encoded(Generic[Rep]):
    """A reply already encoded: the bytes ``to_json`` makes of a ``Rep``.

    A handler returns one where it keeps the JSON of what it shows (a volume
    list is the kept JSON of each volume, joined), so that ``answer`` does
    not encode the same objects again on every request."""

    data: bytes


@dataclass(frozen=True)
class Endpoint(Generic[Req, Rep]):
    """One operation of a service: its name, models and whether it is host-scoped."""

    service: str
    name: str
    request: type[Req]
    reply: type[Rep]
    host_scoped: bool = False
    timeout: float = DEFAULT_TIMEOUT
    #: Requests of this endpoint one service instance answers at the same time
    #: (1: one after another, in the order they arrived).
    concurrency: int = 1
    #: Answered in the subscription's callback, one after another, with no task
    #: of its own: for answers read from memory that never wait on anything,
    #: where a task per request would cost more than the answer (``concurrency``
    #: does not apply).
    inline: bool = False

    def bind(self, handler: Callable[[Req], Awaitable[Rep | Encoded[Rep]]]) -> Bound[Req, Rep]:
        """This endpoint answered by ``handler``."""
        return Bound(self, handler)

    @property
    def micro_name(self) -> str:
        """The endpoint's name in ``$SRV.INFO`` (dots are not allowed there)."""
        return self.name.replace(".", "-")

    def subject(self, host: str | None = None) -> str:
        if self.host_scoped and host is None:
            raise ValueError(f"{self.service}.{self.name} needs a host")
        return api_subject(self.service, self.name, host if self.host_scoped else None)


def memory_read(
    service: str, name: str, request: type[Req], reply: type[Rep], *, host_scoped: bool = False
) -> Endpoint[Req, Rep]:
    """An endpoint answered from the service's memory, inline (``Endpoint.inline``)."""
    return Endpoint(service, name, request, reply, host_scoped=host_scoped, inline=True)


@dataclass(frozen=True)
class Bound(Generic[Req, Rep]):
    """An endpoint with the coroutine that answers it."""

    endpoint: Endpoint[Req, Rep]
    handler: Callable[[Req], Awaitable[Rep | Encoded[Rep]]]


def check_bindings(table: Sequence[Endpoint[Any, Any]], bound: Sequence[Bound[Any, Any]]) -> None:
    """Raise ``ValueError`` unless ``bound`` answers every endpoint of ``table`` exactly once
    and nothing else."""
    names = [b.endpoint.name for b in bound]
    missing = sorted({e.name for e in table} - set(names))
    extra = sorted(set(names) - {e.name for e in table})
    twice = sorted({n for n in names if names.count(n) > 1})
    if missing or extra or twice:
        raise ValueError(
            f"endpoint table not served as declared: missing {missing}, "
            f"not in the table {extra}, bound twice {twice}"
        )


async def _watched_request(
    nc: NATS, endpoint: Endpoint[Any, Any], subject: str, data: bytes, wait: float
) -> Msg:
    """A request whose service instance says it is alive while it works on it.

    The request names an inbox in ``HEARTBEAT_HEADER``; the process runtime
    publishes there every ``HEARTBEAT_SECONDS`` from the moment the request
    arrives until it is answered.  Silence for ``HEARTBEAT_LOST_SECONDS`` means
    the instance died: the caller hears it then, not when ``wait`` runs out.
    """
    inbox = nc.new_inbox()
    alive = asyncio.Event()

    async def beat(_: Msg) -> None:
        alive.set()

    sub = await nc.subscribe(inbox, cb=beat)
    try:
        reply = asyncio.ensure_future(
            bus.roundtrip(nc, subject, data, wait, headers={HEARTBEAT_HEADER: inbox})
        )
        try:
            while True:
                await asyncio.wait({reply}, timeout=HEARTBEAT_LOST_SECONDS)
                if reply.done():
                    return reply.result()
                if not alive.is_set():
                    raise VirtError(
                        ErrorCode.RPC,
                        f"the {endpoint.service} service handling {endpoint.name} stopped "
                        f"answering (no heartbeat for {HEARTBEAT_LOST_SECONDS:.0f} s): it "
                        "died or lost the bus.  An operation it did not finish is rolled "
                        "back when it starts again; look whether the change was made",
                        ErrorDomain.RPC,
                    )
                alive.clear()
        finally:
            await cancel_until_done({reply})
    finally:
        await sub.unsubscribe()


def to_json(model: BaseModel) -> bytes:
    """``model.model_dump_json().encode()``, the same bytes, without the string
    in between and the keyword handling around it (a quarter of the cost)."""
    return type(model).__pydantic_serializer__.to_json(model)


def error_reply(err: VirtError) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an error reply carrying ``err``."""
    body = json.dumps(err.to_dict()).encode()
    headers = {
        ERROR_CODE_HEADER: str(int(err.code)),
        ERROR_HEADER: err.message,
        ERROR_NAME_HEADER: err.name,
    }
    return body, headers


async def call(
    nc: NATS,
    endpoint: Endpoint[Req, Rep],
    request: Req,
    *,
    host: str | None = None,
    timeout: float | None = None,
) -> Rep:
    """Send ``request`` to ``endpoint`` and return its typed reply.

    Raises ``VirtError``: the service's own error, ``VIR_ERR_NO_SERVER`` when no
    service answers the subject, ``VIR_ERR_ACCESS_DENIED`` when the user may not
    send to it, ``VIR_ERR_OPERATION_TIMEOUT`` on timeout, and
    for a call that may wait longer than ``HEARTBEAT_AFTER`` seconds,
    ``VIR_ERR_RPC`` as soon as the service instance handling it has sent no
    heartbeat for ``HEARTBEAT_LOST_SECONDS`` (it died or lost the bus).
    """
    subject = endpoint.subject(host)
    wait = timeout or endpoint.timeout
    data = to_json(request)
    try:
        if wait > HEARTBEAT_AFTER:
            msg = await _watched_request(nc, endpoint, subject, data, wait)
        else:
            msg = await bus.request(nc, subject, data, wait)
    except NoRespondersError as err:
        where = f" on host '{host}'" if host else ""
        raise VirtError(
            ErrorCode.NO_SERVER,
            f"no {endpoint.service} service is running{where} (subject {subject})",
            ErrorDomain.RPC,
        ) from err
    except NatsTimeoutError as err:
        raise VirtError(
            ErrorCode.OPERATION_TIMEOUT,
            f"no reply from the {endpoint.service} service to {endpoint.name}",
            ErrorDomain.RPC,
        ) from err
    headers = msg.headers or {}
    if ERROR_CODE_HEADER in headers:
        try:
            raise VirtError.from_dict(json.loads(msg.data))
        except (ValueError, TypeError):
            raise VirtError(
                ErrorCode.INTERNAL_ERROR,
                headers.get(ERROR_HEADER, "unknown error"),
                ErrorDomain.RPC,
                raw=True,
            ) from None
    try:
        return endpoint.reply.model_validate_json(msg.data)
    except ValidationError as err:
        raise VirtError(
            ErrorCode.RPC, f"malformed reply from {subject}: {err}", ErrorDomain.RPC
        ) from err


@dataclass
class Counters:
    """What ``$SRV.STATS`` reports of one endpoint, counted by ``answer`` (nats.micro
    counts an error only when the handler raises, and times only the callback,
    which returns at once for a request running as its own task)."""

    requests: int = 0
    errors: int = 0
    last_error: str = ""
    processing_ns: int = 0

    def stats(self) -> dict[str, Any]:
        """The ``data`` of the endpoint's entry in ``$SRV.STATS``."""
        return {
            "num_requests": self.requests,
            "num_errors": self.errors,
            "last_error": self.last_error,
            "processing_time": self.processing_ns,
            "average_processing_time": self.processing_ns // self.requests if self.requests else 0,
        }


async def answer(
    bound: Bound[Any, Any],
    request: Request,
    metrics: ProcessMetrics,
    counters: Counters,
) -> None:
    """Answer one request of ``bound``: its reply, or its error as libvirt's code.

    A ``VirtError`` is answered as itself; anything else is logged with the
    request and answered as ``VIR_ERR_INTERNAL_ERROR`` without its text.
    """
    endpoint = bound.endpoint
    started = time.perf_counter_ns()
    outcome = "ok"
    # nats.micro's Request does not expose the reply subject it answers.
    msg = getattr(request, "_msg", None)
    _REPLY_TO.set(getattr(msg, "reply", None) or None)
    try:
        try:
            payload = endpoint.request.model_validate_json(request.data or b"{}")
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise VirtError(
                ErrorCode.INVALID_ARG, f"{where}: {first['msg']}", ErrorDomain.RPC
            ) from err
        reply = await bound.handler(payload)
        await _respond(request, reply.data if isinstance(reply, Encoded) else to_json(reply))
    except VirtError as err:
        outcome = "error"
        counters.errors += 1
        counters.last_error = err.name
        await _respond(request, *error_reply(err))
    except Exception:
        outcome = "error"
        request_id = (request.headers or {}).get("Nats-Msg-Id") or request.subject
        log.exception("unexpected error", extra={"endpoint": endpoint.name, "request": request_id})
        internal = VirtError(ErrorCode.INTERNAL_ERROR, f"unexpected failure in {endpoint.name}")
        counters.errors += 1
        counters.last_error = internal.name
        await _respond(request, *error_reply(internal))
    finally:
        elapsed = time.perf_counter_ns() - started
        counters.requests += 1
        counters.processing_ns += elapsed
        metrics.observe_request(endpoint.name, outcome, elapsed / 1e9)


async def _respond(request: Request, data: bytes, headers: dict[str, str] | None = None) -> None:
    """Send a reply; one lost with the connection is logged (the caller times out)."""
    try:
        await request.respond(data, headers=headers)
    except (NatsError, ValueError) as err:  # ValueError: the request had no reply subject
        log.warning("reply not sent", extra={"subject": request.subject, "error": repr(err)})
