"""Hostile input to the XML kinds: every refusal is a ``VirtError`` with libvirt's code,
and what format writes reads back unchanged."""

from __future__ import annotations

import pytest

from shared.conf.disk import format_disk, parse_disk
from shared.conf.network import format_network, parse_network
from shared.conf.nwfilter import parse_nwfilter
from shared.conf.socketaddr import parse_ip
from shared.conf.storage_pool import format_storage_pool, parse_storage_pool
from shared.conf.storage_volume import parse_storage_volume
from shared.conf.units import c_unsigned, parse_c_signed, parse_c_unsigned
from shared.util.errors import ErrorCode, VirtError

HUGE = "9" * 5000
POOL = "<pool type='dir'><name>p</name><target><path>/p</path></target></pool>"


def test_long_digit_runs_saturate_like_strtoul() -> None:
    assert parse_c_unsigned(HUGE) is None
    assert c_unsigned("-" + HUGE) is None
    assert parse_c_signed(HUGE, minimum=-(2**31), maximum=2**31 - 1) is None
    # leading zeros are no overflow
    assert parse_c_unsigned("0" * 5000 + "7") == 7
    assert parse_c_unsigned("f" * 5000, base=16) is None


@pytest.mark.parametrize(
    ("parse", "doc"),
    [
        (
            lambda d: parse_storage_volume(d, parse_storage_pool(POOL)),
            f"<volume><name>v</name><capacity>{HUGE}</capacity></volume>",
        ),
        (
            parse_storage_pool,
            f"<pool type='netfs'><name>n</name><source><host name='h' port='{HUGE}'/>"
            "<dir path='/x'/></source><target><path>/p</path></target></pool>",
        ),
        (parse_network, f"<network><name>n</name><mtu size='{HUGE}'/></network>"),
        (
            parse_network,
            f"<network><name>n</name><ip address='{HUGE}.1.1.1' prefix='24'/></network>",
        ),
        (
            parse_network,
            f"<network><name>n</name><ip address='1.{HUGE}' prefix='24'/></network>",
        ),
        (parse_nwfilter, f"<filter name='f' priority='{HUGE}'/>"),
        (
            lambda d: parse_disk(d, active=True),
            f"<disk><target dev='vda'/><iotune><total_bytes_sec>{HUGE}</total_bytes_sec>"
            "</iotune></disk>",
        ),
        (
            lambda d: parse_disk(d, active=True),
            f"<disk><target dev='sda'/><address type='drive' controller='{HUGE}'/></disk>",
        ),
    ],
)
def test_numbers_past_every_c_type_are_refused_as_libvirt_refuses(parse: object, doc: str) -> None:
    assert callable(parse)
    with pytest.raises(VirtError):
        parse(doc)


def test_ip_with_huge_parts_is_not_an_address() -> None:
    with pytest.raises(VirtError):
        parse_ip(f"{HUGE}.0.0.1")
    with pytest.raises(VirtError):
        parse_ip("0x" + "f" * 5000)


def _disk_round(doc: str) -> str:
    once = format_disk(parse_disk(doc, active=False), active=False)
    assert format_disk(parse_disk(once, active=False), active=False) == once
    assert parse_disk(once, active=False) == parse_disk(doc, active=False)
    return once


def test_bare_disk_formats_to_what_it_parses_from() -> None:
    assert _disk_round("<disk/>") == "<disk type='file' device='disk'>\n  <target/>\n</disk>\n"


def test_disk_with_a_blank_source_is_a_file_disk() -> None:
    once = _disk_round("<disk type='block'><source/><target dev='vda' bus='virtio'/></disk>")
    assert once.startswith("<disk type='file'")


def test_blank_backing_store_source_reads_back() -> None:
    once = _disk_round(
        "<disk type='file'><source file='/a'/><backingStore type='volume'>"
        "<format type='qcow2'/><source/></backingStore><target dev='vda'/></disk>"
    )
    assert "<source/>" in once


def test_whitespace_in_attributes_survives_a_round() -> None:
    once = _disk_round("<disk><source file='a&#9;b&#10;c'/><target dev='vda'/></disk>")
    assert "file='a&#9;b&#10;c'" in once


def test_pool_and_network_rounds_are_fixed_points() -> None:
    pool = format_storage_pool(
        parse_storage_pool(
            "<pool type='dir'><name>d</name><target><path>/p</path><permissions>"
            "<owner>4000000000</owner></permissions></target></pool>"
        )
    )
    assert format_storage_pool(parse_storage_pool(pool)) == pool
    net = format_network(
        parse_network(
            "<network><name>n</name><bridge name='b' delay='9223372036854775808'/></network>"
        )
    )
    assert format_network(parse_network(net)) == net


def test_refusal_code_is_libvirts() -> None:
    with pytest.raises(VirtError) as info:
        parse_network(f"<network><name>n</name><mtu size='{HUGE}'/></network>")
    assert info.value.code is ErrorCode.XML_ERROR
