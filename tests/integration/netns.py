"""Network namespaces for the network service's tests: never the host's own namespace.

``NetLab`` makes a "host" namespace where nats-server and the network
service run (so bridges, dnsmasq and nftables tables live there), plus
guest and "outside" namespaces wired to it with veth pairs.  Every name
carries the test's pid and a random suffix; ``close`` kills what runs in
the namespaces (all of it started by the test) and deletes them.

The test process itself stays in its namespace; only its NATS connection
is opened from inside the lab's (``setns`` on the calling thread around the
connect and the nats-server start), so it talks to the lab's server on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from client.network import NetworkClient
from shared.util import bus
from shared.util.natsserver import EmbeddedNats
from tests.integration.procs import ROOT, kill9, terminate, wait_for_service

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

#: udhcpc's event script: configure the lease (address, default route) it got
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    if [ -n "$router" ]; then ip route replace default via "${router%% *}" dev "$interface"; fi
    ;;
esac
exit 0
"""


def skip_reason() -> str | None:
    """Why the lab cannot run here (not root, a tool missing), None when it can."""
    if os.geteuid() != 0:
        return "network namespaces and bridges need root"
    missing = have_tools("ip", "nft", "dnsmasq", "udhcpc", "busybox")
    return f"{missing} is not installed" if missing else None


