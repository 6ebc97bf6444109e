"""`virtbus up` as a child of a test: started, read until it is up, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from shared.util.credentials import read_file


@dataclass
class UpStack:
    #: The server's URL, carrying the admin's user and password.
    url: str
    proc: asyncio.subprocess.Process
    #: The admin's reply inbox prefix (nats-py ``inbox_prefix``).
    inbox: str = "_INBOX.admin"
    #: Each process's name and the base URL of its /metrics, /healthz, /readyz.
    http: dict[str, str] = field(default_factory=dict)


@asynccontextmanager
async def virtbus_up(
    port: int, state_dir: Path, *, join: str | None = None
) -> AsyncIterator[UpStack]:
    """Run `virtbus up` until the block ends; it must then stop with status 0.
    ``join``: the URL of servers to join (``--nats-url``) instead of its own on ``port``."""
    where = ["--nats-url", join] if join else ["--nats-port", str(port)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client.cli.main", "up",
        *where, "--state-dir", str(state_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    stack = UpStack(join or f"nats://127.0.0.1:{port}", proc)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(90):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "virtbus up ended before it was up"
                if "virtbus is up" in line:
                    break
                m = re.match(r"([\w-]+): (http://\S+)/metrics", line)
                if m:
                    stack.http[m.group(1)] = m.group(2)
        if join is None:  # its own server: the admin's credentials it made
            admin = read_file(state_dir / "creds" / "admin.creds")
            stack.url, stack.inbox = admin.url(stack.url), admin.inbox_prefix
        else:
            stack.inbox = "_INBOX"
        yield stack
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
