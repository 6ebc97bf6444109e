"""A two-host virtbus cluster on this machine, built from the deployment files.

* ``NatsCluster``: three nats-servers on loopback with the settings of
  deploy/nats/values.yaml (cluster routes over TLS, JetStream on files,
  ``sync_interval``, ``max_payload``), R3 streams through the chart's
  ``nats.streamReplicas``.  Given the NATS chart's Secret that
  ``python -m deploy.credentials`` writes, it also loads that Secret's
  ``authorization`` block (included as the values include it) and speaks
  client TLS as the values ask: then every client needs a role's user and
  password and the test CA.
* ``ChartProcesses``: every workload the chart renders, run with the
  container's environment as rendered: a Deployment as containers with
  ``podman kube play`` when podman and `make images`'s image are here, else
  (and every DaemonSet, which podman cannot play) as processes (a Deployment's replicas, a
  DaemonSet's pod on each of the simulated hosts h1 and h2), only the
  addresses changed for one machine: loopback NATS, a free metrics port, a
  state folder per pod, and each Secret volume (the role's credentials, the
  NATS CA) written to a folder of the pod, as the kubelet mounts it, with
  the environment's paths into it (``VIRTBUS_CREDS``, ``VIRTBUS_TLS_CA``)
  pointed there.

Each simulated host lists a different NATS server first (h1: n1, h2: n2), as
pods on different nodes would name their nearest; nats-py (which
``shared.util.bus`` does not tell otherwise) picks among the listed servers
at random, so a host's connections spread over all three.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nats.aio.client import Client as NATS

from deploy.images.source_hash import source_hash
from shared.util import bus
from shared.util.credentials import Credentials, write_private
from shared.util.natsserver import free_port, nats_server_binary
from tests.deploy.chart import ROOT
from tests.integration.procs import terminate

NATS_VALUES = ROOT / "deploy" / "nats" / "values.yaml"
HOSTS = ("h1", "h2")
#: The image of a component -> the module its container runs.
MODULES = {
    "secret": "services.secret",
    "storage": "services.storage",
    "network": "services.network",
    "nwfilter": "services.nwfilter",
    "agent-qemu": "agents.qemu",
}


def _write_tls(folder: Path) -> dict[str, Path]:
    """A CA and one certificate for 127.0.0.1 that serves and authenticates routes."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "virtbus test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nats")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": folder / "ca.crt", "cert": folder / "tls.crt", "key": folder / "tls.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths["key"].chmod(0o600)
    return paths


