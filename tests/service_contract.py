"""One contract per service endpoint table, run twice: on the in-memory bus
(tests/unit/test_service_contracts.py, ``tests.memory_bus``) and on a real
nats-server (tests/integration/test_service_contracts.py).

Each ``TableCase`` names a table of ``shared/api`` and the process that serves
it.  For every case the contract checks, through ``shared.util.api.call`` and
the micro service the process registers:

* the process serves exactly its endpoint table (``$SRV.INFO``), the case's
  table included;
* every endpoint answers a malformed request (not a JSON object, not JSON at
  all, a required field missing) with ``VIR_ERR_INVALID_ARG`` naming what is
  wrong, never ``VIR_ERR_INTERNAL_ERROR``;
* every endpoint that makes an object from a document (an ``xml`` field, in
  ``names_nothing``) refuses a broken, empty or foreign one with
  ``VIR_ERR_XML_ERROR``;
* every endpoint that names an object answers a name that does not exist
  with libvirt's not-found error for it (``missing``); the others say why
  they have none (``names_nothing``), and the two cover the table;
* a define / list / look-up / undefine cycle of the service's objects
  (``cycle``), then the events it announced, read back from the event stream
  (``events``: in order, each id once), as far as the service can go without
  bridges, firewalls or QEMU (the network service's networks are defined,
  never started; the nwfilter service runs without a firewall backend, so it
  lists no binding and refuses to make one);
* of rival defines of one object under different UUIDs sent at once
  (``race``), exactly one is kept and the others are refused;
* an endpoint answered inline (in its subscription's callback, one request
  after another) has a handler that never waits on anything.

A transport gives ``started(case)``, the case's process running and a
``Caller`` that reaches it, and ``stored_events``, what the event stream holds.
(The module is long because it holds every table's case: its not-found
requests and its cycle, each a few lines.)
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import textwrap
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from nats.aio.client import Client as NATS
from nats.micro.request import ERROR_CODE_HEADER
from pydantic import BaseModel

from agents.qemu.service import AgentSettings, QemuAgent
from services.network.service import NetworkService, NetworkSettings
from services.nwfilter.service import NWFilterService, NWFilterSettings
from services.secret.service import SecretService, SecretSettings
from services.storage.service import StorageService, StorageSettings
from shared.api import agent as agent_api
from shared.api import network as net_api
from shared.api import nwfilter as nwf_api
from shared.api import secret as secret_api
from shared.api import storage as storage_api
from shared.api import storage_jobs as jobs_api
from shared.conf.secret import SecretUsageType
from shared.util import bus, roles
from shared.util.api import Empty, Endpoint, call
from shared.util.errors import ErrorCode, VirtError
from shared.util.events import CloudEvent
from shared.util.process import ServiceProcess
from shared.util.subjects import service_subject
from tests.memory_bus import matches

#: The host the contract's host-scoped processes run as (one of tests.conftest.HOSTS).
HOST = "testhost"
#: Rival defines sent at once (``Race``).
RIVALS = 8
#: A UUID no object of the contract has.
NO_UUID = "00000000-0000-4000-8000-00000000c0de"

Make = Callable[[str, Path, NATS | None], ServiceProcess[Any]]
Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)


def caller_role(endpoint: Endpoint[Any, Any]) -> str:
    """The role a test sends ``endpoint``'s requests as: ``admin``, except for an
    internal endpoint, which only the services ``roles.CALLS`` names may call."""
    if not endpoint.name.startswith("internal."):
        return roles.ADMIN
    for service, calls in roles.CALLS.items():
        for callee, pattern, _ in calls:
            if callee == endpoint.service and matches(pattern, endpoint.name):
                return service
    raise AssertionError(f"no role may call {endpoint.service}.{endpoint.name}")


@dataclass
class Caller:
    """Sends requests to the process under test, as a client (or for an
    internal endpoint, the service allowed to call it) would."""

    connect: Callable[[str], Awaitable[NATS]]
    process: ServiceProcess[Any]

    def _host(self, endpoint: Endpoint[Any, Any]) -> str | None:
        return HOST if endpoint.host_scoped else None

    async def call(self, endpoint: Endpoint[Req, Rep], request: Req) -> Rep:
        nc = await self.connect(caller_role(endpoint))
        return await call(nc, endpoint, request, host=self._host(endpoint))

    async def raw(self, endpoint: Endpoint[Any, Any], body: bytes) -> VirtError | None:
        """Send ``body`` as a request of ``endpoint``; the error it answered, if any."""
        nc = await self.connect(caller_role(endpoint))
        msg = await bus.request(nc, endpoint.subject(self._host(endpoint)), body, 30)
        if ERROR_CODE_HEADER not in (msg.headers or {}):
            return None
        return VirtError.from_dict(json.loads(msg.data))

    async def info(self) -> dict[str, Any]:
        """The process's ``$SRV.INFO``."""
        nc = await self.connect(roles.ADMIN)
        msg = await nc.request(service_subject("INFO", self.process.name), b"", timeout=10)
        doc: dict[str, Any] = json.loads(msg.data)
        return doc


