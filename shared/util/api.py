"""Typed request/reply endpoints: one table shared by the services and the client.

An ``Endpoint`` names an operation (``define``, ``pool.define``) of a service and
the pydantic models of its request and reply.  The service side registers its
handlers on ``nats.micro`` with ``serve`` (JSON in, JSON out, errors as libvirt
codes); the client side sends with ``call``.  No endpoint writes JSON by hand.

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
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER, Request
from pydantic import BaseModel, ValidationError

from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.subjects import api_subject

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.micro.service import Service

    from shared.util.metrics import ProcessMetrics

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)

#: Extra header naming the libvirt error (``VIR_ERR_NO_SECRET``).
ERROR_NAME_HEADER = "Virtbus-Error-Name"
DEFAULT_TIMEOUT = 30.0


class Empty(BaseModel):
    """A request or reply with no fields."""


@dataclass(frozen=True)
class Endpoint(Generic[Req, Rep]):
    """One operation of a service: its name, models and whether it is host-scoped."""

    service: str
    name: str
    request: type[Req]
    reply: type[Rep]
    host_scoped: bool = False
    timeout: float = DEFAULT_TIMEOUT

    @property
    def micro_name(self) -> str:
        """The endpoint's name in ``$SRV.INFO`` (dots are not allowed there)."""
        return self.name.replace(".", "-")

    def subject(self, host: str | None = None) -> str:
        if self.host_scoped and host is None:
            raise ValueError(f"{self.service}.{self.name} needs a host")
        return api_subject(self.service, self.name, host if self.host_scoped else None)


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
    service answers the subject, ``VIR_ERR_OPERATION_TIMEOUT`` on timeout.
    """
    subject = endpoint.subject(host)
    try:
        msg = await nc.request(
            subject,
            request.model_dump_json().encode(),
            timeout=timeout or endpoint.timeout,
        )
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


Handler = Callable[[Any], Awaitable[BaseModel]]
#: Runs one request's coroutine as a task the process tracks (and drains on stop).
Spawner = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


async def serve(
    service: Service,
    endpoint: Endpoint[Any, Any],
    handler: Handler,
    metrics: ProcessMetrics,
    host: str | None = None,
    *,
    concurrency: int = 1,
    spawn: Spawner | None = None,
) -> None:
    """Register ``handler`` for ``endpoint`` on a started micro ``service``.

    nats-py runs one subscription's callbacks one after another, so with
    ``concurrency`` above 1 each request runs as its own task (through
    ``spawn``), at most ``concurrency`` at a time; the subscription waits
    while all are busy, which pushes back on the sender.
    """

    # nats.micro's own record of this endpoint, found once it is registered.
    stats: list[Any] = []

    async def handle(request: Request) -> None:
        """Answer one request, its errors included."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            try:
                payload = endpoint.request.model_validate_json(request.data or b"{}")
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "body"
                raise VirtError(
                    ErrorCode.INVALID_ARG, f"{where}: {first['msg']}", ErrorDomain.RPC
                ) from err
            reply = await handler(payload)
            await request.respond(reply.model_dump_json().encode())
        except VirtError as err:
            outcome = "error"
            await request.respond(*error_reply(err))
            _count_error(stats, err.name)
        except Exception:
            outcome = "error"
            request_id = (request.headers or {}).get("Nats-Msg-Id") or request.subject
            log.exception(
                "unexpected error", extra={"endpoint": endpoint.name, "request": request_id}
            )
            internal = VirtError(ErrorCode.INTERNAL_ERROR, f"unexpected failure in {endpoint.name}")
            await request.respond(*error_reply(internal))
            _count_error(stats, internal.name)
        finally:
            metrics.observe_request(endpoint.name, outcome, time.perf_counter() - started)

    callback: Callable[[Request], Awaitable[None]] = handle
    if concurrency > 1 and spawn is not None:
        slots = asyncio.Semaphore(concurrency)

        async def run(request: Request) -> None:
            started = time.perf_counter_ns()
            try:
                await handle(request)
            finally:
                slots.release()
                _add_processing_time(stats, time.perf_counter_ns() - started)

        async def dispatch(request: Request) -> None:
            await slots.acquire()
            spawn(run(request))

        callback = dispatch

    await service.add_endpoint(
        name=endpoint.micro_name,
        subject=endpoint.subject(host),
        handler=callback,
        metadata={"request": endpoint.request.__name__, "reply": endpoint.reply.__name__},
    )
    stats.extend(getattr(service, "_endpoints", [])[-1:])  # add_endpoint appends it


# nats.micro counts an error only when the handler raises (and then answers
# with headers alone), and times only the callback, which returns at once for
# a request running as its own task.  We answer errors with the JSON body and
# run requests concurrently, so these two keep $SRV.STATS true.


def _count_error(stats: list[Any], name: str) -> None:
    for ep in stats:
        ep._num_errors += 1
        ep._last_error = name


def _add_processing_time(stats: list[Any], ns: int) -> None:
    for ep in stats:
        if ep._num_requests:
            ep._processing_time += ns
            ep._average_processing_time = int(ep._processing_time / ep._num_requests)
