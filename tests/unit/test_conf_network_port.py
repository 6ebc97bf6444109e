"""The network port kind: golden documents, refusals, and round-trip properties."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from shared.conf.network import MacTableManager
from shared.conf.network_port import (
    PLUG_TYPES,
    MacvlanMode,
    NetworkPortDef,
    PlugType,
    format_network_port,
    parse_network_port,
)
from shared.util.errors import ErrorCode, VirtError
from tests.unit.test_conf_network_strategies import network_ports

PORT_UUID = "3c0a7e52-91d4-4b7e-a3f0-5d2c1b9e8f70"
OWNER_UUID = "b1e2c3d4-5f60-4718-9a2b-3c4d5e6f7081"

WEB_IN = f"""<networkport>
  <uuid>{PORT_UUID.upper()}</uuid>
  <owner><name>web &amp; co</name><uuid>{OWNER_UUID}</uuid></owner>
  <group>frontend</group>
  <mac address='52:54:00:AB:CD:EF'/>
  <bandwidth classID='7'>
    <outbound average='50' peak='80'/>
    <inbound average='500' floor='200'/>
  </bandwidth>
  <vlan><tag id='30' nativeMode='tagged'/><tag id='31'/></vlan>
  <rxfilters trustGuest='no'/>
  <plug type='bridge' bridge='br-web' macTableManager='libvirt'/>
</networkport>
"""

WEB_OUT = f"""<networkport>
  <uuid>{PORT_UUID}</uuid>
  <owner>
    <name>web &amp; co</name>
    <uuid>{OWNER_UUID}</uuid>
  </owner>
  <group>frontend</group>
  <mac address='52:54:00:ab:cd:ef'/>
  <bandwidth classID='7'>
    <inbound average='500' floor='200'/>
    <outbound average='50' peak='80'/>
  </bandwidth>
  <vlan trunk='yes'>
    <tag id='30' nativeMode='tagged'/>
    <tag id='31'/>
  </vlan>
  <rxfilters trustGuest='no'/>
  <plug type='bridge' bridge='br-web' macTableManager='libvirt'/>
</networkport>
"""


def test_bridge_port_golden() -> None:
    port = parse_network_port(WEB_IN)
    assert port.plug.mac_table_manager is MacTableManager.LIBVIRT and port.class_id == 7
    assert format_network_port(port) == WEB_OUT
    assert format_network_port(parse_network_port(WEB_OUT)) == WEB_OUT


def _port(body: str) -> str:
    return (
        f"<networkport><uuid>{PORT_UUID}</uuid>"
        f"<owner><name>vm</name><uuid>{OWNER_UUID}</uuid></owner>"
        f"<mac address='52:54:00:00:00:01'/>{body}</networkport>"
    )


@pytest.mark.parametrize(
    ("plug", "expected"),
    [
        ("<plug type='direct' dev='eth3'/>", "  <plug type='direct' dev='eth3' mode='vepa'/>\n"),
        (
            "<plug type='direct' dev='eth3' mode='passthrough'/>",
            "  <plug type='direct' dev='eth3' mode='passthrough'/>\n",
        ),
        ("<plug type='network' bridge=''/>", "  <plug type='network' bridge=''/>\n"),
        (
            "<plug type='hostdev-pci'><address domain='0' bus='0x3a' slot='2' function='1'/>"
            "</plug>",
            "  <plug type='hostdev-pci'>\n"
            "    <address domain='0x0000' bus='0x3a' slot='0x02' function='0x1'/>\n"
            "  </plug>\n",
        ),
        ("<plug type='none' bridge='x'/>", ""),
    ],
)
def test_plug_types(plug: str, expected: str) -> None:
    text = format_network_port(parse_network_port(_port(plug)))
    assert text.endswith(expected + "</networkport>\n")


def test_plug_table_and_direct_default() -> None:
    port = parse_network_port(_port("<plug type='direct' dev='eth3'/>"))
    assert port.plug.mode is MacvlanMode.VEPA
    assert PLUG_TYPES[PlugType.HOSTDEV_PCI].pci and not PLUG_TYPES[PlugType.NONE].bridge


INTERNAL = ErrorCode.INTERNAL_ERROR
XML_ERR = ErrorCode.XML_ERROR


@pytest.mark.parametrize(
    ("doc", "code", "message"),
    [
        ("<networkport/>", INTERNAL, "network port has no uuid"),
        ("<networkport><uuid>x</uuid></networkport>", INTERNAL, "Unable to parse UUID 'x'"),
        (
            f"<networkport><uuid>{PORT_UUID}</uuid></networkport>",
            INTERNAL,
            "network port has no owner name",
        ),
        (
            f"<networkport><uuid>{PORT_UUID}</uuid><owner><name>v</name></owner></networkport>",
            INTERNAL,
            "network port has no owner UUID",
        ),
        (
            f"<networkport><uuid>{PORT_UUID}</uuid><owner><name>v</name><uuid>{OWNER_UUID}</uuid>"
            "</owner></networkport>",
            INTERNAL,
            "network port has no mac",
        ),
        (_port("").replace("52:54:00:00:00:01", "52-54"), INTERNAL, "Unable to parse MAC '52-54'"),
        (_port("<plug type='bridge'/>"), XML_ERR, "Missing network port bridge name"),
        (
            _port("<plug type='bridge' bridge='b' macTableManager='hub'/>"),
            XML_ERR,
            "Invalid macTableManager setting 'hub' in network port",
        ),
        (_port("<plug type='direct'/>"), XML_ERR, "Missing network port link device name"),
        (
            _port("<plug type='direct' dev='e' mode='loop'/>"),
            XML_ERR,
            "Invalid mode setting 'loop' in network port",
        ),
        (_port("<plug type='hostdev-pci'/>"), XML_ERR, "Missing network port PCI address"),
        (
            _port("<plug type='hostdev-pci'><driver name='xen'/><address bus='1'/></plug>"),
            XML_ERR,
            "Missing network port driver name",
        ),
        (
            _port("<plug type='hostdev-pci' managed='sure'><address bus='1'/></plug>"),
            XML_ERR,
            "Invalid value for attribute 'managed' in element 'plug': 'sure'.",
        ),
        (
            _port("<plug type='tap'/>"),
            XML_ERR,
            "Invalid value for attribute 'type' in element 'plug': 'tap'.",
        ),
        (
            _port("<bandwidth><outbound average='1' floor='1'/></bandwidth>"),
            ErrorCode.CONFIG_UNSUPPORTED,
            "floor attribute is not supported for this config",
        ),
        (
            _port("<rxfilters trustGuest='1'/>"),
            XML_ERR,
            "Invalid value for attribute 'trustGuest' in element 'rxfilters': '1'.",
        ),
    ],
)
def test_refusals(doc: str, code: ErrorCode, message: str) -> None:
    with pytest.raises(VirtError) as info:
        parse_network_port(doc)
    assert info.value.code == code, str(info.value)
    assert message in str(info.value)


@given(network_ports())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_format_is_a_fixed_point_of_parse(port: NetworkPortDef) -> None:
    text = format_network_port(port)
    assert format_network_port(parse_network_port(text)) == text
