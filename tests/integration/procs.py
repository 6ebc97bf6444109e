"""Starting virtbus processes as real subprocesses for tests, and waiting for them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from nats.aio.client import Client as NATS

from shared.util.subjects import service_subject

ROOT = Path(__file__).resolve().parents[2]


def start_service(
    module: str,
    nats_url: str,
    state_dir: Path,
    log_path: Path,
    *,
    extra: Sequence[str] = (),
    pythonpath: str | None = None,
    python_args: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                *python_args,
                "-m",
                module,
                "--nats-url",
                nats_url,
                "--state-dir",
                str(state_dir),
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(state_dir.parent),
        )


async def wait_for_service(nc: NATS, name: str, proc: subprocess.Popen[bytes]) -> None:
    """Until ``$SRV.PING.<name>`` is answered; fails if the process exits first."""
    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}")
        try:
            await nc.request(service_subject("PING", name), b"", timeout=0.2)
            return
        except Exception:
            await asyncio.sleep(0.05)
    raise AssertionError(f"{name} did not answer $SRV.PING")


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def terminate(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
