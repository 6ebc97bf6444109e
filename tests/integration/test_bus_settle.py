"""bus.settle: a subscription made before it is visible to every other connection.

nats-py's own flush can return before the server has seen the subscriptions
still waiting in its pending buffer; a service that answers ``start`` too
early then sends a first client to "no responders".  Many rounds make the
race, which hit about one round in ten with a single flush, show up.
"""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from shared.util import bus
from shared.util.natsserver import EmbeddedNats


async def test_subscriptions_are_visible_after_settle(nats_server: EmbeddedNats, nc: NATS) -> None:
    async def answer(msg: Msg) -> None:
        await msg.respond(b"ok")

    url = nats_server.role_url("contract")
    for round_ in range(200):
        server = await bus.connect(url, "virtbus-contract", deadline=10)
        try:
            for k in range(20):
                await server.subscribe(f"virtbus.v1.contract.s{round_}.{k}", queue="q", cb=answer)
            await bus.settle(server)
            reply = await nc.request(f"virtbus.v1.contract.s{round_}.19", b"", timeout=5)
            assert reply.data == b"ok"
        finally:
            await server.close()
