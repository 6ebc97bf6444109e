"""Scalar values of network filter XML, read and written as libvirt's C helpers do.

libvirt reads filter attributes with ``strtoul``-based helpers (virStrToLong_ui,
virStrToLong_i), ``virMacAddrParse``, and ``getaddrinfo``/``getnameinfo`` with
numeric hosts (glibc's ``inet_aton`` and ``inet_pton``/``inet_ntop``).  Their
quirks decide which values a filter accepts and how they come back out, so
they are reproduced here: leading blanks before a number, ``-1`` meaning
``UINT_MAX``, a ``0x`` prefix in base 16, one or two hex digits per MAC octet,
IPv4 in the short and octal/hex forms ``inet_aton`` knows, and IPv6 written
with the embedded dotted quad that glibc prints for ``::ffff:a.b.c.d``.
Every parser returns ``None`` for a value libvirt would refuse.
"""

from __future__ import annotations

import ipaddress

UINT_MAX = 0xFFFFFFFF
_ULONG_MAX = 0xFFFFFFFFFFFFFFFF
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
# C's isspace() in the C locale.
_C_SPACE = " \t\n\v\f\r"
_HEX = "0123456789abcdefABCDEF"


def _strtoul_prefix(text: str, base: int) -> tuple[int, bool, int] | None:
    """strtoul's scan of ``text``: (magnitude, negative, end index), or None when
    no digit was consumed (strtoul then leaves its end pointer at the start)."""
    i = 0
    while i < len(text) and text[i] in _C_SPACE:
        i += 1
    negative = False
    if i < len(text) and text[i] in "+-":
        negative = text[i] == "-"
        i += 1
    digits = "0123456789" if base == 10 else _HEX
    # A "0x" prefix counts only when a hex digit follows it; otherwise strtoul
    # reads the "0" alone and stops at the "x".
    if base == 16 and text[i : i + 2] in ("0x", "0X") and text[i + 2 : i + 3] in tuple(_HEX):
        i += 2
    start = i
    while i < len(text) and text[i] in digits:
        i += 1
    if i == start:
        return None
    return int(text[start:i], base), negative, i


def parse_uint(text: str, base: int = 10) -> int | None:
    """virStrToLong_ui with no end pointer: the whole of ``text`` must be a number."""
    parsed = parse_uint_prefix(text, base)
    if parsed is None or parsed[1] != len(text):
        return None
    return parsed[0]


def parse_uint_prefix(text: str, base: int = 10) -> tuple[int, int] | None:
    """virStrToLong_ui with an end pointer: (value, index just past the number)."""
    scanned = _strtoul_prefix(text, base)
    if scanned is None:
        return None
    magnitude, negative, end = scanned
    if magnitude > _ULONG_MAX:
        return None
    if negative:
        # libvirt accepts "-N" as the unsigned int 2**32 - N (so "-1" is UINT_MAX).
        if magnitude > UINT_MAX:
            return None
        return (-magnitude) & UINT_MAX, end
    if magnitude > UINT_MAX:
        return None
    return magnitude, end


def parse_int(text: str) -> int | None:
    """virStrToLong_i in base 10: the whole of ``text`` must be an int."""
    scanned = _strtoul_prefix(text, 10)
    if scanned is None or scanned[2] != len(text):
        return None
    value = -scanned[0] if scanned[1] else scanned[0]
    if not _LONG_MIN <= value <= _LONG_MAX or not _INT_MIN <= value <= _INT_MAX:
        return None
    return value


def parse_mac(text: str) -> str | None:
    """virMacAddrParse: six groups of one or two hex digits separated by ``:``.

    What follows the sixth group is not looked at when it starts with a blank,
    a control character or a non-ASCII byte (libvirt compares a signed char
    with ``' '``).  Returns the address as libvirt formats it.
    """
    octets: list[int] = []
    i = 0
    for group in range(6):
        start = i
        while i < len(text) and i - start < 3 and text[i] in _HEX:
            i += 1
        if not 1 <= i - start <= 2:
            return None
        octets.append(int(text[start:i], 16))
        following = text[i] if i < len(text) else ""
        if group == 5:
            if following == "" or ord(following) <= 0x20 or ord(following) >= 0x80:
                return format_mac(octets)
            return None
        if following != ":":
            return None
        i += 1
    return None  # pragma: no cover - the loop always returns


