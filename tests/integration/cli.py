"""Running the ``virtbus`` CLI as a real subprocess from async tests."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    rc: int
    out: str
    err: str


#: Where the CLI caches the storage host it found for each server: the tests'
#: own folder, never the user's ~/.cache.
CACHE_HOME = Path(tempfile.gettempdir()) / f"virtbus-test-cache-{os.getuid()}"


def forget_hosts() -> None:
    """Empty the CLI's cache of discovered storage hosts."""
    (CACHE_HOME / "virtbus" / "hosts.json").unlink(missing_ok=True)


async def virtbus(url: str, *args: str, stdin: bytes | None = None) -> Result:
    env = dict(os.environ, VIRTBUS_NATS_URL=url, XDG_CACHE_HOME=str(CACHE_HOME))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client.cli.main",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())
