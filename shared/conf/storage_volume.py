"""The storage volume kind: libvirt's ``<volume>`` XML (storage_conf.c) <-> ``StorageVolumeDef``.

A volume is always read and written in the context of its pool: the pool
type's entry in ``POOL_TYPES`` decides which ``<format type=.../>`` names are
valid, the default format, and whether a format is written at all.
"""

from __future__ import annotations

import enum

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.encryption import Encryption, format_encryption, parse_encryption
from shared.conf.storage_pool import StoragePoolDef
from shared.conf.storage_pool_types import FILE_FEATURES, FormatSet
from shared.conf.storage_pool_util import (
    STORAGE,
    Permissions,
    child_attr,
    child_text,
    format_permissions,
    parse_permissions,
)
from shared.conf.units import (
    LLONG_MAX,
    UINT_MAX,
    ULLONG_MAX,
    c_unsigned,
    parse_c_unsigned,
    scale_integer,
)
from shared.conf.xmlprops import first_children, member_of, string_of
from shared.conf.xmlsafe import parse_xml
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import config_unsupported, xml_error


class VolParseFlags(enum.IntFlag):
    """virStorageVolDefParseFlags."""

    NONE = 0
    #: A missing ``<capacity>`` is not an error (VIR_VOL_XML_PARSE_NO_CAPACITY).
    NO_CAPACITY = 1 << 0
    #: ``<capacity>`` may be missing when there is a backing store
    #: (VIR_VOL_XML_PARSE_OPT_CAPACITY).
    OPT_CAPACITY = 1 << 1


class VolumeType(enum.StrEnum):
    """virStorageVolType."""

    FILE = "file"
    BLOCK = "block"
    DIR = "dir"
    NETWORK = "network"
    NETDIR = "netdir"
    PLOOP = "ploop"


class VolumeExtent(BaseModel):
    """A byte range of a device holding the volume (filled in by the backend)."""

    model_config = ConfigDict(frozen=True)

    path: str
    start: int
    end: int


class Timestamp(BaseModel):
    """A file time: seconds and nanoseconds (filled in by the backend)."""

    model_config = ConfigDict(frozen=True)

    seconds: int
    nanoseconds: int = 0


class Timestamps(BaseModel):
    """``<timestamps>`` of a volume target; absent times are not written."""

    model_config = ConfigDict(frozen=True)

    atime: Timestamp | None = None
    mtime: Timestamp | None = None
    ctime: Timestamp | None = None
    btime: Timestamp | None = None


class VolumeTarget(BaseModel):
    """``<target>``: where and how the volume is stored.

    ``format`` is a name from the pool type's volume format set, None when
    the pool type has none.  ``features`` None means no ``<features>``
    element; an empty tuple writes ``<features/>``.  ``nocow`` is read but,
    as in libvirt, never written.  Timestamps come from the backend only.
    """

    model_config = ConfigDict(frozen=True)

    path: str | None = None
    format: str | None = None
    permissions: Permissions = Permissions()
    timestamps: Timestamps | None = None
    encryption: Encryption | None = None
    compat: str | None = None
    nocow: bool = False
    cluster_size: int = 0
    features: tuple[str, ...] | None = None


class BackingStore(BaseModel):
    """``<backingStore>``: the image this volume is layered on; ``timestamps``
    come from the backend only, as for the volume's own target."""

    model_config = ConfigDict(frozen=True)

    path: str
    format: str | None = None
    permissions: Permissions = Permissions()
    timestamps: Timestamps | None = None


