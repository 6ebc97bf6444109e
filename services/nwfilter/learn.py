"""IP address learning from a guest's first packets (CTRL_IP_LEARNING='any').

``python -m services.nwfilter.learn IFACE MAC`` watches the bridge port IFACE
and prints the first IPv4 address the guest with MAC announces: the sender
address of its ARP packets, or the source address of its IPv4 packets (the
unspecified address 0.0.0.0, used before DHCP, does not count).  It runs as
its own process so that the service can start it inside the port's network
namespace; it exits after printing.  Standard library only.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys

ETH_P_ALL = 0x0003


def learned(frame: bytes, mac: bytes) -> str | None:
    """The guest's IPv4 address this frame shows, if any."""
    if len(frame) < 14 or frame[6:12] != mac:
        return None
    (ethertype,) = struct.unpack("!H", frame[12:14])
    if ethertype == 0x0806 and len(frame) >= 42 and frame[22:28] == mac:
        address = frame[28:32]
    elif ethertype == 0x0800 and len(frame) >= 34:
        address = frame[26:30]
    else:
        return None
    ip = ipaddress.IPv4Address(address)
    if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        return None
    return str(ip)


def main(argv: list[str]) -> int:
    iface, mac_text = argv
    mac = bytes.fromhex(mac_text.replace(":", ""))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    print("ready", flush=True)
    while True:
        frame, _addr = sock.recvfrom(65535)
        ip = learned(frame, mac)
        if ip is not None:
            print(ip, flush=True)
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
