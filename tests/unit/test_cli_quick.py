"""The quick path of the read-only one-shot commands, held to the endpoint tables
and models of shared/api it re-states as plain JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from client.cli import jsonlite
from client.cli.quick import Calls, pick_host, record, run_sync, subject_of
from client.cli.wire import Reply, address
from shared.api import secret as secret_api
from shared.api import storage as storage_api
from shared.util.api import Endpoint
from shared.util.errors import ErrorCode, VirtError
from shared.util.subjects import api_subject

HOST = "h1"
POOL = storage_api.PoolInfo(
    name="p", uuid="0" * 8 + "-0000-4000-8000-" + "0" * 12, type="dir",
    state=storage_api.PoolState.RUNNING, persistent=True, autostart=False, capacity=1 << 30,
)  # fmt: skip
VOL = storage_api.VolumeInfo(
    name="v", pool="p", key="/p/v", path="/p/v", type="file", capacity=1 << 20,
    users=[storage_api.VolumeUser(host=HOST, domain="web1", disk="vda", role="source")],
)  # fmt: skip
SECRET = secret_api.SecretInfo(uuid=POOL.uuid, usage_id="x")


class Recorder:
    """A transport answering every request with ``reply`` and keeping what was sent."""

    def __init__(self, reply: BaseModel) -> None:
        self.reply = reply
        self.sent: list[tuple[str, bytes]] = []

    async def __call__(self, subject: str, data: bytes, timeout: float) -> Reply:
        self.sent.append((subject, data))
        return Reply("", {}, self.reply.model_dump_json().encode())


# (Calls method, its arguments, the endpoint it stands for, its request model, the reply)
CASES: list[tuple[str, dict[str, Any], Endpoint[Any, Any], BaseModel, BaseModel]] = [
    ("secret_list", {"ephemeral": True, "private": None}, secret_api.LIST,
     secret_api.ListRequest(ephemeral=True), secret_api.ListReply(secrets=[SECRET])),
    ("secret_lookup_by_uuid", {"uuid": POOL.uuid}, secret_api.LOOKUP_BY_UUID,
     secret_api.UuidRequest(uuid=POOL.uuid), SECRET),
    ("pool_info", {"pool": "p"}, storage_api.POOL_INFO, storage_api.PoolRequest(pool="p"), POOL),
    ("pool_lookup_by_uuid", {"uuid": POOL.uuid}, storage_api.POOL_LOOKUP_UUID,
     storage_api.PoolUuidRequest(uuid=POOL.uuid), POOL),
    ("pool_list", {"active": True, "persistent": None, "autostart": False, "types": ["dir"]},
     storage_api.POOL_LIST,
     storage_api.PoolListRequest(active=True, autostart=False, types=["dir"]),
     storage_api.PoolListReply(pools=[POOL])),
    ("vol_lookup_by_name", {"pool": "p", "name": "v"}, storage_api.VOL_LOOKUP_NAME,
     storage_api.VolNameRequest(pool="p", name="v"), VOL),
    ("vol_lookup_by_key", {"key": "/p/v"}, storage_api.VOL_LOOKUP_KEY,
     storage_api.VolKeyRequest(key="/p/v"), VOL),
    ("vol_lookup_by_path", {"path": "/p/v"}, storage_api.VOL_LOOKUP_PATH,
     storage_api.VolPathRequest(path="/p/v"), VOL),
    ("vol_info", {"pool": "p", "name": "v"}, storage_api.VOL_INFO,
     storage_api.VolRequest(vol=storage_api.VolRef(pool="p", name="v")), VOL),
    ("vol_list", {"pool": "p", "details": True}, storage_api.VOL_LIST,
     storage_api.VolListRequest(pool="p", details=True), storage_api.VolListReply(volumes=[VOL])),
    ("vol_list_brief", {"pool": "p"}, storage_api.VOL_BRIEF_LIST, storage_api.PoolRequest(pool="p"),
     storage_api.VolBriefListReply(volumes=[storage_api.VolumeBrief(name="v", key="/p/v",
                                                                    path="/p/v")])),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_calls_speak_the_endpoint_tables(
    case: tuple[str, dict[str, Any], Endpoint[Any, Any], BaseModel, BaseModel],
) -> None:
    method, kwargs, endpoint, request, reply = case
    send = Recorder(reply)
    calls = Calls(send, HOST)

    async def go() -> Any:
        return await getattr(calls, method)(**kwargs)

    got = run_sync(go())
    [(subject, data)] = send.sent
    assert subject == endpoint.subject(HOST if endpoint.host_scoped else None)
    assert endpoint.request.model_validate_json(data) == request
    # what the command prints from: the reply's fields under the model's names
    items = got if isinstance(got, list) else [got]
    dumped = reply.model_dump(mode="json")
    expected = next(iter(dumped.values())) if len(dumped) == 1 else [dumped]
    assert [r.raw for r in items] == expected
    for rec in items:
        for name, value in rec.raw.items():
            assert getattr(rec, name) == value


def test_a_secret_value_is_read_over_a_private_channel_only() -> None:
    send = Recorder(secret_api.ValueReply(value="c2VjcmV0"))
    assert run_sync(Calls(send, None, private=True).secret_get_value(POOL.uuid)) == b"secret"
    [(subject, data)] = send.sent
    assert subject == secret_api.GET_VALUE.subject()
    assert secret_api.UuidRequest.model_validate_json(data) == secret_api.UuidRequest(
        uuid=POOL.uuid
    )
    with pytest.raises(VirtError) as refused:
        run_sync(Calls(send, None).secret_get_value(POOL.uuid))
    assert refused.value.code is ErrorCode.OPERATION_DENIED
    assert len(send.sent) == 1  # nothing was asked over the open channel


def test_error_replies_become_virt_errors() -> None:
    async def failing(subject: str, data: bytes, timeout: float) -> Reply:
        err = VirtError(ErrorCode.NO_STORAGE_POOL, "no storage pool with matching name 'x'")
        headers = {"Nats-Service-Error-Code": "49", "Nats-Service-Error": err.message}
        return Reply("", headers, json.dumps(err.to_dict()).encode())

    async def nobody(subject: str, data: bytes, timeout: float) -> Reply:
        return Reply("503", {}, b"")

    with pytest.raises(VirtError) as info:
        run_sync(Calls(failing, HOST).pool_info("x"))
    assert str(info.value) == "Storage pool not found: no storage pool with matching name 'x'"
    with pytest.raises(VirtError) as info:
        run_sync(Calls(nobody, HOST).pool_info("x"))
    assert info.value.code is ErrorCode.NO_SERVER and "on host 'h1'" in str(info.value)


@pytest.mark.parametrize("host", ["h1", "node-7_a", "a.b", "with space", "ünï", ""])
def test_subjects_as_shared_util_subjects_builds_them(host: str) -> None:
    assert subject_of("storage", "vol.info", host) == api_subject("storage", "vol.info", host)
    assert subject_of("secret", "list", None) == api_subject("secret", "list")


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -12, 2**64, "plain", 'quo"te\\\n\t', "ünï €", [], [1, [None]],
     {"a": {"b": [True, False]}, "": "x"}],
)  # fmt: skip
def test_jsonlite_reads_and_writes_what_json_does(value: object) -> None:
    assert json.loads(jsonlite.dumps(value)) == value
    assert jsonlite.loads(json.dumps(value)) == value
    assert jsonlite.loads(f"  {json.dumps(value, indent=2)}\n") == value


@pytest.mark.parametrize("bad", ["", "{", "[1,]", "tru", "1 2", '{"a" 1}'])
def test_jsonlite_refuses_what_json_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        json.loads(bad)
    with pytest.raises(ValueError):
        jsonlite.loads(bad)


def test_server_address_from_urls() -> None:
    assert address("nats://127.0.0.1:4222") == ("nats", "127.0.0.1", 4222, None, None)
    assert address("localhost") == ("nats", "localhost", 4222, None, None)
    assert address("tls://u%40x:p%3Aw@h:5") == ("tls", "h", 5, "u@x", "p:w")
    assert address("nats://[::1]:7,nats://b:8") == ("nats", "::1", 7, None, None)


def test_discovery_picks_the_only_host_else_this_machine() -> None:
    import socket

    answer = json.dumps({"name": "storage", "metadata": {"host": "h9"}}).encode()
    other = json.dumps({"name": "storage", "metadata": {"host": "h8"}}).encode()
    assert pick_host([answer, answer]) == "h9"
    assert pick_host([answer, other]) == socket.gethostname()
    assert pick_host([b"not json"]) == socket.gethostname()


def test_record_keeps_the_object() -> None:
    rec = record({"name": "p", "users": [{"domain": "d"}]})
    assert rec.name == "p" and rec.raw == {"name": "p", "users": [{"domain": "d"}]}
