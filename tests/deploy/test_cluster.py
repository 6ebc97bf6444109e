"""`make cluster-test`: per-role credentials from deploy/credentials.py, the chart
rendered with them and validated, a 3-node NATS cluster from the NATS values
(their authorization block and client TLS included), and the chart's workloads
for two simulated hosts h1 and h2 run as processes, each connecting with its
role's credentials from the rendered Secrets and verifying the servers with
the CA; then a secret defined through h1 unlocks a LUKS volume on h2's
storage, `virtbus --host h2 vol-list` works from h1, the servers refuse
what a role may not do (anonymous, in the clear, agent@h1 acting for h2,
readonly changing anything), and killing a NATS server and a secret replica
under load loses no acknowledged change.

`make test` runs it with a small load; `make cluster-test` with
VIRTBUS_CLUSTER_OPS=1000.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from client.connection import Client
from deploy import credentials
from shared.util import bus, roles
from shared.util.credentials import read_file
from shared.util.errors import ErrorCode, VirtError
from shared.util.subjects import (
    AGENT,
    EVENT_STREAM,
    LEDGER_PREFIX,
    agent_domain_subject,
    api_subject,
    js_api,
    ledger_name,
)
from tests.deploy.chart import CHART, ROOT, TEST_VALUES, render, validate
from tests.deploy.cluster import HOSTS, ChartProcesses, NatsCluster, Pod, pods_of, role_credentials
from tests.integration.cli import Result, virtbus
from tests.integration.nats_wire import Refused, Wire

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img missing: make system"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the host services run as root, as on a node"),
]

OPS = int(os.environ.get("VIRTBUS_CLUSTER_OPS", "150"))
#: How long the surviving secret replica may take to serve every stored define
#: after the load (a bound on a wait, never a figure asserted).
SETTLE = 300
WORKERS = 4
PASSPHRASE = b"correct horse battery staple"


@dataclass
class Cluster:
    nats: NatsCluster
    procs: ChartProcesses
    #: Each role's credentials file, from its rendered Secret.
    creds: dict[str, Path]

    def url(self, host: str) -> str:
        return self.nats.url_for(0 if host == "h1" else 1)

    def pods(self, component: str) -> list[Pod]:
        return [p for p in self.procs.pods if p.component == component]

    async def cli(self, host: str, role: str, *args: str) -> Result:
        """`virtbus --creds <role's file> ARGS` against ``host``'s nearest server
        (VIRTBUS_TLS_CA names the CA: see the fixture).  Its connection may take
        up to 10 s instead of 1 on a loaded machine (a TLS handshake per call)."""
        where = ("--creds", str(self.creds[role]), "--connect-timeout", "10")
        return await virtbus(self.url(host), *where, *args)

    async def client(self, host: str, role: str = roles.ADMIN) -> Client:
        return await Client.connect(
            self.url(host), creds=self.creds[role], tls_ca=self.nats.ca, deadline=10
        )

    async def wire(self, host: str, role: str | None) -> Wire:
        """A bare protocol connection as ``role`` (None: anonymous) over TLS."""
        url = self.url(host).split(",")[0]
        if role is not None:
            url = read_file(self.creds[role]).url(url)
        return await Wire.open(url, tls_ca=self.nats.ca)


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    # The credentials as deploy/helm/README.md makes them, and the chart rendered
    # with them: a Secret per role.
    made = tmp_path / "credentials"
    hosts = ",".join(HOSTS)
    subprocess.run(
        [sys.executable, "-m", "deploy.credentials", "--hosts", hosts, "--out", str(made)],
        check=True, cwd=ROOT,
    )  # fmt: skip
    values = yaml.safe_load((made / credentials.VALUES).read_text())
    objects = render({**TEST_VALUES, **values})
    result = validate(objects)
    print(
        f"\nchart: {len(objects)} objects rendered, {len(result.checked)} validated against "
        f"Kubernetes 1.30 (strict), {len(result.errors)} validation errors"
    )
    assert result.errors == []
    creds = role_credentials(objects, tmp_path / "roles")
    assert set(creds) == {r.name for r in roles.all_roles(HOSTS)}
    # The test's own CLI calls name their role's file; nothing is found by default.
    monkeypatch.delenv("VIRTBUS_CREDS", raising=False)
    monkeypatch.setenv("VIRTBUS_CREDS_DIR", str(tmp_path / "no-credentials"))
    nats = NatsCluster(
        tmp_path / "nats",
        auth_secret=made / credentials.NATS_SECRET,
        creds=read_file(creds[roles.OPERATOR]),
    )
    try:
        await nats.start()
        print("NATS cluster: " + ", ".join(nats.settings))
        assert nats.ca is not None, "deploy/nats/values.yaml enables client TLS"
        monkeypatch.setenv("VIRTBUS_TLS_CA", str(nats.ca))
        # The NATS CA's Secret comes with the NATS installation, not the chart.
        ca_secret = yaml.safe_load((CHART / "values.yaml").read_text())["nats"]["tls"]["caSecret"]
        external = {ca_secret: {"ca.crt": nats.ca.read_text()}}
        pods, skipped = pods_of(objects, nats, tmp_path / "hosts", external)
        procs = ChartProcesses(pods, tmp_path / "hosts")
        try:
            await procs.start_all()
            print("running:")
            for pod in pods:
                print(f"  {pod.name:22} {pod.workload:24} {pod.module:18} as {pod.how}")
            for what in skipped:
                print(f"  not run: {what}")
            yield Cluster(nats, procs, creds)
        finally:
            await procs.stop_all()
    finally:
        nats.stop()


async def _stream_replicas(cluster: Cluster) -> dict[str, int]:
    """As the operator, the role for JetStream maintenance."""
    nc = await cluster.nats.connect(cluster.url("h1"), "cluster-test", deadline=10)
    try:
        infos = await nc.jetstream().streams_info()
        return {i.config.name or "": i.config.num_replicas or 0 for i in infos}
    finally:
        await bus.close(nc)


async def test_two_hosts_on_a_three_node_cluster(cluster: Cluster, tmp_path: Path) -> None:
    async def ok(host: str, *args: str) -> str:
        r = await cluster.cli(host, roles.ADMIN, *args)
        assert r.rc == 0, f"virtbus {' '.join(args)}: {r.err}"
        return r.out

    replicas = await _stream_replicas(cluster)
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
    await ok("h1", "secret-define", str(secret_xml))
    passphrase = tmp_path / "passphrase"
    passphrase.write_bytes(PASSPHRASE)
    await ok("h1", "secret-set-value", key_uuid, "--file", str(passphrase), "--plain")

    # ... is used by h2's storage service for a LUKS volume.
    await ok("h2", "--host", "h2", "pool-define-as", "enc", "dir", "--target", str(pool_dir))
    await ok("h2", "--host", "h2", "pool-build", "enc")
    await ok("h2", "--host", "h2", "pool-start", "enc")
    vol_xml = tmp_path / "vol.xml"
    vol_xml.write_text(
        "<volume><name>enc.img</name><capacity unit='M'>16</capacity><target>"
        "<format type='raw'/><encryption format='luks'>"
        f"<secret type='passphrase' uuid='{key_uuid}'/></encryption></target></volume>"
    )
    await ok("h2", "--host", "h2", "vol-create", "enc", str(vol_xml))
    info = await asyncio.create_subprocess_exec(
        "qemu-img", "info", "--output=json", str(pool_dir / "enc.img"),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await info.communicate()
    assert json.loads(out)["format"] == "luks"
    print(f"h2 made {pool_dir / 'enc.img'} as LUKS with the passphrase defined through h1")

    # `virtbus --host h2 vol-list`, run from h1, works.
    listing = await ok("h1", "--host", "h2", "vol-list", "enc")
    assert "enc.img" in listing
    print("virtbus --host h2 vol-list enc (from h1):\n" + listing.rstrip())

    await _security_holds(cluster, key_uuid)
    await _kill_a_node_under_load(cluster)


async def _refused(conn: Wire, op: str, subject: str, reply: str = "") -> bool:
    """Whether the server refuses ``conn``'s ``op`` (``sub`` or ``pub``) on ``subject``
    (a publish names ``reply`` as its reply subject: an inbox no one reads)."""
    try:
        if op == "sub":
            await conn.subscribe(subject)
        else:
            await conn.publish(subject, b"{}", reply)
    except Refused as err:
        kind = "Subscription" if op == "sub" else "Publish"
        assert f"Permissions Violation for {kind}" in str(err), err
        return True
    return False


async def _security_holds(cluster: Cluster, key_uuid: str) -> None:
    """In this cluster, the servers refuse what a role may not do: no user or
    no TLS gets no connection, agent@h1 can neither serve nor publish nor
    request for h2, and readonly changes nothing.  Each refusal has its
    allowed counterpart checked too, so a server refusing everything fails."""
    agent_h1 = roles.agent_role("h1")
    [agent_pod] = [p for p in cluster.pods(f"{roles.AGENT_SERVICES[0]}-h1")]
    checked: list[str] = []

    # No user: refused by the servers, to the client library, the CLI and the wire.
    url = cluster.url("h1")
    with pytest.raises(VirtError) as anonymous:
        await bus.connect(url, "anonymous", tls_ca=cluster.nats.ca, deadline=10)
    assert anonymous.value.code is ErrorCode.AUTH_FAILED
    r = await virtbus(url, "secret-list")  # VIRTBUS_CREDS_DIR is empty: no credentials
    assert r.rc != 0 and "authentication failed" in r.err, r
    with pytest.raises(Refused, match="Authorization Violation"):
        await cluster.wire("h1", None)
    checked.append("anonymous connection refused")
    # The admin's password over a connection that is not TLS: no connection.
    admin_url = read_file(cluster.creds[roles.ADMIN]).url(url.split(",")[0])
    with pytest.raises(Refused, match="connection closed"):
        await Wire.open(admin_url)
    await (await cluster.wire("h1", roles.ADMIN)).close()  # the same over TLS
    # A client that cannot verify the servers' certificate does not connect.
    admin = read_file(cluster.creds[roles.ADMIN])
    with pytest.raises(VirtError) as unverified:
        await bus.connect(url, "unverified", creds=admin, deadline=5)
    assert unverified.value.code is ErrorCode.NO_CONNECT
    assert "certificate verify failed" in str(unverified.value), unverified.value
    checked.append("clear-text and unverified connections refused")

    # agent@h1, with the credentials its pod mounts (the rendered Secret's).
    assert read_file(Path(agent_pod.env["VIRTBUS_CREDS"])).role == agent_h1
    conn = await Wire.open(
        read_file(Path(agent_pod.env["VIRTBUS_CREDS"])).url(url.split(",")[0]),
        tls_ca=cluster.nats.ca,
    )
    try:
        agent = roles.AGENT_SERVICES[0]
        for op, h1_subject, h2_subject in (
            # serving h2's agent endpoints
            ("sub", api_subject(agent, "domain.list", "h1"),
             api_subject(agent, "domain.list", "h2")),
            # publishing h2's agent events (a disk inventory the storage service would trust)
            ("pub", js_api(f"STREAM.INFO.{ledger_name(AGENT, 'h1')}"),
             agent_domain_subject("h2", "cluster-test")),
            # reading or writing h2's agent records
            ("pub", js_api(f"STREAM.INFO.{ledger_name(AGENT, 'h1')}"),
             js_api(f"STREAM.MSG.GET.{ledger_name(AGENT, 'h2')}")),
        ):  # fmt: skip
            inbox = roles.inbox_prefix(agent_h1) + ".probe" if op == "pub" else ""
            assert not await _refused(conn, op, h1_subject, inbox), (op, h1_subject)
            assert await _refused(conn, op, h2_subject), (op, h2_subject)
        # A request to h2's services, or to h2's agent, is refused too.
        for subject in (api_subject("storage", "pool.list", "h2"),
                        api_subject(agent, "job.list", "h2")):  # fmt: skip
            assert await _refused(conn, "pub", subject), subject
    finally:
        await conn.close()
    checked.append(f"{agent_h1} refused h2's endpoints, events, records and services")

    # readonly reads, and changes nothing.
    ro = roles.READONLY
    secrets_before = (await cluster.cli("h1", roles.ADMIN, "secret-list")).out
    listed = await cluster.cli("h1", ro, "secret-list")
    assert listed.rc == 0 and key_uuid in listed.out, listed
    vols = await cluster.cli("h1", ro, "--host", "h2", "vol-list", "enc")
    assert vols.rc == 0 and "enc.img" in vols.out, vols
    xml = cluster.nats.folder / "readonly-secret.xml"
    xml.write_text(
        "<secret ephemeral='no' private='no'><usage type='ceph'><name>readonly</name>"
        "</usage></secret>"
    )
    denied: list[str] = []
    for change in (
        ("secret-define", str(xml)),
        ("secret-undefine", key_uuid),
        ("secret-get-value", key_uuid),
        ("--host", "h2", "vol-delete", "enc.img", "--pool", "enc"),
        ("--host", "h2", "pool-destroy", "enc"),
    ):
        r = await cluster.cli("h1", ro, *change)
        assert r.rc != 0 and "access denied" in r.err.lower(), (change, r)
        denied += [line for line in r.err.splitlines() if "access denied" in line]
    assert (await cluster.cli("h1", roles.ADMIN, "secret-list")).out == secrets_before
    vols_after = await cluster.cli("h2", roles.ADMIN, "--host", "h2", "vol-list", "enc")
    assert vols_after.rc == 0 and "enc.img" in vols_after.out, vols_after
    conn = await cluster.wire("h2", ro)
    try:
        for subject in (
            js_api(f"STREAM.PURGE.{EVENT_STREAM}"),
            js_api(f"STREAM.DELETE.{ledger_name('secret', None)}"),
            f"{LEDGER_PREFIX}.secret.x",  # a record written into the secret ledger
            api_subject("storage", "vol.delete", "h2"),
        ):
            assert await _refused(conn, "pub", subject), subject
        inbox = roles.inbox_prefix(ro) + ".probe"
        assert not await _refused(conn, "pub", api_subject("secret", "list"), inbox)
    finally:
        await conn.close()
    checked.append("readonly refused every change (CLI and wire); its reads answered")
    print("security in the cluster: " + "; ".join(checked))
    print("readonly, as the CLI says it:\n  " + "\n  ".join(denied))


async def _not_served(reader: Client, acked: dict[str, str]) -> list[str]:
    """The acknowledged defines (usage name -> uuid) a secret list does not show."""
    present = {s.usage_id: s.uuid for s in await reader.secret.list()}
    return [name for name, uid in acked.items() if present.get(name) != uid]


async def _kill_a_node_under_load(cluster: Cluster) -> None:
    """Defines OPS secrets from WORKERS clients; a third of the way in one NATS
    server is killed, two thirds in one secret replica.  Every define that was
    answered (acknowledged) must be in the ledger at the end, and served by
    the surviving replica once it has caught up."""
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

    # The clients and processes on n1, the server that gets killed, move to
    # another (nats-py spreads connections over the listed servers at random).
    clients = [await cluster.client("h1") for _ in range(WORKERS)]
    try:
        async with asyncio.timeout(600):
            await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for c in clients:
            await c.close()
    assert len(killed) == 2

    # Stored: every acknowledged define's key is in the secret ledger (R3),
    # as its leader reports it to the operator.
    nc = await cluster.nats.connect(cluster.url("h2"), "cluster-test-ledger", deadline=10)
    try:
        info = await nc.jetstream().stream_info(ledger_name("secret", None), subjects_filter=">")
        stored = {subject.rsplit(".", 1)[1] for subject in info.state.subjects or {}}
    finally:
        await bus.close(nc)
    lost = [name for name, uid in acked.items() if uid not in stored]
    # Served, through h2's nearest server: the surviving replica reads from
    # memory that its ledger watch feeds, which may still be behind right after
    # the burst; an acknowledged define missing from the ledger never arrives.
    async with await cluster.client("h2") as reader:
        missing = await _not_served(reader, acked)
        behind, first_read = len(missing), asyncio.get_running_loop().time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE):
                while missing:
                    await asyncio.sleep(0.5)
                    missing = await _not_served(reader, acked)
        caught_up = asyncio.get_running_loop().time() - first_read
    cli = await cluster.cli("h1", roles.ADMIN, "secret-list")
    print(
        f"kill-a-node run: operations={OPS} acknowledged={len(acked)} "
        f"not acknowledged={failed} lost={len(lost)}; killed: {', '.join(killed)}; "
        f"served by the surviving replica: {len(acked) - len(missing)} "
        f"({behind} not yet at the first read, all {caught_up:.1f} s later); "
        f"CLI after the kills: rc={cli.rc}"
    )
    assert lost == []
    assert missing == [], f"acknowledged, stored, never served: {missing[:10]}"
    assert len(acked) + failed == OPS
    assert cli.rc == 0, cli.err
    assert all(name in cli.out for name in list(acked)[:5])
