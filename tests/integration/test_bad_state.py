"""Bad state never takes a service down: a malformed stored record is skipped and
counted, the rest served; a name that cannot be a key is refused as an invalid
argument or as not found, never as an internal error."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from agents.qemu.records import JobRecord, RecordState
from agents.qemu.service import AgentSettings, QemuAgent
from client.connection import Client
from client.network import NetworkClient
from client.nwfilter import NWFilterClient
from client.storage import StorageClient
from services.network.registry import NetworkRecord
from services.network.service import NetworkService, NetworkSettings
from services.nwfilter import bindings
from services.nwfilter.service import NWFilterService, NWFilterSettings
from services.secret.service import SecretService, SecretSettings
from services.storage.service import StorageService, StorageSettings
from shared.api import agent as agent_api
from shared.api import secret as secret_api
from shared.api import storage as storage_api
from shared.api.blockjob import CopyCommand, JobType
from shared.util.api import Endpoint, call
from shared.util.errors import ErrorCode, VirtError
from tests.conftest import ConnectAs
from tests.integration.nwfilter_topology import (
    GUEST_IP,
    Topology,
    missing_requirements,
    topology_fixture,  # noqa: F401  (the ``topo`` fixture)
)
from tests.integration.test_nwfilter_service import MINE, binding

pytestmark = pytest.mark.integration

HOST = "h1"
SECRET = "<secret ephemeral='no' private='no'><usage type='ceph'><name>c</name></usage></secret>"
#: Names that are not valid KV keys or subject tokens, or that try to be wildcards.
ODD = ["", " ", "a b", "a.b", "*", ">", "a.>", "x\u00e9", "..", "$KV", "a\tb", "x" * 6000]


#: Content of the malformed records, which no log line may show.
LEAK = "c2VjcmV0LWNvbnRlbnQ"


def _assert_logged_by_key(caplog: pytest.LogCaptureFixture, keys: Iterable[str]) -> None:
    """Each key is named in an error line; the records' content is in none."""
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    for key in keys:
        assert any(key in line for line in errors), (key, errors)
    assert LEAK[:12] not in caplog.text  # (some records hold only a part of it)


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


async def test_a_secret_usage_too_long_to_be_a_key_is_refused_and_the_service_stays(
    nats_url: str, nc: NATS, tmp_path: Path
) -> None:
    settings = SecretSettings(nats_url=nats_url, state_dir=tmp_path / "s")
    client = Client(nc)
    async with SecretService(settings):
        usage = "x" * 6000
        with pytest.raises(VirtError) as refused:
            await client.secret.define(SECRET.replace("<name>c</name>", f"<name>{usage}</name>"))
        assert refused.value.code is ErrorCode.INVALID_ARG, refused.value
        assert "too long" in refused.value.message
        # Still on the bus, and still storing.
        assert await client.secret.list() == []
        await client.secret.define(SECRET)


@pytest.fixture
async def storage_settings(nats_url: str, tmp_path: Path) -> StorageSettings:
    return StorageSettings(nats_url=nats_url, state_dir=tmp_path / "storage", host=HOST)


