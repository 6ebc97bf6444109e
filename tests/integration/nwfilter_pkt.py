"""Packet tools run inside a test's network namespace (stdlib only; no ping on the test hosts).

python3 nwfilter_pkt.py ping SRC_IP DST_IP SECONDS       exit 0 when an echo reply came
python3 nwfilter_pkt.py send IFACE HEXFRAME [COUNT]      send a raw Ethernet frame
python3 nwfilter_pkt.py sniff IFACE SECONDS HEXMARKER    exit 0 when a frame holding MARKER came
python3 nwfilter_pkt.py count IFACE SECONDS HEXMARKER... print how many frames held each marker
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def ping(src: str, dst: str, seconds: float) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.bind((src, 0))
    ident = os.getpid() & 0xFFFF
    deadline = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < deadline:
        seq += 1
        header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        payload = b"virtbus-nwfilter"
        packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
        sock.sendto(packet, (dst, 0))
        wait_until = min(deadline, time.monotonic() + 0.3)
        while time.monotonic() < wait_until:
            ready, _, _ = select.select([sock], [], [], max(0.0, wait_until - time.monotonic()))
            if not ready:
                break
            data, addr = sock.recvfrom(2048)
            ihl = (data[0] & 0x0F) * 4
            kind, _code, _sum, rid, _rseq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if kind == 0 and rid == ident and addr[0] == dst:
                return 0
    return 1


def send(iface: str, frame_hex: str, count: int = 1) -> int:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    frame = bytes.fromhex(frame_hex)
    for _ in range(count):
        sock.send(frame)
        time.sleep(0.01)
    return 0


def _frames(iface: str, seconds: float):  # type: ignore[no-untyped-def]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        ready, _, _ = select.select([sock], [], [], left)
        if ready:
            data, addr = sock.recvfrom(65535)
            if addr[2] != socket.PACKET_OUTGOING:
                yield data


def sniff(iface: str, seconds: float, marker_hex: str) -> int:
    marker = bytes.fromhex(marker_hex)
    return 0 if any(marker in frame for frame in _frames(iface, seconds)) else 1


def count(iface: str, seconds: float, *markers_hex: str) -> int:
    """Count frames per marker for ``seconds`` or until SIGTERM, then print the counts."""
    import signal

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    markers = [bytes.fromhex(m) for m in markers_hex]
    seen = [0] * len(markers)
    try:
        for frame in _frames(iface, seconds):
            for i, marker in enumerate(markers):
                if marker in frame:
                    seen[i] += 1
    except KeyboardInterrupt:
        pass
    print(" ".join(str(n) for n in seen), flush=True)
    return 0


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "ping":
        return ping(args[0], args[1], float(args[2]))
    if command == "send":
        return send(args[0], args[1], int(args[2]) if len(args) > 2 else 1)
    if command == "sniff":
        return sniff(args[0], float(args[1]), args[2])
    if command == "count":
        return count(args[0], float(args[1]), *args[2:])
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
