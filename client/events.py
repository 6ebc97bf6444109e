"""Reading the event stream, and printing events the way ``virsh event`` does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

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


def _start(replay: bool, since: datetime | None, from_seq: int | None) -> ConsumerConfig:
    """Where the consumer starts: a sequence, a time, the oldest event, or now."""
    if from_seq is not None:
        return ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=from_seq
        )
    if since is not None:
        return ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since.astimezone(UTC)
        )
    return ConsumerConfig(deliver_policy=DeliverPolicy.ALL if replay else DeliverPolicy.NEW)


@asynccontextmanager
async def subscribe(
    nc: NATS,
    subject: str = EVENT_WILDCARD,
    *,
    replay: bool = False,
    since: datetime | None = None,
    from_seq: int | None = None,
) -> AsyncIterator[AsyncIterator[CloudEvent]]:
    """Events from now on; or stored ones first: from the start of the stream
    (``replay``), from the first stored at or after ``since``, or from stream
    sequence ``from_seq``.

    An ordered consumer: it survives reconnects and never delivers out of order.
    """
    js = nc.jetstream()
    # A one-second heartbeat lets the ordered consumer notice a lost server
    # (and re-create itself from the last sequence seen) within seconds
    # instead of nats-py's default of five-second heartbeats.
    sub = await js.subscribe(
        subject,
        stream=STREAM,
        ordered_consumer=True,
        idle_heartbeat=1.0,
        config=_start(replay, since, from_seq),
    )

    async def events() -> AsyncIterator[CloudEvent]:
        async for msg in sub.messages:
            yield CloudEvent.model_validate_json(msg.data)

    try:
        yield events()
    finally:
        await sub.unsubscribe()