async def test_malformed_pool_disk_and_job_records_are_skipped_and_counted(
    storage_settings: StorageSettings,
    nc: NATS,
    connect_as: ConnectAs,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
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
    # The disk inventory and block-job records of the same ledger.
    ledger = f"virtbus.ledger.storage.{HOST}"
    await js.publish(f"{ledger}.disks.{HOST}.web1", LEAK.encode())
    await js.publish(f"{ledger}.blockjob.{HOST}.j1", f'{{"job_id": "{LEAK}"}}'.encode())
    with caplog.at_level(logging.ERROR):
        async with StorageService(storage_settings) as svc:
            names = [p.name for p in await StorageClient(nc, HOST).pool_list()]
            assert names == ["good"]
            assert await _metric(svc.http.port, "virtbus_storage_bad_records") == (
                "virtbus_storage_bad_records 4.0"
            )
    _assert_logged_by_key(caplog, [f"disks.{HOST}.web1", f"blockjob.{HOST}.j1"])


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
    # A pool's events carry its name in their subject: one too long is refused.
    with pytest.raises(VirtError) as refused:
        await storage.pool_define(
            f"<pool type='dir'><name>{'x' * 6000}</name>"
            f"<target><path>{tmp_path / 'q'}</path></target></pool>"
        )
    assert refused.value.code is ErrorCode.INVALID_ARG, refused.value
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
    assert [p.name for p in await storage.pool_list()] == ["p"]


# -- nwfilter: the cluster's filter ledger and the host's binding ledger ----------------


@pytest.fixture
def filters_only(nats_url: str, tmp_path: Path) -> NWFilterSettings:
    """A host's nwfilter service without a firewall: bindings are loaded and
    served from its ledger, none can be created."""
    return NWFilterSettings(
        nats_url=nats_url, state_dir=tmp_path / "nwfilter", host=HOST, firewall_backend="none"
    )


async def test_malformed_filter_and_binding_records_are_skipped_and_counted(
    filters_only: NWFilterSettings,
    nc: NATS,
    connect_as: ConnectAs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = NWFilterClient(nc)
    async with NWFilterService(filters_only):
        await client.define(MINE)
    # Written as the nwfilter service writes its records: filters in the
    # cluster's ledger, bindings in their host's.
    js = (await connect_as("nwfilter")).jetstream()
    good = bindings.BindingRecord(xml=binding("mine", port="vnet0"))
    host_ledger = f"virtbus.ledger.nwfilter.{HOST}"
    await js.publish(f"{host_ledger}.binding.vnet0", good.model_dump_json().encode())
    await js.publish(f"{host_ledger}.binding.vnet9", f'{{"xml": "{LEAK}'.encode())
    # A well-formed binding of another port, under vnet8's key.
    elsewhere = bindings.BindingRecord(xml=binding("mine", port=LEAK[:15]))
    await js.publish(f"{host_ledger}.binding.vnet8", elsewhere.model_dump_json().encode())
    cluster_ledger = "virtbus.ledger.nwfilter.cluster"
    await js.publish(f"{cluster_ledger}.filter.broken", f"<filter name='{LEAK}'".encode())
    # A standard filter's record gone bad is put back at start (then no longer bad).
    await js.publish(f"{cluster_ledger}.filter.no-ip-spoofing", LEAK.encode())
    with caplog.at_level(logging.ERROR):
        async with NWFilterService(filters_only) as svc:
            names = {f.name for f in await client.list()}
            assert {"mine", "clean-traffic", "no-ip-spoofing"} <= names
            assert "broken" not in names and LEAK not in names
            with pytest.raises(VirtError) as missing:
                await client.dumpxml(name="broken")
            assert missing.value.code is ErrorCode.NO_NWFILTER
            assert [b.portdev for b in await client.binding_list(HOST)] == ["vnet0"]
            for port in ("vnet9", "vnet8"):
                with pytest.raises(VirtError) as missing:
                    await client.binding_dumpxml(HOST, port)
                assert missing.value.code is ErrorCode.NO_NWFILTER_BINDING
            assert await _metric(svc.http.port, "virtbus_nwfilter_bad_records") == (
                "virtbus_nwfilter_bad_records 3.0"
            )
    _assert_logged_by_key(
        caplog, ["filter.broken", "filter.no-ip-spoofing", "binding.vnet9", "binding.vnet8"]
    )


async def _refused(attempt: Awaitable[Any], fine: tuple[ErrorCode, ...], name: str) -> None:
    with pytest.raises(VirtError) as refused:
        await attempt
    assert _libvirts_refusal(refused.value, name, fine)


#: What libvirt itself reports as an internal error (nwfilter_conf.c,
#: virnwfilterbindingdef.c): an empty name in the XML.  We answer as it does.
_LIBVIRTS_INTERNAL = {"filter has no name", "filter binding has no port dev name"}


def _libvirts_refusal(err: VirtError, name: str, fine: tuple[ErrorCode, ...]) -> bool:
    """``err`` has one of the ``fine`` codes, or is libvirt's own word for an empty name."""
    if err.code is ErrorCode.INTERNAL_ERROR and name == "":
        assert err.message.removeprefix("internal error: ") in _LIBVIRTS_INTERNAL, err
        return True
    assert err.code in fine, (name, err)
    return True


async def test_filter_names_and_ports_that_are_not_keys_are_refused_cleanly(
    filters_only: NWFilterSettings, nc: NATS
) -> None:
    client = NWFilterClient(nc)
    no_filter = (ErrorCode.NO_NWFILTER, ErrorCode.INVALID_ARG)
    no_binding = (ErrorCode.NO_NWFILTER_BINDING, ErrorCode.INVALID_ARG)
    async with NWFilterService(filters_only):
        for name in ODD:
            await _refused(client.lookup(name=name), no_filter, name)
            await _refused(client.dumpxml(name=name), no_filter, name)
            await _refused(client.undefine(name=name), no_filter, name)
            await _refused(client.lookup(uuid=name), no_filter, name)
            await _refused(client.binding_lookup(HOST, name), no_binding, name)
            await _refused(client.binding_dumpxml(HOST, name), no_binding, name)
            await _refused(client.binding_delete(HOST, name), no_binding, name)
            # A name that is no key is still a name: stored under its token, or
            # refused as libvirt refuses it, never an internal error.
            try:
                defined = await client.define(f"<filter name='{name}'/>")
            except VirtError as err:
                assert _libvirts_refusal(err, name, (ErrorCode.XML_ERROR, ErrorCode.INVALID_ARG))
                continue
            # (XML turns a tab in an attribute into a space.)
            assert (await client.lookup(name=defined.name)).name == defined.name
            await client.undefine(name=defined.name)
            await _refused(client.lookup(name=defined.name), no_filter, name)


@pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements()))
async def test_a_binding_whose_record_turned_bad_keeps_its_rules_until_created_again(
    nats_url: str, nc: NATS, connect_as: ConnectAs, tmp_path: Path, topo: Topology
) -> None:
    settings = NWFilterSettings(
        nats_url=nats_url, state_dir=tmp_path / "nwfilter", host=HOST, netns=topo.host
    )
    client = NWFilterClient(nc)
    async with NWFilterService(settings):
        await client.define(MINE)
        await client.binding_create(HOST, binding("mine", ("IP", GUEST_IP), port="vnet0"))
    js = (await connect_as("nwfilter")).jetstream()
    await js.publish(f"virtbus.ledger.nwfilter.{HOST}.binding.vnet0", LEAK.encode())
    async with NWFilterService(settings) as svc:
        assert await client.binding_list(HOST) == []
        # Not known is not absent: reconciliation leaves the port's rules.
        await svc._reconcile()
        assert "vnet0" in await svc.backend.ports()
        assert await _metric(svc.http.port, "virtbus_nwfilter_bad_records") == (
            "virtbus_nwfilter_bad_records 1.0"
        )
        # Creating the binding again writes over the bad record.
        await client.binding_create(HOST, binding("mine", ("IP", GUEST_IP), port="vnet0"))
        assert [b.portdev for b in await client.binding_list(HOST)] == ["vnet0"]
        assert await _metric(svc.http.port, "virtbus_nwfilter_bad_records") == (
            "virtbus_nwfilter_bad_records 0.0"
        )
        # A port name no interface can have is refused as an invalid argument
        # (it would go bare into chain names and nft scripts), not an internal error.
        for name in [*ODD, "vnet0\n", "x;flush ruleset", "x" * 16]:
            try:
                created = await client.binding_create(
                    HOST, binding("mine", ("IP", GUEST_IP), port=name)
                )
            except VirtError as err:
                assert _libvirts_refusal(err, name, (ErrorCode.INVALID_ARG,))
                continue
            # A name an interface may have (a.b) is bound; no such port exists yet.
            assert created.portdev == name == "a.b"
            await client.binding_delete(HOST, name)
        assert "vnet0" in await svc.backend.ports()


