"""The secret service against a real nats-server, through the typed client."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from client.connection import Client
from client.events import subscribe
from client.status import services
from services.secret.service import SecretService, SecretSettings
from shared.api import secret as api
from shared.conf.secret import SecretUsageType
from shared.util.api import call
from shared.util.errors import ErrorCode, VirtError
from shared.util.events import CloudEvent
from tests.conftest import ConnectAs

pytestmark = pytest.mark.integration

UUID = "7a3c2b1e-4d5f-4a6b-8c9d-0e1f2a3b4c5d"
CEPH = f"""<secret ephemeral='no' private='no'>
  <uuid>{UUID}</uuid>
  <description>rbd pool key</description>
  <usage type='ceph'>
    <name>client.vb secret</name>
  </usage>
</secret>
"""


def _secret(
    usage: str, *, uuid: str | None = None, ephemeral: bool = False, private: bool = False
) -> str:
    yes_no = {True: "yes", False: "no"}
    head = f"<secret ephemeral='{yes_no[ephemeral]}' private='{yes_no[private]}'>"
    uid = f"<uuid>{uuid}</uuid>" if uuid else ""
    return f"{head}{uid}<usage type='volume'><volume>{usage}</volume></usage></secret>"


@pytest.fixture
async def service(nats_url: str, tmp_path: Path) -> AsyncIterator[SecretService]:
    settings = SecretSettings(nats_url=nats_url, state_dir=tmp_path / "secret", host="h1")
    async with SecretService(settings) as svc:
        yield svc


@pytest.fixture
async def client(service: SecretService, nc: NATS) -> Client:
    return Client(nc)


async def test_define_dumpxml_round_trip(client: Client) -> None:
    assert await client.secret.define(CEPH) == UUID
    assert await client.secret.dumpxml(UUID) == CEPH


async def test_uuid_is_generated_when_absent(client: Client) -> None:
    uuid = await client.secret.define(_secret("/img/a.qcow2"))
    info = await client.secret.lookup_by_uuid(uuid)
    assert info.usage_type is SecretUsageType.VOLUME and info.usage_id == "/img/a.qcow2"


async def test_redefine_same_uuid_updates_and_keeps_value(client: Client) -> None:
    await client.secret.define(CEPH)
    await client.secret.set_value(UUID, b"k1")
    await client.secret.define(CEPH.replace("rbd pool key", "renamed"))
    assert "renamed" in await client.secret.dumpxml(UUID)
    assert await client.secret.get_value(UUID) == b"k1"


async def test_redefine_with_other_usage_is_refused(client: Client) -> None:
    await client.secret.define(CEPH)
    with pytest.raises(VirtError) as info:
        await client.secret.define(CEPH.replace("client.vb secret", "other"))
    assert f"a secret with UUID {UUID} is already defined for use with client.vb" in str(info.value)


async def test_usage_held_by_another_secret_is_refused(client: Client) -> None:
    first = await client.secret.define(_secret("/img/b"))
    with pytest.raises(VirtError) as info:
        await client.secret.define(_secret("/img/b"))
    assert info.value.code is ErrorCode.INTERNAL_ERROR
    assert f"a secret with UUID {first} already defined for use with /img/b" in str(info.value)
    assert len(await client.secret.list()) == 1


async def test_concurrent_defines_of_one_usage_exactly_one_wins(
    nats_url: str, tmp_path: Path, nc: NATS
) -> None:
    # Two replicas of the service on one bucket, as in a cluster.
    replicas = [
        SecretService(
            SecretSettings(nats_url=nats_url, state_dir=tmp_path / f"r{i}", secret_key=key)
        )
        for i, key in enumerate([base64.b64encode(b"k" * 32).decode()] * 2)
    ]
    for r in replicas:
        await r.start()
    try:
        client = Client(nc)
        for round_ in range(5):
            docs = [_secret(f"/img/race{round_}") for _ in range(6)]
            results = await asyncio.gather(
                *(client.secret.define(d) for d in docs), return_exceptions=True
            )
            won = [r for r in results if isinstance(r, str)]
            lost = [r for r in results if isinstance(r, VirtError)]
            assert len(won) == 1, results
            assert len(lost) == 5
            assert all("already defined for use with" in str(e) for e in lost)
        assert len(await client.secret.list()) == 5
    finally:
        for r in replicas:
            await r.stop()


async def test_list_filters(client: Client) -> None:
    await client.secret.define(_secret("/a", ephemeral=True))
    await client.secret.define(_secret("/b", private=True))
    await client.secret.define(_secret("/c"))
    assert {s.usage_id for s in await client.secret.list(ephemeral=True)} == {"/a"}
    assert {s.usage_id for s in await client.secret.list(ephemeral=False)} == {"/b", "/c"}
    assert {s.usage_id for s in await client.secret.list(private=True)} == {"/b"}
    assert {s.usage_id for s in await client.secret.list(private=False)} == {"/a", "/c"}


async def test_lookup_by_usage_and_unknowns(client: Client) -> None:
    await client.secret.define(CEPH)
    info = await client.secret.lookup_by_usage(SecretUsageType.CEPH, "client.vb secret")
    assert info.uuid == UUID
    with pytest.raises(VirtError) as by_usage:
        await client.secret.lookup_by_usage(SecretUsageType.CEPH, "nobody")
    assert by_usage.value.code is ErrorCode.NO_SECRET
    other = "00000000-0000-4000-8000-000000000000"
    for op in (client.secret.dumpxml, client.secret.get_value, client.secret.undefine):
        with pytest.raises(VirtError) as info_:
            await op(other)
        assert info_.value.code is ErrorCode.NO_SECRET
        assert f"no secret with matching uuid '{other}'" in str(info_.value)


async def test_values_and_private_secrets(client: Client, connect_as: ConnectAs) -> None:
    uuid = await client.secret.define(_secret("/p", private=True))
    with pytest.raises(VirtError) as no_value:
        await client.secret.get_value(await client.secret.define(_secret("/q")))
    assert no_value.value.code is ErrorCode.NO_SECRET
    await client.secret.set_value(uuid, b"\x00binary\xff")
    with pytest.raises(VirtError) as private:
        await client.secret.get_value(uuid)
    assert private.value.code is ErrorCode.INVALID_SECRET
    assert str(private.value) == "Invalid secret: secret is private"
    # Only services may ask for a private value (the storage service, for a LUKS volume).
    with pytest.raises(VirtError) as denied:
        await call(client.nc, api.GET_VALUE_INTERNAL, api.UuidRequest(uuid=uuid))
    assert denied.value.code is ErrorCode.ACCESS_DENIED
    as_storage = await connect_as("storage")
    internal = await call(as_storage, api.GET_VALUE_INTERNAL, api.UuidRequest(uuid=uuid))
    assert base64.b64decode(internal.value) == b"\x00binary\xff"


async def test_invalid_base64_is_refused_and_value_kept(client: Client) -> None:
    await client.secret.define(CEPH)
    await client.secret.set_value(UUID, b"keep")
    with pytest.raises(VirtError) as info:
        await call(client.nc, api.SET_VALUE, api.SetValueRequest(uuid=UUID, value="!!not"))
    assert info.value.code is ErrorCode.INVALID_ARG
    assert await client.secret.get_value(UUID) == b"keep"


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        ("<secret", ErrorCode.XML_ERROR),
        ("<!DOCTYPE s [<!ENTITY a 'b'>]><secret>&a;</secret>", ErrorCode.XML_ERROR),
        # libvirt's secret parser reports a missing volume path as an internal error.
        ("<secret><usage type='volume'/></secret>", ErrorCode.INTERNAL_ERROR),
        ("<pool/>", ErrorCode.XML_ERROR),
    ],
)
async def test_bad_xml_is_refused_and_nothing_lost(
    client: Client, doc: str, code: ErrorCode
) -> None:
    await client.secret.define(CEPH)
    with pytest.raises(VirtError) as info:
        await client.secret.define(doc)
    assert info.value.code is code
    assert [s.uuid for s in await client.secret.list()] == [UUID]


async def test_oversized_request_gets_a_clear_error(client: Client) -> None:
    big = "<secret><description>" + "x" * (2 * 1024 * 1024) + "</description></secret>"
    with pytest.raises(VirtError) as info:
        await client.secret.define(big)
    assert "exceeds the limit" in str(info.value)


async def test_malformed_request_body_is_invalid_arg(client: Client) -> None:
    msg = await client.nc.request(api.DEFINE.subject(), b"{not json", timeout=5)
    body = json.loads(msg.data)
    assert body["name"] == "VIR_ERR_INVALID_ARG"
    assert msg.headers is not None and msg.headers["Nats-Service-Error-Code"] == "8"


async def test_events_for_define_value_undefine(client: Client) -> None:
    got: list[CloudEvent] = []
    async with subscribe(client.nc) as events:

        async def collect() -> None:
            async for ev in events:
                got.append(ev)
                if len(got) == 3:
                    return

        task = asyncio.create_task(collect())
        await asyncio.sleep(0.1)
        await client.secret.define(CEPH)
        await client.secret.set_value(UUID, b"topsecretvalue")
        await client.secret.undefine(UUID)
        await asyncio.wait_for(task, 10)
    assert [(e.data.event, e.data.detail) for e in got] == [
        ("lifecycle", "Defined"),
        ("value-changed", None),
        ("lifecycle", "Undefined"),
    ]
    assert all(e.data.name == UUID and e.specversion == "1.0" for e in got)
    assert all("topsecretvalue" not in e.model_dump_json() for e in got)


async def test_metrics_status_and_stats_count_errors(
    service: SecretService, client: Client
) -> None:
    await client.secret.define(CEPH)
    await client.secret.define(CEPH)  # a redefinition is not a second secret
    with pytest.raises(VirtError):
        await client.secret.dumpxml("00000000-0000-4000-8000-000000000000")
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{service.http.port}"
        async with http.get(url + "/metrics") as r:
            text = await r.text()
        async with http.get(url + "/readyz") as ready:
            assert ready.status == 200
    assert 'virtbus_secret_secrets{kind="persistent"} 1.0' in text
    assert 'virtbus_secret_requests_total{endpoint="dumpxml",outcome="error"} 1.0' in text
    assert "virtbus_secret_request_duration_seconds_bucket" in text
    [status] = await services(client.nc)
    assert status.name == "secret"
    dump = next(e for e in status.endpoints if e.name == "dumpxml")
    assert (dump.requests, dump.errors) == (1, 1)


async def test_no_service_gives_no_server(nc: NATS) -> None:
    with pytest.raises(VirtError) as info:
        await Client(nc).secret.list()
    assert info.value.code is ErrorCode.NO_SERVER


async def test_ephemeral_changes_keep_unique_event_ids_across_restarts(
    nats_url: str, tmp_path: Path, nc: NATS
) -> None:
    # Ephemeral secrets are never stored, but their events are: each change's
    # id comes from the ledger, so a restarted service does not reuse one (a
    # reused id would make the stream drop the event as a duplicate).
    settings = SecretSettings(
        nats_url=nats_url, state_dir=tmp_path / "s", secret_key=base64.b64encode(b"k" * 32).decode()
    )
    client = Client(nc)
    for _ in range(2):
        async with SecretService(settings) as svc:
            # The client's connection may still route to the stopped instance's
            # subscription for a moment (no responders): ask again.
            for _attempt in range(50):
                try:
                    uuid = await client.secret.define(_secret("/eph", ephemeral=True))
                    break
                except VirtError as err:
                    if err.code is not ErrorCode.NO_SERVER:
                        raise
                    await asyncio.sleep(0.1)
            await client.secret.set_value(uuid, b"v")
            ledger = svc.registry.ledger
            await ledger.wait_forwarded(ledger.last_written)
    got: list[CloudEvent] = []
    async with subscribe(nc, replay=True) as events:
        async for ev in events:
            got.append(ev)
            if len(got) == 4:
                break
    assert [(e.data.event, e.data.detail) for e in got] == [
        ("lifecycle", "Defined"),
        ("value-changed", None),
    ] * 2
    assert len({e.id for e in got}) == 4