async def _refused(code: ErrorCode, action: Awaitable[Any]) -> VirtError:
    with pytest.raises(VirtError) as caught:
        await action
    assert caught.value.code is code, caught.value
    return caught.value


@dataclass(frozen=True)
class Missing:
    """A request naming an object that does not exist, and libvirt's error for it."""

    request: dict[str, Any]
    code: ErrorCode


@dataclass(frozen=True)
class TableCase:
    """One endpoint table of ``shared/api`` and the process that serves it."""

    id: str
    table: Sequence[Endpoint[Any, Any]]
    make: Make
    missing: Mapping[Endpoint[Any, Any], Missing]
    #: Endpoints without a not-found case, and why.
    names_nothing: Mapping[Endpoint[Any, Any], str]
    #: Runs the cycle; the name its events carry (None: it changes nothing).
    cycle: Callable[[Caller], Awaitable[str | None]]
    #: The events the cycle announces, in order: (object kind, event, detail).
    events: tuple[tuple[str, str, str | None], ...] = ()
    #: Rival defines of one object (None: the table defines nothing).
    race: Race | None = None


def rival_uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


@dataclass(frozen=True)
class Race:
    """Defines of one object (one name, or one secret usage) under different
    UUIDs, sent at once: libvirt keeps one of them and refuses the others."""

    define: Endpoint[Any, Any]
    #: The n-th rival's request.
    rival: Callable[[int], BaseModel]
    #: How many objects of that name (or usage) exist.
    count: Callable[[Caller], Awaitable[int]]


# -- secret -------------------------------------------------------------------------------

SECRET_XML = (
    "<secret ephemeral='no' private='no'><description>contract</description>"
    "<usage type='volume'><volume>/contract/disk.img</volume></usage></secret>"
)


def _secret(url: str, state: Path, nc: NATS | None) -> ServiceProcess[Any]:
    return SecretService(SecretSettings(nats_url=url, state_dir=state, host=HOST), nc)


async def _secret_cycle(c: Caller) -> str | None:
    api = secret_api
    uuid = (await c.call(api.DEFINE, api.DefineRequest(xml=SECRET_XML))).uuid
    listed = await c.call(api.LIST, api.ListRequest())
    assert [s.uuid for s in listed.secrets] == [uuid]
    by_usage = await c.call(
        api.LOOKUP_BY_USAGE,
        api.UsageRequest(usage_type=SecretUsageType.VOLUME, usage_id="/contract/disk.img"),
    )
    assert by_usage.uuid == uuid
    assert uuid in (await c.call(api.DUMPXML, api.UuidRequest(uuid=uuid))).xml
    await c.call(api.SET_VALUE, api.SetValueRequest(uuid=uuid, value="a2V5"))
    assert (await c.call(api.GET_VALUE, api.UuidRequest(uuid=uuid))).value == "a2V5"
    await c.call(api.UNDEFINE, api.UuidRequest(uuid=uuid))
    assert (await c.call(api.LIST, api.ListRequest())).secrets == []
    await _refused(ErrorCode.NO_SECRET, c.call(api.LOOKUP_BY_UUID, api.UuidRequest(uuid=uuid)))
    return str(uuid)


_NO_SECRET = Missing({"uuid": NO_UUID}, ErrorCode.NO_SECRET)


async def _secrets(c: Caller) -> int:
    return len((await c.call(secret_api.LIST, secret_api.ListRequest())).secrets)