# -- network ---------------------------------------------------------------------------


@pytest.fixture
def network_settings(nats_url: str, tmp_path: Path) -> NetworkSettings:
    return NetworkSettings(
        nats_url=nats_url, state_dir=tmp_path / "network", run_dir=tmp_path / "run", host=HOST
    )


async def test_a_malformed_network_record_is_skipped_and_counted(
    network_settings: NetworkSettings,
    nc: NATS,
    connect_as: ConnectAs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = NetworkClient(nc, HOST)
    async with NetworkService(network_settings):
        await client.define("<network><name>good</name><bridge name='vbgood0'/></network>")
    js = (await connect_as("network")).jetstream()
    ledger = f"virtbus.ledger.network.{HOST}"
    await js.publish(f"{ledger}.net.bad", f"[{LEAK}".encode())
    bad_xml = NetworkRecord(xml=f"<network><name>{LEAK}").model_dump_json()
    await js.publish(f"{ledger}.net.badxml", bad_xml.encode())
    with caplog.at_level(logging.ERROR):
        async with NetworkService(network_settings) as svc:
            assert [n.name for n in await client.list_all()] == ["good"]
            assert await _metric(svc.http.port, "virtbus_network_bad_records") == (
                "virtbus_network_bad_records 2.0"
            )
    _assert_logged_by_key(caplog, ["net.bad", "net.badxml"])


async def test_network_names_that_are_not_keys_are_refused_cleanly(
    network_settings: NetworkSettings, nc: NATS
) -> None:
    client = NetworkClient(nc, HOST)
    no_network = (ErrorCode.NO_NETWORK, ErrorCode.INVALID_ARG)
    async with NetworkService(network_settings):
        for name in ODD:
            await _refused(client.lookup(name=name), no_network, name)
            await _refused(client.lookup(uuid=name), no_network, name)
            await _refused(client.dumpxml(name), no_network, name)
            await _refused(client.start(name), no_network, name)
            await _refused(client.destroy(name), no_network, name)
            await _refused(client.undefine(name), no_network, name)
            await _refused(client.port_list(name), no_network, name)
            try:
                defined = await client.define(f"<network><name>{name}</name></network>")
            except VirtError as err:
                # libvirt: no name is VIR_ERR_NO_NAME, a '/' or a bad character an XML error.
                refused = (ErrorCode.XML_ERROR, ErrorCode.INVALID_ARG, ErrorCode.NO_NAME)
                assert err.code in refused, (name, err)
                continue
            assert (await client.lookup(name=defined.name)).name == defined.name
            assert "<network>" in await client.dumpxml(defined.name)
            await client.undefine(defined.name)
            await _refused(client.lookup(name=defined.name), no_network, name)


# -- the QEMU agent --------------------------------------------------------------------


async def test_malformed_agent_records_are_skipped_and_counted(
    nats_url: str,
    nc: NATS,
    connect_as: ConnectAs,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = AgentSettings(nats_url=nats_url, state_dir=tmp_path / "agent", host=HOST)
    async with QemuAgent(settings):
        pass  # its ledger now exists
    # Written into the agent's ledger as the agent writes its records.
    js = (await connect_as(f"agent@{HOST}")).jetstream()
    ledger = f"virtbus.ledger.agent.{HOST}"
    command = CopyCommand(job_id="j1", domain="web1", disk="vda", destination="<disk/>")
    job = JobRecord(
        command=command, alias="virtio-disk0", job_type=JobType.COPY, state=RecordState.RUNNING
    )
    await js.publish(f"{ledger}.job.j1", job.model_dump_json().encode())
    await js.publish(f"{ledger}.job.j2", f'{{"alias": "{LEAK}"}}'.encode())
    await js.publish(f"{ledger}.job.j3", LEAK.encode())
    with caplog.at_level(logging.ERROR):
        async with QemuAgent(settings) as agent:
            listed = await call(nc, agent_api.JOB_LIST, agent_api.JobListRequest(), host=HOST)
            assert [j.job_id for j in listed.jobs] == ["j1"]
            assert await _metric(agent.http.port, "virtbus_agent_qemu_bad_records") == (
                "virtbus_agent_qemu_bad_records 2.0"
            )
    _assert_logged_by_key(caplog, ["job.j2", "job.j3"])
