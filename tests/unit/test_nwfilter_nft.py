"""The nftables backend's rules: libvirt's chain layout and semantics in nft syntax."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from services.nwfilter.backends import EbiptablesBackend, Runner
from services.nwfilter.nftables import (
    PortChains,
    binding_script,
    compile_port,
    infrastructure_script,
    owned_by,
    removal_script,
)
from services.nwfilter.resolve import binding_variables, instantiate
from services.nwfilter.stdfilters import standard_filters
from shared.conf.nwfilter import NWFilterDef, parse_nwfilter
from shared.util.errors import ErrorCode, VirtError


def _rules(doc: str | None = None, name: str = "clean-traffic"):  # type: ignore[no-untyped-def]
    filters: dict[str, NWFilterDef] = {f.name: f for f in standard_filters()}
    if doc is not None:
        parsed = parse_nwfilter(doc)
        filters[parsed.name] = parsed
        name = parsed.name
    variables = binding_variables({}, "52:54:00:00:00:01", "10.0.0.2")
    return instantiate(filters[name], variables, filters.get).rules


def test_clean_traffic_becomes_bridge_chains_in_libvirt_order() -> None:
    port = compile_port("vnet3", 7, _rules())
    root = port.bridge["I-vnet3"]
    assert root[0] == "meta mark set meta mark & 0xffff0000 | 0x0007"
    assert root[1:3] == ["jump I-vnet3-mac", "ether type 0x0800 jump I-vnet3-ipv4-ip"]
    assert root[-1] == "counter drop"
    assert port.bridge["I-vnet3-mac"] == ["ether saddr 52:54:00:00:00:01 return", "counter drop"]
    assert "ether type 0x0800 ip saddr 10.0.0.2 return" in port.bridge["I-vnet3-ipv4-ip"]
    assert port.inet == {"FI-vnet3": [], "FO-vnet3": [], "HI-vnet3": []}


def test_ip_rules_keep_libvirt_state_matching_per_chain() -> None:
    doc = """<filter name='f'>
      <rule action='accept' direction='out'><tcp dstportstart='22'/></rule>
      <rule action='drop' direction='in'><icmp/></rule>
    </filter>"""
    port = compile_port("vnet3", 7, _rules(doc))
    assert port.inet["FI-vnet3"][0] == (
        "meta nfproto ipv4 meta l4proto tcp th dport 22 "
        "ct state { new, established } ct direction original return"
    )
    assert port.inet["FO-vnet3"][0] == (
        "meta nfproto ipv4 meta l4proto tcp th sport 22 "
        "ct state { established } ct direction reply accept"
    )
    assert port.inet["FO-vnet3"][1] == "meta nfproto ipv4 meta l4proto icmp counter drop"


@pytest.mark.parametrize(
    "rule",
    [
        "<tcp option='2'/>",
        "<udp connlimit-above='3'/>",
        "<arp gratuitous='true'/>",
        "<stp type='1'/>",
    ],
)
def test_what_nft_cannot_express_is_refused(rule: str) -> None:
    doc = f"<filter name='f'><rule action='drop' direction='out'>{rule}</rule></filter>"
    with pytest.raises(VirtError) as caught:
        compile_port("vnet3", 7, _rules(doc))
    assert caught.value.code is ErrorCode.CONFIG_UNSUPPORTED


def test_scripts_replace_and_remove_one_port_in_one_transaction() -> None:
    port = compile_port("vnet3", 7, _rules())
    stale = PortChains(("I-vnet3", "I-vnet3-old"), ("FI-vnet3",))
    script = binding_script(port, stale)
    assert "flush chain bridge virtbus-nwfilter I-vnet3\n" in script
    assert "delete chain bridge virtbus-nwfilter I-vnet3-old\n" in script
    assert "add element inet virtbus-nwfilter from_port { 0x00000007 : jump FI-vnet3 }" in script
    removal = removal_script("vnet3", 7, port.chains)
    assert 'delete element bridge virtbus-nwfilter port_in { "vnet3" }' in removal
    assert "delete chain inet virtbus-nwfilter HI-vnet3" in removal
    assert "add table bridge virtbus-nwfilter" in infrastructure_script()
    with pytest.raises(ValueError):
        compile_port("vnet3", 0, [])


def test_chain_ownership_by_port_name() -> None:
    assert owned_by("I-vnet1-arp-ip", "vnet1")
    assert owned_by("FO-vnet1", "vnet1")
    assert not owned_by("I-vnet10", "vnet1")
    assert not owned_by("pre", "vnet1")


class _FakeRunner(Runner):
    """Answers ebtables listings and fails the commands it is told to."""

    def __init__(self, fail: str | None = None) -> None:
        super().__init__()
        self.fail = fail
        self.seen: list[str] = []

    async def run(self, argv: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
        line = " ".join(argv)
        self.seen.append(line)
        if self.fail is not None and self.fail in line:
            return 1, "", "boom"
        if "-L libvirt-J-vnet3" in line:
            return 0, "Bridge chain: libvirt-J-vnet3\n-p IPv4 -j J-vnet3-ipv4\n", ""
        return 0, "", ""


async def test_libvirt_transactions_roll_back_and_follow_listings() -> None:
    rules = _rules()
    ok = _FakeRunner()
    await EbiptablesBackend(ok).apply("vnet3", rules)
    # The listing of a temporary chain asked for its sub-chain to be removed.
    assert "ebtables --concurrent -t nat -X J-vnet3-ipv4" in ok.seen
    assert "ebtables --concurrent -t nat -E libvirt-P-vnet3 libvirt-O-vnet3" in ok.seen
    assert ok.seen[-1] == "ebtables --concurrent -t nat -E J-vnet3-ipv4 I-vnet3-ipv4"

    broken = _FakeRunner(fail="-A J-vnet3-mac")
    with pytest.raises(VirtError) as failed:
        await EbiptablesBackend(broken).apply("vnet3", rules)
    assert failed.value.code is ErrorCode.BUILD_FIREWALL
    after = broken.seen[broken.seen.index(next(s for s in broken.seen if "-A J-vnet3-mac" in s)) :]
    assert "ebtables --concurrent -t nat -D PREROUTING -i vnet3 -j libvirt-J-vnet3" in after
    # The old rules are never touched when the new ones could not be built.
    assert not any("libvirt-I-vnet3" in s for s in after)
