"""A network's ``<dns>`` element: forwarders, TXT, SRV and host records (network_conf.c).

The record parsers take ``partial_ok`` as libvirt's do: the network update
API matches an existing record from an incomplete one when deleting.
"""

from __future__ import annotations

import string

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.socketaddr import IPAddress, format_ip, try_parse_ip
from shared.conf.xmlprops import (
    UINT_MAX,
    c_unsigned,
    content,
    every,
    prop,
    prop_tristate,
    sub_elements,
    xpath_attr,
)
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorDomain, xml_detail, xml_error

_DOMAIN = ErrorDomain.NETWORK
#: DNS_RECORD_LENGTH_SRV: RFC 2782's 512 bytes minus the record's overhead.
SRV_NAME_MAX = 512 - 30
# every character of the names in /etc/services and /etc/protocols, except "."
_PROTOCOL_CHARS = set(string.ascii_letters + string.digits + "-+/")
_SERVICE_CHARS = _PROTOCOL_CHARS | set("_*")


class DnsForwarder(BaseModel):
    """Where (and for which domain) dnsmasq forwards queries."""

    model_config = ConfigDict(frozen=True)

    domain: str | None = None
    addr: IPAddress | None = None


class DnsTxt(BaseModel):
    """A TXT record."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: str | None = None


class DnsSrv(BaseModel):
    """An SRV record; 0 for port/priority/weight means "not given"."""

    model_config = ConfigDict(frozen=True)

    service: str | None = None
    protocol: str | None = None
    domain: str | None = None
    target: str | None = None
    port: int = 0
    priority: int = 0
    weight: int = 0


class DnsHost(BaseModel):
    """A host record: one address, its names."""

    model_config = ConfigDict(frozen=True)

    ip: IPAddress | None = None
    hostnames: tuple[str, ...] = ()


class DnsDef(BaseModel):
    """The ``<dns>`` element; ``enable``/``forward_plain_names`` None when absent."""

    model_config = ConfigDict(frozen=True)

    enable: bool | None = None
    forward_plain_names: bool | None = None
    forwarders: tuple[DnsForwarder, ...] = ()
    txts: tuple[DnsTxt, ...] = ()
    srvs: tuple[DnsSrv, ...] = ()
    hosts: tuple[DnsHost, ...] = ()

    def is_empty(self) -> bool:
        """True when libvirt would not write the element at all."""
        return (
            self.enable is None
            and self.forward_plain_names is None
            and not (self.forwarders or self.txts or self.srvs or self.hosts)
        )


def parse_dns_host(network: str, node: etree._Element, *, partial_ok: bool = False) -> DnsHost:
    """virNetworkDNSHostDefParseXML."""
    names: list[str] = []
    for sub in sub_elements(node, "hostname"):
        name = content(sub)
        if not name:
            raise xml_detail(f"Missing hostname in network '{network}' DNS HOST record", _DOMAIN)
        names.append(name)
    if not names and not partial_ok:
        raise xml_detail(f"Missing hostname in network '{network}' DNS HOST record", _DOMAIN)
    ip_text = prop(node, "ip")
    ip = try_parse_ip(ip_text)
    if ip_text is not None:
        if ip is None:
            raise xml_detail(f"Invalid IP address in network '{network}' DNS HOST record", _DOMAIN)
    else:
        if not partial_ok:
            raise xml_detail(f"Missing IP address in network '{network}' DNS HOST record", _DOMAIN)
        if not names:
            raise xml_detail(
                f"Missing ip and hostname in network '{network}' DNS HOST record", _DOMAIN
            )
    return DnsHost(ip=ip, hostnames=tuple(names))


def _srv_number(node: etree._Element, name: str) -> int | None:
    """virXPathUInt on ``string(./@name)``: None when absent or empty, -1 when invalid."""
    text = xpath_attr(node, name)
    if text is None:
        return None
    value = c_unsigned(text, limit=UINT_MAX, positive=True)
    return -1 if value is None else value


def parse_dns_srv(network: str, node: etree._Element, *, partial_ok: bool = False) -> DnsSrv:
    """virNetworkDNSSrvDefParseXML."""
    service = prop(node, "service")
    if service is None and not partial_ok:
        raise xml_detail(
            f"missing required service attribute in DNS SRV record of network '{network}'",
            _DOMAIN,
        )
    if service is not None:
        if len(service.encode()) > SRV_NAME_MAX:
            raise xml_detail(
                f"service attribute '{service}' in network '{network}' is too long, "
                f"limit is {SRV_NAME_MAX} bytes",
                _DOMAIN,
            )
        if not _SERVICE_CHARS.issuperset(service):
            raise xml_detail(
                f"invalid character in service attribute '{service}' in DNS SRV record "
                f"of network '{network}'",
                _DOMAIN,
            )
    protocol = prop(node, "protocol")
    if protocol is None and not partial_ok:
        raise xml_detail(
            f"missing required protocol attribute in DNS SRV record '{service}' "
            f"of network '{network}'",
            _DOMAIN,
        )
    if protocol is not None and not _PROTOCOL_CHARS.issuperset(protocol):
        raise xml_detail(
            f"invalid character in protocol attribute '{protocol}' in DNS SRV record "
            f"of network '{network}'",
            _DOMAIN,
        )
    domain = prop(node, "domain")
    target = prop(node, "target")
    values: dict[str, int] = {}
    for name, limit, low, word in (
        ("port", 65535, 1, "invalid"),
        ("priority", 65535, 0, "Invalid"),
        ("weight", 65535, 0, "invalid"),
    ):
        value = _srv_number(node, name)
        if value is None:
            values[name] = 0
            continue
        if value >= 0 and target is None:
            raise xml_detail(
                f"DNS SRV {name} attribute not permitted without target for service "
                f"'{service}' in network '{network}'",
                _DOMAIN,
            )
        if value < low or value > limit:
            raise xml_detail(
                f"{word} DNS SRV {name} attribute for service '{service}' in network '{network}'",
                _DOMAIN,
            )
        values[name] = value
    return DnsSrv(service=service, protocol=protocol, domain=domain, target=target, **values)


def parse_dns_txt(network: str, node: etree._Element, *, partial_ok: bool = False) -> DnsTxt:
    """virNetworkDNSTxtDefParseXML."""
    name = prop(node, "name")
    if name is None:
        raise xml_detail(
            f"missing required name attribute in DNS TXT record of network {network}", _DOMAIN
        )
    if " " in name or "," in name:
        raise xml_detail(
            f"prohibited character in DNS TXT record name '{name}' of network {network}", _DOMAIN
        )
    value = prop(node, "value")
    if value is None and not partial_ok:
        raise xml_detail(
            f"missing required value attribute in DNS TXT record named '{name}' "
            f"of network {network}",
            _DOMAIN,
        )
    return DnsTxt(name=name, value=value)


def _parse_forwarder(network: str, node: etree._Element) -> DnsForwarder:
    addr_text = prop(node, "addr")
    addr = try_parse_ip(addr_text)
    if addr_text is not None and addr is None:
        raise xml_error(
            f"Invalid forwarder IP address '{addr_text}' in network '{network}'", _DOMAIN
        )
    domain = prop(node, "domain")
    if addr_text is None and domain is None:
        raise xml_error(
            "Invalid forwarder element, must contain at least one of addr or domain", _DOMAIN
        )
    return DnsForwarder(domain=domain, addr=addr)


def parse_dns(network: str, node: etree._Element) -> DnsDef:
    """virNetworkDNSDefParseXML: a disabled DNS server may hold no records."""
    enable = prop_tristate(node, "enable")
    forward_plain_names = prop_tristate(node, "forwardPlainNames")
    forwarders = tuple(_parse_forwarder(network, sub) for sub in every(node, "forwarder"))
    hosts = tuple(parse_dns_host(network, sub) for sub in every(node, "host"))
    srvs = tuple(parse_dns_srv(network, sub) for sub in every(node, "srv"))
    txts = tuple(parse_dns_txt(network, sub) for sub in every(node, "txt"))
    if enable is False and (forwarders or hosts or srvs or txts):
        raise xml_error(f"Extra data in disabled network '{network}'", _DOMAIN)
    return DnsDef(
        enable=enable,
        forward_plain_names=forward_plain_names,
        forwarders=forwarders,
        txts=txts,
        srvs=srvs,
        hosts=hosts,
    )


def format_dns_host(w: XmlWriter, host: DnsHost) -> None:
    """One ``<host>`` of ``<dns>``."""
    w.open("host", [("ip", format_ip(host.ip) if host.ip is not None else None)])
    for name in host.hostnames:
        w.text("hostname", name)
    w.close("host")


def format_dns(w: XmlWriter, dns: DnsDef) -> None:
    """virNetworkDNSDefFormat: forwarders, TXT, SRV, then host records."""
    if dns.is_empty():
        return
    with w.block(
        "dns", [("enable", dns.enable), ("forwardPlainNames", dns.forward_plain_names)]
    ) as d:
        for fwd in dns.forwarders:
            addr = format_ip(fwd.addr) if fwd.addr is not None else None
            d.leaf("forwarder", [("domain", fwd.domain), ("addr", addr)])
        for txt in dns.txts:
            d.leaf("txt", [("name", txt.name), ("value", txt.value)])
        for srv in dns.srvs:
            if srv.service is None or srv.protocol is None:
                continue
            d.leaf(
                "srv",
                [
                    ("service", srv.service),
                    ("protocol", srv.protocol),
                    ("domain", srv.domain),
                    ("target", srv.target),
                    ("port", srv.port or None),
                    ("priority", srv.priority or None),
                    ("weight", srv.weight or None),
                ],
            )
        for host in dns.hosts:
            format_dns_host(d, host)
