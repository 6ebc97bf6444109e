"""The rbd backend against a real Ceph cluster named by the environment (a cluster
cannot be started here); and, on any host, the rbd commands the backend runs.

VIRTBUS_TEST_CEPH_MON names the monitors (``host[:port][,host[:port]...]``);
VIRTBUS_TEST_CEPH_KEYRING a keyring file and VIRTBUS_TEST_CEPH_ID its client
(``admin`` when unset), both handed to rbd through CEPH_ARGS;
VIRTBUS_TEST_CEPH_POOL the RADOS pool holding the images (``rbd`` when unset).
The test's images are named ``virtbus-test-*`` and removed at its end.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from client.storage import StorageClient
from services.storage.pools.backends.base import CreateOptions
from services.storage.pools.backends.rbd import RbdBackend
from services.storage.pools.pool_secrets import PoolSecrets
from services.storage.pools.runner import find_tool
from shared.api.storage import PoolState
from shared.conf.encryption import SecretLookup
from shared.conf.secret import SecretUsageType
from shared.conf.storage_pool import parse_storage_pool
from shared.conf.storage_volume import parse_storage_volume
from shared.util.errors import VirtError
from tests.integration.blockjob_stack import Cli
from tests.integration.netstorage import RecordingRunner, not_installed, skip_reason, tool
from tests.integration.procs import start_service, terminate, wait_for_service

HOST = "rbd-host"
POOL = "ceph"
MON, KEYRING, CLIENT, RADOS_POOL = (
    f"VIRTBUS_TEST_CEPH_{name}" for name in ("MON", "KEYRING", "ID", "POOL")
)


# ---- the commands, on any host ------------------------------------------------------


CEPHX_KEY = b"\x01\x02cephx key bytes"
DF = {
    "pools": [
        {"name": "other", "id": 1, "size_bytes": 999, "size_kb": 1},
        {"name": "images", "id": 2, "size_bytes": 24 << 20, "size_kb": 24 << 10},
    ],
    "total_objects": 9,
    "total_used": 30 << 10,
    "total_avail": 70 << 10,
    "total_space": 100 << 10,
}


async def test_refresh_create_and_delete_run_these_rbd_commands(tmp_path: Path) -> None:
    pool = parse_storage_pool(
        "<pool type='rbd'><name>ceph</name><source><host name='mon1' port='6789'/>"
        "<host name='mon2'/><auth type='ceph' username='libvirt'><secret usage='ceph'/>"
        "</auth><name>images</name></source></pool>"
    )
    listing = [
        {"image": "base", "size": 8 << 20, "format": 2},
        {"image": "base", "snapshot": "before", "snapshot_id": 4, "size": 8 << 20, "format": 2},
    ]
    keys: list[tuple[str, int, bytes]] = []  # each command's key file: path, mode, text

    def answer(argv: list[str]) -> str:
        keyfile = argv[argv.index("--keyfile") + 1]
        keys.append((keyfile, os.stat(keyfile).st_mode & 0o777, Path(keyfile).read_bytes()))
        if "df" in argv:
            return json.dumps(DF)
        return json.dumps(listing) if "ls" in argv else ""

    asked: list[tuple[SecretLookup, SecretUsageType]] = []

    async def fetch(lookup: SecretLookup, usage: SecretUsageType) -> bytes:
        asked.append((lookup, usage))
        return CEPHX_KEY

    runner = RecordingRunner(answer)
    backend = RbdBackend(runner)
    backend.secrets = PoolSecrets(fetch, tmp_path / "secrets")
    scan = await backend.refresh(pool, {})
    assert [(v.name, v.target.path, v.capacity) for v in scan.volumes] == [
        ("base", "images/base", 8 << 20)
    ]
    # libvirt: the cluster's size and free space, and what the pool stores.
    assert (scan.capacity, scan.allocation, scan.available) == (100 << 20, 24 << 20, 70 << 20)
    vol = await backend.define_volume(
        pool,
        parse_storage_volume("<volume><name>new</name><capacity>1500000</capacity></volume>", pool),
    )
    assert (vol.key, vol.target.path) == ("images/new", "images/new")
    await backend.build_volume(pool, vol, CreateOptions())
    await backend.delete_volume(pool, vol)
    assert asked == [(SecretLookup(usage="ceph"), SecretUsageType.CEPH)] * 3
    # Each key file is private, holds the key as librados takes it, and is gone afterwards.
    assert {(mode, text) for _, mode, text in keys} == {(0o600, base64.b64encode(CEPHX_KEY))}
    assert all(Path(path).parent == tmp_path / "secrets" for path, _, _ in keys)
    assert list((tmp_path / "secrets").iterdir()) == []
    conn = ["--pool", "images", "-m", "mon1:6789,mon2", "--id", "libvirt", "--keyfile"]
    files = [path for path, _, _ in keys]
    assert runner.commands == [
        ["rados", *conn, files[0], "df", "--format", "json"],
        ["rbd", *conn, files[1], "ls", "-l", "--format", "json"],
        ["rbd", *conn, files[2], "create", "--size", "2M", "new"],  # whole MiB, rounded up
        ["rbd", *conn, files[3], "rm", "new"],
    ]


async def test_monitors_are_written_as_libvirt_writes_mon_host() -> None:
    pool = parse_storage_pool(
        "<pool type='rbd'><name>ceph</name><source><host name='2001:db8::1' port='6789'/>"
        "<host name='2001:db8::2'/><host name='192.0.2.3' port='3300'/>"
        "<name>images</name></source></pool>"
    )
    runner = RecordingRunner(lambda argv: json.dumps(DF) if "df" in argv else "[]")
    await RbdBackend(runner).refresh(pool, {})
    # A bare IPv6 address stays bare, as in libvirt; with a port it is bracketed.
    monitors = "[2001:db8::1]:6789,2001:db8::2,192.0.2.3:3300"
    assert runner.commands[-1] == [
        "rbd", "--pool", "images", "-m", monitors, "ls", "-l", "--format", "json"
    ]  # fmt: skip


async def test_a_pool_rados_does_not_list_fails_the_refresh() -> None:
    pool = parse_storage_pool(
        "<pool type='rbd'><name>ceph</name><source><host name='mon1'/>"
        "<name>missing</name></source></pool>"
    )
    runner = RecordingRunner(lambda argv: json.dumps(DF) if "df" in argv else "[]")
    with pytest.raises(VirtError, match="failed to stat the RADOS pool 'missing'"):
        await RbdBackend(runner).refresh(pool, {})


# ---- a real cluster -----------------------------------------------------------------


def _monitor_xml(spec: str) -> str:
    """``<host>`` of one monitor: ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if spec.startswith("["):
        name, _, rest = spec[1:].partition("]")
        port = rest.removeprefix(":")
    elif spec.count(":") == 1:
        name, _, port = spec.partition(":")
    else:
        name, port = spec, ""
    return f"<host name='{name}'" + (f" port='{port}'/>" if port else "/>")


