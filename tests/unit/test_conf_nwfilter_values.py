"""The C-compatible number readers behind filter attributes."""

from __future__ import annotations

import pytest

from shared.conf.nwfilter_values import (
    UINT_MAX,
    is_contiguous_mask,
    parse_int,
    parse_uint,
    parse_uint_prefix,
)


@pytest.mark.parametrize(
    ("text", "base", "value"),
    [
        ("22", 10, 22),
        ("  22", 10, 22),
        ("+7", 10, 7),
        ("-1", 10, UINT_MAX),
        ("-0", 10, 0),
        ("0x1F", 16, 31),
        ("1f", 16, 31),
        ("4294967295", 10, UINT_MAX),
        ("4294967296", 10, None),
        ("22 ", 10, None),
        ("0x12", 10, None),
        ("0x", 16, None),
        ("", 10, None),
        ("-", 10, None),
        ("99999999999999999999", 10, None),
    ],
)
def test_parse_uint(text: str, base: int, value: int | None) -> None:
    assert parse_uint(text, base) == value


def test_parse_uint_prefix_stops_at_the_first_non_digit() -> None:
    assert parse_uint_prefix(" 12]x") == (12, 3)
    assert parse_uint_prefix("]") is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("100", 100), ("-1000", -1000), ("0100", 100), ("2147483648", None), ("1.5", None)],
)
def test_parse_int(text: str, value: int | None) -> None:
    assert parse_int(text) == value


def test_masks() -> None:
    assert is_contiguous_mask(b"\xff\xff\x80\x00")
    assert is_contiguous_mask(b"\x00\x00")
    assert not is_contiguous_mask(b"\xff\x7f")
