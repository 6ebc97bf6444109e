"""The network part of a disk storage source: ``<source protocol=... name=...>`` with its
hosts and per-protocol children (domain_conf.c virDomainDiskSourceNetworkParse/Format)."""

from __future__ import annotations

import enum
import re

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.units import parse_c_unsigned
from shared.conf.xmlprops import (
    every,
    first,
    member_of,
    prop,
    prop_enum,
    prop_tristate,
    string_of,
    xpath_attr,
)
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, config_unsupported, xml_error


class NetProtocol(enum.StrEnum):
    """virStorageNetProtocol (``none`` is libvirt's zero value)."""

    NONE = "none"
    NBD = "nbd"
    RBD = "rbd"
    SHEEPDOG = "sheepdog"
    GLUSTER = "gluster"
    ISCSI = "iscsi"
    HTTP = "http"
    HTTPS = "https"
    FTP = "ftp"
    FTPS = "ftps"
    TFTP = "tftp"
    SSH = "ssh"
    VXHS = "vxhs"
    NFS = "nfs"


class HostTransport(enum.StrEnum):
    """virStorageNetHostTransport; ``tcp`` is the default and is written out."""

    TCP = "tcp"
    UNIX = "unix"
    RDMA = "rdma"


class ProtocolTraits(BaseModel):
    """What a protocol allows, read by parse, format and validation alike."""

    model_config = ConfigDict(frozen=True)

    default_port: int = 0
    #: name= holds "<pool>/<image>" and is split on the first slash.
    pool_in_name: bool = False
    name_optional: bool = False
    #: query=, <cookies> (HTTP/HTTPS), <ssl> (HTTPS/FTPS), <readahead>/<timeout>.
    query: bool = False
    cookies: bool = False
    ssl: bool = False
    readahead: bool = False
    identity: bool = False


PROTOCOLS: dict[NetProtocol, ProtocolTraits] = {
    NetProtocol.NONE: ProtocolTraits(),
    NetProtocol.NBD: ProtocolTraits(default_port=10809, name_optional=True),
    NetProtocol.RBD: ProtocolTraits(pool_in_name=True),
    NetProtocol.SHEEPDOG: ProtocolTraits(default_port=7000),
    NetProtocol.GLUSTER: ProtocolTraits(default_port=24007, pool_in_name=True),
    NetProtocol.ISCSI: ProtocolTraits(default_port=3260),
    NetProtocol.HTTP: ProtocolTraits(default_port=80, query=True, cookies=True, readahead=True),
    NetProtocol.HTTPS: ProtocolTraits(
        default_port=443, query=True, cookies=True, ssl=True, readahead=True
    ),
    NetProtocol.FTP: ProtocolTraits(default_port=21, readahead=True),
    NetProtocol.FTPS: ProtocolTraits(default_port=990, ssl=True, readahead=True),
    NetProtocol.TFTP: ProtocolTraits(default_port=69),
    NetProtocol.SSH: ProtocolTraits(default_port=22),
    NetProtocol.VXHS: ProtocolTraits(default_port=9999),
    NetProtocol.NFS: ProtocolTraits(identity=True),
}


class NetHost(BaseModel):
    """One ``<host>``: a name and port for tcp/rdma, a socket path for unix."""

    model_config = ConfigDict(frozen=True)

    name: str | None = None
    port: int | None = None
    transport: HostTransport = HostTransport.TCP
    socket: str | None = None


class Cookie(BaseModel):
    """One HTTP ``<cookie name=...>value</cookie>``."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: str


class NetworkSource(BaseModel):
    """Everything a ``type='network'`` source says beside what all sources share.

    For rbd and gluster ``volume`` is the pool (the part of ``name=`` before the
    first slash) and ``path`` the image; for the others ``path`` is ``name=``.
    """

    model_config = ConfigDict(frozen=True)

    protocol: NetProtocol
    path: str | None = None
    volume: str | None = None
    query: str | None = None
    tls: bool | None = None
    tls_hostname: str | None = None
    hosts: tuple[NetHost, ...] = ()
    nfs_user: str | None = None
    nfs_group: str | None = None
    snapshot: str | None = None
    config_file: str | None = None
    initiator_iqn: str | None = None
    ssl_verify: bool | None = None
    cookies: tuple[Cookie, ...] = ()
    readahead: int | None = None
    timeout: int | None = None

    @property
    def name(self) -> str | None:
        """The ``name=`` attribute as written: "<volume>/<path>" when split."""
        if self.volume is not None:
            return f"{self.volume}/{self.path}"
        return self.path

    @property
    def traits(self) -> ProtocolTraits:
        """This protocol's row of ``PROTOCOLS``."""
        return PROTOCOLS[self.protocol]


