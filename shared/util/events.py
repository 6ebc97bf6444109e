"""Durable events: CloudEvents 1.0 JSON in the ``VIRTBUS_EVENTS`` JetStream stream.

Every event goes to ``virtbus.event.<service>.<host>.<object>.<name>`` with
``Content-Type: application/cloudevents+json`` and ``Nats-Msg-Id`` set to the
event's id, so a publish retried after a lost acknowledgement is stored once
(the stream's duplicate window).  ``data`` always carries ``object`` (secret,
pool, volume, network, domain...), ``name``, ``event`` (virsh's event name:
``lifecycle``, ``value-changed``, ``refresh``, ``block-job-2``...) and
``detail`` (``Defined``, ``Started``...), plus fields of the event's own.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import nats.js.errors as jserr
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from pydantic import BaseModel, Field

from shared.util.errors import no_space
from shared.util.subjects import EVENT_STREAM, EVENT_WILDCARD, event_subject

log = logging.getLogger(__name__)

STREAM = EVENT_STREAM
CONTENT_TYPE = "application/cloudevents+json"
#: Events are kept a week; a consumer down for longer reconciles from state.
MAX_AGE_SECONDS = 7 * 24 * 3600
DUPLICATE_WINDOW_SECONDS = 120
#: How long ``EventPublisher.publish`` retries an unanswered publish.
PUBLISH_DEADLINE = 10.0


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


async def ensure_stream(js: JetStreamContext, replicas: int = 1) -> None:
    """Create the event stream when it does not exist; leave it alone when it does."""
    try:
        await js.stream_info(STREAM)
        return
    except jserr.NotFoundError:
        pass
    config = StreamConfig(
        name=STREAM,
        subjects=[EVENT_WILDCARD],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=MAX_AGE_SECONDS,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        num_replicas=replicas,
    )
    try:
        await js.add_stream(config)
    except jserr.BadRequestError:
        # Created concurrently by another process: fine as long as it exists now.
        await js.stream_info(STREAM)


class EventPublisher:
    """Publishes one service's events with retries under one message id."""

    def __init__(
        self,
        js: JetStreamContext,
        service: str,
        host: str | None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._js = js
        self._service = service
        self._host = host
        #: Told the object kind of an event given up on (the process's failure counter).
        self._on_failure = on_failure

    async def publish(
        self,
        object_kind: str,
        name: str,
        event: str,
        detail: str | None = None,
        *,
        event_id: str | None = None,
        host: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> CloudEvent:
        """Publish one event and wait for the stream to store it.

        ``event_id`` should be derived from the change (a KV revision, a job
        id) so that a retried operation does not publish twice.
        """
        host = host if host is not None else self._host
        cloud = cloud_event(
            event_id or uuid.uuid4().hex,
            self._service,
            host,
            object_kind,
            name,
            event,
            detail,
            extra,
        )
        subject = event_subject(self._service, host, object_kind, name)
        payload = cloud.model_dump_json().encode()
        headers = {"Nats-Msg-Id": cloud.id, "Content-Type": CONTENT_TYPE}
        # Retried under one message id (stored at most once) until a deadline
        # well inside a client's 30 s timeout; a refusal for lack of room is
        # final at once, named as such.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_DEADLINE
        wait = 0.05
        while True:
            try:
                timeout = max(0.1, min(5.0, deadline - loop.time()))
                await self._js.publish(subject, payload, headers=headers, timeout=timeout)
                return cloud
            except jserr.APIError as err:
                self._failed(object_kind, cloud, err)
                description = err.description or str(err)
                if "resources" in description or "maximum" in description:
                    raise no_space(f"event {cloud.type}", description) from err
                raise
            except (NatsTimeoutError, NoRespondersError, ConnectionClosedError) as err:
                if loop.time() + wait >= deadline:
                    self._failed(object_kind, cloud, err)
                    raise
                log.warning("event publish retry", extra={"id": cloud.id, "error": repr(err)})
                await asyncio.sleep(wait)
                wait = min(wait * 2, 1.0)

    def _failed(self, object_kind: str, cloud: CloudEvent, err: Exception) -> None:
        if self._on_failure is not None:
            self._on_failure(object_kind)
        log.error(
            "event not stored", extra={"event": cloud.type, "id": cloud.id, "error": repr(err)}
        )