def _rival_secret(n: int) -> BaseModel:
    return secret_api.DefineRequest(
        xml=SECRET_XML.replace("<description>", f"<uuid>{rival_uuid(n)}</uuid><description>")
    )


SECRET = TableCase(
    "secret",
    secret_api.ENDPOINTS,
    _secret,
    missing={
        secret_api.UNDEFINE: _NO_SECRET,
        secret_api.DUMPXML: _NO_SECRET,
        secret_api.LOOKUP_BY_UUID: _NO_SECRET,
        secret_api.LOOKUP_BY_USAGE: Missing(
            {"usage_type": "volume", "usage_id": "/no/such.img"}, ErrorCode.NO_SECRET
        ),
        secret_api.SET_VALUE: Missing({"uuid": NO_UUID, "value": "a2V5"}, ErrorCode.NO_SECRET),
        secret_api.GET_VALUE: _NO_SECRET,
        secret_api.GET_VALUE_INTERNAL: _NO_SECRET,
    },
    names_nothing={
        secret_api.DEFINE: "makes the secret it names",
        secret_api.LIST: "lists what exists",
    },
    cycle=_secret_cycle,
    events=(
        ("secret", "lifecycle", "Defined"),
        ("secret", "value-changed", None),
        ("secret", "lifecycle", "Undefined"),
    ),
    race=Race(secret_api.DEFINE, _rival_secret, _secrets),
)

# -- nwfilter -----------------------------------------------------------------------------

FILTER_XML = (
    "<filter name='contract-filter' chain='root'>"
    "<rule action='accept' direction='in' priority='500'><all/></rule></filter>"
)

BINDING_XML = (
    "<filterbinding><owner><name>vm1</name><uuid>" + NO_UUID + "</uuid></owner>"
    "<portdev name='vnet-contract'/><mac address='52:54:00:00:00:01'/>"
    "<filterref filter='contract-filter'/></filterbinding>"
)


def _nwfilter(url: str, state: Path, nc: NATS | None) -> ServiceProcess[Any]:
    settings = NWFilterSettings(nats_url=url, state_dir=state, host=HOST, firewall_backend="none")
    return NWFilterService(settings, nc)


async def _nwfilter_cycle(c: Caller) -> str | None:
    api = nwf_api
    standard = {f.name for f in (await c.call(api.LIST, Empty())).filters}
    info = await c.call(api.DEFINE, api.DefineRequest(xml=FILTER_XML))
    assert info.name == "contract-filter"
    names = {f.name for f in (await c.call(api.LIST, Empty())).filters}
    assert names == standard | {"contract-filter"}
    assert (await c.call(api.LOOKUP, api.FilterRequest(uuid=info.uuid))).name == info.name
    xml = (await c.call(api.DUMPXML, api.FilterRequest(name=info.name))).xml
    assert f"<uuid>{info.uuid}</uuid>" in xml
    await c.call(api.UNDEFINE, api.FilterRequest(name=info.name))
    await _refused(ErrorCode.NO_NWFILTER, c.call(api.LOOKUP, api.FilterRequest(name=info.name)))
    # Without a firewall backend the host's replica has no bindings and makes none.
    assert (await c.call(api.BINDING_LIST, Empty())).bindings == []
    binding = api.BindingCreateRequest(xml=BINDING_XML)
    await _refused(ErrorCode.OPERATION_UNSUPPORTED, c.call(api.BINDING_CREATE, binding))
    return str(info.name)


_NO_FILTER = Missing({"name": "no-such-filter"}, ErrorCode.NO_NWFILTER)
_NO_BINDING = Missing({"portdev": "vnet-none"}, ErrorCode.NO_NWFILTER_BINDING)


async def _race_filters(c: Caller) -> int:
    filters = (await c.call(nwf_api.LIST, Empty())).filters
    return sum(1 for f in filters if f.name == "contract-filter")


def _rival_filter(n: int) -> BaseModel:
    xml = FILTER_XML.replace("chain='root'>", f"chain='root'><uuid>{rival_uuid(n)}</uuid>")
    return nwf_api.DefineRequest(xml=xml)


