"""A virtbus process: settings, NATS, a micro service with typed endpoints, HTTP.

``ServiceProcess`` is the base of every service.  Its run state moves
``new -> starting -> running -> stopping -> stopped``; ``start`` rolls back
whatever it set up when a step fails (or is cancelled), ``stop`` is
idempotent, drains the NATS connection it created and leaves alone one it was
given.  Background work (watchers, pollers, event pumps) is started with
``spawn`` and cancelled and awaited by ``stop``.  ``run_main`` is the entry
point of ``python -m services.<name>``: logs, settings, signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ClassVar, Generic, Self, TypeVar

from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext
from nats.micro import add_service
from nats.micro.service import Service

from shared.util import bus
from shared.util.api import Endpoint, serve
from shared.util.events import EventPublisher, ensure_stream
from shared.util.health import HealthServer
from shared.util.jsmetrics import JetStreamCollector
from shared.util.ledger import Ledger
from shared.util.logs import setup_logging
from shared.util.metrics import ProcessMetrics
from shared.util.settings import ProcessSettings, load_settings

log = logging.getLogger(__name__)

VERSION = "0.1.0"
_DRAIN_SECONDS = 10.0

S = TypeVar("S", bound=ProcessSettings)
HandlerTable = Sequence[tuple[Endpoint[Any, Any], Callable[[Any], Awaitable[Any]]]]


class RunState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class ServiceProcess(Generic[S]):
    """Base of every service process; subclasses give a name, handlers and state."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    host_scoped: ClassVar[bool] = False
    #: Requests of one endpoint handled at the same time (1: one after another).
    concurrency: ClassVar[int] = 1

    def __init__(self, settings: S, nc: NATS | None = None) -> None:
        self.settings = settings
        self.state = RunState.NEW
        self.metrics = ProcessMetrics(self.name)
        self._jetstream = JetStreamCollector().register(self.metrics.registry)
        self.http = HealthServer(self.metrics, self._not_ready_reason)
        self._given_nc = nc
        self._nc: NATS | None = nc
        self._js: JetStreamContext | None = None
        self._micro: Service | None = None
        self._events: EventPublisher | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight: set[asyncio.Task[None]] = set()

    # -- what subclasses provide -------------------------------------------------

    def handlers(self) -> HandlerTable:
        """The endpoint table: each endpoint with the coroutine that answers it."""
        raise NotImplementedError

    def concurrency_for(self, endpoint: Endpoint[Any, Any]) -> int:
        """How many requests of ``endpoint`` may run at once (default: ``concurrency``)."""
        return self.concurrency

    async def on_start(self) -> None:
        """Open state and reconcile; runs after NATS and the event stream are up."""

    async def on_stop(self) -> None:
        """Release what ``on_start`` acquired; runs before NATS is drained."""

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
    def events(self) -> EventPublisher:
        assert self._events is not None, "process not started"
        return self._events

    @property
    def service_id(self) -> str | None:
        return str(self._micro.id) if self._micro else None

    async def open_ledger(self) -> Ledger:
        """Open this service's ledger (``shared.util.ledger``: its state and
        events, one write per change) and run its watch and event forwarder
        until ``stop``; for ``on_start``."""
        host = self.settings.host if self.host_scoped else None
        ledger = Ledger(self.nc, self.js, self.name, host)
        await ledger.open()
        self.spawn(ledger.watch(), f"{self.name}-ledger-watch")
        self.spawn(ledger.forward_forever(), f"{self.name}-event-forwarder")
        return ledger

    def _not_ready_reason(self) -> str | None:
        if self.state is not RunState.RUNNING:
            return str(self.state.value)
        if self._nc is None or not self._nc.is_connected:
            return "not connected to NATS"
        return None

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` until ``stop``; a crash is logged, never swallowed silently."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background task %s failed", name, exc_info=t.exception())

        task.add_done_callback(done)

    def _spawn_request(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A request running as its own task; ``stop`` lets it finish."""
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return task

    async def start(self) -> None:
        """Connect, open state, register endpoints, serve HTTP.  Rolls back on failure."""
        if self.state is not RunState.NEW:
            raise RuntimeError(f"cannot start a process that is {self.state.value}")
        self.state = RunState.STARTING
        try:
            if self._nc is None:
                self._nc = await bus.connect(
                    self.settings.nats_url,
                    f"virtbus-{self.name}",
                    deadline=self.settings.nats_connect_timeout,
                )
            self._js = self._nc.jetstream()
            await ensure_stream(self._js)
            host = self.settings.host if self.host_scoped else None
            self._events = EventPublisher(self._js, self.name, host, self.metrics.event_failed)
            self.spawn(self._jetstream.poll(self._js), "jetstream-figures")
            await self.on_start()
            self._micro = await add_service(
                self._nc,
                name=self.name,
                version=VERSION,
                description=self.description,
                queue_group=f"virtbus-{self.name}",
                metadata={"host": self.settings.host},
            )
            for endpoint, handler in self.handlers():
                await serve(
                    self._micro,
                    endpoint,
                    handler,
                    self.metrics,
                    host,
                    concurrency=self.concurrency_for(endpoint),
                    spawn=self._spawn_request,
                )
            # Requests sent right after start must find the subscriptions.
            await self._nc.flush()
            await self.http.start(self.settings.http_host, self.settings.http_port)
        except BaseException:
            await self._teardown()
            self.state = RunState.STOPPED
            raise
        self.state = RunState.RUNNING
        log.info(
            "service started",
            extra={"service": self.name, "id": self.service_id, "http_port": self.http.port},
        )

    async def stop(self) -> None:
        """Stop serving and release everything; calling it again does nothing."""
        if self.state in (RunState.STOPPING, RunState.STOPPED, RunState.NEW):
            self.state = RunState.STOPPED
            return
        self.state = RunState.STOPPING
        await self._teardown()
        self.state = RunState.STOPPED
        log.info("service stopped", extra={"service": self.name})

    async def _teardown(self) -> None:
        """Undo start in reverse order, collecting errors instead of stopping at the first."""
        errors: list[BaseException] = []

        async def attempt(step: Awaitable[Any]) -> None:
            try:
                await step
            except asyncio.CancelledError:
                raise
            except Exception as err:
                errors.append(err)

        await attempt(self.http.stop())
        if self._micro is not None:
            await attempt(self._micro.stop())
            self._micro = None
        if self._inflight:
            # No new requests arrive now; let those under way answer.
            _, late = await asyncio.wait(set(self._inflight), timeout=_DRAIN_SECONDS)
            for task in late:
                task.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await attempt(task)
        await attempt(self.on_stop())
        if self._nc is not None and self._given_nc is None:
            await attempt(bus.close(self._nc))
        self._nc = None
        for err in errors:
            log.error("error while stopping: %s", err, exc_info=err)

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
        stop_requested = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_requested.set)
        await process.start()
        try:
            await stop_requested.wait()
        finally:
            await process.stop()

    try:
        asyncio.run(main())
    except Exception as err:
        log.error("service failed: %s", err)
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
