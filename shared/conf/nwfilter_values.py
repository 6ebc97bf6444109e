"""Numbers in network filter XML, read as libvirt's strtoul-based helpers read them.

libvirt reads filter numbers with virStrToLong_ui and virStrToLong_i, whose
quirks decide which values a filter accepts: blanks before the number, a
sign (``-1`` meaning ``UINT_MAX``), a ``0x`` prefix in base 16.  Every parser
returns ``None`` for a value libvirt would refuse.  (MAC and IP addresses are
read by ``shared.conf.macaddr`` and ``shared.conf.socketaddr``.)
"""

from __future__ import annotations

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


def is_contiguous_mask(data: bytes) -> bool:
    """A run of one bits followed only by zero bits (libvirt's checkValidMask)."""
    bits = "".join(f"{byte:08b}" for byte in data)
    return "01" not in bits