def format_mac(octets: list[int] | tuple[int, ...] | bytes) -> str:
    """``aa:bb:cc:dd:ee:ff`` in lower case, as virMacAddrFormat writes it."""
    return ":".join(f"{octet:02x}" for octet in octets)


def mac_octets(mac: str) -> bytes:
    """The six bytes of a MAC address in the canonical form ``parse_mac`` returns."""
    return bytes(int(part, 16) for part in mac.split(":"))


def is_contiguous_mask(data: bytes) -> bool:
    """A run of one bits followed only by zero bits (libvirt's checkValidMask)."""
    bits = "".join(f"{byte:08b}" for byte in data)
    return "01" not in bits


def _inet_aton_part(part: str) -> int | None:
    if not part or not part[0].isdigit() or not part.isascii():
        return None
    if part[:2] in ("0x", "0X"):
        digits = part[2:]
        if not digits or any(c not in _HEX for c in digits):
            return None
        return int(digits, 16)
    if part[0] == "0":
        if any(c not in "01234567" for c in part):
            return None
        return int(part, 8)
    if not part.isdigit():
        return None
    return int(part, 10)


def parse_ipv4(text: str) -> str | None:
    """A numeric IPv4 host as glibc's getaddrinfo reads it (inet_aton, exact):
    ``a.b.c.d``, ``a.b.c``, ``a.b`` or ``a``, each part decimal, octal or hex.
    Returns the dotted-quad form libvirt writes back."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        value = _inet_aton_part(part)
        if value is None:
            return None
        values.append(value)
    *leading, last = values
    if any(v > 0xFF for v in leading) or last >= 1 << (8 * (5 - len(values))):
        return None
    number = last
    for position, value in enumerate(leading):
        number |= value << (24 - 8 * position)
    return str(ipaddress.IPv4Address(number))


def parse_ipv6(text: str) -> str | None:
    """A numeric IPv6 host (inet_pton); returns the form glibc's inet_ntop writes."""
    if "%" in text:
        # A scope id names a host interface: meaningless in a filter definition.
        return None
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return format_ipv6(address.packed)


def format_ipv6(packed: bytes) -> str:
    """glibc's inet_ntop for AF_INET6: the longest run of two or more zero words
    (the first of equal runs) becomes ``::``, and an address whose first 96 bits
    are zero, or that is ``::ffff:0:0/96``, ends in a dotted quad."""
    words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2)]
    best_base, best_len = -1, 0
    run_base, run_len = -1, 0
    for index, word in enumerate(words):
        if word == 0:
            if run_base < 0:
                run_base, run_len = index, 0
            run_len += 1
            if run_len > best_len:
                best_base, best_len = run_base, run_len
        else:
            run_base = -1
    if best_len < 2:
        best_base, best_len = -1, 0
    out: list[str] = []
    index = 0
    while index < 8:
        if index == best_base:
            out.append(":")
            index += best_len
            if index == 8:
                out.append(":")
            continue
        if index:
            out.append(":")
        if (
            index == 6
            and best_base == 0
            and (best_len == 6 or (best_len == 5 and words[5] == 0xFFFF))
        ):
            out.append(str(ipaddress.IPv4Address(packed[12:])))
            break
        out.append(f"{words[index]:x}")
        index += 1
    return "".join(out)


def netmask_bits(address: str, version: int) -> int | None:
    """virSocketAddrGetNumNetmaskBits: the prefix length of a contiguous netmask."""
    packed = (
        ipaddress.IPv4Address(address).packed
        if version == 4
        else ipaddress.IPv6Address(address).packed
    )
    if not is_contiguous_mask(packed):
        return None
    return "".join(f"{byte:08b}" for byte in packed).count("1")
