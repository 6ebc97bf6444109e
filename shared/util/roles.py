"""Who may do what on the bus: the NATS permissions of every virtbus role, from one place.

The roles:

* one per service (``secret``, ``storage``, ``network``, ``nwfilter``): it serves
  ``virtbus.v1.<service>.>``, owns its state (its ledgers ``VIRTBUS_LEDGER_<service>`` and
  ``VIRTBUS_LEDGER_<service>_<host>`` on ``virtbus.ledger.<service>.>``) and
  nothing else of JetStream but consumers on the event stream, publishes its
  events on ``virtbus.event.<service>.>`` and calls only what ``CALLS`` lists;
* ``agent@<host>``: the host agents of one host; they serve and publish for
  that host only, and keep their records in that host's ledger only;
* ``admin``: every public endpoint, service discovery and event consumers of
  its own;
* ``readonly``: the read endpoints (by name: see ``READ_VERBS``), discovery and
  event consumers of its own; no change, no secret value;
* ``operator``: JetStream maintenance only (the NATS administrator's, root's
  only): no virtbus endpoint, no event, no inbox but its own.

Rules every role follows: nobody may subscribe to ``>`` or another user's
inbox (each role has its own ``inbox_prefix``; services answer through
response permissions), no client may create, update, purge or delete a
stream, and ``internal`` endpoints (``virtbus.v1.<service>.internal.>``) are
for the services ``CALLS`` names.  A service added later (network, nwfilter)
fits by these conventions without an edit here, unless it calls another
service.  docs/security.md is the reader's account.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.util.subjects import (
    API_PREFIX,
    EVENT_PREFIX,
    EVENT_STREAM,
    LEDGER_PREFIX,
    js_api,
    ledger_name,
    token,
)

#: The services that get a role of their own.
SERVICES: tuple[str, ...] = ("secret", "storage", "network", "nwfilter")
#: The agent kinds run by an ``agent@<host>`` user (micro service names).
AGENT_SERVICES: tuple[str, ...] = ("agent-qemu",)
#: Token of agents in event subjects (``virtbus.event.agent.<host>...``).
AGENT_EVENT_TOKEN = "agent"
ADMIN = "admin"
READONLY = "readonly"
OPERATOR = "operator"
AGENT = "agent"

#: The last token of an endpoint that only reads (``pool.list``, ``vol.info``,
#: ``secret dumpxml``), or any of its tokens for ``lookup`` (``lookup.uuid``).
#: ``value.get`` is not one: readonly sees no secret value.
READ_VERBS: tuple[str, ...] = (
    "list",
    "info",
    "dumpxml",
    "capabilities",
    "disks",
    "leases",
)
LOOKUP = "lookup"
#: The deepest endpoint name (in tokens) the read patterns cover.
_MAX_ENDPOINT_TOKENS = 4

#: Endpoints of other services a service calls: (service, endpoint pattern,
#: host-scoped).  Everything else of another service is closed to it.
CALLS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "storage": (
        ("secret", "lookup.>", False),
        ("secret", "internal.value.get", False),
        ("agent-qemu", "domain.>", True),
        ("agent-qemu", "job.list", True),
    ),
}


#: Events a service reads live, as a plain subscription rather than through a
#: consumer: (service, object kind) of the events, any host.
LISTENS: dict[str, tuple[tuple[str, str], ...]] = {
    "nwfilter": (("network", "lease"),),  # DHCP snooping learns addresses from leases
}


def inbox_prefix(role: str) -> str:
    """The reply inbox prefix of ``role``'s connections (nats-py ``inbox_prefix``)."""
    return f"_INBOX.{token(role)}"


def user_name(role: str) -> str:
    """The NATS user of ``role``."""
    return f"virtbus-{role}"


def agent_role(host: str) -> str:
    """The role of the agents of ``host``."""
    return f"{AGENT}@{host}"


def process_role(service: str, host: str) -> str:
    """The role a process of ``service`` runs as on ``host``."""
    return agent_role(host) if service in AGENT_SERVICES else service


