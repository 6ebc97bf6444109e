"""The nwfilter compiler: variable combinations, filter trees, libvirt's firewall commands."""

from __future__ import annotations

import pytest

from services.nwfilter.ebiptables import all_teardown, apply_new_rules, tear_old_rules
from services.nwfilter.firewall import FwLayer, FwRule, Query, subchain_followups
from services.nwfilter.resolve import (
    binding_variables,
    instantiate,
    missing_variables,
    unresolvable,
    would_loop,
)
from services.nwfilter.stdfilters import standard_filters
from services.nwfilter.variables import combinations
from shared.conf.nwfilter import NWFilterDef, parse_nwfilter
from shared.conf.nwfilter_params import VarAccess
from shared.util.errors import ErrorCode, VirtError


def _combos(variables: dict[str, tuple[str, ...]], *accesses: VarAccess) -> list[list[str]]:
    return [[combo[a] for a in accesses] for combo in combinations(variables, accesses)]


def test_variables_on_one_iterator_walk_in_parallel_and_skip_repeated_pairs() -> None:
    a, b = VarAccess(name="A"), VarAccess(name="B")
    got = _combos({"A": ("1", "2", "1"), "B": ("x", "y", "x")}, a, b)
    assert got == [["1", "x"], ["2", "y"]]


def test_different_iterators_give_every_combination_first_varying_fastest() -> None:
    a, b = VarAccess(name="A", iterator=1), VarAccess(name="B", iterator=2)
    got = _combos({"A": ("1", "2"), "B": ("x", "y")}, a, b)
    assert got == [["1", "x"], ["2", "x"], ["1", "y"], ["2", "y"]]


def test_an_element_access_takes_one_value() -> None:
    a, b = VarAccess(name="A"), VarAccess(name="B", index=1)
    assert _combos({"A": ("1", "2"), "B": ("x", "y")}, a, b) == [["1", "y"], ["2", "y"]]


def test_no_variables_give_one_empty_combination() -> None:
    assert list(combinations({}, [])) == [{}]


@pytest.mark.parametrize(
    ("variables", "access", "message"),
    [
        ({}, VarAccess(name="A"), "Could not find value for variable 'A'"),
        ({"A": ("1",)}, VarAccess(name="A", index=3), "Could not get nth (3) value"),
    ],
)
def test_unusable_variables_are_refused(
    variables: dict[str, tuple[str, ...]], access: VarAccess, message: str
) -> None:
    with pytest.raises(VirtError, match=message.replace("(", r"\(").replace(")", r"\)")):
        list(combinations(variables, [access]))


def test_lists_of_different_length_on_one_iterator_are_refused() -> None:
    with pytest.raises(VirtError, match="Cardinality"):
        list(
            combinations({"A": ("1", "2"), "B": ("x",)}, [VarAccess(name="A"), VarAccess(name="B")])
        )


def _filters(*docs: str) -> dict[str, NWFilterDef]:
    parsed = [parse_nwfilter(d) for d in docs]
    return {f.name: f for f in parsed}


_PARENT = """<filter name='parent' chain='root'>
  <rule action='drop' direction='out' priority='10'><ip srcipaddr='$IP'/></rule>
  <filterref filter='child'>
    <parameter name='X' value='1.1.1.1'/><parameter name='IP' value='9.9.9.9'/>
  </filterref>
</filter>"""
_CHILD = """<filter name='child' chain='ipv4' priority='-700'>
  <rule action='accept' direction='in'><ip srcipaddr='$X' dstipaddr='$IP'/></rule>
</filter>"""


def test_references_are_walked_depth_first_and_inherited_variables_win() -> None:
    filters = _filters(_PARENT, _CHILD)
    inst = instantiate(
        filters["parent"], binding_variables({}, "52:54:00:00:00:01", "10.0.0.2"), filters.get
    )
    assert inst.filters == ["parent", "child"]
    assert [(r.filter, r.chain, r.chain_priority) for r in inst.rules] == [
        ("parent", "root", 0),
        ("child", "ipv4", -700),
    ]
    child_vars = inst.rules[1].variables
    assert child_vars["X"] == ("1.1.1.1",)
    assert child_vars["IP"] == ("10.0.0.2",)  # the binding's IP, not the reference's
    assert missing_variables(inst) == []


def test_a_missing_reference_and_missing_variables_are_reported() -> None:
    filters = _filters(_PARENT)
    with pytest.raises(VirtError, match="referenced filter 'child' is missing"):
        instantiate(filters["parent"], {}, filters.get)
    filters = _filters(_PARENT, _CHILD)
    inst = instantiate(filters["parent"], binding_variables({}, "52:54:00:00:00:01"), filters.get)
    assert missing_variables(inst) == ["IP"]
    assert unresolvable(["IP"]).code is ErrorCode.PARSE_FAILED


def test_a_reference_loop_is_detected() -> None:
    filters = _filters(_PARENT, _CHILD)
    looping = parse_nwfilter("<filter name='child'><filterref filter='parent'/></filter>")
    assert would_loop(looping, filters.get)
    assert not would_loop(filters["child"], filters.get)
    assert would_loop(
        parse_nwfilter("<filter name='s'><filterref filter='s'/></filter>"), filters.get
    )


