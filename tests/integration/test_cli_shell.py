"""The interactive shell (``virtbus`` without a command) driven through a pseudo-terminal,
against real services, behind a proxy that counts the shell's NATS connections."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from services.secret.service import SecretService, SecretSettings
from services.storage.service import StorageService, StorageSettings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
PROMPT = b"virtbus # "
#: How long to wait for the shell's next prompt before the test fails.
READ_TIMEOUT = 30.0


class Proxy:
    """A TCP proxy in front of nats-server: ``accepted`` counts client connections."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 4222
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"nats://127.0.0.1:{port}"


@pytest.fixture
async def proxy(nats_url: str, tmp_path: Path) -> AsyncIterator[tuple[Proxy, str]]:
    secret = SecretSettings(nats_url=nats_url, state_dir=tmp_path / "secret")
    storage = StorageSettings(nats_url=nats_url, state_dir=tmp_path / "storage", host="sh1")
    async with SecretService(secret), StorageService(storage):
        p = Proxy(nats_url)
        url = await p.start()
        assert p.server is not None
        async with p.server:
            yield p, url


class Terminal:
    """The shell on a pseudo-terminal: ``send`` keys, ``until`` reads up to a marker."""

    def __init__(self, url: str, home: Path) -> None:
        self.master, slave = pty.openpty()
        env = dict(os.environ, VIRTBUS_NATS_URL=url, HOME=str(home), TERM="dumb")
        env["XDG_CACHE_HOME"] = str(home / "cache")
        env.pop("VIRTBUS_HOST", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "client.cli.main"],
            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, close_fds=True,
        )  # fmt: skip
        os.close(slave)
        self.seen = b""

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def until(self, marker: bytes = PROMPT) -> str:
        """Everything printed up to and including ``marker`` (after what was read before)."""
        while marker not in self.seen:
            ready, _, _ = select.select([self.master], [], [], READ_TIMEOUT)
            assert ready, f"no {marker!r} from the shell; it printed {self.seen!r}"
            try:
                self.seen += os.read(self.master, 65536)
            except OSError:  # the shell ended
                break
        text, _, self.seen = self.seen.partition(marker)
        return (text + marker).decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=READ_TIMEOUT)
        finally:
            os.close(self.master)


def _in_thread(term: Terminal, keys: str, marker: bytes = PROMPT) -> asyncio.Future[str]:
    """Send ``keys`` and read to ``marker`` off the event loop (the proxy runs on it)."""

    def go() -> str:
        term.send(keys)
        return term.until(marker)

    return asyncio.ensure_future(asyncio.to_thread(go))


async def test_shell_through_a_pseudo_terminal(proxy: tuple[Proxy, str], tmp_path: Path) -> None:
    counter, url = proxy
    term = Terminal(url, tmp_path)
    try:
        banner = await asyncio.to_thread(term.until)
        assert banner.startswith("Welcome to virtbus")
        assert "'quit' to quit" in banner
        # what opening the connection takes (a reachability probe, then the connection)
        opened = counter.accepted

        out = await _in_thread(term, "secret-list\r")
        assert " UUID   Usage\n" in out
        target = tmp_path / "sp"
        out = await _in_thread(term, f"pool-create-as sp dir --target {target} --build\r")
        assert "Pool sp created" in out
        out = await _in_thread(term, "vol-create-as sp a.img 1M; vol-list sp\r")
        assert "Vol a.img created" in out and f" a.img   {target}/a.img" in out
        out = await _in_thread(term, "vol-info a.img sp --bytes\r")
        assert "Capacity:       1048576 bytes" in out
        out = await _in_thread(term, "vol-info\r")
        assert "error: command 'vol-info' requires <vol> option" in out
        # every command so far went over the shell's one connection
        assert counter.accepted == opened

        # TAB completes a command name, then an option of that command
        out = await _in_thread(term, "vol-inf\t", b"vol-info ")
        out = await _in_thread(term, "a.img sp --by\t", b"--bytes ")
        out = await _in_thread(term, "\r")
        assert "Capacity:       1048576 bytes" in out

        out = await _in_thread(term, "help vol-key\r")
        assert "    vol-key <vol> [--pool <string>]\n" in out

        # connect replaces the connection
        out = await _in_thread(term, f"connect {url}\r")
        assert "error" not in out
        assert counter.accepted == 2 * opened
        out = await _in_thread(term, "pool-list\r")
        assert " sp     active   no" in out
        assert counter.accepted == 2 * opened

        await asyncio.to_thread(term.send, "quit\r")
        assert await asyncio.to_thread(term.close) == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait()
    # readline kept the history
    history = (tmp_path / ".virtbus_history").read_text().splitlines()
    assert "vol-list sp" in " ".join(history) and history[-1] == "quit"