@dataclass
class NatsNode:
    name: str
    port: int
    route_port: int
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@dataclass
class NatsCluster:
    """Three nats-servers configured as deploy/nats/values.yaml configures the chart's.

    With ``auth_secret`` (the ``nats-virtbus-auth`` Secret that
    ``python -m deploy.credentials`` writes) the servers admit only its users
    and speak TLS to clients when the values enable it; ``creds`` is then the
    user the cluster's own checks connect as (the operator's).  Without, they
    admit anyone in the clear (``virtbus up --nats-url`` joining, which brings
    no users of its own).
    """

    folder: Path
    auth_secret: Path | None = None
    creds: Credentials | None = None
    nodes: list[NatsNode] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    #: The test CA and the servers' certificate (``ca``, ``cert``, ``key``).
    tls: dict[str, Path] | None = None
    client_tls: bool = False

    @property
    def ca(self) -> Path | None:
        """The CA clients verify the servers with, when they speak TLS to clients."""
        return self.tls["ca"] if self.tls and self.client_tls else None

    def url_for(self, first: int) -> str:
        """Every server's URL, starting with node ``first`` (a host's nearest)."""
        order = self.nodes[first:] + self.nodes[:first]
        return ",".join(n.url for n in order)

    async def connect(self, url: str, name: str, deadline: float = 30) -> NATS:
        """A connection as ``creds``, verifying the servers when they speak TLS."""
        return await bus.connect(url, name, creds=self.creds, tls_ca=self.ca, deadline=deadline)

    def _config(self, node: NatsNode, values: dict[str, Any]) -> str:
        config = values["config"]
        merge = config.get("merge", {})
        js = merge.get("jetstream", {})
        tls = self.tls
        routes = ", ".join(
            f"nats-route://127.0.0.1:{n.route_port}" for n in self.nodes if n is not node
        )
        lines = [
            f"server_name: {node.name}",
            f"listen: 127.0.0.1:{node.port}",
            f"max_payload: {merge['max_payload']}",
            "jetstream {",
            f'  store_dir: "{node.folder / "jetstream"}"',
            f"  sync_interval: {js['sync_interval']}",
            # The values' limit is for a 20 GiB volume; a test machine gets less.
            "  max_file_store: 2G",
            "}",
            "cluster {",
            "  name: virtbus",
            f"  listen: 127.0.0.1:{node.route_port}",
            f"  routes: [{routes}]",
        ]
        if tls is not None and config["cluster"]["tls"]["enabled"]:
            lines += [
                "  tls {",
                f'    cert_file: "{tls["cert"]}"',
                f'    key_file: "{tls["key"]}"',
                f'    ca_file: "{tls["ca"]}"',
                "    verify: true",
                "    timeout: 5",
                "  }",
            ]
        lines.append("}")
        if tls is not None and self.client_tls:
            # Clients verify the servers; they authenticate with a password.
            lines += [
                "tls {",
                f'  cert_file: "{tls["cert"]}"',
                f'  key_file: "{tls["key"]}"',
                "  timeout: 5",
                "}",
            ]
        if self.auth_secret is not None:
            # The values' own include line, relative to this file as to the
            # chart's nats.conf: the Secret is mounted beside the config folder.
            lines.append(f'include "{merge["$include"]}"')
        lines.append("")
        return "\n".join(lines)

    def _mount_auth(self, values: dict[str, Any]) -> int:
        """Write the auth Secret's ``auth.conf`` where the values' include finds it
        from each node's config; returns how many users it holds."""
        assert self.auth_secret is not None
        secret = yaml.safe_load(self.auth_secret.read_text())
        assert secret["kind"] == "Secret"
        [(key, text)] = secret["stringData"].items()
        include = values["config"]["merge"]["$include"]
        assert Path(include).name == key, f"the values include {include}, the Secret holds {key}"
        for node in self.nodes:
            write_private((node.folder / include).resolve(), text)
        block = json.loads(text.partition(":")[2])  # "authorization: {JSON}"
        return len(block["users"])

    async def start(self) -> None:
        values = yaml.safe_load(NATS_VALUES.read_text())
        config = values["config"]
        count = int(config["cluster"]["replicas"])
        assert config["jetstream"]["fileStore"]["enabled"], "the values keep JetStream on files"
        secured = self.auth_secret is not None
        self.client_tls = secured and bool(config["nats"]["tls"]["enabled"])
        if config["cluster"]["tls"]["enabled"] or self.client_tls:
            self.tls = _write_tls(self.folder / "tls")
        self.nodes = [
            NatsNode(f"n{i + 1}", free_port(), free_port(), self.folder / f"n{i + 1}")
            for i in range(count)
        ]
        users = self._mount_auth(values) if secured else 0
        self.settings = [
            f"{count} servers",
            f"sync_interval: {config['merge']['jetstream']['sync_interval']}",
            f"max_payload: {config['merge']['max_payload']}",
            "route TLS: " + ("on" if config["cluster"]["tls"]["enabled"] else "off"),
            "client TLS: " + ("on" if self.client_tls else "off"),
            f"users: {users} (deploy/credentials.py)" if secured else "users: none",
        ]
        for node in self.nodes:
            node.folder.mkdir(parents=True, exist_ok=True)
            write_private(node.folder / "nats.conf", self._config(node, values))
            self.launch(node)
        await self.wait_jetstream()

    def launch(self, node: NatsNode) -> None:
        log = open(node.folder / "nats.log", "ab")  # noqa: SIM115 (the child keeps it)
        node.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(node.folder / "nats.conf")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    async def wait_jetstream(self, timeout: float = 60) -> None:
        """Until JetStream answers through every live server (a meta leader exists)."""
        async with asyncio.timeout(timeout):
            for node in self.nodes:
                if node.proc is None or node.proc.poll() is not None:
                    continue
                nc = await self.connect(node.url, "cluster-test-wait", deadline=timeout)
                try:
                    while True:
                        try:
                            await nc.jetstream().account_info()
                            break
                        except Exception:
                            await asyncio.sleep(0.2)
                finally:
                    await bus.close(nc)

    def kill(self, index: int) -> None:
        node = self.nodes[index]
        assert node.proc is not None
        os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait()

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                terminate(node.proc)


