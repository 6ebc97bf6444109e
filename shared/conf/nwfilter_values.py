"""Numbers in network filter XML, read as libvirt's strtoul-based helpers read them.

libvirt reads filter numbers with virStrToLong_ui and virStrToLong_i, whose
quirks decide which values a filter accepts: blanks before the number, a
sign (``-1`` meaning ``UINT_MAX``), a ``0x`` prefix in base 16.  Every parser
returns ``None`` for a value libvirt would refuse.  (MAC and IP addresses are
read by ``shared.conf.macaddr`` and ``shared.conf.socketaddr``.)
"""

from __future__ import annotations

from shared.conf.units import ULLONG_MAX, c_unsigned, parse_c_signed, strtoul_scan

UINT_MAX = 0xFFFFFFFF
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def parse_uint(text: str, base: int = 10) -> int | None:
    """virStrToLong_ui with no end pointer: the whole of ``text`` must be a number."""
    return c_unsigned(text, base=base, limit=UINT_MAX)


def parse_uint_prefix(text: str, base: int = 10) -> tuple[int, int] | None:
    """virStrToLong_ui with an end pointer: (value, index just past the number)."""
    scanned = strtoul_scan(text, base)
    if scanned is None:
        return None
    negative, magnitude, end = scanned
    if magnitude > ULLONG_MAX:
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
    return parse_c_signed(text, minimum=_INT_MIN, maximum=_INT_MAX)


def is_contiguous_mask(data: bytes) -> bool:
    """A run of one bits followed only by zero bits (libvirt's checkValidMask)."""
    bits = "".join(f"{byte:08b}" for byte in data)
    return "01" not in bits
