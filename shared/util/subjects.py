"""Every NATS subject virtbus uses is built here, and nowhere else.

API requests: ``virtbus.v1.<service>.<endpoint>`` for cluster-wide services
(secret) and ``virtbus.v1.<service>.<host>.<endpoint>`` for host-scoped ones
(storage, network, nwfilter).  Events: ``virtbus.event.<service>.<host>.<kind>.<name>``
where cluster-wide services use ``CLUSTER`` as the host token.
"""

from __future__ import annotations

import base64
import re

API_PREFIX = "virtbus.v1"
EVENT_PREFIX = "virtbus.event"
EVENT_WILDCARD = f"{EVENT_PREFIX}.>"
#: Host token of cluster-wide services in event subjects.
CLUSTER = "cluster"
#: The stream that stores every event (on ``EVENT_WILDCARD``).
EVENT_STREAM = "VIRTBUS_EVENTS"
#: Subjects of the services' ledgers: ``virtbus.ledger.<service>.<host>.<key>``.
LEDGER_PREFIX = "virtbus.ledger"
#: nats-server's JetStream API.
JS_API = "$JS.API"

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")


def token(value: str) -> str:
    """A subject token for ``value``: itself when it is a plain name, else a
    base64url form prefixed with ``=`` (names may hold dots, spaces, ``>``); valid
    both as a subject token and as a key of a ledger."""
    if _TOKEN.match(value):
        return value
    encoded = base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")
    return "=" + encoded


def untoken(value: str) -> str:
    """The name a subject token stands for (inverse of ``token``)."""
    if not value.startswith("="):
        return value
    data = value[1:]
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode()


def api_subject(service: str, endpoint: str, host: str | None = None) -> str:
    """The request subject of ``endpoint`` (dotted, e.g. ``pool.define``)."""
    if host is None:
        return f"{API_PREFIX}.{service}.{endpoint}"
    return f"{API_PREFIX}.{service}.{token(host)}.{endpoint}"


def service_subject(verb: str, name: str | None = None) -> str:
    """nats.micro's discovery subject: ``$SRV.PING``, ``$SRV.INFO.<name>``, ...
    (``verb`` is ``PING``, ``INFO`` or ``STATS``; without ``name``, every service)."""
    return f"$SRV.{verb}" if name is None else f"$SRV.{verb}.{name}"


def event_subject(service: str, host: str | None, kind: str, name: str) -> str:
    """The subject an event about object ``name`` of ``kind`` is published on."""
    return f"{EVENT_PREFIX}.{service}.{token(host or CLUSTER)}.{kind}.{token(name)}"


def event_filter(service: str = "*", host: str | None = "*", kind: str = "*") -> str:
    """A subscription filter over events; ``*`` matches any one token."""
    host_token = "*" if host == "*" else token(host or CLUSTER)
    return f"{EVENT_PREFIX}.{service}.{host_token}.{kind}.>"


# --- disks and block jobs (shared.api.blockjob) ---------------------------------------
#: Service token of host agents' events (every agent kind publishes as "agent").
AGENT = "agent"
#: Object kinds: an agent's per-domain events; the storage service's job commands.
DOMAIN_KIND = "domain"
BLOCKJOB_KIND = "blockjob"


def agent_domain_subject(host: str, domain: str) -> str:
    """Where the agent of ``host`` publishes a domain's inventory and job status."""
    return event_subject(AGENT, host, DOMAIN_KIND, domain)


def agent_domain_filter(host: str = "*") -> str:
    """Every agent domain event (of one host, or of all with ``*``)."""
    return event_filter(AGENT, host, DOMAIN_KIND)


def blockjob_command_subject(host: str, domain: str) -> str:
    """Where the storage service sends block-job commands for a domain of ``host``."""
    return event_subject("storage", host, BLOCKJOB_KIND, domain)


def blockjob_command_filter(host: str) -> str:
    """Every block-job command for the domains of ``host``."""
    return event_filter("storage", host, BLOCKJOB_KIND)


def ledger_name(service: str, host: str | None) -> str:
    """The stream name of a service's ledger (per host for host-scoped services)."""
    if host is None:
        return f"VIRTBUS_LEDGER_{service}"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in token(host))
    return f"VIRTBUS_LEDGER_{service}_{safe}"


def js_api(operation: str) -> str:
    """The JetStream API subject of ``operation`` (``STREAM.INFO.<stream>``)."""
    return f"{JS_API}.{operation}"
