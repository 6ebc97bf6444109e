"""The net-* commands' filters and rows, as virsh's net-list and net-dhcp-leases show them."""

from __future__ import annotations

import time

import pytest

from client.cli.main import parse_line
from client.cli.net_cmds import _lease_row, _wanted
from shared.api.network import Lease, NetworkInfo

ACTIVE = NetworkInfo(name="a", uuid="u1", active=True, persistent=True, autostart=True)
INACTIVE = NetworkInfo(name="i", uuid="u2", active=False, persistent=True)
TRANSIENT = NetworkInfo(name="t", uuid="u3", active=True, persistent=False)


@pytest.mark.parametrize(
    ("words", "shown"),
    [
        ([], ["a", "t"]),
        (["--inactive"], ["i"]),
        (["--all"], ["a", "i", "t"]),
        (["--all", "--transient"], ["t"]),
        (["--all", "--persistent", "--no-autostart"], ["i"]),
        (["--autostart"], ["a"]),
    ],
)
def test_net_list_filters_as_virsh(words: list[str], shown: list[str]) -> None:
    _, args = parse_line(["net-list", *words])
    assert [n.name for n in (ACTIVE, INACTIVE, TRANSIENT) if _wanted(args, n)] == shown


def test_lease_rows() -> None:
    expiry = 4102444800
    v4 = Lease(
        iface="virbr0", expiry_time=expiry, type="ipv4", mac="52:54:00:aa:bb:cc",
        ipaddr="192.168.122.50", prefix=24, hostname="web", clientid="01:52:54:00:aa:bb:cc",
    )  # fmt: skip
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expiry))
    assert _lease_row(v4) == [
        stamp, "52:54:00:aa:bb:cc", "ipv4", "192.168.122.50/24", "web", "01:52:54:00:aa:bb:cc",
    ]  # fmt: skip
    bare = v4.model_copy(update={"hostname": None, "clientid": None, "expiry_time": 0})
    assert _lease_row(bare)[0] == "-" and _lease_row(bare)[4:] == ["-", "-"]


def test_net_update_takes_virsh_positional_and_named_forms() -> None:
    _, a = parse_line(["net-update", "n", "add", "ip-dhcp-host", "<host/>", "--live"])
    _, b = parse_line(
        ["net-update", "--network", "n", "--command", "add", "--section", "ip-dhcp-host",
         "--xml", "<host/>", "--live"]
    )  # fmt: skip
    assert vars(a) == vars(b)
    assert (a.command, a.section, a.live, a.parent_index) == ("add", "ip-dhcp-host", True, None)