def _parse_port(text: str) -> int:
    # virStringParsePort: a number 0..65535 (0 meaning "use the default").
    number = parse_c_unsigned(text)
    if number is None:
        raise VirtError(
            ErrorCode.INVALID_ARG, f"failed to parse port number '{text}'", ErrorDomain.DOMAIN
        )
    if number > 65535:
        raise VirtError(ErrorCode.INVALID_ARG, f"port '{text}' out of range", ErrorDomain.DOMAIN)
    return number


def _parse_host(node: etree._Element, default_port: int) -> NetHost:
    transport = HostTransport.TCP
    transport_text = prop(node, "transport")
    if transport_text is not None:
        given = member_of(HostTransport, transport_text)
        if given is None:
            raise config_unsupported(
                f"unknown protocol transport type '{transport_text}'", ErrorDomain.DOMAIN
            )
        transport = given
    socket = prop(node, "socket")
    if transport is HostTransport.UNIX and socket is None:
        raise xml_error("missing socket for unix transport", ErrorDomain.DOMAIN)
    if transport is not HostTransport.UNIX and socket is not None:
        raise xml_error(
            f"transport '{transport_text or '(null)'}' does not support socket attribute",
            ErrorDomain.DOMAIN,
        )
    if transport is HostTransport.UNIX:
        return NetHost(transport=transport, socket=socket)
    name = prop(node, "name")
    if name is None:
        raise xml_error("missing name for host", ErrorDomain.DOMAIN)
    port_text = prop(node, "port")
    port = _parse_port(port_text) if port_text is not None else 0
    if transport is HostTransport.TCP and port == 0:
        port = default_port
    return NetHost(name=name, port=port or None, transport=transport)


# virStorageSourceNetCookieValidate's character classes.
_COOKIE_VALUE_BAD = re.compile(r'[\x00-\x20",;\\\x7f]')
_COOKIE_NAME_BAD = re.compile(r"[()<>@:/\[\]?={}]")


def _parse_cookies(node: etree._Element) -> tuple[Cookie, ...]:
    cookies: list[Cookie] = []
    for cookie in every(node, "cookie"):
        name = prop(cookie, "name")
        if not name:
            raise xml_error("missing cookie name", ErrorDomain.DOMAIN)
        value = string_of(cookie)
        if value is None:
            raise xml_error(f"missing value for cookie '{name}'", ErrorDomain.DOMAIN)
        if _COOKIE_VALUE_BAD.search(name) or _COOKIE_NAME_BAD.search(name):
            raise xml_error(f"cookie name '{name}' contains invalid characters", ErrorDomain.DOMAIN)
        check = value
        if value.startswith('"'):
            if not value.endswith('"') or len(value) < 2:
                raise xml_error(
                    f"value of cookie '{name}' contains invalid characters", ErrorDomain.DOMAIN
                )
            check = value[1:-1]
        if _COOKIE_VALUE_BAD.search(check):
            raise xml_error(
                f"value of cookie '{name}' contains invalid characters", ErrorDomain.DOMAIN
            )
        if any(c.name == name for c in cookies):
            raise xml_error(f"duplicate cookie '{name}'", ErrorDomain.DOMAIN)
        cookies.append(Cookie(name=name, value=value))
    return tuple(cookies)


def _ull_child(node: etree._Element, name: str, attr: str) -> int | None:
    text = xpath_attr(first(node, name), attr)
    if text is None:
        return None
    number = parse_c_unsigned(text)
    if number is None:
        raise xml_error("invalid readahead size or timeout", ErrorDomain.DOMAIN)
    return number or None