def role_host(role: str) -> str | None:
    """The host of an agent role, else None."""
    kind, sep, host = role.partition("@")
    return host if sep and kind == AGENT else None


@dataclass(frozen=True)
class Permissions:
    """One NATS user's permissions (the server's ``permissions`` block)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    #: How many replies a user may send to each request it received (0: none).
    responses: int = 0

    def to_config(self) -> dict[str, object]:
        """The block as nats-server's configuration reads it (JSON is valid there)."""
        publish: dict[str, object] = {"allow": list(self.publish)}
        if self.publish_deny:
            publish["deny"] = list(self.publish_deny)
        subscribe = {"allow": list(self.subscribe)}
        config: dict[str, object] = {"publish": publish, "subscribe": subscribe}
        if self.responses:
            config["allow_responses"] = {"max": self.responses}
        return config


@dataclass(frozen=True)
class Role:
    """A role: its name, NATS user, reply inbox and permissions."""

    name: str
    permissions: Permissions

    @property
    def user(self) -> str:
        return user_name(self.name)

    @property
    def inbox(self) -> str:
        return inbox_prefix(self.name)


def _js(*operations: str) -> list[str]:
    return [js_api(op) for op in operations]


def _own_stream(stream: str, *, admin: bool) -> list[str]:
    """JetStream API subjects on one stream: info, create, direct and message
    reads, consumers; with ``admin`` also update, purge, delete and message delete."""
    subjects = _js(
        f"STREAM.INFO.{stream}",
        f"STREAM.CREATE.{stream}",
        f"STREAM.MSG.GET.{stream}",
        f"DIRECT.GET.{stream}",
        f"DIRECT.GET.{stream}.>",
        f"CONSUMER.CREATE.{stream}",
        f"CONSUMER.CREATE.{stream}.>",
        f"CONSUMER.DURABLE.CREATE.{stream}.*",
        f"CONSUMER.INFO.{stream}.*",
        f"CONSUMER.DELETE.{stream}.*",
        f"CONSUMER.MSG.NEXT.{stream}.*",
    )
    if admin:
        subjects += _js(
            f"STREAM.UPDATE.{stream}",
            f"STREAM.PURGE.{stream}",
            f"STREAM.DELETE.{stream}",
            f"STREAM.MSG.DELETE.{stream}",
        )
    return [*subjects, f"$JS.ACK.{stream}.>", f"$JS.FC.{stream}.>"]


def _event_consumer(durable: Iterable[str] = ("*",), *, pull: bool = True) -> list[str]:
    """Reading the event stream through consumers: ephemeral ones, and durable
    ones named ``durable`` (``*``: any name).  Never create, purge or delete it."""
    subjects = _js(f"STREAM.INFO.{EVENT_STREAM}", f"CONSUMER.CREATE.{EVENT_STREAM}")
    for name in durable:
        subjects += _js(
            f"CONSUMER.CREATE.{EVENT_STREAM}.{name}",
            f"CONSUMER.CREATE.{EVENT_STREAM}.{name}.>",
            f"CONSUMER.DURABLE.CREATE.{EVENT_STREAM}.{name}",
            f"CONSUMER.INFO.{EVENT_STREAM}.{name}",
            f"CONSUMER.DELETE.{EVENT_STREAM}.{name}",
        )
        if pull:
            subjects += _js(f"CONSUMER.MSG.NEXT.{EVENT_STREAM}.{name}")
            subjects.append(f"$JS.ACK.{EVENT_STREAM}.{name}.>")
    return [*subjects, f"$JS.FC.{EVENT_STREAM}.>"]


def _monitoring() -> list[str]:
    """What every process reads for its JetStream figures (shared.util.jsmetrics):
    names and counts of streams and consumers and the account's usage, never
    their messages."""
    return _js("INFO", "STREAM.LIST", "STREAM.NAMES", "CONSUMER.LIST.*", "CONSUMER.NAMES.*")


