"""A bridge with two guests, each in its own network namespace, for the filter traffic tests.

``host`` holds bridge ``br0`` with the guest ports ``vnet0`` (the filtered
guest, namespace ``g1``) and ``vnet1`` (its peer, namespace ``g2``).  Names
carry a random suffix; ``remove`` deletes the namespaces, and with them every
interface and rule in them.  Frames are built here and sent or watched with
``nwfilter_pkt.py`` run inside the namespaces.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PKT = str(Path(__file__).with_name("nwfilter_pkt.py"))
GUEST_MAC = "52:54:00:00:00:01"
PEER_MAC = "52:54:00:00:00:02"
GUEST_IP = "10.99.0.2"
PEER_IP = "10.99.0.1"


def missing_requirements() -> str | None:
    """Why the traffic tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "nft", "ebtables", "iptables", "ip6tables"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            return f"{tool} is not installed (scripts/system-packages.sh)"
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        return "bridge netfilter (br_netfilter) is not loaded: bridged IP filtering cannot work"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _ipv4(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed


def arp_request(sender_mac: str, sender_ip: str, target_ip: str) -> str:
    """A broadcast ARP request asking for ``target_ip``."""
    eth = b"\xff" * 6 + _mac(sender_mac) + b"\x08\x06"
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
    arp += _mac(sender_mac) + _ipv4(sender_ip) + b"\x00" * 6 + _ipv4(target_ip)
    return (eth + arp).hex()


def udp_frame(src_mac: str, src_ip: str, dst_ip: str, sport: int, dport: int, marker: bytes) -> str:
    """A broadcast Ethernet frame carrying one UDP datagram (IPv4 checksum set)."""
    payload = marker
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, _ipv4(src_ip), _ipv4(dst_ip)
    )
    words = struct.unpack("!10H", header)
    total = sum(words)
    total = (total >> 16) + (total & 0xFFFF)
    checksum = ~(total + (total >> 16)) & 0xFFFF
    header = header[:10] + struct.pack("!H", checksum) + header[12:]
    eth = b"\xff" * 6 + _mac(src_mac) + b"\x08\x00"
    return (eth + header + udp).hex()


@dataclass
class Topology:
    host: str
    g1: str
    g2: str

    @classmethod
    def create(cls) -> Topology:
        suffix = secrets.token_hex(3)
        topo = cls(f"nwf-h-{suffix}", f"nwf-g1-{suffix}", f"nwf-g2-{suffix}")
        try:
            topo._build()
        except BaseException:
            topo.remove()
            raise
        return topo

    def _build(self) -> None:
        for ns in (self.host, self.g1, self.g2):
            _ip("netns", "add", ns)
        h = ["-n", self.host]
        _ip(*h, "link", "add", "br0", "type", "bridge")
        _ip(*h, "link", "set", "br0", "up")
        for port, ns, mac, address in (
            ("vnet0", self.g1, GUEST_MAC, GUEST_IP),
            ("vnet1", self.g2, PEER_MAC, PEER_IP),
        ):
            _ip(*h, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip(*h, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "link", "set", "eth0", "address", mac, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")

    def remove(self) -> None:
        for ns in (self.host, self.g1, self.g2):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def ip(self, ns: str, *args: str) -> None:
        _ip("-n", ns, *args)

    def flush_neighbours(self) -> None:
        for ns in (self.g1, self.g2):
            _ip("-n", ns, "neigh", "flush", "dev", "eth0")

    def neighbour(self, ns: str, address: str) -> str:
        out = subprocess.run(
            ["ip", "-n", ns, "neigh", "show", address, "dev", "eth0"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.strip()

    async def tool(self, ns: str, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns, sys.executable, PKT, *args,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    async def ping(
        self, src: str = GUEST_IP, dst: str = PEER_IP, seconds: float = 2.0, ns: str | None = None
    ) -> bool:
        """Whether ``ns`` (default: guest ``g1``) gets an echo reply from ``dst`` in time."""
        return (await self.tool(ns or self.g1, "ping", src, dst, str(seconds)))[0] == 0

    async def delivered(self, frame_hex: str, marker: bytes, seconds: float = 3.0) -> bool:
        """Whether a frame ``g1`` sends reaches ``g2`` (watched for ``seconds``)."""
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.g2, sys.executable, PKT,
            "sniff", "eth0", str(seconds), marker.hex(),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        await proc.stdout.readline()  # "ready": the socket is bound
        await self.tool(self.g1, "send", "eth0", frame_hex, "3")
        await proc.wait()
        return proc.returncode == 0


@pytest.fixture(name="topo")
def topology_fixture() -> Iterator[Topology]:
    """A fresh topology for one test, removed afterwards."""
    topology = Topology.create()
    try:
        yield topology
    finally:
        topology.remove()
