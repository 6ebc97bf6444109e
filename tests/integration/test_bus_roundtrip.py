"""shared.util.bus.roundtrip against a real nats-server: every request gets its
own reply, a silent subject times out, an unserved one has no responders,
and the replies survive the server restarting under them."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from shared.util import bus
from shared.util.natsserver import EmbeddedNats
from tests.conftest import ConnectAs

pytestmark = pytest.mark.integration

#: The echo service's own subjects (its role may serve them).
SUBJECT = "virtbus.v1.echo.roundtrip"


async def _serve(connect_as: ConnectAs, delay: float = 0.0) -> NATS:
    server = await connect_as("echo")

    async def answer(msg: Msg) -> None:
        if delay:
            await asyncio.sleep(delay)
        await msg.respond(b"re:" + msg.data + (msg.headers or {}).get("X-Tag", "").encode())

    await server.subscribe(SUBJECT, cb=answer)
    await bus.settle(server)
    return server


async def test_each_request_gets_its_own_reply(nc: NATS, connect_as: ConnectAs) -> None:
    await _serve(connect_as, delay=0.01)
    replies = await asyncio.gather(
        *(bus.roundtrip(nc, SUBJECT, b"%d" % i, 5, headers={"X-Tag": f"/{i}"}) for i in range(50))
    )
    assert [r.data for r in replies] == [b"re:%d/%d" % (i, i) for i in range(50)]


async def test_an_unserved_subject_has_no_responders(nc: NATS) -> None:
    with pytest.raises(NoRespondersError):
        await bus.roundtrip(nc, SUBJECT, b"anyone?", 5)


async def test_a_silent_subject_times_out_and_a_late_reply_is_dropped(
    nc: NATS, connect_as: ConnectAs
) -> None:
    await _serve(connect_as, delay=0.5)
    with pytest.raises(NatsTimeoutError):
        await bus.roundtrip(nc, SUBJECT, b"slow", 0.1)
    await asyncio.sleep(0.6)  # the late reply arrives and finds nobody waiting
    assert (await bus.roundtrip(nc, SUBJECT, b"next", 5)).data == b"re:next"


async def test_replies_still_arrive_after_the_server_restarts(
    nc: NATS, connect_as: ConnectAs, nats_server: EmbeddedNats
) -> None:
    await _serve(connect_as)
    assert (await bus.roundtrip(nc, SUBJECT, b"before", 5)).data == b"re:before"
    nats_server.kill()
    await nats_server.start()
    for _ in range(100):  # both connections come back on their own
        try:
            reply = await bus.roundtrip(nc, SUBJECT, b"after", 1)
            break
        except (NoRespondersError, NatsTimeoutError):
            await asyncio.sleep(0.1)
    else:
        pytest.fail("no reply within 10 s of the restart")
    assert reply.data == b"re:after"
