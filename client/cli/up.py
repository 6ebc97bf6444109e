"""``virtbus up``: the whole local stack in the foreground.

Starts the embedded nats-server (unless ``--nats-url`` names one: then it joins
that server or cluster), then each service in its own process, waits until
every one answers ``$SRV.PING`` and its ``/readyz``, and prints the NATS URL
and each ``/metrics`` address.  A child that dies is restarted with
exponential backoff, and so is the embedded nats-server.  SIGINT or SIGTERM
stops the services, then the server, and exits 0.

The embedded server is authenticated: the first start makes a password per
role in ``<state-dir>/creds`` (see ``shared.util.credentials``), each child
gets the file of its own role and the CLI of root finds the admin's there.
With ``--tls-cert``/``--tls-key`` the server speaks only TLS and every child
verifies it against ``--tls-ca``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from nats.aio.client import Client as NATS

from client.cli.table import Args
from shared.util import bus, credentials, roles
from shared.util.errors import VirtError
from shared.util.logs import setup_logging
from shared.util.natsserver import EmbeddedNats, TlsFiles, free_port
from shared.util.settings import default_state_dir
from shared.util.subjects import service_subject

log = logging.getLogger("virtbus.up")

#: The processes of the local stack: (service name, module run with -m).
STACK: list[tuple[str, str]] = [
    ("secret", "services.secret"),
    ("nwfilter", "services.nwfilter"),
    ("storage", "services.storage"),
    ("network", "services.network"),
    ("agent-qemu", "agents.qemu"),
]

_READY_TIMEOUT = 60.0
_MAX_BACKOFF = 30.0


@dataclass
class Child:
    name: str
    module: str
    http_port: int
    proc: asyncio.subprocess.Process | None = None
    backoff: float = 1.0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/metrics"


class Stack:
    """The embedded server and the service processes, supervised."""

    def __init__(
        self,
        state_dir: Path,
        nats_url: str | None,
        nats_port: int,
        domains_dir: Path | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.domains_dir = domains_dir
        self.host = socket.gethostname()
        self.tls = tls
        self.server = (
            None
            if nats_url
            else EmbeddedNats(
                state_dir / "nats",
                nats_port,
                hosts=[self.host],
                creds_dir=state_dir / "creds",
                tls=tls,
            )
        )
        self.nats_url = nats_url or (self.server.url if self.server else "")
        self.children = [Child(name, module, free_port()) for name, module in STACK]
        self._stopping = False
        # One connection and one HTTP session serve every readiness check.
        self._nc: NATS | None = None
        self._http: aiohttp.ClientSession | None = None

    def _command(self, child: Child) -> list[str]:
        extra = []
        if child.name == "agent-qemu" and self.domains_dir is not None:
            extra = ["--domains-dir", str(self.domains_dir)]
        return [
            sys.executable,
            "-m",
            child.module,
            "--nats-url",
            self.nats_url,
            "--state-dir",
            str(self.state_dir / child.name),
            "--http-port",
            str(child.http_port),
            "--host",
            self.host,
            *extra,
            *self._security_args(child),
        ]

    def _security_args(self, child: Child) -> list[str]:
        """Each child's own credentials, and the CA that signs the server's certificate."""
        args = []
        if self.server is not None:
            role = roles.process_role(child.name, self.host)
            args += ["--creds", str(self.server.credentials.path(role))]
        if self.tls is not None and self.tls.ca is not None:
            args += ["--tls-ca", str(self.tls.ca)]
        return args

    async def _spawn(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(*self._command(child))
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    async def _wait_ready(self, child: Child) -> None:
        assert self._nc is not None and self._http is not None, "stack not running"
        loop = asyncio.get_running_loop()
        end = loop.time() + _READY_TIMEOUT
        url = f"http://127.0.0.1:{child.http_port}/readyz"
        while loop.time() < end:
            if child.proc is None or child.proc.returncode is not None:
                raise RuntimeError(f"{child.name} exited while starting")
            try:
                await self._nc.request(service_subject("PING", child.name), b"", timeout=0.5)
                async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            except Exception as err:  # no responders yet
                log.debug("waiting for %s: %s", child.name, err)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{child.name} not ready after {_READY_TIMEOUT:.0f}s")

    async def _supervise(self, child: Child) -> None:
        """Restart ``child`` with exponential backoff whenever it exits."""
        while not self._stopping:
            assert child.proc is not None
            code = await child.proc.wait()
            if self._stopping:
                return
            log.error(
                "%s exited with status %s; restarting in %.0fs", child.name, code, child.backoff
            )
            await asyncio.sleep(child.backoff)
            child.backoff = min(child.backoff * 2, _MAX_BACKOFF)
            await self._spawn(child)
            try:
                await self._wait_ready(child)
                child.backoff = 1.0
                log.info("%s is back", child.name)
            except RuntimeError as err:
                log.error("%s", err)

    async def _supervise_server(self) -> None:
        """Restart the embedded nats-server (same port, same store) whenever it exits."""
        server = self.server
        assert server is not None
        backoff = 1.0
        while not self._stopping:
            proc = server.proc
            if proc is None or proc.poll() is not None:
                log.error("nats-server exited; restarting in %.0fs", backoff)
                await asyncio.sleep(backoff)
                if self._stopping:
                    return
                try:
                    await server.start()
                    backoff = 1.0
                    log.info("nats-server is back")
                except VirtError as err:
                    log.error("%s", err)
                    backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            await asyncio.sleep(0.2)

    async def run(self, stop: asyncio.Event) -> None:
        if self.server is not None:
            await self.server.start()
        try:
            admin = (
                self.server.credentials.read(roles.ADMIN)
                if self.server is not None
                else credentials.find(roles.ADMIN)
            )
            self._nc = await bus.connect(
                self.nats_url,
                "virtbus-up",
                creds=admin,
                tls_ca=self.tls.ca if self.tls else None,
                deadline=_READY_TIMEOUT,
            )
            self._http = aiohttp.ClientSession()
            for child in self.children:
                await self._spawn(child)
            await asyncio.gather(*(self._wait_ready(c) for c in self.children))
            print(f"NATS: {self.nats_url}", flush=True)
            if self.server is not None:
                print(f"credentials: {self.server.credentials.folder}", flush=True)
            for child in self.children:
                print(f"{child.name}: {child.metrics_url}", flush=True)
            print("virtbus is up; Ctrl-C stops it", flush=True)
            async with asyncio.TaskGroup() as tg:
                if self.server is not None:
                    tg.create_task(self._supervise_server())
                for child in self.children:
                    tg.create_task(self._supervise(child))
                await stop.wait()
                self._stopping = True
                await self._stop_children()
        finally:
            self._stopping = True
            await self._stop_children()
            if self._http is not None:
                await self._http.close()
            if self._nc is not None:
                await bus.close(self._nc)
            if self.server is not None:
                await self.server.stop()

    async def _stop_children(self) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.returncode is None:
                child.proc.terminate()
        for child in self.children:
            if child.proc is None:
                continue
            try:
                await asyncio.wait_for(child.proc.wait(), 15)
            except TimeoutError:
                child.proc.kill()
                await child.proc.wait()


def up(args: Args) -> int:
    setup_logging(os.environ.get("VIRTBUS_LOG_LEVEL", "INFO"), "text")
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    domains_dir = Path(args.domains_dir).absolute() if args.domains_dir else None
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            print("error: --tls-cert and --tls-key go together", file=sys.stderr)
            return 1
        ca = Path(args.tls_ca).resolve() if args.tls_ca else None
        tls = TlsFiles(Path(args.tls_cert).resolve(), Path(args.tls_key).resolve(), ca)
    nats_url = args.nats_url or args.connect
    stack = Stack(state_dir, nats_url, args.nats_port or 4222, domains_dir, tls)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stack.run(stop)

    try:
        asyncio.run(main())
    except (VirtError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"stopped": True}))
    with contextlib.suppress(Exception):
        log.info("virtbus stopped")
    return 0
