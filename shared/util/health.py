"""``/metrics``, ``/healthz`` and ``/readyz`` over aiohttp on the process's own port.

``/healthz`` answers 200 while the process runs; ``/readyz`` answers 200 only
while its readiness check passes (connected to NATS, state opened) and 503
with the reason otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from shared.util.metrics import ProcessMetrics

ReadyCheck = Callable[[], str | None]


class HealthServer:
    """The HTTP side of a process; ``ready`` returns None when ready, else why not."""

    def __init__(self, metrics: ProcessMetrics, ready: ReadyCheck) -> None:
        self._metrics = metrics
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/healthz", self._handle_healthz)
        app.router.add_get("/readyz", self._handle_readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle_metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _handle_healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _handle_readyz(self, _: web.Request) -> web.Response:
        reason = self._ready()
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")
