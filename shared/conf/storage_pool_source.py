"""A storage pool's ``<source>`` (virStoragePoolDefParseSource and its formatter), with
its adapter (storage_adapter_conf.c) and auth (virStorageAuthDef) parts."""

from __future__ import annotations

import enum
import re

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.encryption import SecretLookup, format_secret_lookup, parse_secret_lookup
from shared.conf.pci_address import PciAddress, format_pci_address, parse_pci_address
from shared.conf.storage_pool_types import (
    NETFS_FORMAT_NAMES,
    PoolType,
    PoolTypeInfo,
    SourcePart,
)
from shared.conf.storage_pool_util import (
    INT_MAX,
    STORAGE,
    child_attr,
    child_text,
    prop_int,
    sanitize_path,
)
from shared.conf.units import parse_c_signed
from shared.conf.xmlprops import first, member_of, prop_enum, prop_tristate
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import config_unsupported, xml_detail, xml_error


class PoolSourceHost(BaseModel):
    """``<host name= port=/>``; port 0 means "not given"."""

    model_config = ConfigDict(frozen=True)

    name: str
    port: int = 0


class FreeExtent(BaseModel):
    """A free byte range of a disk pool's device (filled in by the backend, never parsed)."""

    model_config = ConfigDict(frozen=True)

    start: int
    end: int


class PoolSourceDevice(BaseModel):
    """``<device path= part_separator=>`` with the backend's free extents."""

    model_config = ConfigDict(frozen=True)

    path: str
    part_separator: bool | None = None
    free_extents: tuple[FreeExtent, ...] = ()


class AdapterType(enum.StrEnum):
    """virStorageAdapterType without its "default" (absent) value."""

    SCSI_HOST = "scsi_host"
    FC_HOST = "fc_host"


class PoolAdapter(BaseModel):
    """``<adapter>`` of a scsi pool: a SCSI host by name or parent PCI address, or a
    (possibly libvirt-managed vHBA) FC host by WWNN/WWPN."""

    model_config = ConfigDict(frozen=True)

    type: AdapterType
    name: str | None = None
    unique_id: int | None = None
    parentaddr: PciAddress | None = None
    parent: str | None = None
    parent_wwnn: str | None = None
    parent_wwpn: str | None = None
    parent_fabric_wwn: str | None = None
    managed: bool | None = None
    wwnn: str | None = None
    wwpn: str | None = None


class AuthType(enum.StrEnum):
    """virStorageAuthType values a pool may use."""

    CHAP = "chap"
    CEPH = "ceph"


class PoolAuth(BaseModel):
    """``<auth type= username=><secret .../></auth>``."""

    model_config = ConfigDict(frozen=True)

    type: AuthType
    username: str
    secret_type: str | None = None
    secret: SecretLookup


class PoolSource(BaseModel):
    """What a pool's ``<source>`` says; ``format`` is a name from the type's format set."""

    model_config = ConfigDict(frozen=True)

    hosts: tuple[PoolSourceHost, ...] = ()
    devices: tuple[PoolSourceDevice, ...] = ()
    dir: str | None = None
    adapter: PoolAdapter | None = None
    name: str | None = None
    format: str | None = None
    initiator_iqn: str | None = None
    auth: PoolAuth | None = None
    protocol_ver: str | None = None
    vendor: str | None = None
    product: str | None = None


# ---- hosts and devices ------------------------------------------------------------


def _parse_host(node: etree._Element) -> PoolSourceHost:
    name = node.get("name")
    if name is None:
        raise xml_error("missing storage pool host name", STORAGE)
    return PoolSourceHost(name=name, port=prop_int(node, "port") or 0)


def _format_host(w: XmlWriter, host: PoolSourceHost) -> None:
    w.leaf("host", [("name", host.name), ("port", host.port or None)])