def have_tools(*names: str) -> str | None:
    """The first missing tool's name, None when all are installed."""
    for name in names:
        if not any(Path(d, name).exists() for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin")):
            return name
    return None


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the calling thread in namespace ``ns`` for the block (its sockets stay there)."""
    with open("/proc/thread-self/ns/net") as own, open(f"/run/netns/{ns}") as target:
        if _libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        try:
            yield
        finally:
            if _libc.setns(own.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``check`` a failure raises with the command's stderr in the message."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


class NetLab:
    """A host namespace with nats-server and the network service, and its neighbours."""

    def __init__(self, tmp: Path, service_args: tuple[str, ...] = ()) -> None:
        tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.tag = tag
        self.ns = f"vbh{tag}"
        self.host = f"h{tag}"
        self.tmp = tmp
        self.state = tmp / "state"
        self.namespaces: list[str] = []
        self.nats: EmbeddedNats | None = None
        self.nc: NATS | None = None
        self.service: subprocess.Popen[bytes] | None = None
        self._links = 0
        self.service_args = service_args
        # dnsmasq rereads its hosts files as "nobody" (on SIGHUP): every folder
        # above them must be searchable, which the test's tmp_path is not
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"vbrun{tag}-"))
        self.run_dir.chmod(0o755)

    # -- set-up ------------------------------------------------------------------

    def add_ns(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        return name

    async def start(self) -> None:
        self.add_ns(self.ns)
        self.state.mkdir(parents=True, exist_ok=True)
        with inside(self.ns):
            self.nats = EmbeddedNats(self.tmp / "nats", hosts=[self.host])
            await self.nats.start()
            self.nc = await bus.connect(self.nats.role_url("admin"), "virtbus-test", deadline=10)
        await self.start_service()

    async def start_service(self) -> None:
        assert self.nats is not None and self.nc is not None
        log = open(self.tmp / "network.log", "ab")  # noqa: SIM115 - closed with the process
        self.service = subprocess.Popen(
            [
                "ip", "netns", "exec", self.ns, sys.executable, "-m", "services.network",
                "--nats-url", self.nats.url, "--state-dir", str(self.state),
                "--host", self.host, "--check-interval", "0.3", "--log-format", "text",
                "--run-dir", str(self.run_dir), *self.service_args,
                "--creds", str(self.nats.credentials.path("network")),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )  # fmt: skip
        log.close()
        await wait_for_service(self.nc, "network", self.service)

    def kill9_service(self) -> None:
        assert self.service is not None
        kill9(self.service)

    # -- helpers -----------------------------------------------------------------

    def run(self, ns: str, *argv: str, check: bool = True, timeout: float = 30) -> str:
        return sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout).stdout

    def link(self, ns_a: str, ns_b: str) -> tuple[str, str]:
        """A veth pair between two namespaces; the names of its two ends."""
        self._links += 1
        a, b = f"va{self.tag}{self._links}", f"vb{self.tag}{self._links}"
        sh("ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b)
        self.run(ns_a, "ip", "link", "set", a, "up")
        self.run(ns_b, "ip", "link", "set", b, "up")
        return a, b

    def guest(self, bridge: str) -> tuple[str, str]:
        """A guest namespace plugged into ``bridge``; its name and its interface."""
        ns = self.add_ns(f"vbg{self.tag}{len(self.namespaces)}")
        host_end, guest_end = self.link(self.ns, ns)
        self.run(self.ns, "ip", "link", "set", host_end, "master", bridge)
        return ns, guest_end

    def outside(self, lab_addr: str, outside_addr: str, prefix: int = 24) -> str:
        """An "outside" namespace on its own link to the host namespace."""
        ns = self.add_ns(f"vbo{self.tag}")
        host_end, out_end = self.link(self.ns, ns)
        self.run(self.ns, "ip", "addr", "add", f"{lab_addr}/{prefix}", "dev", host_end)
        self.run(ns, "ip", "addr", "add", f"{outside_addr}/{prefix}", "dev", out_end)
        return ns

    def dhcp(self, ns: str, iface: str) -> None:
        """Get a lease with udhcpc (a real DHCP client) and configure it."""
        script = self.tmp / "udhcpc.sh"
        if not script.exists():
            script.write_text(UDHCPC_SCRIPT)
            script.chmod(0o755)
        self.run(ns, "udhcpc", "-i", iface, "-n", "-q", "-f", "-t", "20", "-T", "1",
                 "-s", str(script), timeout=60)  # fmt: skip

    def dnsmasq_pids(self) -> list[int]:
        pids = self.run(self.ns, "ip", "netns", "pids", self.ns, check=False).split()
        out = []
        for pid in pids:
            with contextlib.suppress(FileNotFoundError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if cmd.startswith(b"/usr/sbin/dnsmasq") or b"dnsmasq\0--conf-file" in cmd:
                    out.append(int(pid))
        return out

    def dnsmasq_daemons(self, conf_name: str) -> list[int]:
        """dnsmasq daemons reading ``conf_name`` (not counting the helper process each forks)."""
        daemons = []
        for pid in self.dnsmasq_pids():
            with contextlib.suppress(FileNotFoundError):
                status = Path(f"/proc/{pid}/status").read_text()
                ppid = int(next(x for x in status.splitlines() if x.startswith("PPid:")).split()[1])
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if conf_name.encode() in cmd and ppid not in self.dnsmasq_pids():
                    daemons.append(pid)
        return daemons

    # -- tear-down ---------------------------------------------------------------

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.close(self.nc), 5)
        if self.service is not None:
            terminate(self.service)
        for ns in reversed(self.namespaces):
            # everything in the lab's namespaces was started by this test
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        if self.nats is not None:
            with contextlib.suppress(Exception):
                await self.nats.stop()
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)


LAB_ADDR, OUTSIDE_ADDR = "198.51.100.1", "198.51.100.2"

# a one-shot TCP server that prints the address its one client came from
_ECHO_PEER = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 7777)); s.listen(1); print('ready', flush=True)\n"
    "s.settimeout(20); c,a=s.accept(); print(a[0], flush=True)\n"
)
_CONNECT = "import socket,sys; socket.create_connection((sys.argv[1], 7777), timeout=5).close()"


def network_xml(name: str, bridge: str, mode: str | None, subnet: str) -> str:
    forward = f"<forward mode='{mode}'/>" if mode else ""
    return (
        f"<network><name>{name}</name>{forward}<bridge name='{bridge}' stp='off'/>"
        f"<ip address='{subnet}.1' netmask='255.255.255.0'><dhcp>"
        f"<range start='{subnet}.100' end='{subnet}.150'/></dhcp></ip></network>"
    )


def lab_client(lab: NetLab) -> NetworkClient:
    assert lab.nc is not None
    return NetworkClient(lab.nc, lab.host)


def cli(lab: NetLab, *argv: str) -> str:
    """The virtbus CLI run in the lab's namespace (it talks to the lab's NATS)."""
    assert lab.nats is not None
    return lab.run(
        lab.ns, sys.executable, "-m", "client.cli.main", "-c", lab.nats.role_url("admin"),
        "--host", lab.host, *argv,
    )  # fmt: skip


def seen_from_outside(lab: NetLab, outside: str, guest: str) -> str:
    """The source address the outside namespace sees when the guest connects to it."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", outside, sys.executable, "-c", _ECHO_PEER],
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        lab.run(guest, sys.executable, "-c", _CONNECT, OUTSIDE_ADDR)
        return server.stdout.readline().strip()
    finally:
        server.kill()
        server.wait()


def guest_addr(lab: NetLab, ns: str, iface: str) -> str:
    data = json.loads(lab.run(ns, "ip", "-j", "-4", "addr", "show", "dev", iface))
    return str(data[0]["addr_info"][0]["local"])


@pytest.fixture(name="lab")
async def lab_fixture(tmp_path: Path) -> AsyncIterator[NetLab]:
    """A started lab for one test, closed afterwards."""
    lab = NetLab(tmp_path)
    try:
        await lab.start()
        yield lab
    finally:
        await lab.close()