NWFILTER = TableCase(
    "nwfilter",
    nwf_api.ENDPOINTS,
    _nwfilter,
    missing={
        nwf_api.UNDEFINE: _NO_FILTER,
        nwf_api.LOOKUP: _NO_FILTER,
        nwf_api.DUMPXML: Missing({"uuid": NO_UUID}, ErrorCode.NO_NWFILTER),
        nwf_api.BINDING_DELETE: _NO_BINDING,
        nwf_api.BINDING_LOOKUP: _NO_BINDING,
        nwf_api.BINDING_DUMPXML: _NO_BINDING,
    },
    names_nothing={
        nwf_api.DEFINE: "makes the filter it names",
        nwf_api.LIST: "lists what exists",
        nwf_api.BINDING_CREATE: "makes the binding it names (and needs a firewall backend)",
        nwf_api.BINDING_LIST: "lists what exists",
    },
    cycle=_nwfilter_cycle,
    events=(("nwfilter", "lifecycle", "Defined"), ("nwfilter", "lifecycle", "Undefined")),
    race=Race(nwf_api.DEFINE, _rival_filter, _race_filters),
)

# -- network ------------------------------------------------------------------------------

NETWORK_XML = (
    "<network><name>contract-net</name><bridge name='vbcontract0'/>"
    "<ip address='192.168.251.1' netmask='255.255.255.0'/></network>"
)


def _network(url: str, state: Path, nc: NATS | None) -> ServiceProcess[Any]:
    settings = NetworkSettings(
        nats_url=url, state_dir=state, host=HOST, run_dir=state / "run", firewall_backend="nftables"
    )
    return NetworkService(settings, nc)


async def _network_cycle(c: Caller) -> str | None:
    api = net_api
    info = await c.call(api.DEFINE, api.XmlRequest(xml=NETWORK_XML))
    assert (info.name, info.active, info.persistent) == ("contract-net", False, True)
    listed = (await c.call(api.LIST, Empty())).networks
    assert [(n.name, n.active) for n in listed] == [("contract-net", False)]
    assert (await c.call(api.LOOKUP, api.LookupRequest(uuid=info.uuid))).name == info.name
    await c.call(api.AUTOSTART, api.AutostartRequest(name=info.name, autostart=True))
    assert (await c.call(api.LOOKUP, api.LookupRequest(name=info.name))).autostart
    xml = (await c.call(api.DUMPXML, api.DumpXmlRequest(name=info.name))).xml
    assert f"<uuid>{info.uuid}</uuid>" in xml and "vbcontract0" in xml
    assert (await c.call(api.PORT_LIST, api.PortListRequest(network=info.name))).ports == []
    await c.call(api.UNDEFINE, api.NameRequest(name=info.name))
    assert (await c.call(api.LIST, Empty())).networks == []
    await _refused(ErrorCode.NO_NETWORK, c.call(api.LOOKUP, api.LookupRequest(name=info.name)))
    return str(info.name)


def _no_net(**fields: Any) -> Missing:
    return Missing({"name": "no-such-net", **fields}, ErrorCode.NO_NETWORK)


def _no_net_port(**fields: Any) -> Missing:
    return Missing({"network": "no-such-net", **fields}, ErrorCode.NO_NETWORK)


async def _networks(c: Caller) -> int:
    return len((await c.call(net_api.LIST, Empty())).networks)


def _rival_network(n: int) -> BaseModel:
    xml = NETWORK_XML.replace("</name>", f"</name><uuid>{rival_uuid(n)}</uuid>")
    return net_api.XmlRequest(xml=xml)


NETWORK = TableCase(
    "network",
    net_api.ENDPOINTS,
    _network,
    missing={
        net_api.START: _no_net(),
        net_api.DESTROY: _no_net(),
        net_api.UNDEFINE: _no_net(),
        net_api.AUTOSTART: _no_net(),
        net_api.LOOKUP: _no_net(),
        net_api.DUMPXML: _no_net(),
        net_api.UPDATE: _no_net(command=1, section=4, xml="<host mac='52:54:00:00:00:01'/>"),
        net_api.DHCP_LEASES: _no_net(),
        net_api.PORT_CREATE: _no_net_port(xml="<networkport/>"),
        net_api.PORT_LIST: _no_net_port(),
        net_api.PORT_DUMPXML: _no_net_port(uuid=NO_UUID),
        net_api.PORT_DELETE: _no_net_port(uuid=NO_UUID),
    },
    names_nothing={
        net_api.DEFINE: "makes the network it names",
        net_api.CREATE: "makes the network it names (and needs a bridge)",
        net_api.LIST: "lists what exists",
    },
    cycle=_network_cycle,
    events=(("network", "lifecycle", "Defined"), ("network", "lifecycle", "Undefined")),
    race=Race(net_api.DEFINE, _rival_network, _networks),
)

