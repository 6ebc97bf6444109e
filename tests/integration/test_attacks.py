"""The attacks of issue 10, each tried against real services on a real nats-server
running the generated authorization.  Each one worked before the bus was
authenticated; each is refused now, and the legitimate path still works."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from client.connection import Client
from client.storage import StorageClient
from services.secret.service import SecretService, SecretSettings
from services.storage.service import StorageService, StorageSettings
from shared.api import secret as secret_api
from shared.api import storage as storage_api
from shared.util import bus
from shared.util.api import call
from shared.util.errors import ErrorCode, VirtError
from shared.util.natsserver import EmbeddedNats
from shared.util.roles import ADMIN, READONLY
from shared.util.subjects import ledger_name
from tests.conftest import ConnectAs
from tests.integration.nats_wire import Refused, Wire

pytestmark = pytest.mark.integration

HOST = "h1"
PRIVATE = (
    "<secret ephemeral='no' private='yes'><description>luks</description>"
    "<usage type='volume'><volume>/img/luks</volume></usage></secret>"
)
VALUE = b"the private value"


@pytest.fixture
async def secret_service(nats_url: str, tmp_path: Path) -> AsyncIterator[SecretService]:
    settings = SecretSettings(nats_url=nats_url, state_dir=tmp_path / "secret", host=HOST)
    async with SecretService(settings) as svc:
        yield svc


@pytest.fixture
async def private_secret(secret_service: SecretService, nc: NATS) -> str:
    client = Client(nc)
    uuid = await client.secret.define(PRIVATE)
    await client.secret.set_value(uuid, VALUE)
    return uuid


async def test_anonymous_user_cannot_read_a_private_value(
    nats_server: EmbeddedNats, private_secret: str
) -> None:
    with pytest.raises(VirtError) as refused:
        await bus.connect(nats_server.url, "attacker", deadline=5)
    assert refused.value.code is ErrorCode.AUTH_FAILED
    assert str(refused.value).startswith("authentication failed: no credentials")
    # Even the operators may not call the services' internal endpoint.
    for role in (ADMIN, READONLY):
        conn = await Wire.open(nats_server.role_url(role))
        with pytest.raises(Refused, match="Permissions Violation for Publish"):
            await conn.publish(secret_api.GET_VALUE_INTERNAL.subject(), b"{}")
        await conn.close()


async def test_inbox_eavesdropping_is_refused(
    nats_server: EmbeddedNats, private_secret: str, connect_as: ConnectAs
) -> None:
    for role in (ADMIN, READONLY):
        spy = await Wire.open(nats_server.role_url(role))
        for inbox in ("_INBOX.>", "_INBOX.storage.>", ">"):
            with pytest.raises(Refused, match="Permissions Violation for Subscription"):
                await spy.subscribe(inbox)
        await spy.close()
    # The storage service still gets the value, on an inbox only it reads.
    storage = await connect_as("storage")
    request = secret_api.UuidRequest(uuid=private_secret)
    reply = await call(storage, secret_api.GET_VALUE_INTERNAL, request)
    assert base64.b64decode(reply.value) == VALUE


async def test_no_client_captures_values_in_a_stream_of_its_own(
    nats_server: EmbeddedNats, private_secret: str
) -> None:
    config = {"name": "CAPTURE", "subjects": [secret_api.SET_VALUE.subject()], "storage": "file"}
    for role in (ADMIN, READONLY):
        conn = await Wire.open(nats_server.role_url(role))
        with pytest.raises(Refused, match="Permissions Violation for Publish"):
            await conn.publish("$JS.API.STREAM.CREATE.CAPTURE", json.dumps(config).encode())
        await conn.close()


async def test_no_client_deletes_or_purges_the_secret_state(
    nats_server: EmbeddedNats, private_secret: str, nc: NATS
) -> None:
    """The secret service's state is its ledger stream (it was a KV bucket)."""
    for role in (ADMIN, READONLY):
        conn = await Wire.open(nats_server.role_url(role))
        for operation in ("DELETE", "PURGE"):
            with pytest.raises(Refused, match="Permissions Violation for Publish"):
                await conn.publish(f"$JS.API.STREAM.{operation}.{ledger_name('secret', None)}")
        await conn.close()
    assert [s.uuid for s in await Client(nc).secret.list()] == [private_secret]


