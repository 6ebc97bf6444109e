"""The C-compatible scalar readers and writers behind filter attributes."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.conf.nwfilter_values import (
    UINT_MAX,
    format_ipv6,
    is_contiguous_mask,
    netmask_bits,
    parse_int,
    parse_ipv4,
    parse_ipv6,
    parse_mac,
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


@pytest.mark.parametrize(
    ("text", "mac"),
    [
        ("1:2:3:4:5:6", "01:02:03:04:05:06"),
        ("AA:bb:Cc:0:00:ff", "aa:bb:cc:00:00:ff"),
        ("1:2:3:4:5:6 and more", "01:02:03:04:05:06"),
        ("1:2:3:4:5:6:7", None),
        ("1:2:3:4:5", None),
        ("1:2:3:4:5:100", None),
        ("1-2-3-4-5-6", None),
        (" 1:2:3:4:5:6", None),
    ],
)
def test_parse_mac(text: str, mac: str | None) -> None:
    assert parse_mac(text) == mac


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("10.7", "10.0.0.7"),
        ("10.1.7", "10.1.0.7"),
        ("167772161", "10.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("010.0.0.1", "8.0.0.1"),
        ("09.0.0.1", None),
        ("256.0.0.1", None),
        ("1.2.3.4.5", None),
        ("1.2.3.", None),
        (" 1.2.3.4", None),
        ("1.2.65536", None),
        ("0x", None),
    ],
)
def test_parse_ipv4(text: str, address: str | None) -> None:
    assert parse_ipv4(text) == address


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("::", "::"),
        ("::1", "::1"),
        ("::2", "::2"),
        ("::ffff:a01:203", "::ffff:10.1.2.3"),
        ("::10.1.2.3", "::10.1.2.3"),
        ("::1:a01:203", "::1:a01:203"),
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
        ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
        ("1:0:2:0:3:0:4:0", "1:0:2:0:3:0:4:0"),
        ("A:B:C::", "a:b:c::"),
        ("a:b:c", None),
        ("fe80::1%1", None),
    ],
)
def test_parse_ipv6(text: str, address: str | None) -> None:
    assert parse_ipv6(text) == address


@given(st.ip_addresses(v=6))
def test_format_ipv6_reads_back(address: ipaddress.IPv6Address) -> None:
    assert ipaddress.IPv6Address(format_ipv6(address.packed)) == address


def test_masks() -> None:
    assert is_contiguous_mask(b"\xff\xff\x80\x00")
    assert not is_contiguous_mask(b"\xff\x7f")
    assert netmask_bits("255.255.252.0", 4) == 22
    assert netmask_bits("255.0.255.0", 4) is None
    assert netmask_bits("ffff:ffff:ffff:ffff:8000::", 6) == 65
