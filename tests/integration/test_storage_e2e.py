"""End to end through the CLI against ``virtbus up``: a dir pool, a qcow2 volume on a
backing volume, clone, resize, a sparse 64 MiB upload and download, wipe, delete,
pool teardown, and every step's event as ``virtbus event --all`` prints it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from pathlib import Path

import pytest

from shared.util.natsserver import free_port
from tests.integration.cli import Result, virtbus

pytestmark = pytest.mark.e2e
MIB = 1 << 20


async def _read_until(stream: asyncio.StreamReader, marker: str, timeout: float) -> str:
    seen = ""
    async with asyncio.timeout(timeout):
        while marker not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"stream ended before {marker!r}: {seen}")
            seen += line.decode()
    return seen


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _with_hole(path: Path) -> None:
    """64 MiB: 8 MiB of data, a hole, 4 MiB of data at 40 MiB, a hole to the end."""
    with open(path, "wb") as f:
        f.write(os.urandom(8 * MIB))
        f.seek(40 * MIB)
        f.write(os.urandom(4 * MIB))
        f.truncate(64 * MIB)


async def test_storage_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    # The CLI finds the admin's credentials in the stack's state folder by itself.
    monkeypatch.setenv("VIRTBUS_STATE_DIR", str(tmp_path / "state"))
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client.cli.main", "up", "--nats-port", str(port),
        "--state-dir", str(tmp_path / "state"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    events: asyncio.subprocess.Process | None = None
    try:
        assert up.stdout is not None
        banner = await _read_until(up.stdout, "virtbus is up", 90)
        assert "storage: http://127.0.0.1:" in banner
        events = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "client.cli.main", "event", "--all", "--loop",
            env=dict(os.environ, VIRTBUS_NATS_URL=url),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(1.0)

        async def ok(*args: str) -> Result:
            r = await virtbus(url, *args)
            assert r.rc == 0, f"{args}: {r.err}"
            return r

        root = tmp_path / "pool"
        await ok("pool-define-as", "e2e", "dir", "--target", str(root))
        await ok("pool-build", "e2e")
        await ok("pool-start", "e2e")
        await ok("vol-create-as", "e2e", "base.qcow2", "16M", "--format", "qcow2")
        await ok(
            "vol-create-as", "e2e", "top.qcow2", "16M", "--format", "qcow2",
            "--backing-vol", "base.qcow2", "--backing-vol-format", "qcow2",
        )  # fmt: skip
        xml = (await ok("vol-dumpxml", "top.qcow2", "--pool", "e2e")).out
        assert f"<path>{root}/base.qcow2</path>" in xml
        await ok("vol-clone", "top.qcow2", "copy.qcow2", "--pool", "e2e")
        await ok("vol-resize", "copy.qcow2", "32M", "--pool", "e2e")
        info = (await ok("vol-info", "copy.qcow2", "--pool", "e2e")).out
        assert "Capacity:       32.00 MiB" in info

        src, back = tmp_path / "src.bin", tmp_path / "back.bin"
        _with_hole(src)
        await ok("vol-create-as", "e2e", "data.img", "64M", "--allocation", "0")
        await ok("vol-upload", "data.img", str(src), "--pool", "e2e", "--sparse")
        await ok("vol-download", "data.img", str(back), "--pool", "e2e", "--sparse")
        assert _sha256(back) == _sha256(src)
        assert back.stat().st_size == 64 * MIB
        assert back.stat().st_blocks * 512 <= 13 * MIB  # the holes came back as holes
        assert (root / "data.img").stat().st_blocks * 512 <= 13 * MIB

        await ok("vol-wipe", "data.img", "--pool", "e2e")
        for name in ("data.img", "copy.qcow2", "top.qcow2", "base.qcow2"):
            await ok("vol-delete", name, "--pool", "e2e")
        await ok("pool-destroy", "e2e")
        await ok("pool-undefine", "e2e")

        assert events.stdout is not None
        expected = [
            "event 'lifecycle' for storage pool e2e: Defined",
            "event 'lifecycle' for storage pool e2e: Created",
            "event 'lifecycle' for storage pool e2e: Started",
            "event 'lifecycle' for storage volume e2e/base.qcow2: Created",
            "event 'lifecycle' for storage volume e2e/top.qcow2: Created",
            "event 'lifecycle' for storage volume e2e/copy.qcow2: Created",
            "event 'lifecycle' for storage volume e2e/copy.qcow2: Resized",
            "event 'lifecycle' for storage volume e2e/data.img: Created",
            "event 'lifecycle' for storage volume e2e/data.img: Uploaded",
            "event 'lifecycle' for storage volume e2e/data.img: Wiped",
            "event 'lifecycle' for storage volume e2e/data.img: Deleted",
            "event 'lifecycle' for storage volume e2e/copy.qcow2: Deleted",
            "event 'lifecycle' for storage volume e2e/top.qcow2: Deleted",
            "event 'lifecycle' for storage volume e2e/base.qcow2: Deleted",
            "event 'lifecycle' for storage pool e2e: Stopped",
            "event 'lifecycle' for storage pool e2e: Undefined",
        ]
        seen: list[str] = []
        async with asyncio.timeout(20):
            while len(seen) < len(expected):
                line = (await events.stdout.readline()).decode().strip()
                if "storage" in line:
                    seen.append(line)
        assert seen == expected
    finally:
        for proc in (events, up):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGINT if proc is up else signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
