"""nats-server killed and restarted under a running secret service: the service
reconnects by itself and nothing acknowledged is lost (sync_interval: always)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client.connection import Client
from client.events import subscribe
from services.secret.service import SecretService, SecretSettings
from shared.util.errors import VirtError
from shared.util.natsserver import EmbeddedNats

pytestmark = pytest.mark.integration


async def test_event_subscription_resumes_after_nats_restart(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    settings = SecretSettings(nats_url=nats_server.url, state_dir=tmp_path / "s")
    async with (
        SecretService(settings),
        await Client.connect(nats_server.url) as c,
        subscribe(c.nc) as events,
    ):
        first = await c.secret.define("<secret><usage type='tls'><name>x</name></usage></secret>")
        assert (await asyncio.wait_for(anext(events), 30)).data.name == first
        nats_server.kill()
        await nats_server.start()
        second = None
        for _ in range(300):  # until service and client have both reconnected
            try:
                second = await c.secret.define(
                    "<secret><usage type='tls'><name>y</name></usage></secret>"
                )
                break
            except VirtError:
                await asyncio.sleep(0.1)
        assert second is not None
        got = await asyncio.wait_for(anext(events), 60)
        assert (got.data.name, got.data.detail) == (second, "Defined")


async def test_service_survives_nats_sigkill(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    settings = SecretSettings(nats_url=nats_server.url, state_dir=tmp_path / "s")
    async with SecretService(settings):
        async with await Client.connect(nats_server.url) as c:
            uuid = await c.secret.define(
                "<secret><usage type='tls'><name>a</name></usage></secret>"
            )
            await c.secret.set_value(uuid, b"v1")

        nats_server.kill()
        await nats_server.start()

        async with await Client.connect(nats_server.url, deadline=15) as c:
            for _ in range(100):  # until the service has reconnected and re-subscribed
                try:
                    infos = await c.secret.list()
                    break
                except VirtError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("service did not come back after the NATS restart")
            assert [i.uuid for i in infos] == [uuid]
            assert await c.secret.get_value(uuid) == b"v1"
            other = await c.secret.define(
                "<secret><usage type='tls'><name>b</name></usage></secret>"
            )
            assert other != uuid