def _parse_device(node: etree._Element) -> PoolSourceDevice:
    path = node.get("path")
    if path is None:
        raise xml_error("missing storage pool source device path", STORAGE)
    return PoolSourceDevice(path=path, part_separator=prop_tristate(node, "part_separator"))


def _format_device(w: XmlWriter, dev: PoolSourceDevice) -> None:
    attrs = [("path", dev.path), ("part_separator", dev.part_separator)]
    if not dev.free_extents:
        w.leaf("device", attrs)
        return
    w.open("device", attrs)
    for extent in dev.free_extents:
        w.leaf("freeExtent", [("start", extent.start), ("end", extent.end)])
    w.close("device")


# ---- adapter ----------------------------------------------------------------------

_WWN = re.compile(r"(0x)?[0-9A-Fa-f]{16}")


def _check_wwn(wwn: str) -> None:
    if not _WWN.fullmatch(wwn):
        raise xml_error(f"Malformed wwn: {wwn}", STORAGE)


def _parse_adapter(node: etree._Element) -> PoolAdapter | None:
    type_text = node.get("type")
    if type_text is None:
        # Legacy form: a bare name= meant a SCSI host; anything newer needs type=.
        if any(node.get(a) is not None for a in ("wwnn", "wwpn", "parent")):
            raise xml_error(
                "Use of 'wwnn', 'wwpn', and 'parent' attributes requires use of the adapter 'type'",
                STORAGE,
            )
        if first(node, "parentaddr") is not None:
            raise xml_error(
                "Use of 'parentaddr' element requires use of the adapter 'type'", STORAGE
            )
        name = node.get("name")
        return None if name is None else PoolAdapter(type=AdapterType.SCSI_HOST, name=name)
    adapter_type = prop_enum(node, "type", AdapterType)
    if adapter_type is AdapterType.FC_HOST:
        return PoolAdapter(
            type=adapter_type,
            managed=prop_tristate(node, "managed"),
            parent=node.get("parent"),
            parent_wwnn=node.get("parent_wwnn"),
            parent_wwpn=node.get("parent_wwpn"),
            parent_fabric_wwn=node.get("parent_fabric_wwn"),
            wwnn=node.get("wwnn"),
            wwpn=node.get("wwpn"),
        )
    parentaddr: PciAddress | None = None
    unique_id: int | None = None
    parent_node = first(node, "parentaddr")
    if parent_node is not None:
        addr_node = first(parent_node, "address")
        if addr_node is None:
            raise xml_error("Missing scsi_host PCI address element", STORAGE)
        parentaddr = parse_pci_address(addr_node)
        unique_text = parent_node.get("unique_id") or ""
        unique_id = parse_c_signed(unique_text, minimum=-INT_MAX - 1, maximum=INT_MAX)
        if unique_id is None or unique_id < 0:
            raise xml_error("Missing or invalid scsi adapter 'unique_id' value", STORAGE)
    return PoolAdapter(
        type=AdapterType.SCSI_HOST,
        name=node.get("name"),
        parentaddr=parentaddr,
        unique_id=unique_id,
    )


def _validate_adapter(adapter: PoolAdapter | None) -> None:
    if adapter is None:
        raise xml_error("missing storage pool source adapter", STORAGE)
    if adapter.type is AdapterType.FC_HOST:
        if not adapter.wwnn or not adapter.wwpn:
            raise xml_error(
                "'wwnn' and 'wwpn' must be specified for adapter type 'fchost'", STORAGE
            )
        _check_wwn(adapter.wwnn)
        _check_wwn(adapter.wwpn)
        if adapter.parent_wwnn and not adapter.parent_wwpn:
            raise xml_error(
                f"when providing parent_wwnn='{adapter.parent_wwnn}', the parent_wwpn must "
                "also be provided",
                STORAGE,
            )
        if adapter.parent_wwpn and not adapter.parent_wwnn:
            raise xml_error(
                f"when providing parent_wwpn='{adapter.parent_wwpn}', the parent_wwnn must "
                "also be provided",
                STORAGE,
            )
        for wwn in (adapter.parent_wwnn, adapter.parent_wwpn, adapter.parent_fabric_wwn):
            if wwn:
                _check_wwn(wwn)
        return
    if adapter.name is None and adapter.parentaddr is None:
        raise xml_error(
            "Either 'name' or 'parent' must be specified for the 'scsi_host' adapter", STORAGE
        )
    if adapter.name is not None and adapter.parentaddr is not None:
        raise xml_error(
            "Both 'name' and 'parent' cannot be specified for the 'scsi_host' adapter", STORAGE
        )


