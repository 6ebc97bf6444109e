"""The filter binding kind: golden documents and libvirt's refusals."""

from __future__ import annotations

import pytest

from shared.conf.nwfilter_binding import (
    NWFilterBindingDef,
    format_nwfilter_binding,
    parse_nwfilter_binding,
)
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

FULL = """\
<filterbinding>
  <owner>
    <name>db &amp; cache</name>
    <uuid>0b7c5d2e-9f41-4a8e-8c3d-6e1f2a9b7c40</uuid>
  </owner>
  <portdev name='tap7'/>
  <linkdev name='eth1'/>
  <mac address='52:54:00:0a:0b:0c'/>
  <filterref filter='allow-dhcp'>
    <parameter name='DHCPSERVER' value='10.20.0.1'/>
    <parameter name='DHCPSERVER' value='10.20.0.2'/>
    <parameter name='IP' value='10.20.0.33'/>
  </filterref>
</filterbinding>
"""


def test_full_binding_round_trip_is_exact() -> None:
    b = parse_nwfilter_binding(FULL)
    assert b == NWFilterBindingDef(
        owner_name="db & cache",
        owner_uuid="0b7c5d2e-9f41-4a8e-8c3d-6e1f2a9b7c40",
        portdev="tap7",
        linkdev="eth1",
        mac="52:54:00:0a:0b:0c",
        filter="allow-dhcp",
        parameters={"DHCPSERVER": ("10.20.0.1", "10.20.0.2"), "IP": ("10.20.0.33",)},
    )
    assert format_nwfilter_binding(b) == FULL


def test_binding_is_normalised() -> None:
    doc = """<filterbinding>
      <filterref filter='plain'><parameter name='B' value='2'/><parameter name='A' value='1'/>
      </filterref>
      <mac address='52:54:0:A:B:C'/>
      <portdev name='vnet3'/>
      <owner><uuid>0B7C5D2E9F414A8E8C3D6E1F2A9B7C40</uuid><name>web</name></owner>
    </filterbinding>"""
    assert format_nwfilter_binding(parse_nwfilter_binding(doc)) == (
        "<filterbinding>\n"
        "  <owner>\n"
        "    <name>web</name>\n"
        "    <uuid>0b7c5d2e-9f41-4a8e-8c3d-6e1f2a9b7c40</uuid>\n"
        "  </owner>\n"
        "  <portdev name='vnet3'/>\n"
        "  <mac address='52:54:00:0a:0b:0c'/>\n"
        "  <filterref filter='plain'>\n"
        "    <parameter name='A' value='1'/>\n"
        "    <parameter name='B' value='2'/>\n"
        "  </filterref>\n"
        "</filterbinding>\n"
    )


_OWNER = "<owner><name>web</name><uuid>0b7c5d2e-9f41-4a8e-8c3d-6e1f2a9b7c40</uuid></owner>"


@pytest.mark.parametrize(
    ("doc", "code", "message"),
    [
        ("<filter/>", ErrorCode.XML_ERROR, "unknown root element for nwfilter binding"),
        ("<filterbinding/>", ErrorCode.INTERNAL_ERROR, "filter binding has no port dev name"),
        (
            "<filterbinding><portdev name=''/></filterbinding>",
            ErrorCode.INTERNAL_ERROR,
            "filter binding has no port dev name",
        ),
        (
            "<filterbinding><portdev name='p'/><linkdev/></filterbinding>",
            ErrorCode.INTERNAL_ERROR,
            "filter binding has no link dev name",
        ),
        (
            "<filterbinding><portdev name='p'/></filterbinding>",
            ErrorCode.INTERNAL_ERROR,
            "filter binding has no owner name",
        ),
        (
            "<filterbinding><portdev name='p'/><owner><name>w</name></owner></filterbinding>",
            ErrorCode.INTERNAL_ERROR,
            "filter binding has no owner UUID",
        ),
        (
            "<filterbinding><portdev name='p'/>"
            "<owner><name>w</name><uuid>1234</uuid></owner></filterbinding>",
            ErrorCode.INTERNAL_ERROR,
            "Unable to parse UUID '1234'",
        ),
        (
            f"<filterbinding><portdev name='p'/>{_OWNER}</filterbinding>",
            ErrorCode.INTERNAL_ERROR,
            "filter binding has no MAC address",
        ),
        (
            f"<filterbinding><portdev name='p'/>{_OWNER}<mac address='52:54:00:0a:0b'/>"
            "</filterbinding>",
            ErrorCode.INTERNAL_ERROR,
            "Unable to parse MAC '52:54:00:0a:0b'",
        ),
        (
            f"<filterbinding><portdev name='p'/>{_OWNER}<mac address='52:54:00:0a:0b:0c'/>"
            "<filterref/></filterbinding>",
            ErrorCode.INTERNAL_ERROR,
            "filter binding has no filter reference",
        ),
    ],
)
def test_binding_refusals(doc: str, code: ErrorCode, message: str) -> None:
    with pytest.raises(VirtError) as info:
        parse_nwfilter_binding(doc)
    assert info.value.code is code
    assert info.value.domain is ErrorDomain.NWFILTER
    assert info.value.message.endswith(message)
