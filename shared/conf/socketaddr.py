"""IP addresses as libvirt reads, writes and compares them (virsocketaddr.c).

libvirt parses a numeric address with ``getaddrinfo(AI_NUMERICHOST)``: glibc
accepts IPv4 in ``inet_aton`` form (``10.1``, ``0x0a.0.0.1`` and octal parts
are all valid) and IPv6 as ``inet_pton`` does.  It prints with
``getnameinfo(NI_NUMERICHOST)``, i.e. glibc's ``inet_ntop``: dotted quads, and
IPv6 with the longest run of two or more zero groups compressed and the
IPv4-compatible/-mapped forms written with a dotted quad.  Refusals carry
libvirt's wording (``VIR_ERR_SYSTEM_ERROR`` for an unparsable address,
``VIR_ERR_INTERNAL_ERROR`` for a bad DHCP range).
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address
from typing import Annotated

from pydantic import ValidatorFunctionWrapHandler, WrapValidator

from shared.conf.units import digits_value
from shared.util.errors import ErrorCode, ErrorDomain, VirtError


def _address_as_is(value: object, validate: ValidatorFunctionWrapHandler) -> object:
    # A model field holding either family is validated by pydantic trying IPv4
    # first, which formats an IPv6 address and parses the text to refuse it (8 us);
    # an address object is kept as it is, anything else validated as before.
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    return validate(value)


IPAddress = Annotated[IPv4Address | IPv6Address, WrapValidator(_address_as_is)]

# gai_strerror(EAI_NONAME), what glibc answers for any non-numeric host.
_NONAME = "Name or service not known"
_HEX = "0123456789abcdefABCDEF"


def _inet_aton(text: str) -> IPv4Address | None:
    """glibc's __inet_aton_exact: 1 to 4 parts, each decimal, 0-octal or 0x-hex."""
    try:
        # four decimal parts without leading zeros, how nearly every address is
        # written: glibc's inet_pton reads exactly those, in C
        return IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):  # ValueError: an embedded NUL
        pass
    parts: list[int] = []
    saw_digit = False  # glibc keeps one flag for the whole string: "0x" alone is no number
    for chunk in text.split("."):
        if not chunk or not chunk.isascii() or not chunk[0].isdigit():
            return None
        if chunk[:2] in ("0x", "0X"):
            digits = chunk[2:]
            if any(c not in _HEX for c in digits):
                return None
            value = digits_value(digits, 16)
            saw_digit = saw_digit or bool(digits)
        elif chunk[0] == "0":
            if any(c not in "01234567" for c in chunk):
                return None
            value = digits_value(chunk, 8)
            saw_digit = True
        else:
            if not chunk.isdigit():
                return None
            value = digits_value(chunk, 10)
            saw_digit = True
        parts.append(value)
    if not saw_digit or len(parts) > 4 or any(p > 0xFF for p in parts[:-1]):
        return None
    width = 8 * (5 - len(parts))
    if parts[-1] >= 1 << width:
        return None
    value = 0
    for p in parts[:-1]:
        value = (value << 8) | p
    value = (value << width) | parts[-1]
    return IPv4Address(value)


def try_parse_ip(text: str | None, *, ipv4_only: bool = False) -> IPAddress | None:
    """The address ``text`` stands for, or None where getaddrinfo would fail."""
    if text is None:
        return None
    if ":" not in text:  # no inet_aton form has a colon, every IPv6 one has
        return _inet_aton(text)
    if ipv4_only:
        return None
    try:
        # The C library's inet_pton, which getaddrinfo(AI_NUMERICHOST) calls for
        # IPv6; it refuses a scoped address (that needs the host's interface
        # table: not numeric) and any character outside ASCII.
        return IPv6Address(socket.inet_pton(socket.AF_INET6, text))
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None


def parse_ip(text: str | None, *, ipv4_only: bool = False) -> IPAddress:
    """virSocketAddrParse: raises ``VirtError`` with libvirt's wording."""
    if text is None:
        raise VirtError(ErrorCode.INVALID_ARG, "Missing address", ErrorDomain.NONE)
    addr = try_parse_ip(text, ipv4_only=ipv4_only)
    if addr is None:
        raise VirtError(
            ErrorCode.SYSTEM_ERROR,
            f"Cannot parse socket address '{text}': {_NONAME}",
            ErrorDomain.NONE,
        )
    return addr


def format_ip(addr: IPAddress) -> str:
    """virSocketAddrFormat: glibc inet_ntop's text for ``addr``."""
    if isinstance(addr, IPv4Address):
        value = int(addr)
        return f"{value >> 24}.{value >> 16 & 0xFF}.{value >> 8 & 0xFF}.{value & 0xFF}"
    # Python's socket.inet_ntop is the C library's, glibc's here (zero-run
    # compression, the IPv4-mapped and -compatible forms with a dotted quad),
    # what getnameinfo prints with
    return socket.inet_ntop(socket.AF_INET6, addr.packed)