def parse_network_source(node: etree._Element) -> NetworkSource:
    """Parse the network-specific part of a ``<source>`` element."""
    protocol = prop_enum(node, "protocol", NetProtocol, required=True)
    assert protocol is not None
    traits = PROTOCOLS[protocol]
    path = prop(node, "name")
    if path is None and protocol is not NetProtocol.NBD:
        raise xml_error("missing name for disk source", ErrorDomain.DOMAIN)
    volume: str | None = None
    if path is not None and traits.pool_in_name:
        slash = path.find("/")
        if slash <= 0:
            raise xml_error(
                f"can't split path '{path}' into pool name and image name", ErrorDomain.DOMAIN
            )
        volume, path = path[:slash], path[slash + 1 :]
    nfs_user = nfs_group = None
    if traits.identity:
        identity = first(node, "identity")
        if identity is not None:
            nfs_user, nfs_group = prop(identity, "user"), prop(identity, "group")
    ssl_verify: bool | None = None
    ssl = first(node, "ssl") if traits.ssl else None
    if ssl is not None:
        ssl_verify = prop_tristate(ssl, "verify")
    cookies_node = first(node, "cookies") if traits.cookies else None
    initiator = first(node, "initiator")
    return NetworkSource(
        protocol=protocol,
        path=path,
        volume=volume,
        query=prop(node, "query") if traits.query else None,
        tls=prop_tristate(node, "tls"),
        tls_hostname=prop(node, "tlsHostname"),
        hosts=tuple(_parse_host(h, traits.default_port) for h in every(node, "host")),
        nfs_user=nfs_user,
        nfs_group=nfs_group,
        snapshot=xpath_attr(first(node, "snapshot"), "name"),
        config_file=xpath_attr(first(node, "config"), "file"),
        initiator_iqn=xpath_attr(first(initiator, "iqn"), "name"),
        ssl_verify=ssl_verify,
        cookies=_parse_cookies(cookies_node) if cookies_node is not None else (),
        readahead=_ull_child(node, "readahead", "size") if traits.readahead else None,
        timeout=_ull_child(node, "timeout", "seconds") if traits.readahead else None,
    )


def network_attrs(net: NetworkSource) -> list[tuple[str, object | None]]:
    """The attributes of a network ``<source>``, in libvirt's order."""
    return [
        ("protocol", net.protocol),
        ("name", net.name),
        ("query", net.query),
        ("tls", net.tls),
        ("tlsHostname", net.tls_hostname),
    ]


def format_network_children(w: XmlWriter, net: NetworkSource) -> None:
    """The network children of ``<source>``: hosts through timeout."""
    for host in net.hosts:
        w.leaf(
            "host",
            [
                ("name", host.name),
                ("port", host.port),
                # tcp is libvirt's zero value and is never written
                ("transport", None if host.transport is HostTransport.TCP else host.transport),
                ("socket", host.socket),
            ],
        )
    if net.protocol is NetProtocol.NFS and (net.nfs_user or net.nfs_group):
        w.leaf("identity", [("user", net.nfs_user), ("group", net.nfs_group)])
    if net.snapshot is not None:
        w.leaf("snapshot", [("name", net.snapshot)])
    if net.config_file is not None:
        w.leaf("config", [("file", net.config_file)])
    if net.initiator_iqn is not None:
        with w.block("initiator") as i:
            i.leaf("iqn", [("name", net.initiator_iqn)])
    if net.ssl_verify is not None:
        w.leaf("ssl", [("verify", net.ssl_verify)])
    if net.cookies:
        with w.block("cookies") as c:
            for cookie in net.cookies:
                c.text("cookie", cookie.value, [("name", cookie.name)])
    if net.readahead:
        w.leaf("readahead", [("size", net.readahead)])
    if net.timeout:
        w.leaf("timeout", [("seconds", net.timeout)])


__all__ = [
    "PROTOCOLS",
    "Cookie",
    "HostTransport",
    "NetHost",
    "NetProtocol",
    "NetworkSource",
    "ProtocolTraits",
    "format_network_children",
    "network_attrs",
    "parse_network_source",
]
