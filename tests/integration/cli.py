"""Running the ``virtbus`` CLI as a real subprocess from async tests."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass


@dataclass
class Result:
    rc: int
    out: str
    err: str


async def virtbus(url: str, *args: str, stdin: bytes | None = None) -> Result:
    env = dict(os.environ, VIRTBUS_NATS_URL=url)
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