def _discovery(service: str) -> list[str]:
    """What a micro service named ``service`` subscribes to for ``$SRV`` discovery."""
    subscribe = [f"$SRV.{verb}" for verb in ("PING", "INFO", "STATS")]
    return [*subscribe, f"$SRV.*.{service}", f"$SRV.*.{service}.>"]


def _api(service: str, endpoint: str, host_scoped: bool, host: str = "*") -> str:
    if host_scoped:
        return f"{API_PREFIX}.{service}.{host}.{endpoint}"
    return f"{API_PREFIX}.{service}.{endpoint}"


_INTERNAL = (f"{API_PREFIX}.*.internal.>", f"{API_PREFIX}.*.*.internal.>")


def state_streams(service: str, hosts: Sequence[str]) -> list[str]:
    """The streams that hold ``service``'s state: its cluster ledger and its
    ledger on each of ``hosts``."""
    ledgers = [ledger_name(service, None), *(ledger_name(service, h) for h in hosts)]
    return list(dict.fromkeys(ledgers))


def service_role(service: str, hosts: Sequence[str] = ()) -> Role:
    """The role of the ``service`` process (any replica, on any of ``hosts``)."""
    publish = [
        f"{EVENT_PREFIX}.{service}.>",
        f"{LEDGER_PREFIX}.{service}.>",
    ]
    for stream in state_streams(service, hosts):
        publish += _own_stream(stream, admin=True)
    publish += _monitoring()
    publish += _js(f"STREAM.CREATE.{EVENT_STREAM}", *_event_reads())
    publish += _event_consumer()
    publish += [_api(*call) for call in CALLS.get(service, ())]
    publish += ["$SRV.PING.>"]  # finding the other services, as anyone may
    # A long request's heartbeats go to the inbox its caller names in a header
    # (shared.util.api.HEARTBEAT_HEADER), not to its reply subject: publishing
    # into inboxes, never reading them.
    publish += ["_INBOX.>"]
    discovery = _discovery(service)
    subscribe = [f"{API_PREFIX}.{service}.>", *discovery, inbox_prefix(service) + ".>"]
    subscribe += [f"{EVENT_PREFIX}.{src}.*.{kind}.>" for src, kind in LISTENS.get(service, ())]
    return Role(service, Permissions(tuple(publish), tuple(subscribe), responses=1))


def agent_role_of(host: str) -> Role:
    """The role of the agents of ``host``: they serve, publish and keep records
    (their ledger ``VIRTBUS_LEDGER_agent_<host>``) for that host only."""
    role = agent_role(host)
    host_token = token(host)
    publish = [
        f"{EVENT_PREFIX}.{AGENT_EVENT_TOKEN}.{host_token}.>",
        f"{LEDGER_PREFIX}.{AGENT_EVENT_TOKEN}.{host_token}.>",
    ]
    publish += _own_stream(ledger_name(AGENT_EVENT_TOKEN, host), admin=True)
    subscribe = [inbox_prefix(role) + ".>"]
    for service in AGENT_SERVICES:
        publish += _event_consumer([f"{service}-{host_token}"])
        subscribe.append(f"{API_PREFIX}.{service}.{host_token}.>")
        subscribe += _discovery(service)
    publish += _js(f"STREAM.CREATE.{EVENT_STREAM}", *_event_reads())
    publish += _monitoring()
    permissions = Permissions(
        tuple(dict.fromkeys(publish)), tuple(dict.fromkeys(subscribe)), responses=1
    )
    return Role(role, permissions)


def _read_endpoints() -> list[str]:
    """Subjects of the read endpoints of every service, cluster-wide or host-scoped."""
    subjects = []
    for depth in range(1, _MAX_ENDPOINT_TOKENS + 2):
        middle = ".*" * depth
        # ``lookup`` is a read as the last token (network's) as well.
        subjects += [f"{API_PREFIX}{middle}.{verb}" for verb in (*READ_VERBS, LOOKUP)]
    for before in range(1, _MAX_ENDPOINT_TOKENS + 1):
        # ... and before more tokens (``lookup.uuid``).
        subjects.append(f"{API_PREFIX}{'.*' * before}.{LOOKUP}.>")
    return subjects


