"""MAC addresses as libvirt reads and writes them (virmacaddr.c)."""

from __future__ import annotations

import re

#: Six groups of one or two hex digits; greedy, so that a third digit in a group
#: fails the match (libvirt reads each group with strtoul and checks its end).
_MAC = re.compile(":".join(["([0-9a-fA-F]{1,2})"] * 6))


def parse_mac(text: str) -> bytes | None:
    """virMacAddrParse: six groups of one or two hex digits separated by ``:``.

    Anything at or below a space may follow the last group (libvirt stops
    there); None when libvirt refuses the text.
    """
    found = _MAC.match(text)
    if found is None:
        return None
    end = found.end()
    if text[end : end + 1] > " ":
        return None
    if end == 17:  # two digits a group, as nearly every address is written
        return bytes.fromhex(text[:17].replace(":", ""))
    return bytes(int(group, 16) for group in found.groups())


def format_mac(mac: bytes) -> str:
    """virMacAddrFormat: lower-case, two digits a group."""
    return mac.hex(":")


def normalize_mac(text: str) -> str | None:
    """The canonical text of a MAC address, None when it does not parse."""
    mac = parse_mac(text)
    return None if mac is None else format_mac(mac)


def is_multicast(mac: bytes) -> bool:
    """virMacAddrIsMulticast: the group bit of the first octet."""
    return bool(mac[0] & 1)
