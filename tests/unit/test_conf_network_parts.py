"""The pieces under the network kinds: addresses, MACs, C numbers, metadata, netdev elements."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.conf.macaddr import format_mac, normalize_mac, parse_mac
from shared.conf.netdev_vport import VirtualPort, VPortType, format_virtualport
from shared.conf.socketaddr import (
    check_range,
    format_ip,
    ip_prefix,
    netmask_bits,
    parse_ip,
    try_parse_ip,
)
from shared.conf.xml_metadata import format_metadata, parse_metadata
from shared.conf.xmlprops import ULONG_MAX, c_unsigned
from shared.conf.xmlsafe import parse_xml
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, VirtError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("10.1", "10.0.0.1"),
        ("10.1.2", "10.1.0.2"),
        ("0x0a.0.0.010", "10.0.0.8"),
        ("010.0.0.1", "8.0.0.1"),
        ("255.255.255.255", "255.255.255.255"),
        ("0.0.0.0", "0.0.0.0"),
        ("167772161", "10.0.0.1"),
        ("fd00:0:0:0:0:0:0:1", "fd00::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
        ("1:0:2:0:3:0:4:0", "1:0:2:0:3:0:4:0"),
        ("::", "::"),
        ("::1", "::1"),
        ("::ffff:c000:207", "::ffff:192.0.2.7"),
        ("::c000:207", "::192.0.2.7"),
        ("FD00::A", "fd00::a"),
        ("0001:0db8::0001", "1:db8::1"),
        ("::ffff:192.0.2.7", "::ffff:192.0.2.7"),
        ("1:2:3:4:5:6:192.0.2.7", "1:2:3:4:5:6:c000:207"),
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ("0:0:1::", "0:0:1::"),
        ("::2:0:0:0:0:3", "0:0:2::3"),
        ("::ffff:0:0", "::ffff:0.0.0.0"),
    ],
)
def test_addresses_read_and_written_like_glibc(text: str, expected: str) -> None:
    addr = try_parse_ip(text)
    assert addr is not None and format_ip(addr) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 10.0.0.1",
        "10.0.0.1 ",
        "10.0.0.256",
        "1.2.3.4.5",
        "08.1.1.1",
        "0x",
        "fe80::1%eth0",
        "host",
        "1::2::3",
        "12345::",
        "::1.2.3.04",
        "::ffff:1.2.3",
        "1:2:3:4:5:6:7:8:9",
        ":1::",
        "fd00::1\x00",
        "fd00::1 ",
        "fd00::\u00e9",
        "256.1.1.1",
        "1.2.3.4.",
        "1..2.3",
        "10.0.0.1\x00",
        "\u0967.2.3.4",
    ],
)
def test_addresses_refused(text: str) -> None:
    assert try_parse_ip(text) is None
    with pytest.raises(VirtError) as info:
        parse_ip(text)
    assert info.value.code == ErrorCode.SYSTEM_ERROR
    assert f"Cannot parse socket address '{text}': Name or service not known" in str(info.value)


def test_ipv4_only_refuses_ipv6() -> None:
    assert try_parse_ip("fd00::1", ipv4_only=True) is None


@given(st.ip_addresses())
def test_format_parse_round_trip(addr: IPv4Address | IPv6Address) -> None:
    assert try_parse_ip(format_ip(addr)) == addr


def test_prefixes_and_netmasks() -> None:
    assert netmask_bits(IPv4Address("255.255.240.0")) == 20
    assert netmask_bits(IPv4Address("255.0.255.0")) == -1
    assert netmask_bits(IPv6Address("ffff:ffff::")) == 32
    assert ip_prefix(IPv4Address("10.0.0.1"), None, 0) == 8
    assert ip_prefix(IPv4Address("172.16.0.1"), None, 0) == 16
    assert ip_prefix(IPv4Address("192.168.0.1"), None, 0) == 24
    assert ip_prefix(IPv4Address("224.0.0.1"), None, 0) == -1
    assert ip_prefix(IPv6Address("fd00::1"), None, 0) == 64
    assert ip_prefix(IPv4Address("10.0.0.1"), IPv4Address("255.255.0.0"), 0) == 16


def test_ranges() -> None:
    v4 = IPv4Address
    assert check_range(v4("10.0.0.2"), v4("10.0.1.1"), v4("10.0.0.1"), 16) == 256
    assert check_range(IPv6Address("fd00::5"), IPv6Address("fd00::5")) == 1
    with pytest.raises(VirtError, match="is too large"):
        check_range(v4("10.0.0.2"), v4("10.1.0.1"))
    with pytest.raises(VirtError, match="mismatch of address family"):
        check_range(v4("10.0.0.2"), IPv6Address("fd00::5"))
    with pytest.raises(VirtError, match=r"bad prefix -1 for network 10\.0\.0\.1"):
        check_range(v4("10.0.0.2"), v4("10.0.0.3"), v4("10.0.0.1"), -1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("52:54:00:AB:cd:0e", "52:54:00:ab:cd:0e"),
        ("2:4:6:8:a:c", "02:04:06:08:0a:0c"),
        ("52:54:00:ab:cd:0e ", "52:54:00:ab:cd:0e"),
        ("52:54:00:ab:cd", None),
        ("52:54:00:ab:cd:0e:ff", None),
        ("52-54-00-ab-cd-0e", None),
        ("520:54:00:ab:cd:0e", None),
        (" 52:54:00:ab:cd:0e", None),
        ("52:54:00:ab:cd:0e\t", "52:54:00:ab:cd:0e"),
        ("52:54:00:ab:cd:0ex", None),
        ("52:54:00:ab:cd:0g", None),
        ("52:54:0:ab:cd:0e", "52:54:00:ab:cd:0e"),
        ("52:54:00:ab:cd:\u00e9", None),
    ],
)
def test_mac_addresses(text: str, expected: str | None) -> None:
    assert normalize_mac(text) == expected


@given(st.binary(min_size=6, max_size=6))
def test_mac_round_trip(mac: bytes) -> None:
    assert parse_mac(format_mac(mac)) == mac


@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        ("42", {}, 42),
        (" +42", {}, 42),
        ("42 ", {}, None),
        ("-1", {}, 2**32 - 1),
        ("-1", {"positive": True}, None),
        ("-1", {"limit": ULONG_MAX}, ULONG_MAX),
        ("4294967296", {}, None),
        ("0x1F", {"base": 0}, 31),
        ("017", {"base": 0}, 15),
        ("019", {"base": 0}, None),
        ("0x", {"base": 0}, None),
        ("", {}, None),
        ("18446744073709551616", {"limit": ULONG_MAX}, None),
        ("18446744073709551615", {"limit": ULONG_MAX}, ULONG_MAX),
        ("0000000000000000000042", {}, 42),
        ("0100", {}, 100),
        ("\u0967\u0968", {}, None),
        ("4\u00b2", {}, None),
    ],
)
def test_c_numbers(text: str, kwargs: dict[str, int | bool], expected: int | None) -> None:
    assert c_unsigned(text, **kwargs) == expected  # type: ignore[arg-type]


def _meta(body: str, outer: str = "") -> str:
    root = parse_xml(f"<network{outer}><metadata>{body}</metadata></network>")
    node = root.find("metadata")
    assert node is not None
    return parse_metadata(node)


def test_metadata_keeps_mixed_content_and_reindents_element_content() -> None:
    kept = _meta(
        "\n  <a:x xmlns:a='urn:a'>\n    <a:y>  </a:y>\n    <a:z>t<a:b/> u </a:z>\n  </a:x>\n"
    )
    assert kept == (
        "<metadata>\n"
        '  <a:x xmlns:a="urn:a">\n'
        "    <a:y>  </a:y>\n"
        "    <a:z>t<a:b/> u </a:z>\n"
        "  </a:x>\n"
        "</metadata>"
    )
    w = XmlWriter(1)
    format_metadata(w, kept)
    assert w.getvalue().splitlines()[1] == '    <a:x xmlns:a="urn:a">'


def test_metadata_declares_outer_namespaces_on_itself_and_escapes() -> None:
    kept = _meta(
        "<o:note o:lang='é\"' other='a&#10;b'>x &lt; y é</o:note><o:second/>",
        " xmlns:o='urn:outer'",
    )
    assert kept == (
        '<metadata xmlns:o="urn:outer">\n'
        '  <o:note o:lang="&#xE9;&quot;" other="a&#10;b">x &lt; y &#xE9;</o:note>\n'
        "</metadata>"
    )


def test_metadata_without_namespaced_children_is_empty() -> None:
    assert _meta("text <plain/>") == "<metadata/>"


def test_virtualport_without_type_prints_every_parameter() -> None:
    w = XmlWriter()
    port = VirtualPort(type=VPortType.NONE, managerid=3, profileid="p", interfaceid=None)
    format_virtualport(w, port)
    assert w.getvalue() == (
        "<virtualport>\n  <parameters managerid='3' profileid='p'/>\n</virtualport>\n"
    )
    w = XmlWriter()
    format_virtualport(w, VirtualPort(type=VPortType.MIDONET, managerid=3))
    assert w.getvalue() == ("<virtualport type='midonet'>\n  <parameters/>\n</virtualport>\n")
