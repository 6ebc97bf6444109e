"""`make cluster-test`: the chart rendered and validated, a 3-node NATS cluster from
the NATS values, and the chart's workloads for two simulated hosts h1 and h2 run
as processes; then a secret defined through h1 unlocks a LUKS volume on h2's
storage, `virtbus --host h2 vol-list` works from h1, and killing a NATS server
and a secret replica under load loses no acknowledged change.

`make test` runs it with a small load; `make cluster-test` with
VIRTBUS_CLUSTER_OPS=1000.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.connection import Client
from shared.util import bus
from shared.util.errors import VirtError
from tests.deploy.chart import TEST_VALUES, render, validate
from tests.deploy.cluster import ChartProcesses, NatsCluster, Pod, pods_of
from tests.integration.cli import virtbus

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img missing: make system"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the host services run as root, as on a node"),
]

OPS = int(os.environ.get("VIRTBUS_CLUSTER_OPS", "150"))
WORKERS = 4
PASSPHRASE = b"correct horse battery staple"


@dataclass
class Cluster:
    nats: NatsCluster
    procs: ChartProcesses

    def url(self, host: str) -> str:
        return self.nats.url_for(0 if host == "h1" else 1)

    def pods(self, component: str) -> list[Pod]:
        return [p for p in self.procs.pods if p.component == component]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    objects = render(TEST_VALUES)
    result = validate(objects)
    print(
        f"\nchart: {len(objects)} objects rendered, {len(result.checked)} validated against "
        f"Kubernetes 1.30 (strict), {len(result.errors)} validation errors"
    )
    assert result.errors == []
    nats = NatsCluster(tmp_path / "nats")
    try:
        await nats.start()
        print("NATS cluster: " + ", ".join(nats.settings))
        pods, skipped = pods_of(objects, nats, tmp_path / "hosts")
        procs = ChartProcesses(pods, tmp_path / "hosts")
        try:
            await procs.start_all()
            print("running:")
            for pod in pods:
                print(f"  {pod.name:22} {pod.workload:24} {pod.module:18} as {pod.how}")
            for what in skipped:
                print(f"  not run: {what}")
            yield Cluster(nats, procs)
        finally:
            await procs.stop_all()
    finally:
        nats.stop()


async def _stream_replicas(url: str) -> dict[str, int]:
    nc = await bus.connect(url, "cluster-test", deadline=10)
    try:
        infos = await nc.jetstream().streams_info()
        return {i.config.name or "": i.config.num_replicas or 0 for i in infos}
    finally:
        await bus.close(nc)


async def _ok(url: str, *args: str) -> str:
    r = await virtbus(url, *args)
    assert r.rc == 0, f"virtbus {' '.join(args)}: {r.err}"
    return r.out


async def test_two_hosts_on_a_three_node_cluster(cluster: Cluster, tmp_path: Path) -> None:
    h1, h2 = cluster.url("h1"), cluster.url("h2")
    replicas = await _stream_replicas(h1)
    print(f"streams and their replicas: {replicas}")
    assert replicas and set(replicas.values()) == {3}

    # A secret defined through h1 ...
    key_uuid = str(uuid.uuid4())
    pool_dir = tmp_path / "h2-pool"
    secret_xml = tmp_path / "luks-secret.xml"
    secret_xml.write_text(
        f"<secret ephemeral='no' private='yes'><uuid>{key_uuid}</uuid>"
        f"<usage type='volume'><volume>{pool_dir}/enc.img</volume></usage></secret>"
    )
    await _ok(h1, "secret-define", str(secret_xml))
    passphrase = tmp_path / "passphrase"
    passphrase.write_bytes(PASSPHRASE)
    await _ok(h1, "secret-set-value", key_uuid, "--file", str(passphrase), "--plain")

    # ... is used by h2's storage service for a LUKS volume.
    await _ok(h2, "--host", "h2", "pool-define-as", "enc", "dir", "--target", str(pool_dir))
    await _ok(h2, "--host", "h2", "pool-build", "enc")
    await _ok(h2, "--host", "h2", "pool-start", "enc")
    vol_xml = tmp_path / "vol.xml"
    vol_xml.write_text(
        "<volume><name>enc.img</name><capacity unit='M'>16</capacity><target>"
        "<format type='raw'/><encryption format='luks'>"
        f"<secret type='passphrase' uuid='{key_uuid}'/></encryption></target></volume>"
    )
    await _ok(h2, "--host", "h2", "vol-create", "enc", str(vol_xml))
    info = await asyncio.create_subprocess_exec(
        "qemu-img", "info", "--output=json", str(pool_dir / "enc.img"),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await info.communicate()
    assert json.loads(out)["format"] == "luks"
    print(f"h2 made {pool_dir / 'enc.img'} as LUKS with the passphrase defined through h1")

    # `virtbus --host h2 vol-list`, run from h1, works.
    listing = await _ok(h1, "--host", "h2", "vol-list", "enc")
    assert "enc.img" in listing
    print("virtbus --host h2 vol-list enc (from h1):\n" + listing.rstrip())

    await _kill_a_node_under_load(cluster)


async def _kill_a_node_under_load(cluster: Cluster) -> None:
    """Defines OPS secrets from WORKERS clients; a third of the way in one NATS
    server is killed, two thirds in one secret replica.  Every define that was
    answered (acknowledged) must be there at the end."""
    acked: dict[str, str] = {}
    failed = 0
    done = 0
    next_op = 0
    killed: list[str] = []

    async def chaos() -> None:
        if done >= OPS // 3 and not killed:
            cluster.nats.kill(0)
            killed.append("nats n1")
        if done >= 2 * OPS // 3 and len(killed) == 1:
            victim = cluster.pods("secret")[0]
            cluster.procs.kill(victim)
            killed.append(f"secret replica on {victim.host}")

    async def worker(client: Client) -> None:
        nonlocal failed, done, next_op
        while next_op < OPS:
            i = next_op
            next_op += 1
            name = f"load-{i}"
            xml = (
                "<secret ephemeral='no' private='no'><usage type='ceph'>"
                f"<name>{name}</name></usage></secret>"
            )
            try:
                acked[name] = await client.secret.define(xml)
            except (VirtError, TimeoutError) as err:
                failed += 1
                print(f"  op {i} not acknowledged: {err}")
            done += 1
            await chaos()

    # h1's clients prefer n1, the server that gets killed.
    clients = [await Client.connect(cluster.url("h1"), deadline=10) for _ in range(WORKERS)]
    try:
        async with asyncio.timeout(600):
            await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for c in clients:
            await c.close()
    assert len(killed) == 2

    # Read back through h2's nearest server; the CLI still works with n1 down.
    async with await Client.connect(cluster.url("h2"), deadline=10) as reader:
        present = {s.usage_id: s.uuid for s in await reader.secret.list()}
    lost = [name for name, uid in acked.items() if present.get(name) != uid]
    cli = await virtbus(cluster.url("h1"), "secret-list")
    print(
        f"kill-a-node run: operations={OPS} acknowledged={len(acked)} "
        f"not acknowledged={failed} lost={len(lost)}; killed: {', '.join(killed)}; "
        f"CLI after the kills: rc={cli.rc}"
    )
    assert lost == []
    assert len(acked) + failed == OPS
    assert cli.rc == 0, cli.err
    assert all(name in cli.out for name in list(acked)[:5])