@dataclass(frozen=True)
class Cluster:
    monitors: str
    pool: str
    ceph_args: str  # the keyring and client, for the service's rbd and the test's

    def pool_xml(self) -> str:
        hosts = "".join(_monitor_xml(m.strip()) for m in self.monitors.split(",") if m.strip())
        source = f"<source>{hosts}<name>{self.pool}</name></source>"
        return f"<pool type='rbd'><name>{POOL}</name>{source}</pool>"

    def rbd(self, *args: str) -> subprocess.CompletedProcess[str]:
        program = find_tool("rbd")
        assert program is not None
        argv = [program, "--pool", self.pool, "-m", self.monitors, *args]
        env = dict(os.environ, CEPH_ARGS=self.ceph_args)
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)

    def image_size(self, image: str) -> int | None:
        done = self.rbd("info", "--format", "json", image)
        return int(json.loads(done.stdout)["size"]) if done.returncode == 0 else None


def _unavailable() -> str | None:
    keyring = os.environ.get(KEYRING)
    return skip_reason(
        None
        if os.environ.get(MON)
        else f"no Ceph cluster given: set {MON}=host[:port][,host[:port]...], and {KEYRING} "
        f"unless /etc/ceph has client.admin's keyring ({CLIENT} and {RADOS_POOL} if not "
        "client.admin and pool 'rbd')",
        None if not keyring or os.path.isfile(keyring) else f"{KEYRING} names no file: {keyring}",
        not_installed([tool("rbd", "ceph-common"), tool("rados", "ceph-common")]),
    )


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    args = [f"--id={os.environ.get(CLIENT) or 'admin'}"]
    if os.environ.get(KEYRING):
        args.append(f"--keyring={os.environ[KEYRING]}")
    yield Cluster(os.environ[MON], os.environ.get(RADOS_POOL) or "rbd", " ".join(args))


@pytest.fixture
async def storage(
    cluster: Cluster,
    nats_url: str,
    nc: NATS,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[StorageClient]:
    """The service as its own process, so its rbd runs get the cluster's CEPH_ARGS."""
    monkeypatch.setenv("CEPH_ARGS", cluster.ceph_args)
    log = tmp_path / "storage.log"
    proc = start_service(
        "services.storage", nats_url, tmp_path / "state", log, extra=["--host", HOST]
    )
    try:
        await wait_for_service(nc, "storage", proc)
        yield StorageClient(nc, HOST)
    finally:
        terminate(proc)


@pytest.mark.integration
async def test_rbd_pool_on_a_ceph_cluster(
    storage: StorageClient, cluster: Cluster, nats_url: str, tmp_path: Path
) -> None:
    cli = Cli(nats_url)
    image = f"virtbus-test-{uuid.uuid4().hex[:8]}"
    xml = tmp_path / "pool.xml"
    xml.write_text(cluster.pool_xml())
    try:
        r = await cli.ok("pool-define", str(xml))
        assert r.out == f"Pool {POOL} defined from {xml}\n\n"
        await cli.ok("pool-build", POOL)  # libvirt's rbd backend has nothing to build
        await cli.ok("pool-start", POOL)  # rados df, then rbd ls -l --format json
        assert (await storage.pool_info(POOL)).state is PoolState.RUNNING
        r = await cli.ok("vol-create-as", POOL, image, "8M")  # rbd create --size 8M
        assert r.out == f"Vol {image} created\n\n"
        assert cluster.image_size(image) == 8 << 20
        await cli.ok("pool-refresh", POOL)
        volumes = {v.name: v for v in await storage.vol_list(POOL)}
        vol = volumes[image]
        assert (vol.type, vol.path, vol.capacity) == ("network", f"{cluster.pool}/{image}", 8 << 20)
        await cli.ok("vol-delete", image, "--pool", POOL)  # rbd rm
        assert cluster.image_size(image) is None
        await cli.ok("pool-destroy", POOL)
        r = await cli.run("pool-delete", POOL)
        assert r.rc == 1 and "pool does not support pool deletion" in r.err, r.err
        await cli.ok("pool-undefine", POOL)
    finally:
        cluster.rbd("rm", image)