@dataclass
class Pod:
    """One process standing for one pod of a rendered workload."""

    workload: str
    component: str
    host: str
    module: str
    env: dict[str, str]
    http_port: int
    proc: asyncio.subprocess.Process | None = None
    #: Run as a container with `podman kube play` of this rendered workload.
    manifest: dict[str, Any] | None = None
    image: str = ""
    #: Each Secret volume's name -> the folder holding its files, as mounted.
    mounts: dict[str, Path] = field(default_factory=dict)
    #: The environment variables whose rendered path was into such a volume.
    mounted_env: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return f"{self.component}@{self.host}"

    @property
    def how(self) -> str:
        return "container (podman kube play)" if self.manifest else "process"


def _secret_values(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        o["metadata"]["name"]: dict(o.get("stringData", {}))
        for o in objects
        if o["kind"] == "Secret"
    }


def role_credentials(objects: list[dict[str, Any]], folder: Path) -> dict[str, Path]:
    """Each role's credentials file (the ``creds`` key of its rendered Secret, the
    file a pod of that role reads as ``VIRTBUS_CREDS``), written under ``folder``."""
    files: dict[str, Path] = {}
    for obj in objects:
        role = obj["metadata"].get("annotations", {}).get("virtbus.io/role")
        if obj["kind"] == "Secret" and role:
            files[role] = folder / f"{role}.creds"
            write_private(files[role], obj["stringData"]["creds"])
    return files


