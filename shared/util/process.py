"""A virtbus process: one supervised task group, set-up paired with tear-down.

``ServiceProcess`` is the base of every service and agent.  A subclass names
itself, binds its ``shared/api`` endpoint table to its methods (``endpoints``)
and opens what it needs in ``setup``; the runtime does the rest:

* **Run state** ``new -> starting -> running -> stopping -> stopped``; a start
  that fails or is cancelled goes ``starting -> stopping -> stopped`` after
  undoing what it did, and raises why.  ``history`` keeps the sequence.
* **Set-up and tear-down are paired** on one ``AsyncExitStack``: each step of
  ``start`` (the NATS connection, the task group, ``setup``'s own steps, the
  micro service, the HTTP server) pushes its undo as it succeeds, so ``stop``
  and a failed start undo exactly what was done, in reverse.  Every undo step
  runs even when an earlier one fails; their errors are raised together as one
  ``ExceptionGroup`` (a cancelled stop is re-raised as the cancellation, its
  undo errors logged).
* **One ``asyncio.TaskGroup`` owns every task** of the process: each request
  (``Endpoint.concurrency`` at a time per endpoint), and every watcher, poller,
  consumer and stream given to ``spawn``.  A task that crashes ends the group:
  the process stops serving, ``wait`` returns and ``stop`` raises the crash.
  Cancellation is never swallowed.
* **Stop order**: HTTP, then the micro service (no new requests), then the
  requests under way may answer (``DRAIN_SECONDS``), then the background tasks
  are cancelled and awaited, then ``setup``'s steps are undone, then the
  connection the process opened is drained (one it was given stays open).

A process's task tree::

    run_main / the caller
    └── ServiceProcess            start() / stop(), AsyncExitStack
        └── TaskGroup             (task "<name>-tasks")
            ├── request tasks     one per request, bounded per endpoint
            └── spawn(...) tasks  watchers, pollers, consumers, streams

``run_main`` is the entry point of ``python -m services.<name>``: logs,
settings, SIGINT/SIGTERM, exit status.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, AsyncExitStack
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service

from shared.util import bus, credentials, roles
from shared.util.api import (
    HEARTBEAT_HEADER,
    HEARTBEAT_SECONDS,
    Bound,
    Counters,
    Endpoint,
    answer,
    check_bindings,
    error_reply,
)
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.events import ensure_stream
from shared.util.health import HealthServer
from shared.util.jsmetrics import JetStreamCollector
from shared.util.ledger import Ledger, free_space_guard
from shared.util.logs import setup_logging
from shared.util.metrics import ProcessMetrics
from shared.util.settings import ProcessSettings, load_settings
from shared.util.tasks import cancel_until_done

log = logging.getLogger(__name__)

VERSION = "0.1.0"
#: How long requests under way may still answer once a stop began.
DRAIN_SECONDS = 10.0

S = TypeVar("S", bound=ProcessSettings)
T = TypeVar("T")
#: Runs a coroutine as a task of the process's group until it ends or the process stops.
Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


class RunState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Teardown(AsyncExitStack):
    """An ``AsyncExitStack`` whose undo steps all run even when some fail; their
    errors leave together as one ``ExceptionGroup`` (with the error that
    started the unwinding, if any, first).  When the unwinding is a
    cancellation, the undo errors are logged and the cancellation goes on."""

    def __init__(self, what: str = "process") -> None:
        super().__init__()
        self.what = what
        self._errors: list[Exception] = []

    def _guard(self, step: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], Any]:
        errors = self._errors  # the list moves with pop_all, so capture it, not self

        async def run() -> None:
            try:
                result = step(*args, **kwargs)
                if inspect.isawaitable(result):
                    await result
            except Exception as err:
                errors.append(err)

        return run

    def callback(self, callback: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        super().push_async_callback(self._guard(callback, *args, **kwargs))
        return callback

    def push_async_callback(
        self, callback: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
    ) -> Any:
        super().push_async_callback(self._guard(callback, *args, **kwargs))
        return callback

    async def enter_async_context(self, cm: AbstractAsyncContextManager[T]) -> T:
        result = await cm.__aenter__()
        self.push_async_callback(cm.__aexit__, None, None, None)
        return result

    def enter_context(self, cm: AbstractContextManager[T]) -> T:
        result = cm.__enter__()
        self.callback(cm.__exit__, None, None, None)
        return result

    def pop_all(self) -> Self:
        new = super().pop_all()
        new.what = self.what
        new._errors, self._errors = self._errors, []
        return new

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        suppressed = await super().__aexit__(exc_type, exc, tb)
        errors, self._errors[:] = list(self._errors), []
        if not errors:
            return bool(suppressed)
        if isinstance(exc, asyncio.CancelledError):
            for err in errors:
                log.error("error while stopping %s: %r", self.what, err, exc_info=err)
            return False
        if isinstance(exc, Exception):
            raise ExceptionGroup(f"{self.what} failed, then failed to undo it", [exc, *errors])
        raise ExceptionGroup(f"errors while stopping {self.what}", errors)


class ServiceProcess(Generic[S]):
    """Base of every service process.

    Subclasses set ``name`` (the micro service's name), ``endpoint_table`` (their
    ``shared/api`` endpoint table) and override ``endpoints`` and ``setup``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    host_scoped: ClassVar[bool] = False
    #: The endpoint table the process serves, exactly (checked at start).
    endpoint_table: ClassVar[Sequence[Endpoint[Any, Any]]] = ()

    def __init__(self, settings: S, nc: NATS | None = None) -> None:
        self.settings = settings
        self.state = RunState.NEW
        #: Every run state the process went through, in order.
        self.history: list[RunState] = [RunState.NEW]
        self.metrics = ProcessMetrics(self.name)
        #: The ledgers ``open_ledger`` opened; their malformed records are counted here.
        self._ledgers: list[Ledger] = []
        self.metrics.gauge(
            "bad_records", "Stored records skipped as malformed (shared.util.ledger.decode)"
        ).set_function(lambda: sum(len(ledger.bad_keys) for ledger in self._ledgers))
        self._jetstream = JetStreamCollector().register(self.metrics.registry)
        self.http = HealthServer(self.metrics, self._not_ready_reason)
        self._given_nc = nc
        self._nc: NATS | None = nc
        self._js: JetStreamContext | None = None
        self._micro: Service | None = None
        self._stack: AsyncExitStack | None = None
        self._group: asyncio.TaskGroup | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._requests: set[asyncio.Task[None]] = set()
        self._counters: dict[str, Counters] = {}
        #: Set by ``request_stop`` or when the task group ended (a task crashed).
        self._end = asyncio.Event()
        #: Ends the task group's body (``_end_group``).
        self._halt = asyncio.Event()
        self._stopped = asyncio.Event()

    # -- what subclasses provide -------------------------------------------------

    def endpoints(self) -> Sequence[Bound[Any, Any]]:
        """The endpoint table bound to the methods that answer it."""
        return ()

    async def setup(self, stack: Teardown) -> None:
        """Open state, reconcile, ``spawn`` background tasks.

        Runs after NATS and the event stream are up, before the endpoints are
        served.  Push the undo of each step onto ``stack`` as soon as the step
        succeeded; the undo steps run after the process's tasks have ended.
        """

    # -- runtime -----------------------------------------------------------------

    @property
    def nc(self) -> NATS:
        assert self._nc is not None, "process not started"
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None, "process not started"
        return self._js

    @property
    def service_id(self) -> str | None:
        return str(self._micro.id) if self._micro else None

    async def open_ledger(self, service: str | None = None, *, cluster: bool = False) -> Ledger:
        """Open this service's ledger (``shared.util.ledger``: its state and
        events, one write per change) and follow it (watch and event forwarder)
        until ``stop``; for ``setup``.  A host-scoped service opens its host's
        ledger, or with ``cluster`` the cluster-wide one.  The ledger's malformed
        records count in ``virtbus_<service>_bad_records``."""
        host = self.settings.host if self.host_scoped and not cluster else None
        # The embedded nats-server keeps JetStream under the same state folder.
        space = free_space_guard(self.settings.state_dir)
        ledger = Ledger(
            self.nc,
            self.js,
            service or self.name,
            host,
            space=space,
            on_event_failure=self.metrics.event_failed,
        )
        await ledger.open(self.settings.stream_replicas)
        self._ledgers.append(ledger)
        self.spawn(ledger.follow(), f"ledger-{ledger.stream}")
        return ledger

    def _set(self, state: RunState) -> None:
        self.state = state
        self.history.append(state)
        self.state_changed(state)

    def state_changed(self, state: RunState) -> None:
        """Called on each change of run state, as it happens (override to observe)."""

    def _not_ready_reason(self) -> str | None:
        if self.state is not RunState.RUNNING:
            return str(self.state.value)
        if self._supervisor is not None and self._supervisor.done():
            return "a task of the process failed"
        if self._nc is None or not self._nc.is_connected:
            return "not connected to NATS"
        return None

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` in the process's task group until it returns or the process
        stops (it is then cancelled and awaited).  If it raises, the process fails."""
        assert self._group is not None, "process not started"
        task = self._group.create_task(coro, name=f"{self.name}:{name}")
        self._background.add(task)
        task.add_done_callback(self._task_ended)
        return task

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The group cancels the others now; ``wait`` returns at once, not
            # when they are all gone (see ``cancel_until_done``).
            self._end.set()

    async def start(self) -> None:
        """Connect, open state, serve the endpoints and HTTP; undo it all on failure.

        Raises ``RuntimeError`` when the process was started before, and whatever
        stopped a step (``VirtError`` ``VIR_ERR_NO_CONNECT`` without NATS).
        """
        if self.state is not RunState.NEW:
            raise RuntimeError(f"cannot start a process that is {self.state.value}")
        self._set(RunState.STARTING)
        async with AsyncExitStack() as outer:
            # Undone in reverse: the state becomes ``stopping``, each step of
            # ``_open`` is undone (their errors leave together), the state
            # becomes ``stopped``.
            outer.callback(self._set_stopped)
            steps = Teardown(self.name)
            outer.push_async_exit(steps)
            outer.callback(self._set, RunState.STOPPING)
            await self._open(steps)
            self._stack = outer.pop_all()
        self._set(RunState.RUNNING)
        log.info(
            "service started",
            extra={"service": self.name, "id": self.service_id, "http_port": self.http.port},
        )

    async def _open(self, stack: Teardown) -> None:
        """Every step of ``start``, each pushing its undo onto ``stack``."""
        if self._nc is None:
            role = roles.process_role(self.name, self.settings.host)
            self._nc = await bus.connect(
                self.settings.nats_url,
                f"virtbus-{self.name}",
                creds=credentials.find(role, self.settings.creds),
                tls_ca=self.settings.tls_ca,
                deadline=self.settings.nats_connect_timeout,
            )
            stack.push_async_callback(bus.close, self._nc)
        self._js = self._nc.jetstream()
        await ensure_stream(self._js, self.settings.stream_replicas)
        host = self.settings.host if self.host_scoped else None

        group_ready: asyncio.Future[asyncio.TaskGroup] = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(
            self._own_tasks(group_ready), name=f"{self.name}-tasks"
        )
        stack.push_async_callback(self._end_group)
        self._group = await group_ready
        self.spawn(self._jetstream.poll(self._js), "jetstream-figures")

        await self.setup(stack)
        stack.push_async_callback(self._end_background)

        bindings = self.endpoints()
        check_bindings(self.endpoint_table, bindings)
        self._micro = await add_service(
            self._nc,
            name=self.name,
            version=VERSION,
            description=self.description,
            queue_group=f"virtbus-{self.name}",
            metadata={"host": self.settings.host},
            stats_handler=self._endpoint_stats,
        )
        stack.push_async_callback(self._end_requests)
        for bound in bindings:
            await self._serve(self._micro, bound, host)
        # Requests sent right after start must find the subscriptions.
        await bus.settle(self._nc)
        await self.http.start(self.settings.http_host, self.settings.http_port)
        stack.push_async_callback(self.http.stop)

    def _set_stopped(self) -> None:
        self._set(RunState.STOPPED)
        self._stopped.set()

    async def _own_tasks(self, ready: asyncio.Future[asyncio.TaskGroup]) -> None:
        """Own the task group until ``_end_group``; a crashed task ends it early."""
        try:
            async with asyncio.TaskGroup() as group:
                ready.set_result(group)
                await self._halt.wait()
        finally:
            # Tell wait() (run_main) that the process has nothing left running.
            self._end.set()

    async def _serve(self, micro: Service, bound: Bound[Any, Any], host: str | None) -> None:
        endpoint = bound.endpoint
        counters = self._counters[endpoint.micro_name] = Counters()
        slots = asyncio.Semaphore(endpoint.concurrency)

        async def run(request: Request, beat: asyncio.Task[None] | None) -> None:
            try:
                await answer(bound, request, self.metrics, counters)
            finally:
                slots.release()
                if beat is not None:
                    beat.cancel()

        async def inline(request: Request) -> None:
            if self._closing():
                await _refuse(request, self.name)
                return
            await answer(bound, request, self.metrics, counters)

        async def dispatch(request: Request) -> None:
            inbox = (request.headers or {}).get(HEARTBEAT_HEADER)
            beat = self._request_task(self._heartbeat(inbox, endpoint)) if inbox else None
            # nats-py runs one subscription's callbacks one after another, so
            # waiting here for a free slot pushes back on the sender.
            await slots.acquire()
            if self._closing():
                slots.release()
                if beat is not None:
                    beat.cancel()
                await _refuse(request, self.name)
                return
            self._request_task(run(request, beat))

        await micro.add_endpoint(
            name=endpoint.micro_name,
            subject=endpoint.subject(host),
            handler=inline if endpoint.inline else dispatch,
            metadata={
                "request": endpoint.request.__name__,
                "reply": endpoint.reply.__name__,
                "concurrency": "inline" if endpoint.inline else str(endpoint.concurrency),
            },
        )

    def _closing(self) -> bool:
        """Whether the process takes no more requests (stopping, or not started)."""
        return self._halt.is_set() or self._end.is_set() or self._group is None

    def _request_task(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self._group is not None
        task = self._group.create_task(coro)
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)
        return task

    async def _heartbeat(self, inbox: str, endpoint: Endpoint[Any, Any]) -> None:
        """Tell the caller of a long request, until it is answered, that this
        instance is alive and working on it (``shared.util.api.HEARTBEAT_HEADER``).
        The first beat goes a second after the request came: the caller looks
        only after ``HEARTBEAT_LOST_SECONDS``, and most long calls (a volume's
        creation) are answered well before, so they cost no beat at all."""
        beat = json.dumps({"service": self.name, "id": self.service_id, "endpoint": endpoint.name})
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self.nc.publish(inbox, beat.encode())
            except NatsError as err:  # the connection is gone: so is the caller's answer
                log.debug("heartbeat not sent", extra={"error": repr(err)})
                return

    def _endpoint_stats(self, stats: EndpointStats) -> dict[str, Any]:
        """The ``data`` of an endpoint in ``$SRV.STATS``: our own counters."""
        counters = self._counters.get(stats.name)
        return counters.stats() if counters is not None else {}

    async def _end_requests(self) -> None:
        """Stop taking requests; let those under way answer, then cancel the rest."""
        micro, self._micro = self._micro, None
        if micro is not None:
            await micro.stop()
        if self._requests:
            _, late = await asyncio.wait(set(self._requests), timeout=DRAIN_SECONDS)
            await cancel_until_done(late)

    async def _end_background(self) -> None:
        """Cancel the background tasks and wait until they have ended."""
        await cancel_until_done(set(self._background))

    async def _end_group(self) -> None:
        """End the task group; a task's crash is raised here (as the group's error)."""
        await cancel_until_done(set(self._background) | set(self._requests))
        self._halt.set()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            await supervisor

    async def stop(self) -> None:
        """Stop serving and release everything; calling it again does nothing.

        Raises an ``ExceptionGroup`` of whatever failed while stopping, a
        crashed task of the process included.
        """
        if self.state is RunState.NEW:
            self._set(RunState.STOPPED)
            return
        if self.state is RunState.STARTING:
            raise RuntimeError("a process is stopped while starting by cancelling start()")
        if self.state is not RunState.RUNNING:
            await self._stopped.wait()
            return
        stack, self._stack = self._stack, None
        assert stack is not None
        await stack.aclose()
        self._nc = self._given_nc
        log.info("service stopped", extra={"service": self.name})

    def request_stop(self) -> None:
        """Make ``wait`` return (safe from a signal handler)."""
        self._end.set()

    async def wait(self) -> None:
        """Until ``request_stop`` is called or a task of the process crashed."""
        await self._end.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def run_main(
    process_type: type[ServiceProcess[S]],
    settings_type: type[S],
    argv: Sequence[str] | None = None,
) -> int:
    """Entry point of a service process: runs until SIGINT/SIGTERM, exits 0 when clean."""
    settings = load_settings(settings_type, argv, prog=f"virtbus-{process_type.name}")
    setup_logging(settings.log_level, settings.log_format)

    async def main() -> None:
        process = process_type(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, process.request_stop)
        async with process:
            await process.wait()

    try:
        asyncio.run(main())
    except Exception as err:
        log.error("service failed: %s", err, exc_info=err)
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


async def _refuse(request: Request, name: str) -> None:
    """Answer a request that arrived while the process is ending."""
    body, headers = error_reply(
        VirtError(ErrorCode.OPERATION_FAILED, f"the {name} service is stopping", ErrorDomain.RPC)
    )
    await request.respond(body, headers=headers)
