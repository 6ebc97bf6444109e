"""Reading the event stream, and printing events the way ``virsh event`` does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared.util.events import STREAM, CloudEvent
from shared.util.subjects import EVENT_WILDCARD

# virsh names the object of an event this way; domains are quoted, others not.
_LABEL = {
    "secret": "secret {name}",
    "pool": "storage pool {name}",
    "volume": "storage volume {name}",
    "network": "network {name}",
    "nwfilter": "network filter {name}",
    "domain": "domain '{name}'",
}


def format_event(event: CloudEvent) -> str:
    """One line as ``virsh event`` prints it, e.g.
    ``event 'lifecycle' for secret 0a81...: Defined``."""
    data = event.data
    label = _LABEL.get(data.object, data.object + " {name}").format(name=data.name)
    line = f"event '{data.event}' for {label}"
    if data.detail:
        line += f": {data.detail}"
    return line


def format_timestamp(event: CloudEvent) -> str:
    """virsh's ``--timestamp`` prefix: ``2026-11-26 10:00:00.123+0000``."""
    t = event.time
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}+0000"


@asynccontextmanager
async def subscribe(
    nc: NATS, subject: str = EVENT_WILDCARD, *, replay: bool = False
) -> AsyncIterator[AsyncIterator[CloudEvent]]:
    """Events from now on (or from the start of the stream with ``replay``).

    An ordered consumer: it survives reconnects and never delivers out of order.
    """
    js = nc.jetstream()
    policy = DeliverPolicy.ALL if replay else DeliverPolicy.NEW
    # A one-second heartbeat lets the ordered consumer notice a lost server
    # (and re-create itself from the last sequence seen) within seconds
    # instead of nats-py's default of five-second heartbeats.
    sub = await js.subscribe(
        subject,
        stream=STREAM,
        ordered_consumer=True,
        idle_heartbeat=1.0,
        config=ConsumerConfig(deliver_policy=policy),
    )

    async def events() -> AsyncIterator[CloudEvent]:
        async for msg in sub.messages:
            yield CloudEvent.model_validate_json(msg.data)

    try:
        yield events()
    finally:
        await sub.unsubscribe()
