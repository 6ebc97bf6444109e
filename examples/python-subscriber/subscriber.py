"""A virtbus event subscriber in Python: nats-py and the CloudEvents SDK.

It reads events through a durable JetStream consumer of its own on the
``VIRTBUS_EVENTS`` stream: what it acknowledged is never delivered again, and
whatever was published while it was down is delivered when it comes back.
Each message body is a structured-mode CloudEvent (``application/cloudevents+json``),
which the SDK's JSON format reads (``JSONFormat().read``).  One JSON line per event on stdout.

    pip install nats-py 'cloudevents>=2'
    NATS_URL=nats://virtbus-readonly:PASSWORD@host:4222 NATS_INBOX_PREFIX=<the role's> \\
        python subscriber.py --durable my-tool [--filter 'virtbus.event.secret.>'] [--idle 3]

``--idle SECONDS`` exits 0 after that long without an event (for scripts and
tests); without it, it runs until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import nats
import nats.js.errors
from cloudevents.core.formats.json import JSONFormat
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

STREAM = "VIRTBUS_EVENTS"


async def run(durable: str, subject_filter: str, idle: float | None) -> None:
    nc = await nats.connect(
        os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        name=f"virtbus-subscriber-{durable}",
        # A virtbus role may receive replies on its own inbox prefix only.
        inbox_prefix=os.environ.get("NATS_INBOX_PREFIX", "_INBOX").encode(),
    )
    js = nc.jetstream()
    try:
        await js.consumer_info(STREAM, durable)
    except nats.js.errors.NotFoundError:
        # Made once; later runs find it with its position.
        await js.add_consumer(
            STREAM,
            ConsumerConfig(
                durable_name=durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.NEW,
                filter_subject=subject_filter,
                ack_wait=30,
                max_deliver=10,
            ),
        )
    sub = await js.pull_subscribe_bind(durable, STREAM)
    cloud_json = JSONFormat()
    loop = asyncio.get_running_loop()
    last = loop.time()
    try:
        while idle is None or loop.time() - last < idle:
            try:
                batch = await sub.fetch(100, timeout=1)
            except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either
                continue
            for msg in batch:
                event = cloud_json.read(None, msg.data)
                data = event.get_data()
                if not isinstance(data, dict):
                    data = {}
                line = {
                    "seq": msg.metadata.sequence.stream,
                    "type": event.get_type(),
                    "subject": msg.subject,
                    "detail": data.get("detail"),
                    "name": data.get("name"),
                }
                sys.stdout.write(json.dumps(line) + "\n")
                sys.stdout.flush()
                await msg.ack()
                last = loop.time()
    finally:
        # Acknowledgements are sent before close returns (drain would wait on
        # the pull subscription's pending request instead).
        await nc.flush()
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--durable", required=True, help="the consumer's name (yours)")
    parser.add_argument("--filter", default="virtbus.event.>", help="subjects to read")
    parser.add_argument("--idle", type=float, help="exit after this many seconds without events")
    args = parser.parse_args()
    try:
        asyncio.run(run(args.durable, args.filter, args.idle))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