def test_standard_filters_resolve_with_mac_and_ip() -> None:
    filters = {f.name: f for f in standard_filters()}
    assert {
        "clean-traffic",
        "clean-traffic-gateway",
        "no-arp-spoofing",
        "allow-dhcp-server",
    } <= set(filters)
    assert len({f.uuid for f in filters.values()}) == len(filters)
    inst = instantiate(
        filters["clean-traffic"],
        binding_variables({}, "52:54:00:aa:bb:cc", "10.0.0.5"),
        filters.get,
    )
    assert missing_variables(inst) == []
    commands = [" ".join(r.argv) for tx in apply_new_rules("vnet7", inst.rules) for r in tx.rules]
    assert "ebtables --concurrent -t nat -A J-vnet7-mac -s 52:54:00:aa:bb:cc -j RETURN" in commands
    assert (
        "ebtables --concurrent -t nat -A J-vnet7-ipv4-ip -p ipv4 --ip-source 10.0.0.5 -j RETURN"
        in commands
    )
    # The new chains are linked last, after every rule is in place.
    assert commands[-1] == "ebtables --concurrent -t nat -A POSTROUTING -o vnet7 -j libvirt-P-vnet7"


def test_a_failed_apply_rolls_back_the_temporary_chains_only() -> None:
    filters = _filters("<filter name='f'><rule action='drop' direction='in'><tcp/></rule></filter>")
    _cleanup, tx = apply_new_rules("vnet1", instantiate(filters["f"], {}, filters.get).rules)
    rollback = [" ".join(r.args) for r in tx.rollback]
    assert "-F FJ-vnet1" in rollback and "-F FI-vnet1" not in rollback
    assert all(r.ignore_errors for r in tx.rollback)


def test_old_rules_are_replaced_by_renaming_and_teardown_removes_all() -> None:
    old = [" ".join(r.args) for r in tear_old_rules("vnet1").rules]
    assert "-E FJ-vnet1 FI-vnet1" in old
    assert old[-1] == "-t nat -E libvirt-P-vnet1 libvirt-O-vnet1"
    gone = [" ".join(r.args) for r in all_teardown("vnet1").rules]
    assert "-X FI-vnet1" in gone and "-X FJ-vnet1" in gone and "-t nat -X libvirt-O-vnet1" in gone


def test_listing_output_asks_for_subchain_removal_and_renaming() -> None:
    listing = "Bridge chain: libvirt-J-vnet0\n-p IPv4 -j J-vnet0-ipv4\n-j DROP\n"
    remove = FwRule(
        FwLayer.ETHERNET, ("-t", "nat", "-L", "libvirt-J-vnet0"), query=Query.REMOVE_TEMP_SUBCHAINS
    )
    assert [r.args[-1] for r in subchain_followups(remove, listing)] == ["J-vnet0-ipv4"] * 3
    rename = FwRule(FwLayer.ETHERNET, remove.args, query=Query.RENAME_TEMP_SUBCHAINS)
    assert subchain_followups(rename, listing)[-1].args == (
        "-t",
        "nat",
        "-E",
        "J-vnet0-ipv4",
        "I-vnet0-ipv4",
    )
    assert subchain_followups(FwRule(FwLayer.ETHERNET, ("-t",)), listing) == []


def test_learning_reads_the_guests_address_from_arp_and_ipv4() -> None:
    from services.nwfilter.learn import learned

    mac = bytes.fromhex("525400000001")
    arp = b"\xff" * 6 + mac + b"\x08\x06" + bytes(8) + mac + bytes([10, 0, 0, 7]) + bytes(10)
    assert learned(arp, mac) == "10.0.0.7"
    dhcp = b"\xff" * 6 + mac + b"\x08\x00" + bytes(12) + bytes(4) + b"\xff" * 4
    assert learned(dhcp, mac) is None  # 0.0.0.0 before DHCP does not count
    ipv4 = b"\xff" * 6 + mac + b"\x08\x00" + bytes(12) + bytes([10, 0, 0, 8]) + bytes(4)
    assert learned(ipv4, mac) == "10.0.0.8"
    assert learned(ipv4, bytes(6)) is None


def test_lease_events_give_the_address_only_when_handed_out() -> None:
    import json

    from services.nwfilter.watchers import lease_address

    def event(detail: str, **lease: str) -> bytes:
        return json.dumps({"data": {"object": "lease", "detail": detail, "extra": lease}}).encode()

    mac, ip = "52:54:00:00:00:01", "10.0.0.9"
    assert lease_address(event("Added", mac=mac, ipaddr=ip, type="ipv4")) == (mac, ip)
    assert lease_address(event("Renewed", mac=mac, ipaddr=ip)) == (mac, ip)
    assert lease_address(event("Released", mac=mac, ipaddr=ip)) is None
    assert lease_address(event("Added", mac=mac, ipaddr="fd00::9", type="ipv6")) is None
    assert lease_address(b"not json") is None
