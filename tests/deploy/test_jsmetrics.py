"""shared/util/jsmetrics.py reads JetStream's figures from a real server: a durable
consumer's lag, a stream's size, the account's storage, in the exposition format."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from prometheus_client import CollectorRegistry, generate_latest

from shared.util.jsmetrics import JetStreamCollector, read_snapshot
from shared.util.natsserver import free_port, nats_server_binary
from tests.integration.procs import terminate


@pytest.fixture
async def plain_nc(tmp_path: Path) -> AsyncIterator[NATS]:
    """A server without users: the test makes a stream, which no virtbus role may."""
    port = free_port()
    proc = subprocess.Popen(
        [nats_server_binary(), "-js", "-sd", str(tmp_path / "js"), "-a", "127.0.0.1",
         "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        nc = NATS()
        await nc.connect(f"nats://127.0.0.1:{port}", connect_timeout=2, max_reconnect_attempts=20)
        yield nc
        await nc.close()
    finally:
        terminate(proc)


async def test_consumer_lag_and_stream_figures(plain_nc: NATS) -> None:
    nc = plain_nc
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="LAGTEST", subjects=["lag.>"]))
    await js.add_consumer(
        "LAGTEST", ConsumerConfig(durable_name="slow", ack_policy=AckPolicy.EXPLICIT)
    )
    sub = await js.pull_subscribe_bind("slow", "LAGTEST")
    for i in range(7):
        await js.publish(f"lag.{i}", b"x" * 100)
    [first] = await sub.fetch(1, timeout=5)  # delivered, not acknowledged
    await js.subscribe("lag.>", stream="LAGTEST", ordered_consumer=True)  # ephemeral

    snap = await read_snapshot(js)
    assert snap.consumers == {("LAGTEST", "slow"): (6, 1, 0)}
    messages, size, last = snap.streams["LAGTEST"]
    assert (messages, last) == (7, 7) and size > 700
    assert snap.storage_bytes is not None and snap.storage_bytes >= size

    collector = JetStreamCollector()
    collector.snapshot, collector.up = snap, 1
    registry = CollectorRegistry()
    collector.register(registry)
    text = generate_latest(registry).decode()
    assert (
        'virtbus_jetstream_consumer_pending_messages{consumer="slow",stream="LAGTEST"} 6.0' in text
    )
    assert (
        'virtbus_jetstream_consumer_ack_pending_messages{consumer="slow",stream="LAGTEST"} 1.0'
        in text
    )
    assert 'virtbus_jetstream_stream_messages{stream="LAGTEST"} 7.0' in text
    assert "virtbus_jetstream_figures_up 1.0" in text
    await first.ack()
