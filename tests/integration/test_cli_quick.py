"""The quick one-shot path against a real nats-server and storage and secret services:
what it imports, how it finds the storage host, and how it fails."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client.cli.session import with_credentials
from client.cli.wire import Wire
from services.secret.service import SecretService, SecretSettings
from services.storage.service import StorageService, StorageSettings
from tests.integration.cli import virtbus

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


@pytest.fixture
async def url(nats_url: str, tmp_path: Path) -> AsyncIterator[str]:
    secret = SecretSettings(nats_url=nats_url, state_dir=tmp_path / "secret")
    storage = StorageSettings(nats_url=nats_url, state_dir=tmp_path / "storage", host="q1")
    async with SecretService(secret), StorageService(storage):
        yield nats_url


async def test_wire_requests_and_gathers(url: str) -> None:
    # the admin's user and inbox, as a command finds them (VIRTBUS_CREDS_DIR)
    signed, inbox = with_credentials(url, None)

    def talk() -> tuple[bytes, str, int]:
        wire = Wire(signed, timeout=5, inbox_prefix=inbox)
        try:
            reply = wire.request("virtbus.v1.secret.list", b"{}")
            nobody = wire.request("virtbus.v1.storage.nohost.pool.list", b"{}")
            both = wire.gather("$SRV.PING.storage", first=5, settle=0.5)
            return reply.data, nobody.status, len(both)
        finally:
            wire.close()

    assert await asyncio.to_thread(talk) == (b'{"secrets":[]}', "503", 1)


def _run(url: str, cache: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """One command in a fresh interpreter; prints the heavy modules it loaded last."""
    probe = (
        "import sys\n"
        "from client.cli.main import main\n"
        f"rc = main({list(argv)!r})\n"
        "heavy = {'asyncio', 'nats', 'pydantic', 'json', 're', 'typing', 'enum'}\n"
        "heavy |= {'socket', 'lxml'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
        "sys.exit(rc)\n"
    )
    env = dict(os.environ, VIRTBUS_NATS_URL=url, XDG_CACHE_HOME=str(cache))
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT
    )


async def test_quick_commands_load_neither_asyncio_nor_models(url: str, tmp_path: Path) -> None:
    r = await virtbus(
        url, "pool-create-as", "qp", "dir", "--target", str(tmp_path / "qp"), "--build"
    )
    assert r.rc == 0, r.err
    assert (await virtbus(url, "vol-create-as", "qp", "a.img", "1M")).rc == 0
    cache = tmp_path / "cache"
    quick = (["secret-list"], ["pool-list"], ["vol-list", "qp"], ["vol-info", "a.img", "qp"])
    # The first storage command looks for the host ($SRV.PING, whose subject comes
    # from shared.util.subjects); once it is cached, none loads more than they need.
    for round_ in ("discovering", "steady"):
        for argv in quick:
            done = await asyncio.to_thread(_run, url, cache, *argv)
            assert done.returncode == 0, done.stderr
            if round_ == "steady":
                assert done.stdout.splitlines()[-1] == "[]", (argv, done.stdout)
    # the storage host was found once, and is remembered for this server
    assert json.loads((cache / "virtbus" / "hosts.json").read_text()) == {url: "q1"}


async def test_a_cached_host_that_is_gone_is_looked_for_again(url: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "virtbus").mkdir(parents=True)
    (cache / "virtbus" / "hosts.json").write_text(json.dumps({url: "gone"}))
    done = await asyncio.to_thread(_run, url, cache, "pool-list")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(" Name   State   Autostart\n")
    assert json.loads((cache / "virtbus" / "hosts.json").read_text()) == {url: "q1"}


def _closing_server() -> tuple[socket.socket, list[int]]:
    """A TCP port that accepts connections and closes them at once, counting them."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            seen.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, seen


@pytest.mark.parametrize("argv", [["vol-info", "v", "p"], ["pool-info", "p"], ["secret-list"]])
async def test_an_unreachable_server_fails_at_once_without_retrying(argv: list[str]) -> None:
    server, seen = _closing_server()
    port = server.getsockname()[1]
    try:
        r = await virtbus(f"nats://127.0.0.1:{port}", *argv)
    finally:
        server.close()
    assert r.rc == 1
    assert r.err.startswith(
        f"error: failed to connect to the hypervisor\n"
        f"error: cannot connect to NATS at nats://127.0.0.1:{port}: "
    )
    assert len(seen) == 1  # one attempt: a one-shot command does not retry
    r = await virtbus(f"nats://127.0.0.1:{port}", "--json", *argv)
    assert r.out == ""
    assert json.loads(r.err)["error"]["lines"][0] == "failed to connect to the hypervisor"
