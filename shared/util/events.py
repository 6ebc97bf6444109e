"""Durable events: CloudEvents 1.0 JSON in the ``VIRTBUS_EVENTS`` JetStream stream.

Every event goes to ``virtbus.event.<service>.<host>.<object>.<name>`` with
``Content-Type: application/cloudevents+json`` and ``Nats-Msg-Id`` set to the
event's id, so a publish retried after a lost acknowledgement is stored once
(the stream's duplicate window).  Services never publish events themselves:
each is derived from a ledger change by its forwarder (``shared.util.ledger``),
with an id derived from the change.  ``data`` always carries ``object`` (secret,
pool, volume, network, domain...), ``name``, ``event`` (virsh's event name:
``lifecycle``, ``value-changed``, ``refresh``, ``block-job-2``...) and
``detail`` (``Defined``, ``Started``...), plus fields of the event's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import nats.js.errors as jserr
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.client import JetStreamContext
from pydantic import BaseModel, Field

from shared.util.subjects import EVENT_STREAM, EVENT_WILDCARD

STREAM = EVENT_STREAM
CONTENT_TYPE = "application/cloudevents+json"
#: Events are kept a week; a consumer down for longer reconciles from state.
MAX_AGE_SECONDS = 7 * 24 * 3600
DUPLICATE_WINDOW_SECONDS = 120


class EventData(BaseModel):
    """The ``data`` of every virtbus event."""

    object: str
    name: str
    event: str
    detail: str | None = None
    host: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 structured-mode JSON event."""

    specversion: str = "1.0"
    id: str
    source: str
    type: str
    subject: str
    time: datetime
    datacontenttype: str = "application/json"
    data: EventData


def cloud_event(
    event_id: str,
    service: str,
    host: str | None,
    object_kind: str,
    name: str,
    event: str,
    detail: str | None = None,
    extra: dict[str, Any] | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """The envelope of one event of ``service`` (``host`` None: cluster-wide)."""
    return CloudEvent(
        id=event_id,
        source=f"/virtbus/{service}/{host or 'cluster'}",
        type=f"org.virtbus.{service}.{object_kind}.{event}",
        subject=name,
        time=time or datetime.now(UTC),
        data=EventData(
            object=object_kind,
            name=name,
            event=event,
            detail=detail,
            host=host,
            extra=extra or {},
        ),
    )


#: Rounds of find-or-create before a stream that cannot be made is an error.
_OPEN_TRIES = 10


async def find_or_add_stream(
    js: JetStreamContext, name: str, add: Callable[[], Awaitable[StreamInfo]]
) -> StreamInfo:
    """Stream ``name``'s info, made with ``add`` when it does not exist.

    Processes starting together race to create it; in a cluster the loser may
    then briefly find it neither creatable nor visible while the meta leader
    assigns it, and a stream whose replicas have not elected a leader yet
    leaves STREAM.INFO unanswered (a timeout), so both sides of the race are
    tried again for a while.
    """
    attempt = 0
    while True:
        try:
            try:
                return await js.stream_info(name)
            except jserr.NotFoundError:
                return await add()
        except (jserr.BadRequestError, jserr.ServiceUnavailableError, NatsTimeoutError):
            attempt += 1
            if attempt >= _OPEN_TRIES:
                raise
        await asyncio.sleep(min(1.0, 0.05 * 2**attempt))


async def ensure_stream(js: JetStreamContext, replicas: int = 1) -> None:
    """Create the event stream when it does not exist; leave it alone when it does."""
    config = StreamConfig(
        name=STREAM,
        subjects=[EVENT_WILDCARD],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=MAX_AGE_SECONDS,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        num_replicas=replicas,
    )
    await find_or_add_stream(js, STREAM, lambda: js.add_stream(config))
