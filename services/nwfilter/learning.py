"""What a binding waits with while its guest's IP address is being learned.

libvirt instantiates a filter that needs ``IP`` only once the address is
known.  Meanwhile (``CTRL_IP_LEARNING``):

* ``dhcp``: only DHCP passes, to and from the guest's own MAC (and from the
  servers in ``DHCPSERVER`` when given); the address comes from the network
  service's lease events;
* ``any`` (the default): frames from another MAC address are dropped, IPv4
  and ARP pass; the address comes from the guest's first packets;
* ``none``: no learning; a filter needing ``IP`` without one is refused.

The waiting rules are filters like any other, so both backends apply them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from shared.conf.nwfilter import NWFilterDef, parse_nwfilter

LEARNING_VAR = "CTRL_IP_LEARNING"
DHCPSERVER_VAR = "DHCPSERVER"


class Learning(enum.StrEnum):
    NONE = "none"
    ANY = "any"
    DHCP = "dhcp"


def learning_mode(parameters: Mapping[str, Sequence[str]]) -> Learning:
    """The binding's ``CTRL_IP_LEARNING`` (libvirt's default: any)."""
    values = parameters.get(LEARNING_VAR)
    if not values:
        return Learning.ANY
    try:
        return Learning(values[0].lower())
    except ValueError:
        return Learning.ANY


_DHCP_ONLY = """<filter name='virtbus-learning-dhcp' chain='root'>
  <rule action='accept' direction='out'>
    <ip srcmacaddr='$MAC' protocol='udp' srcportstart='68' dstportstart='67'/>
  </rule>
  <rule action='drop' direction='out'/>
  <rule action='accept' direction='in'>
    <ip dstmacaddr='$MAC' protocol='udp' {server}srcportstart='67' dstportstart='68'/>
  </rule>
  <rule action='accept' direction='in'>
    <ip dstmacaddr='ff:ff:ff:ff:ff:ff' protocol='udp' {server}srcportstart='67' dstportstart='68'/>
  </rule>
  <rule action='drop' direction='in'/>
</filter>"""

_BASIC = """<filter name='virtbus-learning-any' chain='root'>
  <rule action='drop' direction='out'><mac match='no' srcmacaddr='$MAC'/></rule>
  <rule action='accept' direction='out'><mac protocolid='ipv4'/></rule>
  <rule action='accept' direction='out'><mac protocolid='arp'/></rule>
  <rule action='drop' direction='out'/>
</filter>"""


def waiting_filter(mode: Learning, parameters: Mapping[str, Sequence[str]]) -> NWFilterDef:
    """The filter applied while the address of a binding in ``mode`` is learned."""
    if mode is Learning.DHCP:
        server = f"srcipaddr='${DHCPSERVER_VAR}' " if parameters.get(DHCPSERVER_VAR) else ""
        return parse_nwfilter(_DHCP_ONLY.format(server=server))
    return parse_nwfilter(_BASIC)
