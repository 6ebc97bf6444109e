"""virNetworkUpdate: one change to one section of a network definition (network_conf.c).

``update_network`` applies a command (modify, delete, add-last, add-first)
with an XML fragment to a section (``ip-dhcp-host``, ``dns-srv``, ...) and
returns the new definition, refusing with libvirt's errors.  The sections
and commands carry libvirt's enum values (``virNetworkUpdateSection`` and
``virNetworkUpdateCommand``) and virsh's names.  ``SECTIONS`` is the one
table of what each section does: its element name and its handler, or None
for the sections libvirt cannot update.  Pure: the service decides what a
change means for a running dnsmasq.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from lxml import etree

from shared.conf.macaddr import normalize_mac
from shared.conf.network import NetworkDef
from shared.conf.network_dns import DnsDef, parse_dns_host, parse_dns_srv, parse_dns_txt
from shared.conf.network_forward import ForwardInterface
from shared.conf.network_ip import DhcpHost, IPDef, parse_dhcp_host, parse_dhcp_range
from shared.conf.network_portgroup import parse_portgroup
from shared.conf.socketaddr import format_ip, same_family
from shared.conf.xmlprops import local_name, prop
from shared.conf.xmlsafe import parse_xml
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_DOMAIN = ErrorDomain.NETWORK
T = TypeVar("T")


class UpdateCommand(enum.IntEnum):
    """virNetworkUpdateCommand; the names are virsh's."""

    MODIFY = 1
    DELETE = 2
    ADD_LAST = 3
    ADD_FIRST = 4

    @property
    def virsh_name(self) -> str:
        return self.name.lower().replace("_", "-")

    @property
    def is_add(self) -> bool:
        return self in (UpdateCommand.ADD_LAST, UpdateCommand.ADD_FIRST)


class UpdateSection(enum.IntEnum):
    """virNetworkUpdateSection; the names are virsh's."""

    BRIDGE = 1
    DOMAIN = 2
    IP = 3
    IP_DHCP_HOST = 4
    IP_DHCP_RANGE = 5
    FORWARD = 6
    FORWARD_INTERFACE = 7
    FORWARD_PF = 8
    PORTGROUP = 9
    DNS_HOST = 10
    DNS_TXT = 11
    DNS_SRV = 12

    @property
    def virsh_name(self) -> str:
        return self.name.lower().replace("_", "-")


class UpdateFlags(enum.IntFlag):
    """virNetworkUpdateFlags."""

    AFFECT_CURRENT = 0
    AFFECT_LIVE = 1 << 0
    AFFECT_CONFIG = 1 << 1


def command_by_name(name: str) -> UpdateCommand:
    """virsh's command names (``add`` is ``add-last``); ``VIR_ERR_INVALID_ARG`` otherwise."""
    name = "add-last" if name == "add" else name
    for cmd in UpdateCommand:
        if cmd.virsh_name == name:
            return cmd
    raise VirtError(ErrorCode.INVALID_ARG, f"unrecognized command name '{name}'", _DOMAIN)


def section_by_name(name: str) -> UpdateSection:
    """virsh's section names; ``VIR_ERR_INVALID_ARG`` otherwise."""
    for section in UpdateSection:
        if section.virsh_name == name:
            return section
    raise VirtError(ErrorCode.INVALID_ARG, f"unrecognized section name '{name}'", _DOMAIN)


def _invalid(message: str) -> VirtError:
    return VirtError(ErrorCode.OPERATION_INVALID, message, _DOMAIN)


def _unsupported(message: str) -> VirtError:
    return VirtError(ErrorCode.OPERATION_UNSUPPORTED, message, _DOMAIN)


def _insert(items: tuple[T, ...], item: T, command: UpdateCommand) -> tuple[T, ...]:
    return (item, *items) if command is UpdateCommand.ADD_FIRST else (*items, item)


def _without(items: tuple[T, ...], index: int) -> tuple[T, ...]:
    return items[:index] + items[index + 1 :]


def _ip_for_dhcp(net: NetworkDef, parent_index: int) -> int:
    """virNetworkIPDefByIndex: the index of the ``<ip>`` a DHCP change applies to.

    -1 picks the one ``<ip>`` that has DHCP, else the first IPv4, else the first IPv6.
    """
    if parent_index >= 0:
        if parent_index >= len(net.ips):
            raise _invalid(
                "couldn't update dhcp host entry - no <ip> element found at index "
                f"{parent_index} in network '{net.name}'"
            )
        return parent_index
    for index, ip in enumerate(net.ips):
        if ip.has_dhcp():
            return index
    for ipv6 in (False, True):
        for index, ip in enumerate(net.ips):
            if ip.is_ipv6 == ipv6:
                return index
    raise _invalid(
        f"couldn't update dhcp host entry - no <ip> element found in network '{net.name}'"
    )


