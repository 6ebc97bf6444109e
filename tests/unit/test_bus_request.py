"""shared.util.bus.request: a refused publish ends the request at once, and
only the refusal becomes ``VIR_ERR_ACCESS_DENIED``: a caller's own
cancellation stays a cancellation."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from nats.aio.client import Client as NATS

from shared.util import bus
from shared.util.errors import ErrorCode, VirtError


class _Silent:
    """A connection whose requests are never answered."""

    def __init__(self) -> None:
        self.sent = asyncio.Event()

    def new_inbox(self) -> str:
        return "_INBOX.silent"

    async def subscribe(self, subject: str, cb: Any = None) -> None:
        return None

    async def publish(
        self, subject: str, payload: bytes, reply: str = "", headers: Any = None
    ) -> None:
        self.sent.set()


def _refusal(subject: str) -> Exception:
    return Exception(f'nats: permissions violation for publish to "{subject}"')


async def test_a_refused_publish_is_access_denied() -> None:
    fake = _Silent()
    nc = cast(NATS, fake)
    call = asyncio.create_task(bus.request(nc, "virtbus.v1.Secret.define", b"{}", 30))
    await fake.sent.wait()

    assert bus._refused_publish(nc, _refusal("virtbus.v1.secret.define"))

    with pytest.raises(VirtError) as denied:
        await call
    assert denied.value.code is ErrorCode.ACCESS_DENIED
    assert not bus._refused_publish(nc, _refusal("virtbus.v1.secret.define"))


async def test_a_refusal_of_another_subject_leaves_the_request_waiting() -> None:
    fake = _Silent()
    nc = cast(NATS, fake)
    call = asyncio.create_task(bus.request(nc, "virtbus.v1.secret.define", b"{}", 30))
    await fake.sent.wait()

    assert not bus._refused_publish(nc, _refusal("virtbus.v1.secret.undefine"))
    await asyncio.sleep(0)

    assert not call.done()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_the_callers_cancellation_is_not_turned_into_a_refusal() -> None:
    fake = _Silent()
    nc = cast(NATS, fake)
    call = asyncio.create_task(bus.request(nc, "virtbus.v1.secret.define", b"{}", 30))
    await fake.sent.wait()

    call.cancel()
    bus._refused_publish(nc, _refusal("virtbus.v1.secret.define"))

    with pytest.raises(asyncio.CancelledError):
        await call
