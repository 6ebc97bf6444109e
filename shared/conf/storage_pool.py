"""The storage pool kind: libvirt's ``<pool>`` XML (storage_conf.c) <-> ``StoragePoolDef``.

Per-type behaviour comes from ``storage_pool_types.POOL_TYPES``; the
``<source>`` element lives in ``storage_pool_source``.
"""

from __future__ import annotations

import enum

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.storage_pool_source import (
    PoolSource,
    format_pool_source,
    parse_pool_source,
    validate_pool_initiator,
    validate_pool_source,
    validate_pool_source_late,
)
from shared.conf.storage_pool_types import POOL_TYPES, PoolNamespace, PoolType, PoolTypeInfo
from shared.conf.storage_pool_util import (
    STORAGE,
    Permissions,
    child_text,
    format_permissions,
    parse_permissions,
    sanitize_path,
)
from shared.conf.uuid import generate_uuid, parse_uuid
from shared.conf.xmlprops import first, member_of, prop_tristate
from shared.conf.xmlsafe import parse_xml
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, config_unsupported, xml_error


class RefreshAllocation(enum.StrEnum):
    """How a refresh sets a volume's allocation (virStorageVolDefRefreshAllocation)."""

    DEFAULT = "default"
    CAPACITY = "capacity"


class PoolTarget(BaseModel):
    """``<target>`` of a pool with a local path."""

    model_config = ConfigDict(frozen=True)

    path: str
    permissions: Permissions = Permissions()


