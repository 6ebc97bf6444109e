"""Sizes with units and libvirt's number parsing (virScaleInteger, virStrToLong_*).

libvirt reads a size as a decimal integer plus an optional ``unit``: ``b``,
``byte``, ``bytes``; a single letter ``k m g t p e`` (binary, same as
``KiB``...); ``<letter>iB`` (binary); ``<letter>B`` (decimal, powers of
1000). Units are case-insensitive.  A scaled value larger than the caller's
limit is refused with ``VIR_ERR_OVERFLOW``; an unknown unit with
``VIR_ERR_INVALID_ARG``.
"""

from __future__ import annotations

import re

from shared.util.errors import ErrorCode, ErrorDomain, VirtError

ULLONG_MAX = 2**64 - 1
LLONG_MAX = 2**63 - 1
UINT_MAX = 2**32 - 1

_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}

_C_SPACE = " \t\n\v\f\r"
_DIGITS = {8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


#: Numbers as they are nearly always written, per base, read without the scan:
#: no blanks, sign or lone prefix, fewer digits than 2**64 has (group 1: the digits).
#: Base 10's (up to 19 ASCII digits) are read by ``int`` before these are tried.
_PLAIN = {
    8: re.compile("([0-7]{1,21})"),
    16: re.compile("(?:0[xX])?([0-9a-fA-F]{1,15})"),
    0: re.compile("0[xX]([0-9a-fA-F]{1,15})"),
}

#: More significant digits than any 64-bit value has in base 8, 10 or 16.
_MAX_DIGITS = 22


def digits_value(digits: str, base: int) -> int:
    """``int(digits, base)`` for a run of digits, saturated past 64 bits (to
    ``ULLONG_MAX + 1``) as strtoul saturates: no work grows with a long run of
    digits and Python's int-string limit is never reached."""
    significant = digits.lstrip("0")
    if len(significant) > _MAX_DIGITS:
        return ULLONG_MAX + 1
    return min(int(significant or "0", base), ULLONG_MAX + 1)


def strtoul_scan(text: str, base: int) -> tuple[bool, int, int] | None:
    """strtoul's scan of ``text``: (negative, magnitude, index just past the number),
    or None when no digit was consumed (strtoul then leaves its end pointer at the
    start).  Base 0 reads a ``0x`` prefix as 16 and a leading ``0`` as 8."""
    i, n = 0, len(text)
    while i < n and text[i] in _C_SPACE:
        i += 1
    negative = False
    if i < n and text[i] in "+-":
        negative = text[i] == "-"
        i += 1
    # A "0x" prefix counts only when a hex digit follows it; otherwise strtoul
    # reads the "0" alone and stops at the "x".
    has_hex_prefix = text[i : i + 2] in ("0x", "0X") and text[i + 2 : i + 3] != ""
    if base in (0, 16) and has_hex_prefix and text[i + 2] in _DIGITS[16]:
        base = 16
        i += 2
    elif base == 0:
        base = 8 if text[i : i + 1] == "0" else 10
    digits = _DIGITS[base]
    j = i
    while j < n and text[j] in digits:
        j += 1
    if j == i:
        return None
    return negative, digits_value(text[i:j], base), j


def _strtoul(text: str, base: int) -> tuple[bool, int] | None:
    """(negative, magnitude) when all of ``text`` is one strtoul number, else None."""
    if base == 10:
        if len(text) < 20 and text.isdigit() and text.isascii():
            return False, int(text)
    else:
        plain = _PLAIN[base].fullmatch(text)
        if plain is not None:
            return False, int(plain[1], base or 16)
    scanned = strtoul_scan(text, base)
    if scanned is None or scanned[2] != len(text):
        return None
    return scanned[0], scanned[1]


def c_unsigned(
    text: str, *, base: int = 10, limit: int = UINT_MAX, positive: bool = False
) -> int | None:
    """libvirt's virStrToLong_ui / _ul / _ull (``positive``: the ``p`` variants).

    ``limit`` is the type's maximum (UINT_MAX or ULLONG_MAX).  Without
    ``positive`` a minus sign wraps the value the way strtoul does ("-1" is
    the type's maximum).  None when libvirt would refuse the text.
    """
    parsed = _strtoul(text, base)
    if parsed is None:
        return None
    negative, magnitude = parsed
    if magnitude > ULLONG_MAX:
        return None
    if not negative:
        return magnitude if magnitude <= limit else None
    if positive:
        return None
    if magnitude > limit:
        return None
    return (limit + 1 - magnitude) % (limit + 1)


def parse_c_unsigned(text: str, *, maximum: int = ULLONG_MAX, base: int = 10) -> int | None:
    """The value of ``text`` as libvirt's virStrToLong_ullp / _uip read it, or None.

    The whole string must be consumed, a minus sign is refused (the ``p``
    variants' rule) and the value must not exceed ``maximum``.
    """
    return c_unsigned(text, base=base, limit=maximum, positive=True)


def parse_c_signed(text: str, *, minimum: int, maximum: int, base: int = 10) -> int | None:
    """The value of ``text`` as virStrToLong_i / _ll read it (sign allowed), or None."""
    parsed = _strtoul(text, base)
    if parsed is None:
        return None
    negative, magnitude = parsed
    value = -magnitude if negative else magnitude
    return value if minimum <= value <= maximum else None


def unit_scale(unit: str | None, default_scale: int = 1) -> int:
    """The factor ``unit`` stands for; ``default_scale`` when it is absent or empty.

    Raises ``VirtError`` (``VIR_ERR_INVALID_ARG``, "unknown suffix '...'").
    """
    if not unit:
        return default_scale
    lowered = unit.lower()
    if lowered in ("b", "byte", "bytes"):
        return 1
    if len(unit) == 1 or lowered[1:] == "ib":
        base = 1024
    elif lowered[1] == "b" and len(unit) == 2:
        base = 1000
    else:
        raise _unknown_suffix(unit)
    power = _POWERS.get(lowered[0])
    if power is None:
        raise _unknown_suffix(unit)
    return int(base**power)


def _unknown_suffix(unit: str) -> VirtError:
    return VirtError(ErrorCode.INVALID_ARG, f"unknown suffix '{unit}'", ErrorDomain.NONE)


def scale_integer(value: int, unit: str | None, *, default_scale: int = 1, limit: int) -> int:
    """``value`` times the factor of ``unit``, refused above ``limit`` (virScaleInteger).

    Raises ``VirtError``: ``VIR_ERR_INVALID_ARG`` for an unknown unit,
    ``VIR_ERR_OVERFLOW`` ("value too large: <value><unit>") past ``limit``.
    """
    scale = unit_scale(unit, default_scale)
    if value and value > limit // scale:
        raise VirtError(
            ErrorCode.OVERFLOW, f"value too large: {value}{unit or ''}", ErrorDomain.NONE
        )
    return value * scale
