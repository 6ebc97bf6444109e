"""JetStream's own figures as Prometheus metrics, read through the process's connection.

prometheus-nats-exporter is the tool for a real cluster (see
``deploy/prometheus/README.md``); this module gives every virtbus process the
few figures its alerts need without it: per stream its messages, bytes and
last sequence, per durable consumer its pending and unacknowledged messages
and redeliveries, and the account's JetStream storage against its limit.

Every process exports the same figures (they describe the shared server), so
the rules read them with ``max by (stream, consumer)``.  A poll task refreshes
a snapshot; the collector yields the snapshot, so a deleted consumer's series
disappears with it.  Names: ``virtbus_jetstream_<what>``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: How often the figures are read (Prometheus scrapes every 15 s by default).
POLL_SECONDS = 10.0


@dataclass
class Snapshot:
    """The figures of one poll."""

    streams: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    consumers: dict[tuple[str, str], tuple[int, int, int]] = field(default_factory=dict)
    storage_bytes: int | None = None
    storage_limit_bytes: int | None = None


async def read_snapshot(js: JetStreamContext) -> Snapshot:
    """Streams, their durable consumers and the account's storage, as the server says now."""
    snap = Snapshot()
    for info in await js.streams_info():
        name = info.config.name or ""
        state = info.state
        snap.streams[name] = (state.messages, state.bytes, state.last_seq)
        for consumer in await js.consumers_info(name):
            if not (consumer.config and consumer.config.durable_name):
                continue  # ephemeral: a watch or a one-off read, not lag anyone waits on
            snap.consumers[(name, consumer.name)] = (
                consumer.num_pending or 0,
                consumer.num_ack_pending or 0,
                consumer.num_redelivered or 0,
            )
    account = await js.account_info()
    snap.storage_bytes = account.storage
    limit = account.limits.max_storage if account.limits else None
    snap.storage_limit_bytes = limit if limit and limit > 0 else None
    return snap


class JetStreamCollector(Collector):
    """Yields the latest snapshot; ``poll`` keeps it fresh."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()
        self.up = 0

    def register(self, registry: CollectorRegistry) -> JetStreamCollector:
        registry.register(self)
        return self

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        up = GaugeMetricFamily(
            "virtbus_jetstream_figures_up", "1 when the last read of JetStream's figures worked"
        )
        up.add_metric([], self.up)
        yield up
        msgs = GaugeMetricFamily(
            "virtbus_jetstream_stream_messages", "Messages in the stream", labels=["stream"]
        )
        size = GaugeMetricFamily(
            "virtbus_jetstream_stream_bytes", "Bytes the stream stores", labels=["stream"]
        )
        last = GaugeMetricFamily(
            "virtbus_jetstream_stream_last_sequence", "Last sequence number", labels=["stream"]
        )
        for stream, (count, nbytes, seq) in sorted(snap.streams.items()):
            msgs.add_metric([stream], count)
            size.add_metric([stream], nbytes)
            last.add_metric([stream], seq)
        yield from (msgs, size, last)
        labels = ["stream", "consumer"]
        pending = GaugeMetricFamily(
            "virtbus_jetstream_consumer_pending_messages",
            "Messages the durable consumer has not been delivered yet (its lag)",
            labels=labels,
        )
        unacked = GaugeMetricFamily(
            "virtbus_jetstream_consumer_ack_pending_messages",
            "Messages delivered and not acknowledged yet",
            labels=labels,
        )
        redelivered = GaugeMetricFamily(
            "virtbus_jetstream_consumer_redelivered_messages",
            "Messages delivered more than once",
            labels=labels,
        )
        for key, (lag, ack, redo) in sorted(snap.consumers.items()):
            pending.add_metric(list(key), lag)
            unacked.add_metric(list(key), ack)
            redelivered.add_metric(list(key), redo)
        yield from (pending, unacked, redelivered)
        if snap.storage_bytes is not None:
            used = GaugeMetricFamily(
                "virtbus_jetstream_storage_bytes", "JetStream file storage the account uses"
            )
            used.add_metric([], snap.storage_bytes)
            yield used
        if snap.storage_limit_bytes is not None:
            limit = GaugeMetricFamily(
                "virtbus_jetstream_storage_limit_bytes",
                "JetStream file storage the account may use",
            )
            limit.add_metric([], snap.storage_limit_bytes)
            yield limit

    async def poll(self, js: JetStreamContext, every: float = POLL_SECONDS) -> None:
        """Refresh the snapshot until cancelled; a failed read sets ``figures_up`` to 0."""
        while True:
            try:
                self.snapshot = await read_snapshot(js)
                self.up = 1
            except (NatsError, TimeoutError, OSError) as err:
                self.up = 0
                log.debug("JetStream figures not read: %s", err)
            await asyncio.sleep(every)
