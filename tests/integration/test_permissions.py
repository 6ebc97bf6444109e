"""Every role against every class of subject, on a real nats-server running the
generated authorization: what a role may not do, the server refuses.

The bare protocol client (``nats_wire``) speaks to the server directly, so a
refusal seen here is the server's, not a client library's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from shared.util import roles
from shared.util.natsserver import EmbeddedNats
from shared.util.subjects import api_subject, event_filter, event_subject
from tests.conftest import HOSTS
from tests.integration.nats_wire import Refused, Wire

HOST = "testhost"
OTHER = "jobhost"
AGENT = roles.agent_role(HOST)
CLIENTS = (roles.ADMIN, roles.READONLY)
EVERY = (*roles.SERVICES, AGENT, *CLIENTS)
#: Streams nobody but their owner may change: the events, the services' state.
STREAMS = (
    "VIRTBUS_EVENTS",
    "KV_virtbus_secret",
    "KV_virtbus_storage",
    "VIRTBUS_LEDGER_secret",
    "VIRTBUS_LEDGER_network_h1",
    "VIRTBUS_LEDGER_nwfilter",
    "VIRTBUS_LEDGER_nwfilter_h2",
)

Open = Callable[[str], Awaitable[Wire]]


@pytest.fixture
async def wire(nats_server: EmbeddedNats) -> AsyncIterator[Open]:
    opened: list[Wire] = []

    async def open_as(role: str) -> Wire:
        conn = await Wire.open(nats_server.role_url(role))
        opened.append(conn)
        return conn

    yield open_as
    for conn in opened:
        await conn.close()


async def refused_sub(conn: Wire, subject: str) -> bool:
    try:
        await conn.subscribe(subject)
    except Refused as err:
        assert "Permissions Violation for Subscription" in str(err)
        return True
    return False


async def refused_pub(conn: Wire, subject: str, payload: bytes = b"{}") -> bool:
    try:
        await conn.publish(subject, payload)
    except Refused as err:
        assert "Permissions Violation for Publish" in str(err)
        return True
    return False


async def test_anonymous_and_wrong_password_are_refused(nats_server: EmbeddedNats) -> None:
    with pytest.raises(Refused, match="Authorization Violation"):
        await Wire.open(nats_server.url)
    admin = nats_server.role_url(roles.ADMIN)
    wrong = admin.replace("@", "x@", 1)
    with pytest.raises(Refused, match="Authorization Violation"):
        await Wire.open(wrong)


@pytest.mark.parametrize("role", EVERY)
async def test_nobody_subscribes_to_everything_or_to_inboxes(wire: Open, role: str) -> None:
    conn = await wire(role)
    for subject in (">", "_INBOX.>", "*.>", "virtbus.>", "virtbus.event.>", "$JS.>", "$KV.>"):
        assert await refused_sub(conn, subject), (role, subject)
    for other in EVERY:
        if other != role:
            assert await refused_sub(conn, roles.inbox_prefix(other) + ".>"), (role, other)
    # Its own inbox it may read.
    await conn.subscribe(roles.inbox_prefix(role) + ".x")


@pytest.mark.parametrize("role", EVERY)
@pytest.mark.parametrize("operation", ["PURGE", "DELETE", "UPDATE"])
async def test_only_the_owner_purges_deletes_or_updates_a_stream(
    wire: Open, role: str, operation: str
) -> None:
    conn = await wire(role)
    for stream in STREAMS:
        owner = role in roles.SERVICES and stream in roles.state_streams(role, HOSTS)
        refused = await refused_pub(conn, f"$JS.API.STREAM.{operation}.{stream}")
        assert refused is not owner, (role, operation, stream)


@pytest.mark.parametrize("role", EVERY)
async def test_only_the_owner_reads_a_services_state(wire: Open, role: str) -> None:
    conn = await wire(role)
    for stream in STREAMS[1:]:  # the services' buckets and ledgers, not the events
        owner = role in roles.SERVICES and stream in roles.state_streams(role, HOSTS)
        for read in ("DIRECT.GET", "STREAM.MSG.GET", "CONSUMER.CREATE"):
            refused = await refused_pub(conn, f"$JS.API.{read}.{stream}")
            assert refused is not owner, (role, read, stream)


@pytest.mark.parametrize("role", EVERY)
async def test_only_a_listener_subscribes_to_live_events(wire: Open, role: str) -> None:
    """roles.LISTENS (the nwfilter service's lease events) and nothing more."""
    conn = await wire(role)
    for listener, sources in roles.LISTENS.items():
        for source, kind in sources:
            subject = event_filter(source, HOST, kind)
            assert await refused_sub(conn, subject) is (role != listener), (role, subject)
            assert await refused_sub(conn, event_filter(source, HOST, "x")), (role, source)


@pytest.mark.parametrize("role", EVERY)
async def test_nobody_creates_a_stream_or_bucket_of_its_own(wire: Open, role: str) -> None:
    conn = await wire(role)
    capture = json.dumps({"name": "CAPTURE", "subjects": ["virtbus.v1.secret.value.set"]})
    assert await refused_pub(conn, "$JS.API.STREAM.CREATE.CAPTURE", capture.encode())
    assert await refused_pub(conn, "$JS.API.STREAM.CREATE.KV_evil")
    # State lives in ledgers only: no role, the service itself included, makes
    # or writes a KV bucket; nor another service's ledger.
    for service in roles.SERVICES:
        bucket = f"virtbus_{service}"
        assert await refused_pub(conn, f"$JS.API.STREAM.CREATE.KV_{bucket}"), role
        assert await refused_pub(conn, f"$KV.{bucket}.x"), role
        if service != role:
            assert await refused_pub(conn, f"virtbus.ledger.{service}.h1.x"), role


@pytest.mark.parametrize("role", CLIENTS)
async def test_clients_read_events_through_consumers_only(wire: Open, role: str) -> None:
    conn = await wire(role)
    assert await refused_sub(conn, "virtbus.event.secret.cluster.secret.x")
    assert await refused_pub(conn, "$JS.API.STREAM.CREATE.VIRTBUS_EVENTS")
    assert await refused_pub(conn, event_subject("secret", None, "secret", "x"))
    # An ephemeral consumer, delivered to its own inbox, is allowed.
    assert not await refused_pub(conn, "$JS.API.CONSUMER.CREATE.VIRTBUS_EVENTS")
    # A durable consumer of its own too, but never one a process reads with.
    tool = "$JS.API.CONSUMER.{}.VIRTBUS_EVENTS.my-tool"
    assert not await refused_pub(conn, tool.format("DURABLE.CREATE"))
    assert not await refused_pub(conn, tool.format("CREATE"))
    assert not await refused_pub(conn, tool.format("CREATE") + ".virtbus.event.secret.>")
    assert not await refused_pub(conn, tool.format("MSG.NEXT"))
    for name in (f"agent-qemu-{HOST}", f"storage-disks-{OTHER}"):
        for operation in ("MSG.NEXT", "DELETE", "DURABLE.CREATE", "INFO"):
            subject = f"$JS.API.CONSUMER.{operation}.VIRTBUS_EVENTS.{name}"
            assert await refused_pub(conn, subject), subject
        assert await refused_pub(conn, f"$JS.API.CONSUMER.CREATE.VIRTBUS_EVENTS.{name}.x.>")
        assert await refused_pub(conn, f"$JS.ACK.VIRTBUS_EVENTS.{name}.1.2.3.4.5")


@pytest.mark.parametrize("role", EVERY)
async def test_only_nwfilter_subscribes_to_lease_events(wire: Open, role: str) -> None:
    # roles.LISTENS: a guest's MAC, address and hostname reach a plain
    # subscription of the nwfilter service's only (the others read the stream)
    conn = await wire(role)
    refused = await refused_sub(conn, event_filter("network", "*", "lease"))
    assert refused == (role != "nwfilter"), role


@pytest.mark.parametrize("role", [r for r in EVERY if r != "storage"])
async def test_internal_endpoints_are_for_the_services_that_call_them(
    wire: Open, role: str
) -> None:
    conn = await wire(role)
    assert await refused_pub(conn, api_subject("secret", "internal.value.get"))
    assert await refused_pub(conn, api_subject("network", "internal.x", HOST))


async def test_storage_may_ask_the_secret_service_for_a_value(wire: Open) -> None:
    conn = await wire("storage")
    assert not await refused_pub(conn, api_subject("secret", "internal.value.get"))
    assert await refused_pub(conn, api_subject("secret", "value.set"))


async def test_an_agent_acts_for_its_own_host_only(wire: Open) -> None:
    conn = await wire(AGENT)
    assert not await refused_pub(conn, event_subject("agent", HOST, "domain", "web1"))
    assert await refused_pub(conn, event_subject("agent", OTHER, "domain", "web1"))
    assert await refused_pub(conn, event_subject("storage", HOST, "blockjob", "web1"))
    assert await refused_sub(conn, api_subject("agent-qemu", "domain.list", OTHER))
    await conn.subscribe(api_subject("agent-qemu", "domain.list", HOST))
    assert not await refused_pub(conn, f"virtbus.ledger.agent.{HOST}.job.1")
    assert await refused_pub(conn, f"virtbus.ledger.agent.{OTHER}.job.1")
    assert not await refused_pub(conn, f"$JS.API.STREAM.INFO.VIRTBUS_LEDGER_agent_{HOST}")
    assert await refused_pub(conn, f"$JS.API.STREAM.INFO.VIRTBUS_LEDGER_agent_{OTHER}")
    assert await refused_pub(conn, f"$JS.API.STREAM.PURGE.VIRTBUS_LEDGER_agent_{OTHER}")
    # Its own durable consumer, not another host's agent's.
    assert not await refused_pub(
        conn, f"$JS.API.CONSUMER.MSG.NEXT.VIRTBUS_EVENTS.agent-qemu-{HOST}"
    )
    assert await refused_pub(conn, f"$JS.API.CONSUMER.MSG.NEXT.VIRTBUS_EVENTS.agent-qemu-{OTHER}")


async def test_a_service_serves_and_publishes_as_itself_only(wire: Open) -> None:
    conn = await wire("secret")
    await conn.subscribe(api_subject("secret", "define"))
    assert await refused_sub(conn, api_subject("storage", "pool.define", HOST))
    assert await refused_pub(conn, event_subject("storage", HOST, "pool", "p"))
    assert not await refused_pub(conn, event_subject("secret", None, "secret", "s"))
    assert await refused_pub(conn, api_subject("storage", "pool.list", HOST))


READS = [
    api_subject("secret", "list"),
    api_subject("secret", "dumpxml"),
    api_subject("secret", "lookup.uuid"),
    api_subject("storage", "pool.list", HOST),
    api_subject("storage", "vol.info", HOST),
    api_subject("storage", "pool.lookup.uuid", HOST),
    api_subject("network", "net.dumpxml", HOST),
    api_subject("nwfilter", "list"),
    api_subject("nwfilter", "binding.list", HOST),
    "$SRV.PING.secret",
]
CHANGES = [
    api_subject("secret", "define"),
    api_subject("secret", "value.set"),
    api_subject("secret", "value.get"),
    api_subject("secret", "undefine"),
    api_subject("storage", "pool.define", HOST),
    api_subject("storage", "vol.upload", HOST),
    api_subject("storage", "vol.download", HOST),
    api_subject("storage", "stream.0123", HOST),
    api_subject("storage", "blockjob.copy", HOST),
    api_subject("network", "net.start", HOST),
    api_subject("nwfilter", "define"),
]


async def test_readonly_reads_and_changes_nothing(wire: Open) -> None:
    conn = await wire(roles.READONLY)
    for subject in READS:
        assert not await refused_pub(conn, subject), subject
    for subject in CHANGES:
        assert await refused_pub(conn, subject), subject


async def test_admin_does_every_public_operation(wire: Open) -> None:
    conn = await wire(roles.ADMIN)
    for subject in READS + CHANGES:
        assert not await refused_pub(conn, subject), subject