def _event_reads() -> tuple[str, ...]:
    """Reading stored events by sequence or subject (no consumer needed)."""
    return (
        f"STREAM.MSG.GET.{EVENT_STREAM}",
        f"DIRECT.GET.{EVENT_STREAM}",
        f"DIRECT.GET.{EVENT_STREAM}.>",
    )


#: The durable consumers the processes of a host read the event stream with
#: (agents.qemu, services.storage.disk_events): no client may touch them.
INTERNAL_DURABLES: tuple[str, ...] = ("agent-qemu-{host}", "storage-disks-{host}")


def _internal_consumers(hosts: Sequence[str]) -> list[str]:
    """Every API and acknowledgement subject of the processes' durable consumers."""
    subjects = []
    for host in hosts:
        for pattern in INTERNAL_DURABLES:
            name = pattern.format(host=token(host))
            subjects += _js(
                f"CONSUMER.*.{EVENT_STREAM}.{name}",
                f"CONSUMER.*.{EVENT_STREAM}.{name}.>",
                f"CONSUMER.*.*.{EVENT_STREAM}.{name}",
            )
            subjects.append(f"$JS.ACK.{EVENT_STREAM}.{name}.>")
    return subjects


def _client(role: str, endpoints: list[str], hosts: Sequence[str]) -> Role:
    """A client role: ``endpoints``, discovery, and the event stream through
    consumers of its own (ephemeral or durable), never the processes' ones."""
    # STREAM.NAMES: a client finds the event stream by subject (nats-py's
    # js.subscribe without stream=).
    publish = [*endpoints, "$SRV.>", *_js("INFO", "STREAM.NAMES", *_event_reads())]
    publish += _event_consumer()
    subscribe = [inbox_prefix(role) + ".>"]
    deny = (*_INTERNAL, *_internal_consumers(hosts))
    return Role(role, Permissions(tuple(publish), tuple(subscribe), publish_deny=deny))


def admin_role(hosts: Sequence[str] = ()) -> Role:
    """Operators: every public endpoint, discovery, and event consumers of their own."""
    return _client(ADMIN, [f"{API_PREFIX}.>"], hosts)


def readonly_role(hosts: Sequence[str] = ()) -> Role:
    """Lists, XML, info and events: no change, no value."""
    return _client(READONLY, _read_endpoints(), hosts)


def operator_role() -> Role:
    """JetStream maintenance (stream limits, backups, repairs) as the NATS
    administrator does it: the JetStream API and nothing of virtbus's own API,
    events or inboxes.  Its credentials stay root's only."""
    publish = ["$JS.API.>", "$JS.ACK.>", "$JS.FC.>"]
    subscribe = [inbox_prefix(OPERATOR) + ".>"]
    return Role(OPERATOR, Permissions(tuple(publish), tuple(subscribe)))


def all_roles(hosts: Sequence[str], services: Sequence[str] = SERVICES) -> list[Role]:
    """Every role of a deployment whose agents run on ``hosts``."""
    roles = [service_role(s, hosts) for s in services]
    roles += [agent_role_of(h) for h in hosts]
    return [*roles, admin_role(hosts), readonly_role(hosts), operator_role()]


def role_named(name: str) -> Role:
    """The role called ``name`` (``secret``, ``agent@node1``, ``admin``...).

    Raises ``ValueError`` for a name that is none of them."""
    if name in SERVICES:
        return service_role(name)
    if name == ADMIN:
        return admin_role()
    if name == READONLY:
        return readonly_role()
    if name == OPERATOR:
        return operator_role()
    host = role_host(name)
    if host:
        return agent_role_of(host)
    raise ValueError(f"unknown role '{name}'")


def authorization(roles: Iterable[Role], passwords: dict[str, str]) -> dict[str, object]:
    """nats-server's ``authorization`` block: one user per role with its password."""
    users = [
        {
            "user": role.user,
            "password": passwords[role.name],
            "permissions": role.permissions.to_config(),
        }
        for role in roles
    ]
    return {"users": users}
