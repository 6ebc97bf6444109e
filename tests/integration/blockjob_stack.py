"""A running stack for the block-job tests: ``virtbus up`` (nats-server, the storage
service, the QEMU agent) in a temporary state folder, a real QEMU domain whose
XML and QMP socket sit in the agent's domains folder, and the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.util.credentials import read_file
from shared.util.natsserver import free_port
from tests.integration.cli import Result, virtbus
from tests.integration.qemu_domain import QemuFixture

DOMAIN = "web1"


async def read_until(stream: asyncio.StreamReader, marker: str, timeout: float) -> str:
    seen = ""
    async with asyncio.timeout(timeout):
        while marker not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"stream ended before {marker!r}: {seen}")
            seen += line.decode()
    return seen


@dataclass
class Cli:
    """The ``virtbus`` command against one NATS URL."""

    url: str

    async def run(self, *args: str) -> Result:
        return await virtbus(self.url, *args)

    async def ok(self, *args: str) -> Result:
        result = await virtbus(self.url, *args)
        assert result.rc == 0, f"{args}: rc {result.rc}\n{result.out}\n{result.err}"
        return result


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 30.0, every: float = 0.2
) -> None:
    """Until ``check()`` is true; fails after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise TimeoutError(f"not true after {timeout:.0f}s")
        await asyncio.sleep(every)


@asynccontextmanager
async def virtbus_up(state: Path) -> AsyncIterator[str]:
    """``virtbus up`` with its own server; yields its NATS URL, carrying the admin's
    user and password, once it is up."""
    port = free_port()
    env = dict(os.environ, VIRTBUS_LOG_LEVEL="DEBUG")
    with open(state.parent / "up.log", "wb") as log:
        up = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "client.cli.main", "up", "--nats-port", str(port),
            "--state-dir", str(state),
            stdout=asyncio.subprocess.PIPE, stderr=log, env=env,
        )  # fmt: skip
    try:
        assert up.stdout is not None
        await read_until(up.stdout, "virtbus is up", 120)
        admin = read_file(state / "creds" / "admin.creds")
        yield admin.url(f"nats://127.0.0.1:{port}")
    finally:
        if up.returncode is None:
            up.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(up.wait(), 40)
            except TimeoutError:
                up.kill()
                await up.wait()


@asynccontextmanager
async def qemu_domain(images: Path, domains: Path) -> AsyncIterator[QemuFixture]:
    """The test domain: a qcow2-on-raw chain with known data under a QEMU."""
    fixture = QemuFixture(DOMAIN, images, domains)
    fixture.make_chain()
    fixture.snapshot_reference()
    await fixture.start()
    try:
        yield fixture
    finally:
        await fixture.stop()


def dir_pool(name: str, path: Path) -> str:
    return f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"
