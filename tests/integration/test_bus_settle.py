"""bus.settle: a subscription made before it is visible to every other connection.

nats-py's own flush can return before the server has seen the subscriptions
still waiting in its pending buffer; a service that answers ``start`` too
early then sends a first client to "no responders".  Many rounds make the
race, which hit about one round in ten with a single flush, show up.
"""

from __future__ import annotations

import nats
from nats.aio.msg import Msg

from shared.util import bus


async def test_subscriptions_are_visible_after_settle(nats_url: str) -> None:
    requester = await nats.connect(nats_url)

    async def answer(msg: Msg) -> None:
        await msg.respond(b"ok")

    try:
        for round_ in range(200):
            server = await nats.connect(nats_url)
            try:
                for k in range(20):
                    await server.subscribe(f"settle.{round_}.{k}", queue="q", cb=answer)
                await bus.settle(server)
                reply = await requester.request(f"settle.{round_}.19", b"", timeout=5)
                assert reply.data == b"ok"
            finally:
                await server.close()
    finally:
        await requester.close()