# -- storage: pools and volumes ----------------------------------------------------------


def _storage(url: str, state: Path, nc: NATS | None) -> ServiceProcess[Any]:
    return StorageService(StorageSettings(nats_url=url, state_dir=state, host=HOST), nc)


def _pool_xml(path: Path) -> str:
    return f"<pool type='dir'><name>contract-pool</name><target><path>{path}</path></target></pool>"


async def _pools_cycle(c: Caller) -> str | None:
    api = storage_api
    folder = c.process.settings.state_dir / "contract-pool"
    folder.mkdir()
    info = await c.call(api.POOL_DEFINE, api.PoolXmlRequest(xml=_pool_xml(folder)))
    assert (info.name, info.state, info.persistent) == (
        "contract-pool",
        api.PoolState.INACTIVE,
        True,
    )
    listed = (await c.call(api.POOL_LIST, api.PoolListRequest())).pools
    assert [p.name for p in listed] == ["contract-pool"]
    pool = api.PoolRequest(pool=info.name)
    await c.call(api.POOL_START, api.PoolBuildRequest(pool=info.name, build=api.BuildMode.NONE))
    assert (await c.call(api.POOL_INFO, pool)).state is api.PoolState.RUNNING
    assert (await c.call(api.POOL_LOOKUP_UUID, api.PoolUuidRequest(uuid=info.uuid))).name == (
        info.name
    )
    vol_xml = "<volume><name>v1.img</name><capacity>1048576</capacity></volume>"
    vol = await c.call(api.VOL_CREATE, api.VolCreateRequest(pool=info.name, xml=vol_xml))
    assert (vol.name, vol.capacity) == ("v1.img", 1048576)
    ref = api.VolRef(pool=info.name, name="v1.img")
    names = [
        v.name for v in (await c.call(api.VOL_LIST, api.VolListRequest(pool=info.name))).volumes
    ]
    assert names == ["v1.img"]
    assert (await c.call(api.VOL_LOOKUP_PATH, api.VolPathRequest(path=vol.path))).key == vol.key
    assert "<name>v1.img</name>" in (await c.call(api.VOL_DUMPXML, api.VolRequest(vol=ref))).xml
    await c.call(api.VOL_DELETE, api.VolDeleteRequest(vol=ref))
    await _refused(ErrorCode.NO_STORAGE_VOL, c.call(api.VOL_INFO, api.VolRequest(vol=ref)))
    await c.call(api.POOL_DESTROY, pool)
    await c.call(api.POOL_UNDEFINE, pool)
    assert (await c.call(api.POOL_LIST, api.PoolListRequest())).pools == []
    await _refused(ErrorCode.NO_STORAGE_POOL, c.call(api.POOL_INFO, pool))
    return str(info.name)


_NO_POOL = Missing({"pool": "no-such-pool"}, ErrorCode.NO_STORAGE_POOL)
_NO_POOL_VOL = Missing({"vol": {"pool": "no-such-pool", "name": "v"}}, ErrorCode.NO_STORAGE_POOL)
_NO_VOL_XML = "<volume><name>v</name><capacity>1</capacity></volume>"


async def _pools(c: Caller) -> int:
    return len((await c.call(storage_api.POOL_LIST, storage_api.PoolListRequest())).pools)


def _rival_pool(n: int) -> BaseModel:
    xml = _pool_xml(Path("/var/lib/virtbus-contract-pool"))
    return storage_api.PoolXmlRequest(
        xml=xml.replace("</name>", f"</name><uuid>{rival_uuid(n)}</uuid>")
    )