@pytest.fixture
async def storage(nats_url: str, nc: NATS, tmp_path: Path) -> AsyncIterator[StorageClient]:
    settings = StorageSettings(nats_url=nats_url, state_dir=tmp_path / "storage", host=HOST)
    async with StorageService(settings):
        client = StorageClient(nc, HOST)
        pool = tmp_path / "images"
        await client.pool_define(
            f"<pool type='dir'><name>images</name><target><path>{pool}</path></target></pool>"
        )
        await client.pool_start("images", storage_api.BuildMode.BUILD)
        yield client


async def test_another_connection_cannot_write_into_an_upload(
    storage: StorageClient, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    await storage.vol_create(
        "images",
        "<volume><name>disk</name><capacity>65536</capacity>"
        "<target><format type='raw'/></target></volume>",
    )
    ref = storage_api.VolRef(pool="images", name="disk")
    request = storage_api.VolTransferRequest(vol=ref, offset=0, length=4096)
    opened = await call(storage.nc, storage_api.VOL_UPLOAD, request, host=HOST)
    # Another connection, even of the same user, that learnt the stream's subject.
    other = await bus.connect(nats_server.role_url(ADMIN), "intruder", deadline=5)
    try:
        msg = await other.request(
            opened.subject, b"X" * 4096, timeout=5, headers={"Virtbus-Offset": "0"}
        )
    finally:
        await bus.close(other)
    assert (msg.headers or {}).get("Virtbus-Error-Name") == "VIR_ERR_ACCESS_DENIED"
    assert json.loads(msg.data)["message"].startswith("access denied")
    with open(tmp_path / "images" / "disk", "rb") as f:
        assert f.read(4096) == bytes(4096)
    # The opener's own chunks still go in.
    data = os.urandom(4096)
    reply = await bus.roundtrip(
        storage.nc, opened.subject, data, 5, headers={"Virtbus-Offset": "0"}
    )
    assert not (reply.headers or {}).get("Virtbus-Error-Name")
    end = await bus.roundtrip(storage.nc, opened.subject, b"", 5, headers={"Virtbus-Kind": "end"})
    assert not (end.headers or {}).get("Virtbus-Error-Name")
    with open(tmp_path / "images" / "disk", "rb") as f:
        assert f.read(4096) == data


def _over(name: str, backing: Path) -> str:
    return (
        f"<volume><name>{name}</name><capacity>1048576</capacity>"
        "<target><format type='qcow2'/></target>"
        f"<backingStore><path>{backing}</path><format type='raw'/></backingStore></volume>"
    )


async def test_a_volume_over_a_host_file_is_refused(storage: StorageClient, tmp_path: Path) -> None:
    # A file of the host, outside every pool: the volume made over it would let
    # clone and download read it back.
    private = tmp_path / "shadow"
    private.write_bytes(b"root:$6$secret\n" * 100)
    with pytest.raises(VirtError) as refused:
        await storage.vol_create("images", _over("peek", private))
    assert refused.value.code is ErrorCode.OPERATION_DENIED
    assert str(refused.value).startswith(f"operation forbidden: backing store '{private}'")
    link = tmp_path / "images" / "innocent"
    link.symlink_to(private)
    with pytest.raises(VirtError, match="operation forbidden"):
        await storage.vol_create("images", _over("peek2", link))
    # A volume of a pool is a fine backing store.
    await storage.vol_create(
        "images",
        "<volume><name>base</name><capacity>1048576</capacity>"
        "<target><format type='raw'/></target></volume>",
    )
    made = await storage.vol_create("images", _over("top", tmp_path / "images" / "base"))
    assert made.name == "top"


async def test_the_admin_may_allow_backing_stores_under_a_path(
    nats_url: str, nc: NATS, tmp_path: Path
) -> None:
    shared = tmp_path / "templates"
    shared.mkdir()
    (shared / "base.raw").write_bytes(bytes(1 << 20))
    settings = StorageSettings(
        nats_url=nats_url, state_dir=tmp_path / "s", host=HOST, backing_paths=str(shared)
    )
    async with StorageService(settings):
        client = StorageClient(nc, HOST)
        pool = tmp_path / "images"
        await client.pool_define(
            f"<pool type='dir'><name>images</name><target><path>{pool}</path></target></pool>"
        )
        await client.pool_start("images", storage_api.BuildMode.BUILD)
        made = await client.vol_create("images", _over("top", shared / "base.raw"))
        assert made.name == "top"
        with pytest.raises(VirtError, match="operation forbidden"):
            await client.vol_create("images", _over("no", tmp_path / "elsewhere.raw"))
