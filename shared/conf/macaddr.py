"""MAC addresses as libvirt reads and writes them (virmacaddr.c)."""

from __future__ import annotations

_HEX = "0123456789abcdefABCDEF"


def parse_mac(text: str) -> bytes | None:
    """virMacAddrParse: six groups of one or two hex digits separated by ``:``.

    Anything at or below a space may follow the last group (libvirt stops
    there); None when libvirt refuses the text.
    """
    out = bytearray()
    pos = 0
    for index in range(6):
        end = pos
        while end < len(text) and text[end] in _HEX:
            end += 1
        if not 1 <= end - pos <= 2:
            return None
        out.append(int(text[pos:end], 16))
        if index == 5:
            return bytes(out) if end == len(text) or text[end] <= " " else None
        if end >= len(text) or text[end] != ":":
            return None
        pos = end + 1
    return None  # pragma: no cover - the loop always returns


def format_mac(mac: bytes) -> str:
    """virMacAddrFormat: lower-case, two digits a group."""
    return ":".join(f"{b:02x}" for b in mac)


def normalize_mac(text: str) -> str | None:
    """The canonical text of a MAC address, None when it does not parse."""
    mac = parse_mac(text)
    return None if mac is None else format_mac(mac)


def is_multicast(mac: bytes) -> bool:
    """virMacAddrIsMulticast: the group bit of the first octet."""
    return bool(mac[0] & 1)
