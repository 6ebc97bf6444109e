"""The network kind: golden documents, libvirt's refusals, and round-trip properties."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from shared.conf.network import (
    DNSMASQ_NS,
    NetworkDef,
    NetworkLive,
    NetworkXMLFlags,
    format_network,
    parse_network,
)
from shared.conf.network_forward import FORWARD_MODES, ForwardInterface, ForwardMode
from shared.util.errors import ErrorCode, VirtError
from tests.unit.test_conf_network_strategies import networks

LAB_IN = """<network xmlns:dm='http://libvirt.org/schemas/network/dnsmasq/1.0'
         xmlns:tour='urn:example:tour' trustGuestRxFilters='yes'>
  <name>lab</name>
  <uuid>0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0</uuid>
  <title>not part of a 9.0 network</title>
  <dm:options>
    <dm:option value='dhcp-option=42,10.7.0.1'/>
  </dm:options>
  <metadata>
    <tour:stop   number="3">
      <tour:room>lab &amp; office</tour:room>
    </tour:stop>
    <plain>no namespace: dropped</plain>
    <again:x xmlns:again='urn:example:tour'/>
  </metadata>
  <ip address='10.7.0.1' prefix='24' localPtr='yes'>
    <tftp root='/srv/tftp'/>
    <dhcp>
      <range start='10.7.0.100' end='10.7.0.0x96'>
        <lease expiry='2' unit='hours'/>
      </range>
      <host mac='52:54:00:AA:bb:01' name='printer' ip='10.7.0.5'/>
      <host name='9lives' ip='10.7.0.6'>
        <lease expiry='0'/>
      </host>
      <bootp file='pxelinux.0' server='10.7.0.2'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='fd00:7:0:0::1' prefix='64'>
    <dhcp>
      <range start='fd00:7::1:0' end='fd00:7::1:ff'/>
      <host id='0:3:0:1:52:54:0:aa:bb:2' name='scanner' ip='fd00:7::2'/>
    </dhcp>
  </ip>
  <route address='192.168.50.0' netmask='255.255.255.0' gateway='10.7.0.254' metric='10'/>
  <forward mode='nat' dev='uplink0'>
    <nat ipv6='yes'>
      <port start='1024' end='65000'/>
      <address start='198.51.100.10' end='198.51.100.20'/>
    </nat>
  </forward>
  <bridge name='labbr0' zone='trusted' stp='off' delay='2'/>
  <mtu size='1400'/>
  <mac address='52:54:00:0A:0B:0C'/>
  <domain name='lab.example' localOnly='yes'/>
  <dns forwardPlainNames='no'>
    <host ip='10.7.0.5'><hostname>printer</hostname><hostname>lp</hostname></host>
    <srv service='ldap' protocol='tcp' target='dir.lab.example' port='389' weight='5'/>
    <txt name='motd' value='be &lt;nice&gt;'/>
    <forwarder addr='192.0.2.53'/>
    <forwarder domain='corp.example' addr='192.0.2.54'/>
  </dns>
  <bandwidth>
    <outbound average='1000' burst='64'/>
    <inbound average='2000' peak='4000'/>
  </bandwidth>
  <port isolated='no'/>
  <portgroup name='guests' default='YES'>
    <bandwidth><inbound average='100'/></bandwidth>
    <vlan><tag id='0'/></vlan>
  </portgroup>
