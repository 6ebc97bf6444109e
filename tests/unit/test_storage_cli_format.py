"""The storage CLI's pure pieces: sizes as virsh prints and parses them, list shapes, XML."""

from __future__ import annotations

import pytest

from client.cli.main import parse_line
from client.cli.pool_cmds import CommandFailed, build_pool_xml, format_pool_list, pretty_capacity
from client.cli.vol_cmds import clone_xml, parse_size, volume_xml
from shared.api.storage import PoolInfo, PoolState


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0.00 B"),
        (1023, "1023.00 B"),
        (1024, "1.00 KiB"),
        (10 << 20, "10.00 MiB"),
        (270553174016, "251.97 GiB"),
        (5 << 40, "5.00 TiB"),
    ],
)
def test_pretty_capacity(value: int, text: str) -> None:
    assert pretty_capacity(value) == text


@pytest.mark.parametrize(
    ("text", "value"), [("1M", 1 << 20), ("10", 10), ("1GB", 10**9), ("2KiB", 2048)]
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["1X", "-1", "", "M"])
def test_malformed_size(text: str) -> None:
    with pytest.raises(CommandFailed) as err:
        parse_size(text)
    assert err.value.lines[0] == f"Malformed size {text}"


def _pool(name: str, running: bool) -> PoolInfo:
    state = PoolState.RUNNING if running else PoolState.INACTIVE
    return PoolInfo(
        name=name, uuid="0" * 36, type="dir", state=state, persistent=True, autostart=False,
        capacity=1 << 30, allocation=0, available=1 << 30,
    )  # fmt: skip


def test_pool_list_shapes() -> None:
    pools = [_pool("a", True), _pool("idle", False)]
    assert (
        format_pool_list(pools, False, False, True)
        == "a                   \nidle                \n\n"
    )
    detailed = format_pool_list(pools, True, False, False).splitlines()
    assert detailed[2].split() == ["a", "running", "no", "yes", "1.00", "GiB", "0.00", "B",
                                   "1.00", "GiB"]  # fmt: skip
    assert detailed[3].split() == ["idle", "inactive", "no", "yes", "-", "-", "-"]


def test_pool_x_as_xml_order() -> None:
    _, args = parse_line(
        ["pool-define-as", "vg", "logical", "--source-dev", "/dev/sdz", "--source-name", "vg0",
         "--source-format", "lvm2", "--target", "/dev/vg0"]
    )  # fmt: skip
    assert build_pool_xml(args) == (
        "<pool type='logical'>\n  <name>vg</name>\n  <source>\n"
        "    <device path='/dev/sdz'/>\n    <format type='lvm2'/>\n    <name>vg0</name>\n"
        "  </source>\n  <target>\n    <path>/dev/vg0</path>\n  </target>\n</pool>\n"
    )


def test_secret_usage_and_uuid_exclusive() -> None:
    _, args = parse_line(["pool-define-as", "r", "rbd"])
    args.secret_usage, args.secret_uuid = "u", "0" * 36
    with pytest.raises(CommandFailed, match="mutually exclusive"):
        build_pool_xml(args)


def test_volume_xml_as_virsh_writes_it() -> None:
    assert volume_xml("v", 1024, 0, "qcow2", "/p/base", None) == (
        "<volume>\n  <name>v</name>\n  <capacity>1024</capacity>\n"
        "  <allocation>0</allocation>\n  <target>\n    <format type='qcow2'/>\n  </target>\n"
        "  <backingStore>\n    <path>/p/base</path>\n  </backingStore>\n</volume>\n"
    )


def test_clone_xml_renames_only() -> None:
    xml = "<volume type='file'>\n  <name>a</name>\n  <key>/p/a</key>\n</volume>\n"
    assert clone_xml(xml, "b") == (
        '<volume type="file">\n  <name>b</name>\n  <key>/p/a</key>\n</volume>'
    )


def test_negative_resize_is_a_size_not_an_option() -> None:
    _, args = parse_line(["vol-resize", "v", "-1G", "--shrink"])
    assert args.capacity == "-1G" and args.shrink