POOLS = TableCase(
    "storage-pools",
    storage_api.ENDPOINTS,
    _storage,
    missing={
        storage_api.POOL_BUILD: _NO_POOL,
        storage_api.POOL_START: _NO_POOL,
        storage_api.POOL_DESTROY: _NO_POOL,
        storage_api.POOL_DELETE: _NO_POOL,
        storage_api.POOL_UNDEFINE: _NO_POOL,
        storage_api.POOL_AUTOSTART: Missing(
            {"pool": "no-such-pool", "autostart": True}, ErrorCode.NO_STORAGE_POOL
        ),
        storage_api.POOL_REFRESH: _NO_POOL,
        storage_api.POOL_INFO: _NO_POOL,
        storage_api.POOL_LOOKUP_UUID: Missing({"uuid": NO_UUID}, ErrorCode.NO_STORAGE_POOL),
        storage_api.POOL_LOOKUP_VOLUME: _NO_POOL_VOL,
        storage_api.POOL_DUMPXML: _NO_POOL,
        storage_api.VOL_CREATE: Missing(
            {"pool": "no-such-pool", "xml": _NO_VOL_XML}, ErrorCode.NO_STORAGE_POOL
        ),
        storage_api.VOL_CREATE_FROM: Missing(
            {"pool": "no-such-pool", "xml": _NO_VOL_XML, "source": {"pool": "p", "name": "v"}},
            ErrorCode.NO_STORAGE_POOL,
        ),
        storage_api.VOL_DELETE: _NO_POOL_VOL,
        storage_api.VOL_WIPE: _NO_POOL_VOL,
        storage_api.VOL_RESIZE: Missing(
            {"vol": {"pool": "no-such-pool", "name": "v"}, "capacity": 1},
            ErrorCode.NO_STORAGE_POOL,
        ),
        storage_api.VOL_INFO: _NO_POOL_VOL,
        storage_api.VOL_DUMPXML: _NO_POOL_VOL,
        storage_api.VOL_LOOKUP_NAME: Missing(
            {"pool": "no-such-pool", "name": "v"}, ErrorCode.NO_STORAGE_POOL
        ),
        storage_api.VOL_LOOKUP_KEY: Missing({"key": "/no/such/key"}, ErrorCode.NO_STORAGE_VOL),
        storage_api.VOL_LOOKUP_PATH: Missing({"path": "/no/such/path"}, ErrorCode.NO_STORAGE_VOL),
        storage_api.VOL_LIST: _NO_POOL,
        storage_api.VOL_BRIEF_LIST: _NO_POOL,
        storage_api.VOL_UPLOAD: _NO_POOL_VOL,
        storage_api.VOL_DOWNLOAD: _NO_POOL_VOL,
    },
    names_nothing={
        storage_api.POOL_DEFINE: "makes the pool it names",
        storage_api.POOL_CREATE: "makes the pool it names",
        storage_api.POOL_LIST: "lists what exists",
        storage_api.POOL_CAPABILITIES: "names nothing",
    },
    cycle=_pools_cycle,
    events=(
        ("pool", "lifecycle", "Defined"),
        ("pool", "lifecycle", "Started"),
        ("volume", "lifecycle", "Created"),
        ("volume", "lifecycle", "Deleted"),
        ("pool", "lifecycle", "Stopped"),
        ("pool", "lifecycle", "Undefined"),
    ),
    race=Race(storage_api.POOL_DEFINE, _rival_pool, _pools),
)

# -- storage: disks and block jobs -------------------------------------------------------


async def _disks_cycle(c: Caller) -> str | None:
    # No agent publishes on this host: the inventory and the job list are empty.
    api = jobs_api
    assert (await c.call(api.DOMAIN_LIST, Empty())).domains == []
    assert (await c.call(api.BLOCK_JOB_LIST, api.BlockJobListRequest(all=True))).jobs == []
    return None


