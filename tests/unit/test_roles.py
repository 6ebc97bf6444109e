"""The role generator and the credential files, without a server (the server's
refusals are in tests/integration/test_permissions.py)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import pytest
from nats.aio.client import Client as NATS

from shared.api import agent as agent_api
from shared.api import network as network_api
from shared.api import nwfilter as nwfilter_api
from shared.api import secret as secret_api
from shared.api import storage as storage_api
from shared.api import storage_jobs as storage_jobs_api
from shared.util import bus, credentials, roles
from shared.util.api import Endpoint
from shared.util.credentials import Credentials, CredentialStore, split_url
from shared.util.errors import VirtError
from tests.memory_bus import matches

EVERY = roles.all_roles(["node1", "odd host.name"])

_covers = matches  # NATS wildcard matching of one subject by one pattern


def test_every_role_has_its_own_user_and_inbox() -> None:
    assert len({r.user for r in EVERY}) == len({r.inbox for r in EVERY}) == len(EVERY)
    names = {r.name for r in EVERY}
    assert names >= {*roles.SERVICES, "agent@node1", "agent@odd host.name", "admin", "readonly"}


@pytest.mark.parametrize("role", EVERY, ids=lambda r: r.name)
def test_nobody_may_read_everything_or_another_inbox(role: roles.Role) -> None:
    for pattern in role.permissions.subscribe:
        assert pattern not in (">", "_INBOX.>", "*.>")
        for other in EVERY:
            if other is not role:
                assert not _covers(pattern, other.inbox + ".x.y"), (pattern, other.name)


@pytest.mark.parametrize(
    "role", [r for r in EVERY if r.name != roles.OPERATOR], ids=lambda r: r.name
)
def test_no_role_deletes_a_stream_but_its_own_ledgers(role: roles.Role) -> None:
    own = roles.state_streams(role.name, ["node1"]) if role.name in roles.SERVICES else []
    streams = ("VIRTBUS_EVENTS", "KV_virtbus_secret", "VIRTBUS_LEDGER_network_node1", "X")
    for stream in streams:
        allowed = any(
            _covers(p, f"$JS.API.STREAM.DELETE.{stream}") for p in role.permissions.publish
        )
        assert allowed is (stream in own), (role.name, stream)


def _may(permissions: Any, subject: str) -> bool:
    """Whether ``permissions`` let a user publish to ``subject``."""
    allowed = any(_covers(p, subject) for p in permissions.publish)
    return allowed and not any(_covers(p, subject) for p in permissions.publish_deny)


def test_read_endpoints_by_convention() -> None:
    readonly = roles.readonly_role().permissions

    def may(subject: str) -> bool:
        return _may(readonly, subject)

    assert may("virtbus.v1.network.h1.net.list")
    assert may("virtbus.v1.nwfilter.binding.dumpxml")
    assert may("virtbus.v1.nwfilter.h1.binding.lookup.port")
    assert may("virtbus.v1.network.h1.net.dhcp.leases")
    assert not may("virtbus.v1.network.h1.net.define")
    assert not may("virtbus.v1.secret.value.get")
    assert not may("virtbus.v1.secret.internal.list")


def test_agents_are_named_by_host() -> None:
    role = roles.role_named("agent@node1")
    assert roles.process_role("agent-qemu", "node1") == "agent@node1"
    assert roles.process_role("storage", "node1") == "storage"
    assert any(p.startswith("virtbus.event.agent.node1.") for p in role.permissions.publish)
    with pytest.raises(ValueError):
        roles.role_named("root")


def test_a_url_carries_the_credentials_quoted() -> None:
    creds = Credentials("virtbus-agent@h:1", "p/w@x", "nats://127.0.0.1:4222")
    url = creds.url()
    assert url.startswith("nats://virtbus-agent%40h%3A1:p%2Fw%40x@127.0.0.1:4222")
    bare, back = split_url(url)
    assert bare == "nats://127.0.0.1:4222"
    assert back == creds
    assert back.role == "agent@h:1"
    assert split_url("nats://127.0.0.1:4222") == ("nats://127.0.0.1:4222", None)


def test_the_store_keeps_passwords_in_private_files(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "creds")
    first = store.ensure(["admin", "secret"], "nats://127.0.0.1:1")
    again = store.ensure(["admin", "secret", "storage"], "nats://127.0.0.1:2")
    assert again["admin"] == first["admin"] and again["secret"] == first["secret"]
    assert len(set(again.values())) == 3
    for name in again:
        path = store.path(name)
        assert stat.S_IMODE(path.stat().st_mode) in (0o600, 0o640)
        assert store.read(name).server == "nats://127.0.0.1:2"
    assert stat.S_IMODE(store.folder.stat().st_mode) in (0o700, 0o750)
    # Deleting a file rotates that role's password.
    store.path("admin").unlink()
    assert store.ensure(["admin"], "nats://127.0.0.1:2")["admin"] != first["admin"]


def test_find_takes_the_explicit_file_then_the_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CredentialStore(tmp_path / "creds")
    store.ensure(["admin", "readonly"], "nats://127.0.0.1:9")
    monkeypatch.setenv(credentials.ENV_DIR, str(store.folder))
    monkeypatch.delenv(credentials.ENV_FILE, raising=False)
    found = credentials.find("admin")
    assert found is not None and found.user == "virtbus-admin"
    assert credentials.find("storage") is None
    monkeypatch.setenv(credentials.ENV_FILE, str(store.path("readonly")))
    found = credentials.find("admin")
    assert found is not None and found.user == "virtbus-readonly"
    broken = tmp_path / "broken.creds"
    broken.write_text("nats://127.0.0.1:9\n")
    with pytest.raises(VirtError, match="authentication failed"):
        credentials.find("admin", broken)


class _Conn:
    """What ``private_channel`` reads of a connection: the server it is connected
    to (None between two connections) and the servers it may connect to."""

    def __init__(
        self, url: str | None, tls_required: bool = False, pool: tuple[str, ...] = ()
    ) -> None:
        self.connected_url = None if url is None else urlparse(url)
        self.servers = [urlparse(server) for server in pool or (url,) if server]
        self._server_info = {"tls_required": tls_required}


@pytest.mark.parametrize(
    ("url", "tls", "private"),
    [
        ("nats://127.0.0.1:4222", False, True),
        ("nats://localhost:4222", False, True),
        ("tls://nats.example:4222", False, True),
        ("nats://nats.example:4222", True, True),
        ("nats://10.0.0.5:4222", False, False),
    ],
)
def test_secret_values_travel_only_over_tls_or_loopback(url: str, tls: bool, private: bool) -> None:
    conn = cast(NATS, _Conn(url, tls))
    assert bus.private_channel(conn) is private
    if private:
        bus.require_private_channel(conn, "secret values")
    else:
        with pytest.raises(VirtError, match="operation forbidden: secret values travel only"):
            bus.require_private_channel(conn, "secret values")


@pytest.mark.parametrize(
    ("pool", "private"),
    [
        (("nats://127.0.0.1:4222",), True),
        (("tls://nats1.example:4222", "nats://localhost:4223"), True),
        (("nats://127.0.0.1:4222", "nats://10.0.0.5:4222"), False),
        ((), False),
    ],
    ids=["loopback", "tls and loopback", "one server in the clear", "no server"],
)
def test_between_connections_every_server_it_may_reach_decides(
    pool: tuple[str, ...], private: bool
) -> None:
    """While its server restarts, a connection is connected to none: a secret
    value sent then leaves on the next connection, to any server of its pool
    (the soak's kill of nats-server once had such a set-value refused)."""
    conn = cast(NATS, _Conn(None, pool=pool))
    assert bus.private_channel(conn) is private


def test_the_operator_maintains_jetstream_and_nothing_of_virtbus() -> None:
    operator = roles.operator_role().permissions
    assert any(_covers(p, "$JS.API.STREAM.UPDATE.VIRTBUS_EVENTS") for p in operator.publish)
    for subject in ("virtbus.v1.secret.list", "virtbus.event.secret.cluster.secret.x"):
        assert not any(_covers(p, subject) for p in operator.publish)
    assert operator.subscribe == ("_INBOX.operator.>",)


_API_TABLES = (agent_api, network_api, nwfilter_api, secret_api, storage_api, storage_jobs_api)
_ENDPOINTS = [e for table in _API_TABLES for e in table.ENDPOINTS]


def _expected(role: roles.Role, endpoint: Endpoint[Any, Any]) -> bool:
    """Who may send to an endpoint, as docs/security.md
    says: admin every public one, readonly the reads, a service only what
    ``roles.CALLS`` lists for it, agents and the operator none."""
    internal = endpoint.name.startswith("internal.")
    if role.name == roles.ADMIN:
        return not internal
    if role.name == roles.READONLY:
        tokens = endpoint.name.split(".")
        return not internal and (tokens[-1] in roles.READ_VERBS or roles.LOOKUP in tokens)
    calls = roles.CALLS.get(role.name, ())
    return any(
        service == endpoint.service and _covers(pattern, endpoint.name)
        for service, pattern, _ in calls
    )


@pytest.mark.parametrize("role", EVERY, ids=lambda r: r.name)
def test_each_role_reaches_exactly_its_endpoints(role: roles.Role) -> None:
    """Every endpoint of every service's table (a new endpoint of these tables
    included without naming it here) against every role's publish permissions."""
    for endpoint in _ENDPOINTS:
        host = "node1" if endpoint.host_scoped else None
        subject = endpoint.subject(host)
        assert _may(role.permissions, subject) is _expected(role, endpoint), (role.name, subject)