def family_bits(addr: IPAddress) -> int:
    """32 for IPv4, 128 for IPv6."""
    return 32 if isinstance(addr, IPv4Address) else 128


def same_family(a: IPAddress, b: IPAddress) -> bool:
    """Both IPv4 or both IPv6."""
    return isinstance(a, IPv4Address) == isinstance(b, IPv4Address)


def netmask_bits(mask: IPAddress) -> int:
    """virSocketAddrGetNumNetmaskBits: the prefix length, -1 if not a netmask."""
    bits = family_bits(mask)
    value = int(mask)
    ones = bits - (~value & ((1 << bits) - 1)).bit_length()
    if value != ((1 << bits) - 1) ^ ((1 << (bits - ones)) - 1):
        return -1
    return ones


def prefix_to_netmask(prefix: int, like: IPAddress) -> IPAddress | None:
    """virSocketAddrPrefixToNetmask for the family of ``like``; None when too long."""
    bits = family_bits(like)
    if prefix < 0 or prefix > bits:
        return None
    value = ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)
    return IPv4Address(value) if bits == 32 else IPv6Address(value)


def ip_prefix(address: IPAddress | None, netmask: IPAddress | None, prefix: int) -> int:
    """virSocketAddrGetIPPrefix: the explicit prefix, else the netmask's, else
    the address class's natural prefix (64 for IPv6); -1 when none applies."""
    if prefix > 0:
        return prefix
    if netmask is not None:
        return netmask_bits(netmask)
    if isinstance(address, IPv4Address):
        value = int(address)
        if value == 0:
            return 0
        octet = value >> 24
        if octet & 0x80 == 0:
            return 8
        if octet & 0xC0 == 0x80:
            return 16
        if octet & 0xE0 == 0xC0:
            return 24
        return -1
    if isinstance(address, IPv6Address):
        return 0 if int(address) == 0 else 64
    return 0


def mask_by_prefix(addr: IPAddress, prefix: int) -> IPAddress | None:
    """virSocketAddrMaskByPrefix: ``addr`` with its host bits cleared."""
    mask = prefix_to_netmask(prefix, addr)
    if mask is None:
        return None
    return type(addr)(int(addr) & int(mask))


def check_range(
    start: IPAddress,
    end: IPAddress,
    network: IPAddress | None = None,
    prefix: int = 0,
) -> int:
    """virSocketAddrGetRange: the number of addresses from ``start`` to ``end``.

    With ``network``/``prefix`` both ends must lie inside that network and,
    for IPv4, avoid its network and broadcast addresses.  Raises
    ``VirtError`` (``VIR_ERR_INTERNAL_ERROR``) with libvirt's wording.
    """

    # the texts are made only for a refusal: formatting costs more than the checks
    def refuse(what: str) -> VirtError:
        net = format_ip(network) if network is not None else ""
        s, e = format_ip(start), format_ip(end)
        return _internal(what.format(s=s, e=e, net=net, prefix=prefix))

    if not same_family(start, end):
        raise refuse("mismatch of address family in range {s} - {e}")
    first, last = int(start), int(end)
    if network is not None:
        if not same_family(start, network):
            raise refuse("mismatch of address family in range {s} - {e} for network {net}")
        mask = prefix_to_netmask(prefix, network) if prefix >= 0 else None
        if mask is None:
            raise refuse("bad prefix {prefix} for network {net} when checking range {s} - {e}")
        m, base = int(mask), int(network)
        if first & m != base & m or last & m != base & m:
            raise refuse("range {s} - {e} is not entirely within network {net}/{prefix}")
        if isinstance(start, IPv4Address):
            if first == base & m:
                raise refuse(
                    "start of range {s} - {e} in network {net}/{prefix} is the network address"
                )
            if last == base | (~m & 0xFFFFFFFF):
                raise refuse(
                    "end of range {s} - {e} in network {net}/{prefix} is the broadcast address"
                )
    # libvirt's legacy rule: all but the last 16 bits must be equal
    if first >> 16 != last >> 16:
        raise refuse("range {s} - {e} is too large (> 65535)")
    size = (last & 0xFFFF) - (first & 0xFFFF)
    if size < 0:
        if isinstance(start, IPv4Address):
            raise refuse("range {s} - {e} is reversed ")
        raise refuse("range {s} - {e} start larger than end")
    return size + 1


def _internal(message: str) -> VirtError:
    return VirtError(ErrorCode.INTERNAL_ERROR, message, ErrorDomain.NONE)