_NO_DISK = Missing({"domain": "no-such-domain", "disk": "vda"}, ErrorCode.NO_DOMAIN)
DISKS = TableCase(
    "storage-disks",
    jobs_api.ENDPOINTS,
    _storage,
    missing={
        jobs_api.DOMAIN_DISKS: Missing({"domain": "no-such-domain"}, ErrorCode.NO_DOMAIN),
        jobs_api.DISK_DUMPXML: _NO_DISK,
        jobs_api.BLOCK_COPY: Missing(
            {"domain": "no-such-domain", "disk": "vda", "dest": "/tmp/x"}, ErrorCode.NO_DOMAIN
        ),
        jobs_api.BLOCK_COMMIT: _NO_DISK,
        jobs_api.BLOCK_PULL: _NO_DISK,
        jobs_api.BLOCK_JOB_ABORT: _NO_DISK,
        jobs_api.BLOCK_JOB_SPEED: Missing(
            {"domain": "no-such-domain", "disk": "vda", "bandwidth": 1}, ErrorCode.NO_DOMAIN
        ),
        jobs_api.BLOCK_JOB_INFO: _NO_DISK,
    },
    names_nothing={
        jobs_api.DOMAIN_LIST: "lists what exists",
        jobs_api.BLOCK_JOB_LIST: "lists what exists (a domain filter only narrows it)",
    },
    cycle=_disks_cycle,
)

# -- the QEMU host agent ------------------------------------------------------------------


def _agent(url: str, state: Path, nc: NATS | None) -> ServiceProcess[Any]:
    settings = AgentSettings(nats_url=url, state_dir=state, host=HOST, domains_dir=state / "d")
    return QemuAgent(settings, nc)


async def _agent_cycle(c: Caller) -> str | None:
    # An empty domains folder: nothing to list.
    api = agent_api
    assert (await c.call(api.DOMAIN_LIST, Empty())).domains == []
    assert (await c.call(api.JOB_LIST, api.JobListRequest())).jobs == []
    return None


AGENT = TableCase(
    "agent-qemu",
    agent_api.ENDPOINTS,
    _agent,
    missing={
        agent_api.DOMAIN_DISKS: Missing({"domain": "no-such-domain"}, ErrorCode.NO_DOMAIN),
    },
    names_nothing={
        agent_api.DOMAIN_LIST: "lists what exists",
        agent_api.JOB_LIST: "lists what exists (a domain filter only narrows it)",
    },
    cycle=_agent_cycle,
)

CASES = (SECRET, NWFILTER, NETWORK, POOLS, DISKS, AGENT)


