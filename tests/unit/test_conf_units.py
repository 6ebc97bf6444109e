"""shared.conf.units: libvirt's size units and C-style number parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.conf.units import (
    LLONG_MAX,
    UINT_MAX,
    ULLONG_MAX,
    parse_c_signed,
    parse_c_unsigned,
    scale_integer,
    unit_scale,
)
from shared.util.errors import ErrorCode, VirtError


@pytest.mark.parametrize(
    ("unit", "factor"),
    [
        (None, 1),
        ("", 1),
        ("b", 1),
        ("B", 1),
        ("byte", 1),
        ("Bytes", 1),
        ("k", 1024),
        ("KiB", 1024),
        ("kib", 1024),
        ("KB", 1000),
        ("kb", 1000),
        ("M", 1024**2),
        ("MB", 1000**2),
        ("g", 1024**3),
        ("GiB", 1024**3),
        ("GB", 1000**3),
        ("T", 1024**4),
        ("TB", 1000**4),
        ("PiB", 1024**5),
        ("pb", 1000**5),
        ("E", 1024**6),
        ("EB", 1000**6),
    ],
)
def test_unit_factors(unit: str | None, factor: int) -> None:
    assert unit_scale(unit) == factor


def test_missing_unit_uses_the_callers_default_scale() -> None:
    assert unit_scale(None, 1024) == 1024
    assert scale_integer(3, None, default_scale=1024, limit=ULLONG_MAX) == 3072
    # An explicit unit overrides the default scale.
    assert scale_integer(3, "b", default_scale=1024, limit=ULLONG_MAX) == 3


@pytest.mark.parametrize("unit", ["x", "KiBB", "Kb2", "kilo", "iB", "ZiB", "Y", "bits"])
def test_unknown_units_are_refused(unit: str) -> None:
    with pytest.raises(VirtError) as err:
        unit_scale(unit)
    assert err.value.code is ErrorCode.INVALID_ARG
    assert f"unknown suffix '{unit}'" in err.value.message


def test_scaling_is_overflow_checked() -> None:
    assert scale_integer(7, "EiB", limit=LLONG_MAX) == 7 * 2**60
    with pytest.raises(VirtError) as err:
        scale_integer(8, "EiB", limit=LLONG_MAX)
    assert err.value.code is ErrorCode.OVERFLOW
    assert "value too large: 8EiB" in err.value.message
    assert scale_integer(0, "EiB", limit=1) == 0
    assert scale_integer(LLONG_MAX, None, limit=LLONG_MAX) == LLONG_MAX


@given(st.integers(min_value=0, max_value=2**30), st.sampled_from(["k", "M", "G", "KB", "MB"]))
def test_scaled_value_is_exact_product(value: int, unit: str) -> None:
    assert scale_integer(value, unit, limit=ULLONG_MAX) == value * unit_scale(unit)


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("42", 42), (" 7", 7), ("+9", 9), ("\t12", 12), ("0012", 12)],
)
def test_c_unsigned_accepts_what_strtoull_accepts(text: str, value: int) -> None:
    assert parse_c_unsigned(text) == value


@pytest.mark.parametrize("text", ["", " ", "-1", "- 1", "1 ", "12a", "0x10", "1.5", "+"])
def test_c_unsigned_refuses_the_rest(text: str) -> None:
    assert parse_c_unsigned(text) is None


def test_c_unsigned_limits_and_bases() -> None:
    assert parse_c_unsigned(str(ULLONG_MAX)) == ULLONG_MAX
    assert parse_c_unsigned(str(ULLONG_MAX + 1)) is None
    assert parse_c_unsigned(str(UINT_MAX + 1), maximum=UINT_MAX) is None
    assert parse_c_unsigned("0x1f", base=16) == 31
    assert parse_c_unsigned("755", base=8) == 0o755
    assert parse_c_unsigned("8", base=8) is None


def test_c_signed() -> None:
    assert parse_c_signed("-1", minimum=-5, maximum=5) == -1
    assert parse_c_signed("6", minimum=-5, maximum=5) is None
    assert parse_c_signed("-0700", minimum=-(2**31), maximum=2**31, base=8) == -0o700
    assert parse_c_signed("x", minimum=0, maximum=1) is None
