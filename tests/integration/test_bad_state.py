"""Bad state never takes a service down: a malformed stored record is skipped and
counted, the rest served; a name that cannot be a key is refused as an invalid
argument or as not found, never as an internal error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from client.connection import Client
from client.storage import StorageClient
from services.secret.service import SecretService, SecretSettings
from services.storage.service import StorageService, StorageSettings
from shared.api import secret as secret_api
from shared.api import storage as storage_api
from shared.util.api import Endpoint, call
from shared.util.errors import ErrorCode, VirtError
from tests.conftest import ConnectAs

pytestmark = pytest.mark.integration

HOST = "h1"
SECRET = "<secret ephemeral='no' private='no'><usage type='ceph'><name>c</name></usage></secret>"
#: Names that are not valid KV keys or subject tokens, or that try to be wildcards.
ODD = ["", " ", "a b", "a.b", "*", ">", "a.>", "x\u00e9", "..", "$KV", "a\tb"]


async def _metric(port: int, name: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as reply,
    ):
        text = await reply.text()
    return next(line for line in text.splitlines() if line.startswith(name + " "))


async def test_a_malformed_secret_record_is_skipped_and_counted(
    nats_url: str, nc: NATS, connect_as: ConnectAs, tmp_path: Path
) -> None:
    settings = SecretSettings(nats_url=nats_url, state_dir=tmp_path / "s")
    client = Client(nc)
    async with SecretService(settings):
        good = await client.secret.define(SECRET)
    # What a bug, a bad restore or a hostile writer could leave in the ledger.
    as_secret = await connect_as("secret")
    bad = "0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f"
    ack = await as_secret.jetstream().publish(
        f"virtbus.ledger.secret.cluster.secret.{bad}", b"{not json"
    )
    assert ack.seq > 0
    async with SecretService(settings) as svc:
        assert [s.uuid for s in await client.secret.list()] == [good]
        with pytest.raises(VirtError) as missing:
            await client.secret.dumpxml(bad)
        assert missing.value.code is ErrorCode.NO_SECRET
        assert await _metric(svc.http.port, "virtbus_secret_bad_records") == (
            "virtbus_secret_bad_records 1.0"
        )


async def test_secret_names_that_are_not_keys_are_refused_cleanly(
    nats_url: str, nc: NATS, tmp_path: Path
) -> None:
    settings = SecretSettings(nats_url=nats_url, state_dir=tmp_path / "s")
    async with SecretService(settings):
        for uuid in ODD:
            endpoints: tuple[Endpoint[secret_api.UuidRequest, Any], ...] = (
                secret_api.DUMPXML,
                secret_api.UNDEFINE,
                secret_api.GET_VALUE,
            )
            for endpoint in endpoints:
                with pytest.raises(VirtError) as refused:
                    await call(nc, endpoint, secret_api.UuidRequest(uuid=uuid))
                assert refused.value.code in (ErrorCode.NO_SECRET, ErrorCode.INVALID_ARG), (
                    endpoint.name,
                    uuid,
                    refused.value,
                )
            with pytest.raises(VirtError) as refused:
                request = secret_api.SetValueRequest(uuid=uuid, value="eA==")
                await call(nc, secret_api.SET_VALUE, request)
            assert refused.value.code in (ErrorCode.NO_SECRET, ErrorCode.INVALID_ARG), uuid


@pytest.fixture
async def storage_settings(nats_url: str, tmp_path: Path) -> StorageSettings:
    return StorageSettings(nats_url=nats_url, state_dir=tmp_path / "storage", host=HOST)


async def test_a_malformed_pool_record_is_skipped_and_counted(
    storage_settings: StorageSettings, nc: NATS, connect_as: ConnectAs, tmp_path: Path
) -> None:
    pool = (
        f"<pool type='dir'><name>good</name><target><path>{tmp_path / 'p'}</path></target></pool>"
    )
    async with StorageService(storage_settings):
        await StorageClient(nc, HOST).pool_define(pool)
    # Written into the host's ledger as the storage service writes its records.
    js = (await connect_as("storage")).jetstream()
    key = f"virtbus.ledger.storage.{HOST}.pool.{HOST}"
    await js.publish(f"{key}.11111111-2222-4333-8444-555555555555", b"[1, 2")
    await js.publish(f"{key}.11111111-2222-4333-8444-666666666666", b'{"xml": "<pool/>"}')
    async with StorageService(storage_settings) as svc:
        names = [p.name for p in await StorageClient(nc, HOST).pool_list()]
        assert names == ["good"]
        assert await _metric(svc.http.port, "virtbus_storage_bad_records") == (
            "virtbus_storage_bad_records 2.0"
        )


@pytest.fixture
async def storage(storage_settings: StorageSettings, nc: NATS) -> AsyncIterator[StorageClient]:
    async with StorageService(storage_settings):
        yield StorageClient(nc, HOST)


async def test_pool_and_volume_names_that_are_not_keys_are_refused_cleanly(
    storage: StorageClient, tmp_path: Path
) -> None:
    await storage.pool_define(
        f"<pool type='dir'><name>p</name><target><path>{tmp_path / 'p'}</path></target></pool>"
    )
    await storage.pool_start("p", storage_api.BuildMode.BUILD)
    fine = (
        ErrorCode.NO_STORAGE_POOL,
        ErrorCode.NO_STORAGE_VOL,
        ErrorCode.INVALID_ARG,
        ErrorCode.OPERATION_INVALID,
    )
    for name in ODD:
        for attempt in (
            storage.pool_info(name),
            storage.pool_dumpxml(name),
            storage.vol_info(storage_api.VolRef(pool="p", name=name)),
            storage.vol_info(storage_api.VolRef(pool=name, name="v")),
        ):
            with pytest.raises(VirtError) as refused:
                await attempt
            assert refused.value.code in fine, (name, refused.value)