def _waits(handler: Callable[..., Any]) -> bool:
    """Whether ``handler``'s own code waits on anything (``await``, ``async
    with``, ``async for``)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(handler)))
    return any(isinstance(n, ast.Await | ast.AsyncWith | ast.AsyncFor) for n in ast.walk(tree))


def _required(model: type[BaseModel]) -> list[str]:
    return [name for name, f in model.model_fields.items() if f.is_required()]


class ServiceContract(ABC):
    """What every service's endpoint table must show, on any transport."""

    @abstractmethod
    def started(self, case: TableCase) -> AbstractAsyncContextManager[Caller]:
        """The case's process running, and a caller that reaches it."""

    @abstractmethod
    async def stored_events(
        self, caller: Caller, service: str, enough: Callable[[list[CloudEvent]], bool]
    ) -> list[CloudEvent]:
        """The events of ``service`` in the event stream, in order, once
        ``enough`` says they are all there (``TimeoutError`` after 10 s)."""

    @pytest.fixture(params=CASES, ids=[c.id for c in CASES])
    def case(self, request: pytest.FixtureRequest) -> TableCase:
        case: TableCase = request.param
        return case

    @pytest.fixture
    async def caller(self, case: TableCase) -> AsyncIterator[Caller]:
        async with self.started(case) as caller:
            yield caller

    def test_every_endpoint_is_classified(self, case: TableCase) -> None:
        """Each endpoint has a not-found case or a reason why it has none."""
        both = set(case.missing) & set(case.names_nothing)
        assert not both, f"listed twice: {sorted(e.name for e in both)}"
        covered = set(case.missing) | set(case.names_nothing)
        left = [e.name for e in case.table if e not in covered]
        assert not left, f"endpoints of {case.id} with no not-found case: {left}"
        assert covered <= set(case.table)

    async def test_the_table_is_served(self, case: TableCase, caller: Caller) -> None:
        info = await caller.info()
        served = {e["name"]: e["subject"] for e in info["endpoints"]}
        declared = {
            e.micro_name: e.subject(HOST if e.host_scoped else None)
            for e in caller.process.endpoint_table
        }
        assert served == declared
        assert {e.micro_name for e in case.table} <= set(served)

    async def test_an_inline_endpoint_never_waits(self, case: TableCase, caller: Caller) -> None:
        """An inline endpoint's requests are answered one after another in the
        callback: a handler that waited would hold up every request after it."""
        inline = [b for b in caller.process.endpoints() if b.endpoint.inline]
        waiting = [b.endpoint.name for b in inline if _waits(b.handler)]
        assert not waiting, f"inline endpoints whose handler waits: {waiting}"

    async def test_a_malformed_request_is_an_invalid_argument(
        self, case: TableCase, caller: Caller
    ) -> None:
        wrong: list[str] = []
        for endpoint in case.table:
            bodies = [(b"[]", "Input should be"), (b"{not json", "Invalid JSON")]
            required = _required(endpoint.request)
            if required:
                bodies.append((b"{}", f"{required[0]}: Field required"))
            for body, says in bodies:
                err = await caller.raw(endpoint, body)
                if err is None or err.code is not ErrorCode.INVALID_ARG or says not in err.message:
                    got = "a reply" if err is None else f"{err.name}: {err.message}"
                    wrong.append(f"{endpoint.name} {body!r}: {got}")
        assert not wrong, "\n".join(wrong)

    async def test_a_broken_document_is_an_xml_error(self, case: TableCase, caller: Caller) -> None:
        """Each endpoint that makes an object from a document refuses a broken,
        empty or foreign one with ``VIR_ERR_XML_ERROR``."""
        makers = [e for e in case.names_nothing if "xml" in _required(e.request)]
        if not makers:
            pytest.skip(f"no endpoint of {case.id} makes an object from a document")
        wrong: list[str] = []
        for endpoint in makers:
            for document in ("<broken", "", "<foreign/>"):
                err = await caller.raw(endpoint, json.dumps({"xml": document}).encode())
                if err is None or err.code is not ErrorCode.XML_ERROR:
                    got = "a reply" if err is None else f"{err.name}: {err.message}"
                    wrong.append(f"{endpoint.name} {document!r}: {got}")
        assert not wrong, "\n".join(wrong)

    async def test_an_unknown_name_is_not_found(self, case: TableCase, caller: Caller) -> None:
        wrong: list[str] = []
        for endpoint, missing in case.missing.items():
            err = await caller.raw(endpoint, json.dumps(missing.request).encode())
            if err is None or err.code is not missing.code:
                got = "a reply" if err is None else f"{err.name}: {err.message}"
                wrong.append(f"{endpoint.name}: {got}, not {missing.code.name}")
        assert not wrong, "\n".join(wrong)

    async def test_rival_defines_keep_one(self, case: TableCase, caller: Caller) -> None:
        """Of defines of one object under different UUIDs sent at once, exactly
        one is kept; each other is refused with a ``VirtError``."""
        if case.race is None:
            pytest.skip(f"{case.id} defines nothing")
        race = case.race
        outcomes = await asyncio.gather(
            *(caller.call(race.define, race.rival(n)) for n in range(1, RIVALS + 1)),
            return_exceptions=True,
        )
        kept = [o for o in outcomes if not isinstance(o, BaseException)]
        other = [
            o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, VirtError)
        ]
        assert not other, other
        assert len(kept) == 1, f"{len(kept)} of {RIVALS} rival defines kept: {kept}"
        assert await race.count(caller) == 1

    async def test_define_list_get_undefine(self, case: TableCase, caller: Caller) -> None:
        """The cycle, then the events it announced, each stored once, in order."""
        name = await case.cycle(caller)
        if name is None:
            assert not case.events
            return
        service = caller.process.name

        def mine(events: list[CloudEvent]) -> list[tuple[str, str, str | None]]:
            # A volume's events name it "<pool>/<volume>".
            about = [e for e in events if e.subject == name or e.subject.startswith(f"{name}/")]
            return [(e.data.object, e.data.event, e.data.detail) for e in about]

        stored = await self.stored_events(
            caller, service, lambda events: len(mine(events)) >= len(case.events)
        )
        got = mine(stored)
        assert got == list(case.events), f"{case.id} announced {got}, not {list(case.events)}"
        ids = [e.id for e in stored]
        assert len(ids) == len(set(ids))