def _mount_secrets(
    spec: dict[str, Any],
    container: dict[str, Any],
    secrets: dict[str, dict[str, str]],
    folder: Path,
) -> tuple[dict[str, Path], dict[str, Path]]:
    """Write the files of each Secret volume the container mounts under
    ``folder/<volume>``, as the kubelet would.  Returns volume name -> folder
    and mount path -> folder."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    by_volume: dict[str, Path] = {}
    by_path: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        source = volumes[mount["name"]].get("secret")
        if source is None:
            continue
        data = secrets[source["secretName"]]
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        local = folder / mount["name"]
        for item in items:
            write_private(local / item["path"], data[item["key"]])
        by_volume[mount["name"]] = by_path[mount["mountPath"]] = local
    return by_volume, by_path


def pods_of(
    objects: list[dict[str, Any]],
    cluster: NatsCluster,
    folder: Path,
    external: dict[str, dict[str, str]] | None = None,
) -> tuple[list[Pod], list[str]]:
    """The processes the rendered workloads stand for, and the workloads not run (why).

    ``external``: the Secrets the pods mount that the chart does not make
    (name -> key -> text), such as the NATS CA's."""
    secrets = {**(external or {}), **_secret_values(objects)}
    pods: list[Pod] = []
    skipped: list[str] = []
    for obj in objects:
        if obj["kind"] not in ("Deployment", "DaemonSet"):
            continue
        spec = obj["spec"]["template"]["spec"]
        [container] = spec["containers"]
        image = container["image"].rsplit("/", 1)[1].split(":")[0]
        module = MODULES[image]
        if not (ROOT / module.replace(".", "/") / "__main__.py").exists():
            skipped.append(f"{obj['kind']}/{obj['metadata']['name']} ({module} not on main yet)")
            continue
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        if obj["kind"] == "Deployment":
            # Replicas spread over the hosts, as the anti-affinity asks.
            placements = [HOSTS[i % len(HOSTS)] for i in range(spec_replicas(obj))]
        else:
            pinned = spec["nodeSelector"].get("kubernetes.io/hostname")
            placements = [pinned] if pinned else list(HOSTS)
        for index, host in enumerate(placements):
            env: dict[str, str] = {}
            for item in container["env"]:
                if "value" in item:
                    env[item["name"]] = item["value"]
                elif "fieldRef" in item["valueFrom"]:
                    assert item["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
                    env[item["name"]] = host
                else:
                    ref = item["valueFrom"]["secretKeyRef"]
                    env[item["name"]] = secrets[ref["name"]][ref["key"]]
            port = free_port()
            pod_dir = folder / host / f"{component}-{index}"
            by_volume, by_path = _mount_secrets(spec, container, secrets, pod_dir / "mounts")
            mounted_env = set()
            for name, value in env.items():
                for path, local in by_path.items():
                    if value.startswith(path.rstrip("/") + "/"):
                        env[name] = str(local / value[len(path.rstrip("/")) + 1 :])
                        mounted_env.add(name)
            env.update(
                VIRTBUS_NATS_URL=cluster.url_for(HOSTS.index(host)),
                VIRTBUS_HTTP_HOST="127.0.0.1",
                VIRTBUS_HTTP_PORT=str(port),
                VIRTBUS_STATE_DIR=str(pod_dir / "state"),
                VIRTBUS_LOG_FORMAT="text",
            )
            pod = Pod(obj["metadata"]["name"], component, host, module, env, port)
            pod.image = container["image"]
            pod.mounts, pod.mounted_env = by_volume, mounted_env
            if obj["kind"] == "Deployment" and podman_image(container["image"], module):
                # podman kube plays Deployments (not DaemonSets): one per host.
                pod.manifest = obj
            pods.append(pod)
    return pods, skipped


def podman_image(image: str, module: str) -> bool:
    """Whether podman is here with ``image`` built (`make images`) from this
    checkout's sources: an image of older sources is not used."""
    if shutil.which("podman") is None or os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["podman", "image", "inspect", "--format", '{{index .Labels "virtbus.source"}}', image],
        env=_podman_env(), capture_output=True, text=True,
    )  # fmt: skip
    folder = module.replace(".", "/")
    return done.returncode == 0 and done.stdout.strip() == source_hash(ROOT, folder)


def _podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy/images/containers.conf")}