class NamespaceOption(BaseModel):
    """One ``<prefix:option name= value=/>`` of a pool's namespace extension."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: str | None = None


class StoragePoolDef(BaseModel):
    """What a ``<pool>`` document says.

    ``capacity``, ``allocation`` and ``available`` are never read from XML
    (libvirt ignores them on input); the service fills them in from the
    backend before formatting.  ``target`` is None exactly for the pool types
    without a local target.  ``namespace_options`` belong to the type's
    namespace extension (fs mount options, rbd config options).
    """

    model_config = ConfigDict(frozen=True)

    type: PoolType
    name: str
    uuid: str
    capacity: int = 0
    allocation: int = 0
    available: int = 0
    cow: bool | None = None
    source: PoolSource = PoolSource()
    target: PoolTarget | None = None
    refresh_allocation: RefreshAllocation | None = None
    namespace_options: tuple[NamespaceOption, ...] = ()

    @property
    def info(self) -> PoolTypeInfo:
        """The per-type table entry of this pool."""
        return POOL_TYPES[self.type]


# ---- pool type --------------------------------------------------------------------


def _parse_type(root: etree._Element) -> PoolType:
    text = root.get("type")
    if text is None:
        raise xml_error("Missing required attribute 'type' in element 'pool'", ErrorDomain.XML)
    member = member_of(PoolType, text)
    if member is None:
        raise xml_error(
            f"Invalid value for attribute 'type' in element 'pool': '{text}'.", ErrorDomain.XML
        )
    return member


# ---- features ---------------------------------------------------------------------


def _parse_cow(root: etree._Element, info: PoolTypeInfo) -> bool | None:
    cow = prop_tristate(first(root, "features/cow"), "state")
    if cow is not None and not info.supports_cow:
        raise VirtError(
            ErrorCode.NO_SUPPORT, "cow feature may only be used for 'fs' and 'dir' pools", STORAGE
        )
    return cow


def _format_features(w: XmlWriter, cow: bool | None) -> None:
    if cow is None:
        return
    w.open("features")
    w.leaf("cow", [("state", cow)])
    w.close("features")


# ---- target -----------------------------------------------------------------------


def _parse_target(root: etree._Element, info: PoolTypeInfo, source_name: str | None) -> PoolTarget:
    if info.target_path_template is not None:
        path = info.target_path_template.format(source_name)
    else:
        given = child_text(root, "target/path")
        if given is None:
            raise xml_error("missing storage pool target path", STORAGE)
        path = given
    return PoolTarget(
        path=sanitize_path(path), permissions=parse_permissions(first(root, "target/permissions"))
    )


def _format_target(w: XmlWriter, target: PoolTarget | None) -> None:
    w.open("target")
    if target is not None:
        w.text("path", target.path)
        format_permissions(w, target.permissions)
    w.close("target")


# ---- refresh ----------------------------------------------------------------------


def _parse_refresh(root: etree._Element) -> RefreshAllocation | None:
    node = first(root, "refresh/volume")
    text = node.get("allocation") if node is not None else None
    if not text:
        return None
    member = member_of(RefreshAllocation, text)
    if member is None:
        raise config_unsupported(
            f"unknown storage pool volume refresh allocation type {text}", STORAGE
        )
    return member


def _format_refresh(w: XmlWriter, refresh: RefreshAllocation | None) -> None:
    if refresh is None:
        return
    w.open("refresh")
    w.leaf("volume", [("allocation", refresh)])
    w.close("refresh")


# ---- namespace extension ----------------------------------------------------------


def _parse_namespace(root: etree._Element, ns: PoolNamespace | None) -> tuple[NamespaceOption, ...]:
    if ns is None:
        return ()
    options: list[NamespaceOption] = []
    for node in root.iterfind(f"{{{ns.uri}}}{ns.container}/{{{ns.uri}}}option"):
        name = node.get("name")
        if name is None:
            raise xml_error(f"no {ns.label} option name specified", STORAGE)
        if not ns.with_value:
            options.append(NamespaceOption(name=name))
            continue
        if not name:
            raise xml_error(f"empty {ns.label} option name specified", STORAGE)
        value = node.get("value")
        if value is None:
            raise xml_error(f"no {ns.label} option value specified for name '{name}'", STORAGE)
        if not value:
            raise xml_error(f"empty {ns.label} option value specified for name '{name}'", STORAGE)
        options.append(NamespaceOption(name=name, value=value))
    return tuple(options)


def _format_namespace(
    w: XmlWriter, ns: PoolNamespace | None, options: tuple[NamespaceOption, ...]
) -> None:
    if ns is None or not options:
        return
    w.open(f"{ns.prefix}:{ns.container}")
    for option in options:
        w.leaf(f"{ns.prefix}:option", [("name", option.name), ("value", option.value)])
    w.close(f"{ns.prefix}:{ns.container}")


# ---- the pool ---------------------------------------------------------------------


def parse_storage_pool_element(root: etree._Element) -> StoragePoolDef:
    """Parse a ``<pool>`` element (virStoragePoolDefParseXML); raises ``VirtError``."""
    pool_type = _parse_type(root)
    info = POOL_TYPES[pool_type]
    source_node = first(root, "source")
    if source_node is not None:
        source = parse_pool_source(source_node, pool_type, info)
    else:
        default = info.pool_formats.default if info.pool_formats is not None else None
        # Without <source>, libvirt applies only the default format (not
        # gluster's default dir), so a gluster pool then lacks its path.
        source = PoolSource(format=default)
    name = child_text(root, "name")
    if name is None and source.name is not None and info.source_has_name:
        name = source.name
    if name is None:
        raise xml_error("missing pool source name element", STORAGE)
    if "/" in name:
        raise xml_error(f"name {name} cannot contain '/'", STORAGE)
    uuid_text = child_text(root, "uuid")
    if uuid_text is None:
        uuid = generate_uuid()
    else:
        parsed = parse_uuid(uuid_text)
        if parsed is None:
            raise xml_error("malformed uuid element", STORAGE)
        uuid = parsed
    cow = _parse_cow(root, info)
    validate_pool_source(source, info)
    if info.source_has_name and source.name is None:
        source = source.model_copy(update={"name": name})
    validate_pool_source_late(source, info)
    target = _parse_target(root, info, source.name) if info.has_target else None
    validate_pool_initiator(source, info)
    return StoragePoolDef(
        type=pool_type,
        name=name,
        uuid=uuid,
        cow=cow,
        source=source,
        target=target,
        refresh_allocation=_parse_refresh(root),
        namespace_options=_parse_namespace(root, info.namespace),
    )


def parse_storage_pool(xml: str | bytes) -> StoragePoolDef:
    """Parse a ``<pool>`` document; raises ``VirtError`` as libvirt would refuse it."""
    return parse_storage_pool_element(parse_xml(xml, "pool", domain=STORAGE))


def format_storage_pool(pool: StoragePoolDef) -> str:
    """The ``<pool>`` document libvirt writes for ``pool`` (virStoragePoolDefFormat)."""
    info = pool.info
    ns = info.namespace if pool.namespace_options else None
    w = XmlWriter()
    attrs: list[tuple[str, object | None]] = [("type", pool.type)]
    if ns is not None:
        attrs.append((f"xmlns:{ns.prefix}", ns.uri))
    w.open("pool", attrs)
    w.text("name", pool.name)
    w.text("uuid", pool.uuid)
    w.text("capacity", pool.capacity, [("unit", "bytes")])
    w.text("allocation", pool.allocation, [("unit", "bytes")])
    w.text("available", pool.available, [("unit", "bytes")])
    _format_features(w, pool.cow)
    format_pool_source(w, pool.source, info)
    if info.has_target:
        _format_target(w, pool.target)
    _format_refresh(w, pool.refresh_allocation)
    _format_namespace(w, ns, pool.namespace_options)
    w.close("pool")
    return w.getvalue()
