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
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from nats.aio.client import Client as NATS

from shared.util import bus
from shared.util.natsserver import EmbeddedNats
from tests.integration.procs import ROOT, wait_for_service

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
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


class NetLab:
    """A host namespace with nats-server and the network service, and its neighbours."""

    def __init__(self, tmp: Path) -> None:
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
            self.nats = EmbeddedNats(self.tmp / "nats")
            await self.nats.start()
            self.nc = await bus.connect(self.nats.url, "virtbus-test", deadline=10)
        await self.start_service()

    async def start_service(self) -> None:
        assert self.nats is not None and self.nc is not None
        log = open(self.tmp / "network.log", "ab")  # noqa: SIM115 - closed with the process
        self.service = subprocess.Popen(
            [
                "ip", "netns", "exec", self.ns, sys.executable, "-m", "services.network",
                "--nats-url", self.nats.url, "--state-dir", str(self.state),
                "--host", self.host, "--check-interval", "0.3", "--log-format", "text",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )  # fmt: skip
        log.close()
        await wait_for_service(self.nc, "network", self.service)

    def kill9_service(self) -> None:
        assert self.service is not None
        self.service.send_signal(signal.SIGKILL)
        self.service.wait()

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
        if self.service is not None and self.service.poll() is None:
            self.service.terminate()
            try:
                self.service.wait(10)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait()
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