def _check_multi_dhcp(net: NetworkDef, index: int) -> None:
    """DHCP may be on one address per family only."""
    target = net.ips[index]
    for other_index, ip in enumerate(net.ips):
        if other_index != index and ip.is_ipv6 == target.is_ipv6 and ip.has_dhcp():
            family = "IPv6" if target.is_ipv6 else "IPv4"
            raise _invalid(f"dhcp is supported only for a single {family} address on each network")


def _with_ip(net: NetworkDef, index: int, ip: IPDef) -> NetworkDef:
    ips = list(net.ips)
    ips[index] = ip
    return net.model_copy(update={"ips": tuple(ips)})


def _same_mac(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and normalize_mac(a) == normalize_mac(b)


def _host_text(host: DhcpHost) -> tuple[str, str, str]:
    ip = format_ip(host.ip) if host.ip is not None else "unknown"
    return host.mac or "unknown", host.name or "(null)", ip


def _dhcp_host(
    net: NetworkDef, cmd: UpdateCommand, parent: int, node: etree._Element
) -> NetworkDef:
    index = _ip_for_dhcp(net, parent)
    ipdef = net.ips[index]
    partial = cmd is UpdateCommand.DELETE
    host = parse_dhcp_host(net.name, ipdef.address, node, partial_ok=partial)
    if not partial and (host.ip is None or not same_family(host.ip, ipdef.address)):
        raise _invalid(
            "the address family of a host entry IP must match the address family of the "
            "dhcp element's parent"
        )
    hosts = ipdef.hosts
    if cmd is UpdateCommand.MODIFY:
        for i, old in enumerate(hosts):
            if (
                _same_mac(host.mac, old.mac)
                or (host.ip is not None and host.ip == old.ip)
                or (host.name is not None and host.name == old.name)
            ):
                new = (*hosts[:i], host, *hosts[i + 1 :])
                return _with_ip(net, index, ipdef.model_copy(update={"hosts": new}))
        mac, name, ip = _host_text(host)
        raise _invalid(
            f"couldn't locate an existing dhcp host entry with \"mac='{mac}'\" "
            f"\"name='{name}'\" \"ip='{ip}'\" in network '{net.name}'"
        )
    if cmd.is_add:
        _check_multi_dhcp(net, index)
        for old in hosts:
            if (
                _same_mac(host.mac, old.mac)
                or (host.name is not None and host.name == old.name)
                or (host.ip is not None and host.ip == old.ip)
            ):
                mac, name, ip = _host_text(host)
                raise _invalid(
                    f"there is an existing dhcp host entry in network '{net.name}' that "
                    f"matches \"<host mac='{mac}' name='{name}' ip='{ip}'/>\""
                )
        new = _insert(hosts, host, cmd)
        return _with_ip(net, index, ipdef.model_copy(update={"hosts": new}))
    # delete: every attribute given must match
    for i, old in enumerate(hosts):
        if (
            (host.mac is None or old.mac is None or _same_mac(host.mac, old.mac))
            and (host.name is None or host.name == old.name)
            and (host.ip is None or host.ip == old.ip)
        ):
            return _with_ip(net, index, ipdef.model_copy(update={"hosts": _without(hosts, i)}))
    raise _invalid(f"couldn't locate a matching dhcp host entry in network '{net.name}'")


def _dhcp_range(
    net: NetworkDef, cmd: UpdateCommand, parent: int, node: etree._Element
) -> NetworkDef:
    index = _ip_for_dhcp(net, parent)
    ipdef = net.ips[index]
    if cmd is UpdateCommand.MODIFY:
        raise _unsupported("dhcp ranges cannot be modified, only added or deleted")
    new = parse_dhcp_range(net.name, ipdef.address, ipdef.prefix_length(), node)
    if not same_family(new.start, ipdef.address):
        raise _invalid(
            "the address family of a dhcp range must match the address family of the "
            "dhcp element's parent"
        )
    ranges = ipdef.ranges
    found = next(
        (i for i, r in enumerate(ranges) if r.start == new.start and r.end == new.end), None
    )
    if cmd.is_add:
        _check_multi_dhcp(net, index)
        if found is not None:
            raise _invalid(
                f"there is an existing dhcp range entry in network '{net.name}' that matches "
                f"\"<range start='{format_ip(new.start)}' end='{format_ip(new.end)}'/>\""
            )
        return _with_ip(net, index, ipdef.model_copy(update={"ranges": _insert(ranges, new, cmd)}))
    if found is None:
        raise _invalid(f"couldn't locate a matching dhcp range entry in network '{net.name}'")
    return _with_ip(net, index, ipdef.model_copy(update={"ranges": _without(ranges, found)}))


def _forward_interface(
    net: NetworkDef, cmd: UpdateCommand, _parent: int, node: etree._Element
) -> NetworkDef:
    if cmd is UpdateCommand.MODIFY:
        raise _unsupported("forward interface entries cannot be modified, only added or deleted")
    dev = prop(node, "dev")
    if dev is None:
        raise VirtError(
            ErrorCode.XML_ERROR, "missing dev attribute in <interface> element", _DOMAIN
        )
    pool = net.forward.interfaces
    found = next((i for i, iface in enumerate(pool) if iface.dev == dev), None)
    if cmd.is_add:
        if found is not None:
            raise _invalid(
                f"there is an existing interface entry in network '{net.name}' that matches "
                f"\"<interface dev='{dev}'>\""
            )
        pool = _insert(pool, ForwardInterface(dev=dev), cmd)
    else:
        if found is None:
            raise _invalid(
                f"couldn't find an interface entry in network '{net.name}' matching "
                f"<interface dev='{dev}'>"
            )
        pool = _without(pool, found)
    forward = net.forward.model_copy(update={"interfaces": pool})
    return net.model_copy(update={"forward": forward})


def _portgroup(
    net: NetworkDef, cmd: UpdateCommand, _parent: int, node: etree._Element
) -> NetworkDef:
    group = parse_portgroup(node)
    groups = net.portgroups
    found = next((i for i, g in enumerate(groups) if g.name == group.name), None)
    default = next((i for i, g in enumerate(groups) if g.default), None)
    if found is None and not cmd.is_add:
        raise _invalid(
            f"couldn't find a portgroup entry in network '{net.name}' matching "
            f"<portgroup name='{group.name}'>"
        )
    if found is not None and cmd.is_add:
        raise _invalid(
            f"there is an existing portgroup entry in network '{net.name}' that matches "
            f"\"<portgroup name='{group.name}'>\""
        )
    if cmd is not UpdateCommand.DELETE and group.default and default not in (None, found):
        raise _invalid(
            f"a different portgroup entry in network '{net.name}' is already set as the "
            "default. Only one default is allowed."
        )
    if cmd is UpdateCommand.MODIFY:
        assert found is not None
        groups = (*groups[:found], group, *groups[found + 1 :])
    elif cmd.is_add:
        groups = _insert(groups, group, cmd)
    else:
        assert found is not None
        groups = _without(groups, found)
    return net.model_copy(update={"portgroups": groups})


def _with_dns(net: NetworkDef, **changes: object) -> NetworkDef:
    dns: DnsDef = net.dns.model_copy(update=changes)
    return net.model_copy(update={"dns": dns})


def _dns_host(
    net: NetworkDef, cmd: UpdateCommand, _parent: int, node: etree._Element
) -> NetworkDef:
    if cmd is UpdateCommand.MODIFY:
        raise _unsupported("DNS HOST records cannot be modified, only added or deleted")
    host = parse_dns_host(net.name, node, partial_ok=not cmd.is_add)
    matches = [
        i
        for i, old in enumerate(net.dns.hosts)
        if (host.ip is not None and host.ip == old.ip)
        # adding: only the address must be new (several addresses may share a name)
        or (not cmd.is_add and bool(set(host.hostnames) & set(old.hostnames)))
    ]
    if cmd.is_add:
        if matches:
            raise _invalid(
                "there is already at least one DNS HOST record with a matching field in "
                f"network {net.name}"
            )
        return _with_dns(net, hosts=_insert(net.dns.hosts, host, cmd))
    if not matches:
        raise _invalid(f"couldn't locate a matching DNS HOST record in network {net.name}")
    if len(matches) > 1:
        raise _invalid(f"multiple matching DNS HOST records were found in network {net.name}")
    return _with_dns(net, hosts=_without(net.dns.hosts, matches[0]))


def _dns_srv(net: NetworkDef, cmd: UpdateCommand, _parent: int, node: etree._Element) -> NetworkDef:
    if cmd is UpdateCommand.MODIFY:
        raise _unsupported("DNS SRV records cannot be modified, only added or deleted")
    srv = parse_dns_srv(net.name, node, partial_ok=not cmd.is_add)
    matches = [
        i
        for i, old in enumerate(net.dns.srvs)
        if all(
            mine is None or mine == theirs
            for mine, theirs in (
                (srv.domain, old.domain),
                (srv.service, old.service),
                (srv.protocol, old.protocol),
                (srv.target, old.target),
            )
        )
    ]
    if cmd.is_add:
        if matches:
            raise _invalid(
                "there is already at least one DNS SRV record matching all specified fields "
                f"in network {net.name}"
            )
        return _with_dns(net, srvs=_insert(net.dns.srvs, srv, cmd))
    if not matches:
        raise _invalid(f"couldn't locate a matching DNS SRV record in network {net.name}")
    if len(matches) > 1:
        raise _invalid(
            f"multiple DNS SRV records matching all specified fields were found in network "
            f"{net.name}"
        )
    return _with_dns(net, srvs=_without(net.dns.srvs, matches[0]))


def _dns_txt(net: NetworkDef, cmd: UpdateCommand, _parent: int, node: etree._Element) -> NetworkDef:
    if cmd is UpdateCommand.MODIFY:
        raise _unsupported("DNS TXT records cannot be modified, only added or deleted")
    txt = parse_dns_txt(net.name, node, partial_ok=not cmd.is_add)
    found = next((i for i, old in enumerate(net.dns.txts) if old.name == txt.name), None)
    if cmd.is_add:
        if found is not None:
            raise _invalid(
                f"there is already a DNS TXT record with name '{txt.name}' in network {net.name}"
            )
        return _with_dns(net, txts=_insert(net.dns.txts, txt, cmd))
    if found is None:
        raise _invalid(f"couldn't locate a matching DNS TXT record in network {net.name}")
    return _with_dns(net, txts=_without(net.dns.txts, found))


Handler = Callable[[NetworkDef, UpdateCommand, int, etree._Element], NetworkDef]


@dataclass(frozen=True)
class SectionInfo:
    """What a section updates: the element its fragment must be, and how (None: it can't)."""

    element: str | None
    handler: Handler | None
    #: the section changes what the running dnsmasq serves (it is restarted or reloaded)
    dnsmasq: bool = False
    #: libvirt's wording of the section in its refusal
    label: str = ""


SECTIONS: dict[UpdateSection, SectionInfo] = {
    UpdateSection.BRIDGE: SectionInfo(None, None, label="bridge"),
    UpdateSection.DOMAIN: SectionInfo(None, None, label="domain"),
    UpdateSection.IP: SectionInfo(None, None, label="ip"),
    UpdateSection.IP_DHCP_HOST: SectionInfo("host", _dhcp_host, dnsmasq=True),
    UpdateSection.IP_DHCP_RANGE: SectionInfo("range", _dhcp_range, dnsmasq=True),
    UpdateSection.FORWARD: SectionInfo(None, None, label="forward"),
    UpdateSection.FORWARD_INTERFACE: SectionInfo("interface", _forward_interface),
    UpdateSection.FORWARD_PF: SectionInfo(None, None, label="forward pf"),
    UpdateSection.PORTGROUP: SectionInfo("portgroup", _portgroup),
    UpdateSection.DNS_HOST: SectionInfo("host", _dns_host, dnsmasq=True),
    UpdateSection.DNS_TXT: SectionInfo("txt", _dns_txt, dnsmasq=True),
    UpdateSection.DNS_SRV: SectionInfo("srv", _dns_srv, dnsmasq=True),
}


def update_network(
    net: NetworkDef,
    command: UpdateCommand | int,
    section: UpdateSection | int,
    xml: str,
    parent_index: int = -1,
) -> NetworkDef:
    """virNetworkDefUpdateSection: ``net`` with one change; raises ``VirtError`` as libvirt."""
    try:
        section = UpdateSection(section)
    except ValueError:
        raise _unsupported("can't update unrecognized section of network") from None
    node = parse_xml(xml, domain=_DOMAIN)
    info = SECTIONS[section]
    if info.handler is None or info.element is None:
        raise _unsupported(f"can't update '{info.label}' section of network '{net.name}'")
    try:
        command = UpdateCommand(command)
    except ValueError:
        raise _unsupported(f"unrecognized network update command code {command}") from None
    if local_name(node) != info.element:
        raise VirtError(
            ErrorCode.XML_ERROR,
            f"unexpected element <{local_name(node)}>, expecting <{info.element}>, while "
            f"updating network '{net.name}'",
            _DOMAIN,
        )
    return info.handler(net, command, parent_index, node)
