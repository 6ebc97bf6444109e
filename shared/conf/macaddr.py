"""MAC addresses as libvirt reads and writes them (virmacaddr.c)."""

from __future__ import annotations

import functools
import re

#: Six groups of one or two hex digits; greedy, so that a third digit in a group
#: fails the match (libvirt reads each group with strtoul and checks its end).
_MAC = re.compile(":".join(["([0-9a-fA-F]{1,2})"] * 6))


_hex_number = functools.partial(int, base=16)


def parse_mac(text: str) -> bytes | None:
    """virMacAddrParse: six groups of one or two hex digits separated by ``:``.

    Anything at or below a space may follow the last group (libvirt stops
    there); None when libvirt refuses the text.
    """
    found = _MAC.match(text)
    if found is None:
        return None
    if text[found.end() : found.end() + 1] > " ":
        return None
    return bytes(map(_hex_number, found.groups()))


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