def _format_adapter(w: XmlWriter, a: PoolAdapter) -> None:
    if a.type is AdapterType.FC_HOST:
        w.leaf(
            "adapter",
            [
                ("type", a.type),
                ("parent", a.parent),
                ("parent_wwnn", a.parent_wwnn),
                ("parent_wwpn", a.parent_wwpn),
                ("parent_fabric_wwn", a.parent_fabric_wwn),
                ("managed", a.managed),
                ("wwnn", a.wwnn),
                ("wwpn", a.wwpn),
            ],
        )
        return
    if a.name is not None or a.parentaddr is None:
        w.leaf("adapter", [("type", a.type), ("name", a.name)])
        return
    w.open("adapter", [("type", a.type)])
    w.open("parentaddr", [("unique_id", a.unique_id)])
    format_pci_address(w, a.parentaddr, with_type=False)
    w.close("parentaddr")
    w.close("adapter")


# ---- auth -------------------------------------------------------------------------


def _parse_auth(node: etree._Element) -> PoolAuth:
    username = node.get("username")
    if not username:
        raise xml_error("missing username for auth", STORAGE)
    type_text = node.get("type") or None
    auth_type: AuthType | None = None
    if type_text is not None and type_text != "none":
        auth_type = member_of(AuthType, type_text)
        if auth_type is None:
            raise config_unsupported(f"unknown auth type '{type_text}'", STORAGE)
    secret_node = first(node, "secret")
    if secret_node is None:
        raise xml_error("Missing <secret> element in auth", STORAGE)
    lookup = parse_secret_lookup(secret_node)
    if auth_type is None:
        raise config_unsupported("storage pool missing auth type", STORAGE)
    return PoolAuth(
        type=auth_type, username=username, secret_type=secret_node.get("type"), secret=lookup
    )


def _format_auth(w: XmlWriter, auth: PoolAuth) -> None:
    w.open("auth", [("type", auth.type), ("username", auth.username)])
    format_secret_lookup(w, auth.secret_type, auth.secret)
    w.close("auth")


# ---- the whole <source> -----------------------------------------------------------


def format_index(info: PoolTypeInfo, source_format: str | None) -> int:
    """libvirt's number for the source format (0 when the type has none)."""
    if info.pool_formats is None or source_format is None:
        return 0
    return info.pool_formats.index(source_format)


