"""Sizes with units and libvirt's number parsing (virScaleInteger, virStrToLong_*p).

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

# strtoull's accepted syntax for base 10: optional blanks, optional sign, digits.
_C_INTEGER = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")
_C_INTEGER_BASE16 = re.compile(r"[ \t\n\v\f\r]*([+-]?)(?:0[xX])?([0-9a-fA-F]+)")
_C_INTEGER_BASE8 = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-7]+)")

_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}


def parse_c_unsigned(text: str, *, maximum: int = ULLONG_MAX, base: int = 10) -> int | None:
    """The value of ``text`` as libvirt's virStrToLong_ullp / _uip read it, or None.

    The whole string must be consumed, a minus sign is refused (the ``p``
    variants' rule) and the value must not exceed ``maximum``.
    """
    pattern = {10: _C_INTEGER, 16: _C_INTEGER_BASE16, 8: _C_INTEGER_BASE8}[base]
    match = pattern.fullmatch(text)
    if match is None or match.group(1) == "-":
        return None
    value = int(match.group(2), base)
    return value if value <= maximum else None


def parse_c_signed(text: str, *, minimum: int, maximum: int, base: int = 10) -> int | None:
    """The value of ``text`` as virStrToLong_i / _ll read it (sign allowed), or None."""
    pattern = {10: _C_INTEGER, 16: _C_INTEGER_BASE16, 8: _C_INTEGER_BASE8}[base]
    match = pattern.fullmatch(text)
    if match is None:
        return None
    value = int(match.group(2), base)
    if match.group(1) == "-":
        value = -value
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