</network>
"""

LAB_OUT = """<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0' \
trustGuestRxFilters='yes'>
  <name>lab</name>
  <uuid>0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0</uuid>
  <metadata xmlns:tour="urn:example:tour">
    <tour:stop number="3">
      <tour:room>lab &amp; office</tour:room>
    </tour:stop>
  </metadata>
  <forward dev='uplink0' mode='nat'>
    <nat ipv6='yes'>
      <address start='198.51.100.10' end='198.51.100.20'/>
      <port start='1024' end='65000'/>
    </nat>
    <interface dev='uplink0'/>
  </forward>
  <bridge name='labbr0' zone='trusted' stp='off' delay='2'/>
  <mtu size='1400'/>
  <mac address='52:54:00:0a:0b:0c'/>
  <domain name='lab.example' localOnly='yes'/>
  <dns forwardPlainNames='no'>
    <forwarder addr='192.0.2.53'/>
    <forwarder domain='corp.example' addr='192.0.2.54'/>
    <txt name='motd' value='be &lt;nice&gt;'/>
    <srv service='ldap' protocol='tcp' target='dir.lab.example' port='389' weight='5'/>
    <host ip='10.7.0.5'>
      <hostname>printer</hostname>
      <hostname>lp</hostname>
    </host>
  </dns>
  <bandwidth>
    <inbound average='2000' peak='4000'/>
    <outbound average='1000' burst='64'/>
  </bandwidth>
  <port isolated='no'/>
  <ip address='10.7.0.1' prefix='24' localPtr='yes'>
    <tftp root='/srv/tftp'/>
    <dhcp>
      <range start='10.7.0.100' end='10.7.0.150'>
        <lease expiry='2' unit='hours'/>
      </range>
      <host mac='52:54:00:AA:bb:01' name='printer' ip='10.7.0.5'/>
      <host name='9lives' ip='10.7.0.6'>
        <lease expiry='0'/>
      </host>
      <bootp file='pxelinux.0' server='10.7.0.2'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='fd00:7::1' prefix='64'>
    <dhcp>
      <range start='fd00:7::1:0' end='fd00:7::1:ff'/>
      <host id='0:3:0:1:52:54:0:aa:bb:2' name='scanner' ip='fd00:7::2'/>
    </dhcp>
  </ip>
  <route address='192.168.50.0' netmask='255.255.255.0' gateway='10.7.0.254' metric='10'/>
  <portgroup name='guests' default='yes'>
    <vlan>
      <tag id='0'/>
    </vlan>
    <bandwidth>
      <inbound average='100'/>
    </bandwidth>
  </portgroup>
  <dnsmasq:options>
    <dnsmasq:option value='dhcp-option=42,10.7.0.1'/>
  </dnsmasq:options>
</network>
"""


def test_lab_network_golden() -> None:
    net = parse_network(LAB_IN)
    assert format_network(net) == LAB_OUT
    assert format_network(parse_network(LAB_OUT)) == LAB_OUT


def test_lab_network_model() -> None:
    net = parse_network(LAB_IN)
    assert net.forward.mode is ForwardMode.NAT and net.forward.dev() == "uplink0"
    assert net.dnsmasq_options == ("dhcp-option=42,10.7.0.1",)
    v4, v6 = net.ips_of(ipv6=False)[0], net.ips_of(ipv6=True)[0]
    assert v4.prefix_length() == 24 and v4.ranges[0].lease is not None
    assert v4.ranges[0].lease.seconds() == 7200 and v4.hosts[1].lease is not None
    assert v4.hosts[1].lease.seconds() is None
    assert v6.prefix_length() == 64 and v6.hosts[0].id == "0:3:0:1:52:54:0:aa:bb:2"
    assert net.portgroup(None) is net.portgroups[0] and net.portgroup("nope") is None
    assert FORWARD_MODES[net.forward.mode].libvirt_bridge


SRIOV = """<network>
  <name>sriov</name>
  <uuid>6a1b2c3d-0000-4000-8000-00000000abcd</uuid>
  <forward mode='passthrough'>
    <driver name='vfio'/>
    <pf dev='enp3s0f0'/>
  </forward>
  <vlan>
    <tag id='12'/>
  </vlan>
  <virtualport type='802.1Qbh'>
    <parameters profileid='gold'/>
  </virtualport>
