"""The network service's pure backends: dnsmasq files, iptables and nftables rules, net-update."""

from __future__ import annotations

import pytest

from services.network.dnsmasq_conf import dnsmasq_config, lease_time, ptr_domain
from services.network.iptables import network_commands, removal_commands
from services.network.nftables import add_script, delete_script, table_name
from services.network.update import (
    UpdateCommand,
    UpdateSection,
    command_by_name,
    section_by_name,
    update_network,
)
from shared.conf.network import format_network, parse_network
from shared.conf.network_ip import DhcpLease, LeaseUnit
from shared.util.errors import ErrorCode, VirtError

NAT = """<network>
  <name>n1</name>
  <forward mode='nat'><nat><address start='10.0.0.5' end='10.0.0.9'/></nat></forward>
  <bridge name='vbr1'/>
  <ip address='192.168.77.1' prefix='24'>
    <dhcp>
      <range start='192.168.77.10' end='192.168.77.19'/>
      <host mac='52:54:00:00:00:01' ip='192.168.77.5'/>
      <host name='web' ip='192.168.77.6'/>
    </dhcp>
  </ip>
</network>"""

OPEN = (
    "<network><name>o</name><forward mode='open'/><bridge name='vbr2'/>"
    "<ip address='10.1.0.1' prefix='16'/></network>"
)


def test_dnsmasq_counts_leases_and_writes_hosts() -> None:
    files = dnsmasq_config(parse_network(NAT), config_dir="/run/x")
    assert "dhcp-lease-max=10\n" in files.conf
    assert "dhcp-hostsfile=/run/x/n1.hostsfile\n" in files.conf
    assert files.hostsfile == "52:54:00:00:00:01,192.168.77.5\nweb,192.168.77.6\n"
    assert files.lease_max == 10


def test_dnsmasq_without_dhcp_has_no_hostsfile() -> None:
    files = dnsmasq_config(parse_network(OPEN), config_dir="/d")
    assert files.hostsfile is None
    assert "dhcp-range" not in files.conf


def test_lease_time_units() -> None:
    assert lease_time(DhcpLease(expiry=0)) == "infinite"
    assert lease_time(DhcpLease(expiry=3, unit=LeaseUnit.HOURS)) == "3h"
    assert lease_time(None) is None


def test_ptr_domain_needs_an_octet_boundary() -> None:
    net = parse_network(
        "<network><name>p</name><ip address='10.2.3.1' prefix='20' localPtr='yes'/></network>"
    )
    with pytest.raises(VirtError) as err:
        ptr_domain(net.ips[0])
    assert err.value.code is ErrorCode.CONFIG_UNSUPPORTED


def test_iptables_snat_range_and_removal_order() -> None:
    net = parse_network(NAT)
    adds = network_commands(net)
    assert [
        "iptables", "-w", "--table", "nat", "--insert", "LIBVIRT_PRT", "--source",
        "192.168.77.0/24", "-p", "tcp", "!", "--destination", "192.168.77.0/24",
        "--jump", "SNAT", "--to-source", "10.0.0.5-10.0.0.9:1024-65535",
    ] in adds  # fmt: skip
    removes = removal_commands(net)
    assert len(removes) == len(adds)
    assert removes[0][4] == "--delete"
    assert removes[-1][5:] == adds[0][5:]


def test_open_network_has_no_rules() -> None:
    net = parse_network(OPEN)
    assert network_commands(net) == []
    assert add_script(net) == ""


def test_nftables_table_is_the_networks_own() -> None:
    script = add_script(parse_network(NAT))
    assert script.startswith("table inet virtbus_vbr1\ndelete table inet virtbus_vbr1\n")
    assert "snat ip to 10.0.0.5-10.0.0.9:1024-65535" in script
    assert 'iifname "vbr1" reject' in script
    assert delete_script("vbr1").count(table_name("vbr1")) == 2


def test_update_add_first_host_and_delete_it_again() -> None:
    net = parse_network(NAT)
    added = update_network(
        net,
        UpdateCommand.ADD_FIRST,
        UpdateSection.IP_DHCP_HOST,
        "<host mac='52:54:00:00:00:02' ip='192.168.77.7'/>",
    )
    assert added.ips[0].hosts[0].mac == "52:54:00:00:00:02"
    back = update_network(
        added, UpdateCommand.DELETE, UpdateSection.IP_DHCP_HOST, "<host ip='192.168.77.7'/>"
    )
    assert format_network(back) == format_network(net)


@pytest.mark.parametrize(
    ("section", "xml", "code"),
    [
        (UpdateSection.BRIDGE, "<bridge name='x'/>", ErrorCode.OPERATION_UNSUPPORTED),
        (UpdateSection.DNS_TXT, "<host/>", ErrorCode.XML_ERROR),
        (UpdateSection.IP_DHCP_RANGE, "<range", ErrorCode.XML_ERROR),
    ],
)
def test_update_refusals(section: UpdateSection, xml: str, code: ErrorCode) -> None:
    with pytest.raises(VirtError) as err:
        update_network(parse_network(NAT), UpdateCommand.ADD_LAST, section, xml)
    assert err.value.code is code


def test_update_portgroup_single_default() -> None:
    net = update_network(parse_network(NAT), 3, 9, "<portgroup name='a' default='yes'/>")
    with pytest.raises(VirtError, match="already set as the default"):
        update_network(net, 3, 9, "<portgroup name='b' default='yes'/>")


def test_virsh_names() -> None:
    assert command_by_name("add") is UpdateCommand.ADD_LAST
    assert section_by_name("ip-dhcp-host") is UpdateSection.IP_DHCP_HOST
    with pytest.raises(VirtError):
        section_by_name("nope")