class StorageVolumeDef(BaseModel):
    """What a ``<volume>`` document says (in the context of its pool).

    ``has_allocation`` records whether ``<allocation>`` was given (else the
    allocation is the capacity).  ``extents`` and ``physical`` are set by
    backends only; libvirt never reads them from XML.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    key: str | None = None
    type: VolumeType = VolumeType.FILE
    extents: tuple[VolumeExtent, ...] = ()
    capacity: int = 0
    allocation: int = 0
    has_allocation: bool = False
    physical: int = 0
    target: VolumeTarget = VolumeTarget()
    backing_store: BackingStore | None = None


# ---- sizes ------------------------------------------------------------------------


def _parse_size(value: str, unit: str | None) -> int:
    # off_t is signed: no file is larger than 2**63 - 1 bytes.
    number = parse_c_unsigned(value)
    if number is None:
        raise xml_error("malformed capacity element", STORAGE)
    return scale_integer(number, unit, limit=LLONG_MAX)


def _parse_cluster_size(target: etree._Element | None) -> int:
    text = child_text(target, "clusterSize")
    if text is None:
        return 0
    number = parse_c_unsigned(text)
    if number is None:
        raise xml_error(
            f"Invalid value '{text}' for element or attribute './target/clusterSize'", STORAGE
        )
    return scale_integer(number, child_attr(target, "clusterSize", "unit"), limit=ULLONG_MAX)


# ---- formats ----------------------------------------------------------------------


def _parse_format(node: etree._Element | None, formats: FormatSet | None) -> str | None:
    if formats is None:
        return None
    text = child_attr(node, "format", "type")
    if text is None:
        return formats.default
    if not formats.accepts(text):
        raise config_unsupported(f"unknown volume format type {text}", STORAGE)
    return text


def _parse_compat(compat: str | None) -> str | None:
    if compat is None:
        return None
    major, dot, minor = compat.partition(".")
    if (
        not dot
        # virStrToLong_ui, which also takes "-N" as UINT_MAX + 1 - N.
        or c_unsigned(major, limit=UINT_MAX) is None
        or c_unsigned(minor, limit=UINT_MAX) is None
    ):
        raise xml_error("forbidden characters in 'compat' attribute", STORAGE)
    return compat


def _parse_features(node: etree._Element | None) -> tuple[str, ...] | None:
    if node is None:
        return None
    found: set[str] = set()
    for child in node.iterchildren(etree.Element):
        name = str(child.tag)
        if name not in FILE_FEATURES:
            raise config_unsupported(f"unsupported feature {name}", STORAGE)
        found.add(name)
    return tuple(f for f in FILE_FEATURES if f in found)


# ---- target and backing store -----------------------------------------------------


def _parse_target(node: etree._Element | None, formats: FormatSet | None) -> VolumeTarget:
    children = first_children(node) if node is not None else {}
    encryption_node = children.get("encryption")
    features = _parse_features(children.get("features"))
    compat = _parse_compat(string_of(children.get("compat")))
    if features is not None and compat is None:
        compat = "1.1"
    return VolumeTarget(
        path=string_of(children.get("path")),
        format=_parse_format(node, formats),
        permissions=parse_permissions(children.get("permissions")),
        encryption=parse_encryption(encryption_node) if encryption_node is not None else None,
        compat=compat,
        nocow=children.get("nocow") is not None,
        cluster_size=_parse_cluster_size(node),
        features=features,
    )


def _format_timestamps(w: XmlWriter, stamps: Timestamps | None) -> None:
    if stamps is None:
        return
    w.open("timestamps")
    for name in ("atime", "mtime", "ctime", "btime"):
        stamp: Timestamp | None = getattr(stamps, name)
        if stamp is None:
            continue
        fraction = f".{stamp.nanoseconds:09d}" if stamp.nanoseconds else ""
        w.line(f"<{name}>{stamp.seconds}{fraction}</{name}>")
    w.close("timestamps")


def _format_target(w: XmlWriter, target: VolumeTarget, formats: FormatSet | None) -> None:
    w.open("target")
    w.text("path", target.path)
    if formats is not None:
        w.leaf("format", [("type", target.format or formats.default)])
    format_permissions(w, target.permissions)
    _format_timestamps(w, target.timestamps)
    if target.encryption is not None:
        format_encryption(w, target.encryption)
    w.text("compat", target.compat)
    if target.cluster_size > 0:
        w.text("clusterSize", target.cluster_size, [("unit", "B")])
    if target.features is not None:
        with w.block("features") as f:
            for feature in FILE_FEATURES:
                if feature in target.features:
                    f.leaf(feature)
    w.close("target")


def _parse_backing_store(node: etree._Element, formats: FormatSet | None) -> BackingStore | None:
    children = first_children(node)
    path = string_of(children.get("path"))
    if path is None:
        return None
    return BackingStore(
        path=path,
        format=_parse_format(node, formats),
        permissions=parse_permissions(children.get("permissions")),
    )


def _format_backing_store(w: XmlWriter, backing: BackingStore, formats: FormatSet | None) -> None:
    w.open("backingStore")
    w.text("path", backing.path)
    if formats is not None:
        w.leaf("format", [("type", backing.format or formats.default)])
    format_permissions(w, backing.permissions)
    _format_timestamps(w, backing.timestamps)
    w.close("backingStore")


# ---- extents ----------------------------------------------------------------------


def _format_extents(w: XmlWriter, extents: tuple[VolumeExtent, ...]) -> None:
    content = w.child()
    current: str | None = None
    for extent in extents:
        if extent.path != current:
            if current is not None:
                content.close("device")
            content.open("device", [("path", extent.path)])
            current = extent.path
        content.leaf("extent", [("start", extent.start), ("end", extent.end)])
    if current is not None:
        content.close("device")
    w.element("source", [], content)


# ---- the volume -------------------------------------------------------------------


def parse_storage_volume_element(
    root: etree._Element, pool: StoragePoolDef, flags: VolParseFlags = VolParseFlags.NONE
) -> StorageVolumeDef:
    """Parse a ``<volume>`` element in the context of ``pool`` (virStorageVolDefParseXML)."""
    formats = pool.info.volume_formats
    children = first_children(root)
    name = string_of(children.get("name"))
    if name is None:
        raise xml_error("missing volume name element", STORAGE)
    type_text = root.get("type") or None
    volume_type = VolumeType.FILE
    if type_text is not None:
        given = member_of(VolumeType, type_text)
        if given is None:
            raise config_unsupported(f"unknown volume type '{type_text}'", STORAGE)
        volume_type = given
    backing_node = children.get("backingStore")
    backing = _parse_backing_store(backing_node, formats) if backing_node is not None else None
    capacity = 0
    capacity_text = string_of(children.get("capacity"))
    if capacity_text is not None:
        capacity = _parse_size(capacity_text, child_attr(root, "capacity", "unit"))
    elif not (
        VolParseFlags.NO_CAPACITY in flags
        or (VolParseFlags.OPT_CAPACITY in flags and backing is not None)
    ):
        raise xml_error("missing capacity element", STORAGE)
    allocation_text = string_of(children.get("allocation"))
    allocation = capacity
    if allocation_text is not None:
        allocation = _parse_size(allocation_text, child_attr(root, "allocation", "unit"))
    return StorageVolumeDef(
        name=name,
        key=string_of(children.get("key")),
        type=volume_type,
        capacity=capacity,
        allocation=allocation,
        has_allocation=allocation_text is not None,
        target=_parse_target(children.get("target"), formats),
        backing_store=backing,
    )


def parse_storage_volume(
    xml: str | bytes, pool: StoragePoolDef, flags: VolParseFlags = VolParseFlags.NONE
) -> StorageVolumeDef:
    """Parse a ``<volume>`` document for a volume of ``pool``; raises ``VirtError``
    as libvirt would refuse it."""
    return parse_storage_volume_element(parse_xml(xml, "volume", domain=STORAGE), pool, flags)


def format_storage_volume(pool: StoragePoolDef, vol: StorageVolumeDef) -> str:
    """The ``<volume>`` document libvirt writes for ``vol`` in ``pool``."""
    formats = pool.info.volume_formats
    w = XmlWriter()
    w.open("volume", [("type", vol.type)])
    w.text("name", vol.name)
    w.text("key", vol.key)
    _format_extents(w, vol.extents)
    w.text("capacity", vol.capacity, [("unit", "bytes")])
    w.text("allocation", vol.allocation, [("unit", "bytes")])
    if vol.physical:
        w.text("physical", vol.physical, [("unit", "bytes")])
    _format_target(w, vol.target, formats)
    if vol.backing_store is not None:
        _format_backing_store(w, vol.backing_store, formats)
    w.close("volume")
    return w.getvalue()