</network>
"""


def test_pf_pool_live_and_inactive_forms() -> None:
    net = parse_network(SRIOV.replace("<tag id='12'/>", "<tag id='12' />"))
    assert format_network(net) == SRIOV
    vfs = (ForwardInterface(dev="enp3s0f0v0"), ForwardInterface(dev="enp3s0f0v1"))
    live_net = net.model_copy(
        update={"forward": net.forward.model_copy(update={"interfaces": vfs})}
    )
    live = NetworkLive(connections=2, interface_connections={"enp3s0f0v1": 2})
    shown = format_network(live_net, live=live)
    assert shown.startswith("<network connections='2'>\n")
    assert (
        "    <pf dev='enp3s0f0'/>\n"
        "    <interface dev='enp3s0f0v0'/>\n"
        "    <interface dev='enp3s0f0v1' connections='2'/>\n"
    ) in shown
    # the persistent form hides the VFs a pf lends and every live count
    assert format_network(live_net, NetworkXMLFlags.INACTIVE, live=live) == SRIOV


def test_hostdev_pool_of_pci_addresses() -> None:
    text = """<network>
  <name>vfs</name>
  <uuid>6a1b2c3d-0000-4000-8000-00000000abce</uuid>
  <forward mode='hostdev'>
    <address type='pci' domain='0' bus='0x5' slot='0x10' function='2'/>
    <address type='pci' domain='0x0001' bus='5' slot='020' function='0x3' multifunction='on'/>
  </forward>