def parse_pool_source(node: etree._Element, pool_type: PoolType, info: PoolTypeInfo) -> PoolSource:
    """Parse ``<source>`` of a pool of ``pool_type`` (what is required overall is
    checked by the pool parser, once the pool name is known)."""
    name = child_text(node, "name")
    if info.source_name_required and name is None:
        raise xml_error(f"element 'name' is mandatory for {pool_type.value.upper()} pool", STORAGE)
    source_format: str | None = None
    if info.pool_formats is not None:
        format_text = child_attr(node, "format", "type")
        source_format = info.pool_formats.default if format_text is None else format_text
        if not info.pool_formats.accepts(source_format):
            raise config_unsupported(f"unknown pool format type {format_text}", STORAGE)
    hosts = tuple(_parse_host(h) for h in node.iterchildren("host"))
    initiator_iqn = child_attr(node, "initiator/iqn", "name")
    devices = tuple(_parse_device(d) for d in node.iterchildren("device"))
    dir_text = child_attr(node, "dir", "path")
    source_dir = sanitize_path(dir_text) if dir_text is not None else info.default_source_dir
    adapter_node = first(node, "adapter")
    adapter = _parse_adapter(adapter_node) if adapter_node is not None else None
    auth_node = first(node, "auth")
    auth = _parse_auth(auth_node) if auth_node is not None else None
    protocol_ver = child_attr(node, "protocol", "ver")
    if protocol_ver is not None:
        # libvirt compares the type's format number with netfs's "nfs"/"auto"
        # whatever the pool type, so pools without a format accept it too.
        index = format_index(info, source_format)
        if index not in (0, 1):
            names = NETFS_FORMAT_NAMES
            shown = names[index] if index < len(names) else "(null)"
            raise config_unsupported(
                f"storage pool protocol ver unsupported for pool type '{shown}'", STORAGE
            )
        if "," in protocol_ver:
            raise xml_detail(
                f"storage pool protocol ver '{protocol_ver}' must not contain ','", STORAGE
            )
    return PoolSource(
        hosts=hosts,
        devices=devices,
        dir=source_dir,
        adapter=adapter,
        name=name,
        format=source_format,
        initiator_iqn=initiator_iqn,
        auth=auth,
        protocol_ver=protocol_ver,
        vendor=child_attr(node, "vendor", "name"),
        product=child_attr(node, "product", "name"),
    )


def validate_pool_source(source: PoolSource, info: PoolTypeInfo) -> None:
    """The per-type requirements libvirt checks after parsing the whole pool."""
    if SourcePart.HOST in info.source and not source.hosts:
        raise xml_error("missing storage pool source host name", STORAGE)
    if SourcePart.DIR in info.source and not source.dir:
        raise xml_error("missing storage pool source path", STORAGE)


def validate_pool_source_late(source: PoolSource, info: PoolTypeInfo) -> None:
    """Checks libvirt runs once the source name has its default."""
    if SourcePart.ADAPTER in info.source:
        _validate_adapter(source.adapter)
    if info.source == SourcePart.DEVICE and not source.devices:
        raise xml_error("missing storage pool source device name", STORAGE)


def validate_pool_initiator(source: PoolSource, info: PoolTypeInfo) -> None:
    """The initiator check libvirt runs after reading the target."""
    if info.requires_initiator and not source.initiator_iqn:
        raise config_unsupported("missing initiator IQN", STORAGE)


def format_pool_source(w: XmlWriter, source: PoolSource, info: PoolTypeInfo) -> None:
    """``<source>`` as libvirt writes it: always an open/close pair, parts in a fixed
    order, each only when the pool type uses it."""
    parts = info.source
    w.open("source")
    if SourcePart.HOST in parts:
        for host in source.hosts:
            _format_host(w, host)
    if SourcePart.DEVICE in parts:
        for dev in source.devices:
            _format_device(w, dev)
    if SourcePart.DIR in parts and source.dir is not None:
        w.leaf("dir", [("path", source.dir)])
    if SourcePart.ADAPTER in parts and source.adapter is not None:
        _format_adapter(w, source.adapter)
    if SourcePart.NAME in parts:
        w.text("name", source.name)
    if SourcePart.INITIATOR_IQN in parts and source.initiator_iqn is not None:
        w.open("initiator")
        w.leaf("iqn", [("name", source.initiator_iqn)])
        w.close("initiator")
    if info.pool_formats is not None:
        w.leaf("format", [("type", source.format or info.pool_formats.default)])
    if source.auth is not None:
        _format_auth(w, source.auth)
    for element, value in (
        ("protocol", ("ver", source.protocol_ver)),
        ("vendor", ("name", source.vendor)),
        ("product", ("name", source.product)),
    ):
        if value[1] is not None:
            w.leaf(element, [value])
    w.close("source")