def _podman(*args: str) -> str:
    done = subprocess.run(
        ["podman", *args], env=_podman_env(), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
    return done.stdout


class KubePlay:
    """One rendered Deployment played by podman as one pod of this simulated host.

    What changes for one machine: the host's network (several hosts share
    this one, so no pod network and no port mappings; numeric probe ports),
    one replica per played file (a second would take the same port), the
    NATS URL, metrics port and state as for processes, and, since podman
    cannot play a Secret's YAML, a podman secret standing for each
    ``secretKeyRef`` and a read-only host folder of the pod's files (its
    role's credentials, the NATS CA; the volume's mode, group ``fsGroup``)
    for each Secret volume.
    """

    def __init__(self, pod: Pod, folder: Path) -> None:
        assert pod.manifest is not None
        suffix = f"{pod.host}-{secrets.token_hex(3)}"
        self.name = f"{pod.workload}-{suffix}"
        self.folder = folder
        self.secrets: list[str] = []
        obj = copy.deepcopy(pod.manifest)
        obj["metadata"]["name"] = self.name
        obj["spec"]["replicas"] = 1
        spec = obj["spec"]["template"]["spec"]
        spec["hostNetwork"] = True
        [c] = spec["containers"]
        c.pop("ports", None)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            c[probe]["httpGet"]["port"] = pod.http_port
        env = []
        for item in c["env"]:
            name = item["name"]
            if name in pod.mounted_env:
                env.append(item)  # the path inside the container, as rendered
            elif "valueFrom" in item and "secretKeyRef" in item["valueFrom"]:
                ref = item["valueFrom"]["secretKeyRef"]
                ref["name"] = self._secret(ref["key"], pod.env[name])
                env.append(item)
            elif name in pod.env and name != "VIRTBUS_STATE_DIR":
                env.append({"name": name, "value": pod.env[name]})
            else:
                env.append(item)
        c["env"] = env
        group = spec.get("securityContext", {}).get("fsGroup", -1)
        for volume in spec["volumes"]:
            local = pod.mounts.get(volume["name"])
            if local is None:
                continue
            mode = volume["secret"].get("defaultMode", 0o644)
            for path in local.iterdir():
                os.chown(path, -1, group)
                path.chmod(mode)
            local.chmod(0o755)
            volume.pop("secret")
            volume["hostPath"] = {"path": str(local), "type": "Directory"}
        self.file = folder / f"{self.name}.yaml"
        self.file.write_text(yaml.safe_dump(obj))
        self.container = f"{self.name}-pod-0-{c['name']}"

    def _secret(self, key: str, value: str) -> str:
        """A podman secret as kube play reads one: JSON of base64 values by key."""
        name = f"{self.name}-{len(self.secrets)}"
        path = self.folder / f"{name}.json"
        path.write_text(json.dumps({key: base64.b64encode(value.encode()).decode()}))
        path.chmod(0o600)
        _podman("secret", "create", name, str(path))
        path.unlink()
        self.secrets.append(name)
        return name

    def play(self) -> None:
        _podman("kube", "play", str(self.file))

    def kill(self) -> None:
        _podman("kill", self.container)

    def down(self) -> None:
        subprocess.run(["podman", "kube", "down", str(self.file)], env=_podman_env(),
                       capture_output=True, timeout=120)  # fmt: skip
        for name in self.secrets:
            subprocess.run(["podman", "secret", "rm", name], env=_podman_env(),
                           capture_output=True, timeout=60)  # fmt: skip


def spec_replicas(obj: dict[str, Any]) -> int:
    replicas: int = obj["spec"]["replicas"]
    return replicas


class ChartProcesses:
    """Starts, watches and stops the pods' processes."""

    def __init__(self, pods: list[Pod], folder: Path) -> None:
        self.pods = pods
        self.folder = folder
        self.played: dict[str, KubePlay] = {}

    async def start(self, pod: Pod) -> None:
        if pod.manifest is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            play = KubePlay(pod, self.folder)
            self.played[pod.name] = play
            await asyncio.to_thread(play.play)
            return
        Path(pod.env["VIRTBUS_STATE_DIR"]).mkdir(parents=True, exist_ok=True)
        log = open(Path(pod.env["VIRTBUS_STATE_DIR"]) / "process.log", "ab")  # noqa: SIM115
        pod.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            pod.module,
            env={**os.environ, **pod.env},
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()

    async def start_all(self, timeout: float = 120) -> None:
        for pod in self.pods:
            await self.start(pod)
        async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
            for pod in self.pods:
                await self.wait_ready(http, pod)

    async def wait_ready(self, http: aiohttp.ClientSession, pod: Pod) -> None:
        url = f"http://127.0.0.1:{pod.http_port}/readyz"
        while True:
            if pod.proc is not None and pod.proc.returncode is not None:
                log = Path(pod.env["VIRTBUS_STATE_DIR"]) / "process.log"
                raise AssertionError(f"{pod.name} exited: {log.read_text()[-2000:]}")
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)

    def kill(self, pod: Pod) -> None:
        if pod.name in self.played:
            self.played[pod.name].kill()
            return
        assert pod.proc is not None
        pod.proc.kill()

    async def stop_all(self) -> None:
        for play in self.played.values():
            await asyncio.to_thread(play.down)
        for pod in self.pods:
            if pod.proc is not None and pod.proc.returncode is None:
                pod.proc.terminate()
        for pod in self.pods:
            if pod.proc is None:
                continue
            try:
                await asyncio.wait_for(pod.proc.wait(), 20)
            except TimeoutError:
                pod.proc.kill()
                await pod.proc.wait()