</network>"""
    assert format_network(parse_network(text)) == (
        "<network>\n"
        "  <name>vfs</name>\n"
        "  <uuid>6a1b2c3d-0000-4000-8000-00000000abce</uuid>\n"
        "  <forward mode='hostdev' managed='no'>\n"
        "    <address type='pci' domain='0x0000' bus='0x05' slot='0x10' function='0x2'/>\n"
        "    <address type='pci' domain='0x0001' bus='0x05' slot='0x10' function='0x3'/>\n"
        "  </forward>\n"
        "</network>\n"
    )


def test_minimal_isolated_network_gets_uuid_and_bridge_defaults() -> None:
    net = parse_network("<network><name>solo</name></network>")
    assert len(net.uuid) == 36
    assert format_network(net) == (
        "<network>\n"
        "  <name>solo</name>\n"
        f"  <uuid>{net.uuid}</uuid>\n"
        "  <bridge stp='on' delay='0'/>\n"
        "</network>\n"
    )


@pytest.mark.parametrize(
    ("forward", "expected"),
    [
        ("<forward/>", "<forward mode='nat'/>"),
        ("<forward mode=''/>", "<forward mode='nat'/>"),
        ("<forward mode='none'/>", None),
        ("<forward mode='route' dev='eth9'/>", "<forward dev='eth9' mode='route'>"),
    ],
)
def test_forward_mode_defaults(forward: str, expected: str | None) -> None:
    net = parse_network(
        f"<network><name>f</name>{forward}<ip address='10.1.1.1' prefix='24'/></network>"
    )
    text = format_network(net)
    if expected is None:
        assert "<forward" not in text
    else:
        assert f"  {expected}\n" in text


def test_bridge_macvtap_modes_print_no_stp() -> None:
    net = parse_network(
        "<network><name>m</name><forward mode='bridge'><interface dev='eth0'/></forward>"
        "<bridge macTableManager='kernel'/></network>"
    )
    assert "<bridge macTableManager='kernel'/>" in format_network(net)


def test_dnsmasq_namespace_with_any_prefix_and_quirks_kept() -> None:
    net = parse_network(
        f"<network xmlns:x='{DNSMASQ_NS}' ipv6='yes'><name>d</name>"
        "<x:options><x:option value=''/><x:option value='a&amp;b'/></x:options>"
        "<x:options><x:option value='c'/></x:options>"
        "<mtu size='-1'/><bridge name='b' delay='18446744073709551615'/></network>"
    )
    assert net.dnsmasq_options == ("", "a&b", "c")
    text = format_network(net)
    assert text.startswith(f"<network xmlns:dnsmasq='{DNSMASQ_NS}' ipv6='yes'>")
    # libvirt reads mtu with strtoul ("-1" wraps); it prints delay as a signed long,
    # which it could not read back, virtbus unsigned
    assert "<mtu size='4294967295'/>" in text and "delay='18446744073709551615'" in text
    assert format_network(parse_network(text)) == text
    assert "<dnsmasq:option value='a&amp;b'/>" in text


def _net(inner: str, attrs: str = "") -> str:
    return f"<network{attrs}><name>t</name>{inner}</network>"


V4 = "<ip address='10.0.0.1' netmask='255.255.255.0'>{}</ip>"
V6 = "<ip family='ipv6' address='fd00::1' prefix='64'>{}</ip>"

XML_ERR = ErrorCode.XML_ERROR
DETAIL = ErrorCode.XML_DETAIL
UNSUP = ErrorCode.CONFIG_UNSUPPORTED
INTERNAL = ErrorCode.INTERNAL_ERROR

REFUSALS: list[tuple[str, ErrorCode, str]] = [
    (
        "<network><uuid>0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0</uuid></network>",
        ErrorCode.NO_NAME,
        "missing name information",
    ),
    ("<network><name>a/b</name></network>", DETAIL, "invalid char in name: /"),
    (_net("<uuid>xyz</uuid>"), INTERNAL, "malformed uuid element"),
    (_net("", " ipv6='maybe'"), XML_ERR, "Invalid ipv6 setting 'maybe' in network 't'"),
    (
        _net("", " trustGuestRxFilters='on'"),
        XML_ERR,
        "Invalid value for attribute 'trustGuestRxFilters' in element 'network': 'on'.",
    ),
    (_net("<ip address='10.0.0.256'/>"), XML_ERR, "Invalid address '10.0.0.256' in network 't'"),
    (_net("<ip prefix='8'/>"), XML_ERR, "Missing required address attribute in network 't'"),
    (
        _net("<ip family='ipv6' address='fd00::1' netmask='255.0.0.0'/>"),
        UNSUP,
        "netmask not allowed for IPv6 address 'fd00::1' in network 't'",
    ),
    (
        _net("<ip address='10.0.0.1' netmask='255.0.0.0' prefix='8'/>"),
        UNSUP,
        "Network 't' IP address cannot have both a prefix and a netmask",
    ),
    (
        _net("<ip address='10.0.0.1' prefix='33'/>"),
        UNSUP,
        "Invalid IPv4 prefix '33' in network 't'",
    ),
    (
        _net("<ip address='fd00::1'/>"),
        UNSUP,
        "no family specified for non-IPv4 address 'fd00::1' in network 't'",
    ),
    (_net("<ip family='ipx' address='10.0.0.1'/>"), XML_ERR, "Unrecognized family 'ipx'"),
    (
        _net(V4.format("<dhcp><range start='10.1.0.2' end='10.1.0.9'/></dhcp>")),
        INTERNAL,
        "range 10.1.0.2 - 10.1.0.9 is not entirely within network 10.0.0.1/24",
    ),
    (
        _net(V4.format("<dhcp><range start='10.0.0.9' end='10.0.0.2'/></dhcp>")),
        INTERNAL,
        "range 10.0.0.9 - 10.0.0.2 is reversed",
    ),
    (
        _net(V4.format("<dhcp><range start='10.0.0.0' end='10.0.0.2'/></dhcp>")),
        INTERNAL,
        "is the network address",
    ),
    (
        _net(V4.format("<dhcp><range start='10.0.0.2' end='10.0.0.255'/></dhcp>")),
        INTERNAL,
        "is the broadcast address",
    ),
    (
        _net(V4.format("<dhcp><range end='10.0.0.9'/></dhcp>")),
        XML_ERR,
        "Missing 'start' attribute in dhcp range for network 't'",
    ),
    (
        _net(V4.format("<dhcp><range start='10.0.0.x' end='10.0.0.9'/></dhcp>")),
        ErrorCode.SYSTEM_ERROR,
        "Cannot parse socket address '10.0.0.x'",
    ),
    (
        _net(V4.format("<dhcp><host ip='10.0.0.3'/></dhcp>")),
        XML_ERR,
        "Static host definition in IPv4 network 't' must have mac or name attribute",
    ),
    (
        _net(V6.format("<dhcp><host ip='fd00::3'/></dhcp>")),
        XML_ERR,
        "Static host definition in IPv6 network 't' must have id or name attribute",
    ),
    (
        _net(V6.format("<dhcp><host mac='52:54:00:00:00:01' name='a' ip='fd00::3'/></dhcp>")),
        XML_ERR,
        "Invalid to specify MAC address '52:54:00:00:00:01' in network 't' IPv6",
    ),
    (
        _net(V6.format("<dhcp><host id='00:zz' ip='fd00::3'/></dhcp>")),
        XML_ERR,
        "Invalid character 'z' in id '00:zz' of network 't'",
    ),
    (
        _net(V4.format("<dhcp><host mac='01:00:5e:00:00:01' ip='10.0.0.3'/></dhcp>")),
        XML_ERR,
        "expected unicast mac address, found multicast '01:00:5e:00:00:01' in network 't'",
    ),
    (
        _net(V4.format("<dhcp><host mac='52:54:00:00:01' ip='10.0.0.3'/></dhcp>")),
        XML_ERR,
        "Cannot parse MAC address '52:54:00:00:01' in network 't'",
    ),
    (
        _net(V4.format("<dhcp><host name='-x' ip='10.0.0.3'/></dhcp>")),
        XML_ERR,
        "Cannot use host name '-x' in network 't'",
    ),
    (
        _net(V4.format("<dhcp><host name='x'/></dhcp>")),
        XML_ERR,
        "Missing IP address in static host definition for network 't'",
    ),
    (
        _net(V4.format("<dhcp><host name='x' ip='nope'/></dhcp>")),
        XML_ERR,
        "Invalid IP address in static host definition for network 't'",
    ),
    (
        _net(
            V4.format(
                "<dhcp><range start='10.0.0.2' end='10.0.0.9'>"
                "<lease expiry='90' unit='seconds'/></range></dhcp>"
            )
        ),
        UNSUP,
        "The minimum lease time should be greater than 2 minutes",
    ),
    (
        _net(
            V4.format(
                "<dhcp><range start='10.0.0.2' end='10.0.0.9'>"
                "<lease expiry='9' unit='days'/></range></dhcp>"
            )
        ),
        XML_ERR,
        "Invalid value for attribute 'unit' in element 'lease': 'days'.",
    ),
    (
        _net(V4.format("<dhcp><bootp server='10.0.0.2'/></dhcp>")),
        XML_ERR,
        "Missing required attribute 'file' in element 'bootp'",
    ),
    (
        _net(V6.format("<tftp root='/x'/>")),
        UNSUP,
        "Unsupported <tftp> element in an IPv6 element in network 't'",
    ),
    (
        _net("<dns enable='no'><forwarder addr='192.0.2.1'/></dns>"),
        XML_ERR,
        "Extra data in disabled network 't'",
    ),
    (
        _net("<dns><host ip='192.0.2.1'/></dns>"),
        DETAIL,
        "Missing hostname in network 't' DNS HOST record",
    ),
    (
        _net("<dns><host><hostname>a</hostname></host></dns>"),
        DETAIL,
        "Missing IP address in network 't' DNS HOST record",
    ),
    (
        _net("<dns><srv service='ldap' protocol='tcp' port='389'/></dns>"),
        DETAIL,
        "DNS SRV port attribute not permitted without target for service 'ldap'",
    ),
    (
        _net("<dns><srv service='ldap' protocol='tcp' target='a' port='0'/></dns>"),
        DETAIL,
        "invalid DNS SRV port attribute for service 'ldap' in network 't'",
    ),
    (
        _net("<dns><srv service='ldap' protocol='t.cp'/></dns>"),
        DETAIL,
        "invalid character in protocol attribute 't.cp'",
    ),
    (
        _net("<dns><srv service='ld.ap' protocol='tcp'/></dns>"),
        DETAIL,
        "invalid character in service attribute 'ld.ap'",
    ),
    (
        _net("<dns><srv service='_ldap*' protocol='t\u00e9p'/></dns>"),
        DETAIL,
        "invalid character in protocol attribute 't\u00e9p'",
    ),
    (
        _net("<dns><srv protocol='tcp'/></dns>"),
        DETAIL,
        "missing required service attribute in DNS SRV record of network 't'",
    ),
    (
        _net("<dns><txt name='a b' value='x'/></dns>"),
        DETAIL,
        "prohibited character in DNS TXT record name 'a b' of network t",
    ),
    (
        _net("<dns><txt name='a'/></dns>"),
        DETAIL,
        "missing required value attribute in DNS TXT record named 'a' of network t",
    ),
    (
        _net("<dns><forwarder/></dns>"),
        XML_ERR,
        "Invalid forwarder element, must contain at least one of addr or domain",
    ),
    (
        _net("<dns><forwarder addr='dns.example'/></dns>"),
        XML_ERR,
        "Invalid forwarder IP address 'dns.example' in network 't'",
    ),
    (_net("<forward mode='wormhole'/>"), UNSUP, "unknown forwarding type 'wormhole'"),
    (
        _net("<forward mode='nat'/>"),
        XML_ERR,
        "nat forwarding requested, but no IP address provided for network 't'",
    ),
    (
        _net(
            V4.format("") + "<forward mode='route'><interface dev='a'/><interface dev='b'/>"
            "</forward>"
        ),
        XML_ERR,
        "multiple forwarding interfaces specified for network 't', only one is supported",
    ),
    (
        _net(V4.format("") + "<forward mode='open' dev='eth0'/>"),
        XML_ERR,
        "forward dev not allowed for network 't' with forward mode='open'",
    ),
    (
        _net("<forward mode='vepa' dev='a'><interface dev='b'/></forward>"),
        XML_ERR,
        "<forward dev='a'> must match first <interface dev='b'/> in network t",
    ),
    (
        _net("<forward mode='vepa'><interface dev='a'/><interface dev='a'/></forward>"),
        XML_ERR,
        "interface 'a' can only be listed once in network t",
    ),
    (
        _net("<forward mode='vepa'><interface/></forward>"),
        XML_ERR,
        "Missing required dev attribute in <forward> <interface> element of network t",
    ),
    (
        _net(
            "<forward mode='hostdev'><address type='pci' bus='3' function='1'/>"
            "<address type='pci' domain='0' bus='0x03' function='0x1'/></forward>"
        ),
        XML_ERR,
        "PCI device '0000:03:00.1' can only be listed once in network t",
    ),
    (
        _net("<forward mode='hostdev'><address type='usb' bus='3'/></forward>"),
        UNSUP,
        "unknown address type 'usb' in network t",
    ),
    (
        _net("<forward mode='hostdev'><address type='netdev'/></forward>"),
        XML_ERR,
        "unsupported address type 'netdev' in network t",
    ),
    (
        _net("<forward mode='hostdev'><address bus='3'/></forward>"),
        XML_ERR,
        "missing address type in network t",
    ),
    (
        _net("<forward mode='hostdev'><address type='pci' bus='0x100'/></forward>"),
        XML_ERR,
        "Invalid PCI address bus='0x100', must be <= 0xFF",
    ),
    (
        _net("<forward mode='hostdev'><address type='pci' bus='-1'/></forward>"),
        XML_ERR,
        "Invalid value for attribute 'bus' in element 'address': '-1'. Expected non-negative",
    ),
    (
        _net("<forward mode='hostdev' dev='eth0'><pf dev='eth1'/></forward>"),
        XML_ERR,
        "the <forward> 'dev' attribute cannot be used when <address> or <pf> sub-elements",
    ),
    (
        _net("<forward mode='hostdev'><pf dev='a'/><pf dev='b'/></forward>"),
        XML_ERR,
        "Only one <pf> element is allowed in <forward> of network t",
    ),
    (
        _net("<forward mode='hostdev'><driver name='default'/></forward>"),
        UNSUP,
        "Unknown forward <driver name='default'/> in network t",
    ),
    (
        _net(V4.format("") + "<forward mode='route'><nat/></forward>"),
        XML_ERR,
        "The <nat> element can only be used when <forward> 'mode' is 'nat' in network t",
    ),
    (
        _net(V4.format("") + "<forward><nat><port start='90' end='80'/></nat></forward>"),
        DETAIL,
        "Missing or invalid 'end' attribute in <port> in <nat> in <forward> in network t",
    ),
    (
        _net(V4.format("") + "<forward><nat><address start='1.2.3.4'/></nat></forward>"),
        XML_ERR,
        "missing 'end' attribute in <address> element in <nat> in <forward> in network t",
    ),
    (
        _net(
            V4.format("") + "<forward><nat><address start='fd00::1' end='1.2.3.4'/></nat></forward>"
        ),
        XML_ERR,
        "Bad ipv4 start address 'fd00::1' in <nat> in <forward> in network 't'",
    ),
    (
        _net(
            V4.format("") + "<forward><nat><address start='1.2.3.9' end='1.2.3.4'/></nat></forward>"
        ),
        INTERNAL,
        "range 1.2.3.9 - 1.2.3.4 is reversed",
    ),
    (
        _net("<forward mode='hostdev'/><bridge name='br0'/>"),
        XML_ERR,
        "bridge name not allowed in hostdev mode (network 't')",
    ),
    (
        _net("<forward mode='private'/><bridge macTableManager='libvirt'/>"),
        XML_ERR,
        "bridge macTableManager setting not allowed in private mode (network 't')",
    ),
    (
        _net("<forward mode='bridge'/><bridge name='br0' stp='on'/>"),
        XML_ERR,
        "bridge delay/stp/zone options only allowed in route, nat, and isolated mode, "
        "not in bridge (network 't')",
    ),
    (
        _net("<forward mode='bridge'><interface dev='eth0'/></forward><bridge name='br0'/>"),
        XML_ERR,
        "A network with forward mode='bridge' can specify a bridge name or a forward dev, "
        "but not both (network 't')",
    ),
    (
        _net("<forward mode='vepa'/><mtu size='9000'/>"),
        XML_ERR,
        "mtu size only allowed in open, route, nat, and isolated mode, not in vepa (network 't')",
    ),
    (
        _net(V4.format("") + "<route address='192.168.1.0' prefix='24' gateway='10.9.0.1'/>"),
        UNSUP,
        "unreachable static route gateway '10.9.0.1' specified for network 't'",
    ),
    (
        _net("<route address='192.168.1.1' prefix='24' gateway='10.9.0.1'/>"),
        XML_ERR,
        "t: Address '192.168.1.1' in route definition is not a network address",
    ),
    (
        _net("<route address='192.168.1.0' netmask='255.0.0.0' prefix='8' gateway='10.9.0.1'/>"),
        XML_ERR,
        "t: Route definition cannot have both a prefix and a netmask",
    ),
    (
        _net("<route family='ipv6' address='fd01::' prefix='64' gateway='10.9.0.1'/>"),
        XML_ERR,
        "t: ipv6 specified for non-IPv6 gateway address '10.9.0.1' in route definition",
    ),
    (
        _net("<route address='192.168.1.0' prefix='24'/>"),
        XML_ERR,
        "t: Missing required gateway attribute in route definition",
    ),
    (
        _net("<mac address='52:54:00:zz:00:01'/>"),
        XML_ERR,
        "Invalid bridge mac address '52:54:00:zz:00:01' in network 't'",
    ),
    (
        _net("<mac address='33:33:00:00:00:01'/>"),
        XML_ERR,
        "Invalid multicast bridge mac address '33:33:00:00:00:01' in network 't'",
    ),
    (
        _net("<bridge name='b' macTableManager='default'/>"),
        XML_ERR,
        "Invalid macTableManager setting 'default' in network 't'",
    ),
    (_net("<bridge name='b' delay='-1'/>"), XML_ERR, "Invalid delay value in network 't'"),
    (_net("<mtu size='big'/>"), XML_ERR, "Invalid mtu size 'big' in network 't'"),
    (
        _net("<virtualport><parameters profileid='p'/></virtualport>"),
        XML_ERR,
        "missing required virtualport type",
    ),
    (_net("<virtualport type='vmware'/>"), UNSUP, "unknown virtualport type vmware"),
    (
        _net("<virtualport type='802.1Qbg'><parameters profileid='p'/></virtualport>"),
        XML_ERR,
        "extra profileid unsupported in <virtualport type='802.1Qbg'>",
    ),
    (
        _net("<virtualport type='802.1Qbg'><parameters managerid='256'/></virtualport>"),
        XML_ERR,
        "value of managerid out of range",
    ),
    (
        _net("<virtualport type='802.1Qbg'><parameters typeid='x'/></virtualport>"),
        XML_ERR,
        "cannot parse value of typeid parameter",
    ),
    (
        _net("<virtualport type='openvswitch'><parameters interfaceid='nope'/></virtualport>"),
        XML_ERR,
        "cannot parse interfaceid parameter as a uuid",
    ),
    (
        _net(
            "<virtualport type='802.1Qbh'><parameters profileid='" + "p" * 40 + "'/></virtualport>"
        ),
        XML_ERR,
        "profileid parameter too long",
    ),
    (
        _net("<vlan/>"),
        XML_ERR,
        "missing tag id - each <vlan> must have at least one <tag id='n'/> subelement",
    ),
    (_net("<vlan><tag id='4096'/></vlan>"), XML_ERR, "vlan tag id 4096 too large (maximum 4095)"),
    (
        _net("<vlan trunk='no'><tag id='1'/><tag id='2'/></vlan>"),
        XML_ERR,
        "invalid \"trunk='no'\" in <vlan> - trunk='yes' is required for more than one vlan tag",
    ),
    (
        _net("<vlan trunk='maybe'><tag id='1'/></vlan>"),
        XML_ERR,
        "invalid \"trunk='maybe'\" in <vlan> - must be yes or no",
    ),
    (
        _net("<vlan><tag id='1' nativeMode='tagged'/><tag id='2' nativeMode='untagged'/></vlan>"),
        XML_ERR,
        "duplicate native vlan setting",
    ),
    (
        _net("<vlan><tag id='1' nativeMode='default'/></vlan>"),
        XML_ERR,
        "Invalid value for attribute 'nativeMode' in element 'tag': 'default'.",
    ),
    (
        _net("<bandwidth><inbound average='1' floor='2'/></bandwidth>"),
        UNSUP,
        "floor attribute is not supported for this config",
    ),
    (
        _net("<bandwidth classID='3'><inbound average='1'/></bandwidth>"),
        DETAIL,
        "classID attribute not supported on <bandwidth> in this usage context",
    ),
    (
        _net("<bandwidth><inbound peak='1'/></bandwidth>"),
        DETAIL,
        "Missing mandatory average or floor attributes",
    ),
    (
        _net("<bandwidth><outbound average='1' peak='-2'/></bandwidth>"),
        XML_ERR,
        "Invalid value for attribute 'peak' in element 'outbound': '-2'.",
    ),
    (_net("<portgroup default='yes'/>"), XML_ERR, "Missing required name attribute in portgroup"),
    (
        _net(f"<d:options xmlns:d='{DNSMASQ_NS}'><d:option/></d:options>"),
        INTERNAL,
        "No dnsmasq options value specified",
    ),
    ("<net><name>x</name></net>", XML_ERR, "expecting root element of 'network', not 'net'"),
]


@pytest.mark.parametrize(("doc", "code", "message"), REFUSALS)
def test_refusals(doc: str, code: ErrorCode, message: str) -> None:
    with pytest.raises(VirtError) as info:
        parse_network(doc)
    assert info.value.code == code, str(info.value)
    assert message in str(info.value)


@given(networks())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_format_is_a_fixed_point_of_parse(net: NetworkDef) -> None:
    text = format_network(net)
    again = parse_network(text)
    assert format_network(again) == text
    assert format_network(parse_network(format_network(again))) == text


@given(networks())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_inactive_form_is_stable_too(net: NetworkDef) -> None:
    text = format_network(net, NetworkXMLFlags.INACTIVE)
    assert format_network(parse_network(text), NetworkXMLFlags.INACTIVE) == text


@pytest.mark.parametrize("mode", list(ForwardMode))
def test_every_mode_has_one_row(mode: ForwardMode) -> None:
    info = FORWARD_MODES[mode]
    # a mode either has libvirt's own bridge or none at all; layer 3 needs one
    assert not info.layer3 or info.libvirt_bridge
    assert not info.nat or mode is ForwardMode.NAT


def test_metadata_is_kept_canonical_in_the_model() -> None:
    net = NetworkDef(
        name="m",
        uuid="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        metadata="<metadata>  <a:x xmlns:a='urn:a'  k='v'/><b/></metadata>",
    )
    assert net.metadata == '<metadata>\n  <a:x xmlns:a="urn:a" k="v"/>\n</metadata>'
    with pytest.raises(VirtError):
        NetworkDef(name="m", uuid="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", metadata="<meta/>")
