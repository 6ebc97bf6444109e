"""A disk's storage source: ``<source>``, its ``<backingStore>`` chain and the pieces every
source type shares (domain_conf.c virDomainStorageSourceParse/virDomainDiskSourceFormat,
virDomainDiskBackingStoreParse/Format; storage_source_conf.c auth and reservations).

Long because every source type's parse and format sit side by side here; the
network protocols live in shared.conf.disk_source_net.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.disk_address import DeviceAddress, parse_address
from shared.conf.disk_source_net import (
    NetProtocol,
    NetworkSource,
    format_network_children,
    network_attrs,
    parse_network_source,
)
from shared.conf.encryption import (
    Encryption,
    SecretLookup,
    format_encryption,
    format_secret_lookup,
    parse_encryption,
    parse_secret_lookup,
)
from shared.conf.units import parse_c_unsigned
from shared.conf.xmlprops import (
    every,
    first,
    member_of,
    prop,
    prop_tristate,
    prop_uint,
    scaled_value,
    string_of,
)
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import (
    ErrorCode,
    ErrorDomain,
    VirtError,
    config_unsupported,
    xml_detail,
    xml_error,
)


class StorageType(enum.StrEnum):
    """virStorageType; ``none`` is the type of a ``<backingStore/>`` chain terminator."""

    NONE = "none"
    FILE = "file"
    BLOCK = "block"
    DIR = "dir"
    NETWORK = "network"
    VOLUME = "volume"
    NVME = "nvme"
    VHOSTUSER = "vhostuser"


class StorageFormat(enum.StrEnum):
    """virStorageFileFormat (``none`` is libvirt's zero value, never written)."""

    NONE = "none"
    RAW = "raw"
    DIR = "dir"
    BOCHS = "bochs"
    CLOOP = "cloop"
    DMG = "dmg"
    ISO = "iso"
    VPC = "vpc"
    VDI = "vdi"
    FAT = "fat"
    VHD = "vhd"
    PLOOP = "ploop"
    COW = "cow"
    QCOW = "qcow"
    QCOW2 = "qcow2"
    QED = "qed"
    VMDK = "vmdk"


class PoolMode(enum.StrEnum):
    """virStorageSourcePoolMode for ``type='volume'`` sources."""

    DEFAULT = "default"
    HOST = "host"
    DIRECT = "direct"


class AuthType(enum.StrEnum):
    """virStorageAuthType: the optional ``type=`` of ``<auth>``."""

    NONE = "none"
    CHAP = "chap"
    CEPH = "ceph"


class StorageAuth(BaseModel):
    """``<auth username=...><secret type=... uuid=|usage=/></auth>``."""

    model_config = ConfigDict(frozen=True)

    username: str
    auth_type: AuthType = AuthType.NONE
    secret_type: str | None = None
    secret: SecretLookup


class Reservations(BaseModel):
    """``<reservations managed=...>`` with the optional unix client socket path."""

    model_config = ConfigDict(frozen=True)

    managed: bool
    path: str | None = None


class Seclabel(BaseModel):
    """A per-source ``<seclabel>`` override (virSecurityDeviceLabelDef)."""

    model_config = ConfigDict(frozen=True)

    model: str | None = None
    relabel: bool = True
    labelskip: bool = False
    label: str | None = None


class PoolSource(BaseModel):
    """``type='volume'``: a volume of a storage pool."""

    model_config = ConfigDict(frozen=True)

    pool: str | None = None
    volume: str | None = None
    mode: PoolMode | None = None


class NvmeSource(BaseModel):
    """``type='nvme'``: a namespace of an NVMe controller at a PCI address."""

    model_config = ConfigDict(frozen=True)

    managed: bool | None = None
    namespace: int
    address: DeviceAddress


class VhostUserSource(BaseModel):
    """``type='vhostuser'``: a unix socket and its reconnect policy."""

    model_config = ConfigDict(frozen=True)

    path: str
    reconnect_enabled: bool | None = None
    reconnect_timeout: int | None = None


class StorageSlice(BaseModel):
    """``<slices><slice type='storage' offset size/></slices>``."""

    model_config = ConfigDict(frozen=True)

    offset: int
    size: int


class StorageSource(BaseModel):
    """One storage source (virStorageSource): the disk's image, a backing image, or the
    destination of a block job.  ``type`` picks which of ``path`` (file, block, dir),
    ``network``, ``pool``, ``nvme`` or ``vhostuser`` is set.  ``backing_store`` is
    None when the chain is not known, a ``type='none'`` source for the explicit
    ``<backingStore/>`` terminator, or the next image.  ``index`` is the live-only
    ``index=`` id."""

    model_config = ConfigDict(frozen=True)

    type: StorageType = StorageType.FILE
    format: StorageFormat | None = None
    path: str | None = None
    fdgroup: str | None = None
    network: NetworkSource | None = None
    pool: PoolSource | None = None
    nvme: NvmeSource | None = None
    vhostuser: VhostUserSource | None = None
    auth: StorageAuth | None = None
    encryption: Encryption | None = None
    reservations: Reservations | None = None
    slice_storage: StorageSlice | None = None
    seclabels: tuple[Seclabel, ...] = ()
    index: int | None = None
    metadata_cache_max_size: int | None = None
    backing_store: StorageSource | None = None

    @property
    def is_terminator(self) -> bool:
        """True for the ``<backingStore/>`` that says the chain ends here."""
        return self.type is StorageType.NONE

    @property
    def is_local(self) -> bool:
        """virStorageSourceIsLocalStorage: file, block and dir sources."""
        row = _SOURCE_KINDS.get(self.type)
        return row is not None and row.local

    @property
    def is_empty(self) -> bool:
        """virStorageSourceIsEmpty: no medium (a local source without a path)."""
        return (self.is_local and self.path is None) or self.type is StorageType.NONE

    def chain(self) -> list[StorageSource]:
        """This source and its backing images, without the terminator."""
        out: list[StorageSource] = []
        node: StorageSource | None = self
        while node is not None and not node.is_terminator:
            out.append(node)
            node = node.backing_store
        return out


TERMINATOR = StorageSource(type=StorageType.NONE)


# --- <auth> ------------------------------------------------------------------


def parse_auth(node: etree._Element) -> StorageAuth:
    """Parse ``<auth>`` (virStorageAuthDefParse)."""
    username = prop(node, "username")
    if not username:
        raise xml_error("missing username for auth", ErrorDomain.DOMAIN)
    auth_type = AuthType.NONE
    type_text = prop(node, "type")
    if type_text:
        given = member_of(AuthType, type_text)
        if given is None:
            raise config_unsupported(f"unknown auth type '{type_text}'", ErrorDomain.DOMAIN)
        auth_type = given
    secret = first(node, "secret")
    if secret is None:
        raise xml_error("Missing <secret> element in auth", ErrorDomain.DOMAIN)
    return StorageAuth(
        username=username,
        auth_type=auth_type,
        secret_type=prop(secret, "type"),
        secret=parse_secret_lookup(secret),
    )


def format_auth(w: XmlWriter, auth: StorageAuth) -> None:
    """Write ``<auth>`` (virStorageAuthDefFormat)."""
    auth_type = None if auth.auth_type is AuthType.NONE else auth.auth_type
    with w.block("auth", [("type", auth_type), ("username", auth.username)]) as a:
        format_secret_lookup(a, auth.secret_type, auth.secret)


# --- <reservations> ------------------------------------------------------------


def _parse_reservations(node: etree._Element) -> Reservations:
    managed = prop_tristate(node, "managed", required=True)
    source = first(node, "source")
    kind = prop(source, "type") if source is not None else None
    path = prop(source, "path") if source is not None else None
    mode = prop(source, "mode") if source is not None else None
    if managed is False or kind or path or mode:
        if not kind:
            raise xml_error("missing connection type for <reservations/>", ErrorDomain.DOMAIN)
        if not path:
            raise xml_error("missing path for <reservations/>", ErrorDomain.DOMAIN)
        if not mode:
            raise xml_error("missing connection mode for <reservations/>", ErrorDomain.DOMAIN)
    if kind and kind != "unix":
        raise xml_error(
            f"unsupported connection type for <reservations/>: {kind}", ErrorDomain.DOMAIN
        )
    if mode and mode != "client":
        raise xml_error(
            f"unsupported connection mode for <reservations/>: {mode}", ErrorDomain.DOMAIN
        )
    return Reservations(managed=bool(managed), path=path or None)


def _format_reservations(w: XmlWriter, res: Reservations) -> None:
    with w.block("reservations", [("managed", res.managed)]) as r:
        if res.path:
            r.leaf("source", [("type", "unix"), ("path", res.path), ("mode", "client")])


# --- <seclabel> ------------------------------------------------------------------

_LABEL_MAX = 4096 - 1


def parse_seclabels(node: etree._Element, *, active: bool) -> tuple[Seclabel, ...]:
    """The ``<seclabel>`` children of a source (virSecurityDeviceLabelDefParseXML);
    ``labelskip`` is live-only."""
    labels: list[Seclabel] = []
    for sub in every(node, "seclabel"):
        model = prop(sub, "model")
        if model is not None and any(s.model == model for s in labels):
            raise xml_detail(f"seclabel for model {model} is already provided", ErrorDomain.DOMAIN)
        relabel = prop_tristate(sub, "relabel")
        labelskip = prop_tristate(sub, "labelskip") if active else None
        label = string_of(first(sub, "label"))
        if label is not None and len(label) > _LABEL_MAX:
            label = None
        if label is not None and relabel is False:
            raise xml_error(
                f"Cannot specify a label if relabelling is turned off. model={model or '<null>'}",
                ErrorDomain.DOMAIN,
            )
        labels.append(
            Seclabel(
                model=model,
                relabel=relabel is not False,
                labelskip=bool(labelskip),
                label=label,
            )
        )
    return tuple(labels)


def format_seclabel(w: XmlWriter, label: Seclabel, *, active: bool) -> None:
    """Write one ``<seclabel>``; the inactive form skips label-less relabel ones."""
    if not active and label.label is None and label.relabel:
        return
    attrs: list[tuple[str, object | None]] = [("model", label.model)]
    attrs.append(("labelskip", "yes") if label.labelskip else ("relabel", label.relabel))
    with w.block("seclabel", attrs) as s:
        s.text("label", label.label)


# --- per-type <source> parts ---------------------------------------------------


def _parse_pool(node: etree._Element) -> PoolSource | None:
    pool, volume = prop(node, "pool"), prop(node, "volume")
    if pool is None and volume is None:
        return None  # a CD-ROM or floppy may have no medium
    if pool is None or volume is None:
        raise xml_error(
            "'pool' and 'volume' must be specified together for 'pool' type source",
            ErrorDomain.DOMAIN,
        )
    mode: PoolMode | None = None
    mode_text = prop(node, "mode")
    if mode_text is not None:
        mode = member_of(PoolMode, mode_text)
        if mode is None or mode is PoolMode.DEFAULT:
            raise config_unsupported(
                f"unknown source mode '{mode_text}' for volume type disk", ErrorDomain.DOMAIN
            )
    return PoolSource(pool=pool, volume=volume, mode=mode)


def _parse_nvme(node: etree._Element) -> NvmeSource:
    kind = prop(node, "type")
    if kind is None:
        raise xml_error("missing 'type' attribute to disk source", ErrorDomain.DOMAIN)
    if kind != "pci":
        raise xml_error(f"unsupported source type '{kind}'", ErrorDomain.DOMAIN)
    namespace_text = prop(node, "namespace")
    if namespace_text is None:
        raise xml_error("missing 'namespace' attribute to disk source", ErrorDomain.DOMAIN)
    namespace = parse_c_unsigned(namespace_text)
    if namespace is None:
        raise xml_error(f"malformed namespace '{namespace_text}'", ErrorDomain.DOMAIN)
    managed = prop_tristate(node, "managed")
    address_node = first(node, "address")
    if address_node is None:
        raise xml_error("NVMe disk source is missing address", ErrorDomain.DOMAIN)
    address = parse_address_pci(address_node)
    return NvmeSource(managed=managed, namespace=namespace, address=address)


def parse_address_pci(node: etree._Element) -> DeviceAddress:
    """A PCI address given without ``type=`` (virPCIDeviceAddressParseXML)."""
    if prop(node, "type") is None:
        node = etree.Element("address", {"type": "pci", **dict(node.attrib)})
    return parse_address(node)


def _parse_vhostuser(node: etree._Element) -> VhostUserSource:
    kind, path = prop(node, "type"), prop(node, "path")
    if kind is None:
        raise xml_error("missing 'type' attribute for vhostuser disk source", ErrorDomain.DOMAIN)
    if kind != "unix":
        raise xml_error("invalid 'type' attribute for vhostuser disk source", ErrorDomain.DOMAIN)
    if path is None:
        raise xml_error("missing 'path' attribute for vhostuser disk source", ErrorDomain.DOMAIN)
    enabled: bool | None = None
    timeout: int | None = None
    reconnect = first(node, "reconnect")
    if reconnect is not None:
        enabled = prop_tristate(reconnect, "enabled")
        if enabled:
            timeout = prop_uint(reconnect, "timeout", required=True)
    return VhostUserSource(path=path, reconnect_enabled=enabled, reconnect_timeout=timeout)


def _parse_slice(node: etree._Element) -> StorageSlice | None:
    slices = first(node, "slices")
    if slices is None:
        return None
    for sub in every(slices, "slice"):
        if prop(sub, "type") != "storage":
            continue
        offset, size = prop(sub, "offset"), prop(sub, "size")
        if not offset or not size:
            raise xml_error("missing offset or size attribute of slice", ErrorDomain.DOMAIN)
        values: list[int] = []
        for name, text in (("offset", offset), ("size", size)):
            number = parse_c_unsigned(text)
            if number is None:
                raise xml_error(
                    f"malformed value '{text}' of '{name}' attribute of slice", ErrorDomain.DOMAIN
                )
            values.append(number)
        return StorageSlice(offset=values[0], size=values[1])
    return None


# --- <source> --------------------------------------------------------------------


def _path_kind(attr: str) -> _SourceKind:
    """A local source whose path is the ``attr`` attribute."""

    def parse(node: etree._Element) -> dict[str, object]:
        return {"path": prop(node, attr)}

    def attrs(src: StorageSource) -> list[tuple[str, object | None]]:
        return [(attr, src.path)]

    return _SourceKind(parse, attrs, local=True)


def _parse_file(node: etree._Element) -> dict[str, object]:
    return {"path": prop(node, "file"), "fdgroup": prop(node, "fdgroup")}


def _file_attrs(src: StorageSource) -> list[tuple[str, object | None]]:
    return [("file", src.path), ("fdgroup", src.fdgroup)]


def _parse_network(node: etree._Element) -> dict[str, object]:
    net = parse_network_source(node)
    if net.path == "" and net.protocol is NetProtocol.NBD:
        # an empty name= is treated like no name, as libvirt does for paths; only
        # where a name is optional, or the source would not read back
        net = net.model_copy(update={"path": None})
    return {"network": net}


def _network_attrs(src: StorageSource) -> list[tuple[str, object | None]]:
    return network_attrs(src.network) if src.network is not None else []


def _network_children(w: XmlWriter, src: StorageSource) -> None:
    if src.network is not None:
        format_network_children(w, src.network)


def _volume_attrs(src: StorageSource) -> list[tuple[str, object | None]]:
    if src.pool is None:
        return []
    return [("pool", src.pool.pool), ("volume", src.pool.volume), ("mode", src.pool.mode)]


def _nvme_attrs(src: StorageSource) -> list[tuple[str, object | None]]:
    if src.nvme is None:
        return []
    return [("type", "pci"), ("managed", src.nvme.managed), ("namespace", src.nvme.namespace)]


def _nvme_children(w: XmlWriter, src: StorageSource) -> None:
    if src.nvme is None:
        return
    address = src.nvme.address
    w.leaf(
        "address",
        [
            ("domain", f"0x{address.domain:04x}"),
            ("bus", f"0x{address.bus:02x}"),
            ("slot", f"0x{address.slot:02x}"),
            ("function", f"0x{address.function}"),
        ],
    )


def _vhostuser_attrs(src: StorageSource) -> list[tuple[str, object | None]]:
    return [] if src.vhostuser is None else [("type", "unix"), ("path", src.vhostuser.path)]


def _vhostuser_children(w: XmlWriter, src: StorageSource) -> None:
    vu = src.vhostuser
    if vu is not None and vu.reconnect_enabled is not None:
        w.leaf(
            "reconnect",
            [
                ("enabled", vu.reconnect_enabled),
                ("timeout", vu.reconnect_timeout if vu.reconnect_enabled else None),
            ],
        )


def _no_children(w: XmlWriter, src: StorageSource) -> None:
    pass


@dataclass(frozen=True)
class _SourceKind:
    """What one source type reads from and writes into ``<source>``; read by
    ``source_fields``, ``format_source`` and ``StorageSource.is_local``."""

    parse: Callable[[etree._Element], dict[str, object]]
    attrs: Callable[[StorageSource], list[tuple[str, object | None]]]
    children: Callable[[XmlWriter, StorageSource], None] = _no_children
    #: virStorageSourceIsLocalStorage
    local: bool = False
    #: ``<seclabel>`` and ``startupPolicy=`` are written (not for network sources)
    seclabels: bool = True
    startup_policy: bool = True
    #: ``<auth>`` is written (a volume source's comes from its pool)
    auth: bool = True


_SOURCE_KINDS: dict[StorageType, _SourceKind] = {
    StorageType.FILE: _SourceKind(_parse_file, _file_attrs, local=True),
    StorageType.BLOCK: _path_kind("dev"),
    StorageType.DIR: _path_kind("dir"),
    StorageType.NETWORK: _SourceKind(
        _parse_network,
        _network_attrs,
        _network_children,
        seclabels=False,
        startup_policy=False,
    ),
    StorageType.VOLUME: _SourceKind(
        lambda node: {"pool": _parse_pool(node)}, _volume_attrs, auth=False
    ),
    StorageType.NVME: _SourceKind(
        lambda node: {"nvme": _parse_nvme(node)}, _nvme_attrs, _nvme_children
    ),
    StorageType.VHOSTUSER: _SourceKind(
        lambda node: {"vhostuser": _parse_vhostuser(node)}, _vhostuser_attrs, _vhostuser_children
    ),
}


def source_path(path: object) -> object:
    """A source's path as libvirt keeps it: '' is no path at all (a CD-ROM
    without medium)."""
    return None if path == "" else path


def source_fields(
    node: etree._Element, kind: StorageType, *, active: bool, **base: object
) -> dict[str, object]:
    """Parse a ``<source>`` element of a source of type ``kind``
    (virDomainStorageSourceParse) into ``StorageSource`` fields; ``base`` presets
    others (format, index).  Callers add the fields only they know (a backing
    store, a disk's driver format) and make the model once."""
    row = _SOURCE_KINDS.get(kind)
    if row is None:
        raise VirtError(
            ErrorCode.INTERNAL_ERROR, f"unexpected disk type {kind.value}", ErrorDomain.DOMAIN
        )
    fields: dict[str, object] = {"type": kind, **base, **row.parse(node)}
    if "path" in fields:
        fields["path"] = source_path(fields["path"])
    auth = first(node, "auth")
    if auth is not None:
        fields["auth"] = parse_auth(auth)
    encryption = first(node, "encryption")
    if encryption is not None:
        fields["encryption"] = parse_encryption(encryption)
    reservations = first(node, "reservations")
    if reservations is not None:
        fields["reservations"] = _parse_reservations(reservations)
    fields["slice_storage"] = _parse_slice(node)
    fields["seclabels"] = parse_seclabels(node, active=active)
    return fields


def format_source(
    w: XmlWriter,
    src: StorageSource,
    *,
    active: bool,
    element: str = "source",
    startup_policy: str | None = None,
    with_index: bool = False,
    skip_auth: bool = False,
    skip_encryption: bool = False,
) -> None:
    """Write ``<source>`` as virDomainDiskSourceFormat does: nothing at all when it
    would be empty; ``index=`` only when ``with_index`` and the source has one."""
    row = _SOURCE_KINDS.get(src.type)
    attrs = row.attrs(src) if row is not None else []
    content = w.child()
    if row is not None:
        row.children(content, src)
    if src.slice_storage is not None:
        with content.block("slices") as s:
            s.leaf(
                "slice",
                [
                    ("type", "storage"),
                    ("offset", src.slice_storage.offset),
                    ("size", src.slice_storage.size),
                ],
            )
    if row is None or row.seclabels:
        for label in src.seclabels:
            format_seclabel(content, label, active=active)
    if src.auth is not None and not skip_auth and (row is None or row.auth):
        format_auth(content, src.auth)
    if src.encryption is not None and not skip_encryption:
        format_encryption(content, src.encryption)
    if src.reservations is not None:
        _format_reservations(content, src.reservations)
    if startup_policy and (row is None or row.startup_policy):
        attrs.append(("startupPolicy", startup_policy))
    if with_index and active and src.index:
        attrs.append(("index", src.index))
    w.element(element, attrs, content)


def format_required_source(
    w: XmlWriter, src: StorageSource, *, active: bool, with_index: bool = False
) -> None:
    """``format_source`` where ``<source>`` must be present to be read back (a
    backing store, a mirror): a blank one is written as ``<source/>``, which
    libvirt leaves out."""
    source = XmlWriter(w.level)
    format_source(source, src, active=active, with_index=with_index)
    if source.empty:
        w.leaf("source")
    else:
        w.extend(source)


# --- <backingStore> ----------------------------------------------------------------


def parse_storage_type(text: str | None) -> StorageType:
    """virStorageTypeFromString for a source's ``type=`` (absent means file)."""
    if text is None:
        return StorageType.FILE
    kind = member_of(StorageType, text) or StorageType.NONE
    if kind is StorageType.NONE:
        raise xml_error(f"unknown storage source type '{text}'", ErrorDomain.DOMAIN)
    return kind


def parse_storage_format(text: str) -> StorageFormat:
    """virStorageFileFormatTypeFromString for a ``<format type=...>``."""
    fmt = member_of(StorageFormat, text) or StorageFormat.NONE
    if fmt is StorageFormat.NONE:
        raise xml_error(f"unknown storage source format '{text}'", ErrorDomain.DOMAIN)
    return fmt


def parse_index(text: str | None, what: str = "storage source index") -> int | None:
    """An ``index=`` attribute (virStrToLong_uip)."""
    if text is None:
        return None
    number = parse_c_unsigned(text, maximum=2**32 - 1)
    if number is None:
        raise xml_error(f"invalid {what} '{text}'", ErrorDomain.DOMAIN)
    return number or None


def metadata_cache(node: etree._Element, xpath_prefix: str, path: list[str]) -> int | None:
    """``<metadata_cache><max_size unit=...>`` under ``node``, in bytes; None when absent."""
    size = scaled_value(node, path, f"{xpath_prefix}metadata_cache/max_size")
    return size or None


def parse_backing_store(node: etree._Element, *, active: bool) -> StorageSource | None:
    """The ``<backingStore>`` child of ``node`` (virDomainDiskBackingStoreParse)."""
    store = first(node, "backingStore")
    if store is None:
        return None
    type_text = prop(store, "type")
    if type_text is None:
        return TERMINATOR
    index_text = prop(store, "index") if active else None
    format_node = first(store, "format")
    format_text = prop(format_node, "type") if format_node is not None else None
    if not format_text:
        raise xml_error("missing disk backing store format", ErrorDomain.DOMAIN)
    source = first(store, "source")
    if source is None:
        raise xml_error("missing disk backing store source", ErrorDomain.DOMAIN)
    kind = parse_storage_type(type_text)
    fmt = parse_storage_format(format_text)
    index = parse_index(index_text)
    cache = metadata_cache(store, "./format/", ["format", "metadata_cache", "max_size"])
    fields = source_fields(
        source, kind, active=active, format=fmt, index=index, metadata_cache_max_size=cache
    )
    fields["backing_store"] = parse_backing_store(store, active=active)
    return StorageSource.model_validate(fields)


def format_format(w: XmlWriter, fmt: StorageFormat | None, cache: int | None) -> None:
    """``<format type=...>`` with the optional metadata cache size."""
    content = w.child()
    if cache:
        with content.block("metadata_cache") as m:
            m.text("max_size", cache, [("unit", "bytes")])
    w.element("format", [("type", fmt)], content)


def format_backing_store(w: XmlWriter, src: StorageSource, *, active: bool) -> None:
    """Write the ``<backingStore>`` chain below ``src`` (virDomainDiskBackingStoreFormat)."""
    store = src.backing_store
    if store is None:
        return
    if store.is_terminator:
        w.leaf("backingStore")
        return
    if store.format is None or store.format is StorageFormat.NONE:
        raise VirtError(
            ErrorCode.INTERNAL_ERROR, "unexpected disk backing store format 0", ErrorDomain.DOMAIN
        )
    attrs: list[tuple[str, object | None]] = [("type", store.type)]
    if active and store.index:
        attrs.append(("index", store.index))
    with w.block("backingStore", attrs) as b:
        format_format(b, store.format, store.metadata_cache_max_size)
        format_required_source(b, store, active=active)
        format_backing_store(b, store, active=active)
