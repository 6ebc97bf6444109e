"""The domain ``<disk>`` kind: libvirt's disk XML (domain_conf.c virDomainDiskDefParseXML /
virDomainDiskDefFormat) <-> ``DiskDef``, as libvirt 9.0.0's QEMU driver shows it.

``parse_disk`` reads one ``<disk>``; ``format_disk`` writes it back.  ``active``
selects the live form (``<mirror>``, ``index=`` and live-only details kept) or the
persistent one.  What the QEMU driver fills in and checks after parsing one disk
is the agent's (agents.qemu.disk_postparse); its domain-wide steps (addresses
that depend on other devices) only the conformance harness replays
(tests.conformance.qemu).
"""

from __future__ import annotations

from lxml import etree

from shared.conf.disk_address import format_device_info, parse_device_info
from shared.conf.disk_mirror import DiskMirror, MirrorJob, format_mirror, parse_mirror
from shared.conf.disk_model import (
    IOTUNE_FIELDS,
    CacheMode,
    DetectZeroes,
    Discard,
    DiskBlockIo,
    DiskBus,
    DiskDef,
    DiskDevice,
    DiskDriver,
    DiskGeometry,
    DiskIotune,
    DiskModel,
    DiskTarget,
    ErrorPolicy,
    GeometryTrans,
    IoMode,
    Sgio,
    SnapshotLocation,
    StartupPolicy,
    Tray,
)
from shared.conf.disk_source import (
    StorageFormat,
    StorageSource,
    StorageType,
    format_auth,
    format_backing_store,
    format_source,
    metadata_cache,
    parse_auth,
    parse_backing_store,
    parse_index,
    source_fields,
)
from shared.conf.encryption import format_encryption, parse_encryption
from shared.conf.units import parse_c_unsigned
from shared.conf.xmlprops import (
    first_children,
    member_of,
    prop,
    prop_enum,
    prop_switch,
    prop_tristate,
    prop_uint,
    string_of,
    xpath_attr,
)
from shared.conf.xmlsafe import parse_xml
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, config_unsupported, xml_error


def _as_element(xml: str | bytes | etree._Element) -> etree._Element:
    if isinstance(xml, etree._Element):
        if xml.tag != "disk":
            raise xml_error(
                f"unexpected root element <{xml.tag}>, expecting <disk>", ErrorDomain.DOMAIN
            )
        return xml
    return parse_xml(xml, "disk", domain=ErrorDomain.DOMAIN)


# --- <source> and the disk's storage source -----------------------------------------


def _parse_disk_source(
    node: etree._Element, children: dict[str, etree._Element], *, active: bool
) -> dict[str, object]:
    """virDomainDiskDefParseSourceXML: the disk's type=, <source>, disk-level
    <auth>/<encryption> and backing chain, as the fields of its ``StorageSource``
    (``children``: ``first_children(node)``)."""
    kind = prop_enum(node, "type", StorageType, nonzero=True) or StorageType.FILE
    source_node = children.get("source")
    fields: dict[str, object]
    if source_node is not None:
        index = parse_index(prop(source_node, "index"), "disk index") if active else None
        fields = source_fields(source_node, kind, active=active, index=index)
    else:
        # libvirt resets the type when there is no <source> at all
        fields = {"type": StorageType.FILE}
    auth = children.get("auth")
    if auth is not None:
        if fields.get("auth") is not None:
            raise config_unsupported(
                "an <auth> definition already found for disk source", ErrorDomain.DOMAIN
            )
        fields["auth"] = parse_auth(auth)
    encryption = children.get("encryption")
    if encryption is not None:
        if fields.get("encryption") is not None:
            raise config_unsupported(
                "an <encryption> definition already found for disk source", ErrorDomain.DOMAIN
            )
        fields["encryption"] = parse_encryption(encryption)
    fields["backing_store"] = parse_backing_store(node, active=active)
    return fields


# --- <driver> ----------------------------------------------------------------------


def _parse_driver(node: etree._Element) -> DiskDriver:
    rerror = prop_enum(node, "rerror_policy", ErrorPolicy, nonzero=True)
    if rerror is ErrorPolicy.ENOSPACE:
        raise config_unsupported("Invalid disk read error policy: 'enospace'", ErrorDomain.DOMAIN)
    cache = prop_enum(node, "cache", CacheMode)
    return DiskDriver(
        name=prop(node, "name"),
        cache=None if cache is CacheMode.DEFAULT else cache,
        error_policy=prop_enum(node, "error_policy", ErrorPolicy, nonzero=True),
        rerror_policy=rerror,
        io=prop_enum(node, "io", IoMode, nonzero=True),
        ioeventfd=prop_switch(node, "ioeventfd"),
        event_idx=prop_switch(node, "event_idx"),
        copy_on_read=prop_switch(node, "copy_on_read"),
        discard=prop_enum(node, "discard", Discard, nonzero=True),
        iothread=prop_uint(node, "iothread", nonzero=True),
        detect_zeroes=prop_enum(node, "detect_zeroes", DetectZeroes, nonzero=True),
        queues=prop_uint(node, "queues") or None,
        queue_size=prop_uint(node, "queue_size") or None,
        iommu=prop_switch(node, "iommu"),
        ats=prop_switch(node, "ats"),
        packed=prop_switch(node, "packed"),
        page_per_vq=prop_switch(node, "page_per_vq"),
    )


def _parse_driver_format(node: etree._Element) -> StorageFormat | None:
    text = prop(node, "type")
    if text is None:
        return None
    if text == "aio":  # Xen back-compat spelling of raw
        return StorageFormat.RAW
    fmt = member_of(StorageFormat, text) or StorageFormat.NONE
    if fmt is StorageFormat.NONE:
        raise config_unsupported(f"unknown driver format value '{text}'", ErrorDomain.DOMAIN)
    return fmt


def _switch(value: bool | None) -> str | None:
    return None if value is None else ("on" if value else "off")


def _format_driver(w: XmlWriter, disk: DiskDef) -> None:
    d = disk.driver
    fmt = disk.source.format
    attrs: list[tuple[str, object | None]] = [
        ("name", d.name),
        ("type", fmt if fmt is not StorageFormat.NONE else None),
        ("cache", d.cache),
        ("error_policy", d.error_policy),
        ("rerror_policy", d.rerror_policy),
        ("io", d.io),
        ("ioeventfd", _switch(d.ioeventfd)),
        ("event_idx", _switch(d.event_idx)),
        ("copy_on_read", _switch(d.copy_on_read)),
        ("discard", d.discard),
        ("iothread", d.iothread),
        ("detect_zeroes", d.detect_zeroes),
        ("queues", d.queues),
        ("queue_size", d.queue_size),
        ("iommu", _switch(d.iommu)),
        ("ats", _switch(d.ats)),
        ("packed", _switch(d.packed)),
        ("page_per_vq", _switch(d.page_per_vq)),
    ]
    content = w.child()
    if disk.source.metadata_cache_max_size:
        with content.block("metadata_cache") as m:
            m.text("max_size", disk.source.metadata_cache_max_size, [("unit", "bytes")])
    w.element("driver", attrs, content)


# --- <target>, <geometry>, <blockio>, <iotune> ----------------------------------------


def _parse_target(node: etree._Element) -> DiskTarget:
    return DiskTarget(
        dev=prop(node, "dev"),
        bus=prop_enum(node, "bus", DiskBus, nonzero=True) or DiskBus.NONE,
        tray=prop_enum(node, "tray", Tray) or Tray.CLOSED,
        removable=prop_switch(node, "removable"),
        rotation_rate=prop_uint(node, "rotation_rate") or None,
    )


def _format_target(w: XmlWriter, disk: DiskDef) -> None:
    t = disk.target
    tray = (
        t.tray
        if disk.device in (DiskDevice.FLOPPY, DiskDevice.CDROM) and t.tray is not Tray.CLOSED
        else None
    )
    removable = _switch(t.removable) if t.bus is DiskBus.USB else None
    w.leaf(
        "target",
        [
            # libvirt always has both here (its post-parse sets the bus, its checks
            # refuse a disk without dev); the kind alone writes what it read
            ("dev", t.dev),
            ("bus", t.bus if t.bus is not DiskBus.NONE else None),
            ("tray", tray),
            ("removable", removable),
            ("rotation_rate", t.rotation_rate or None),
        ],
    )


def _parse_geometry(node: etree._Element) -> DiskGeometry:
    return DiskGeometry(
        cyls=prop_uint(node, "cyls") or 0,
        heads=prop_uint(node, "heads") or 0,
        secs=prop_uint(node, "secs") or 0,
        trans=prop_enum(node, "trans", GeometryTrans, nonzero=True),
    )


def _format_geometry(w: XmlWriter, g: DiskGeometry | None) -> None:
    if g is None or not (g.cyls and g.heads and g.secs):
        return
    w.leaf("geometry", [("cyls", g.cyls), ("heads", g.heads), ("secs", g.secs), ("trans", g.trans)])


def _parse_blockio(node: etree._Element) -> DiskBlockIo:
    return DiskBlockIo(
        logical_block_size=prop_uint(node, "logical_block_size") or None,
        physical_block_size=prop_uint(node, "physical_block_size") or None,
    )


def _format_blockio(w: XmlWriter, b: DiskBlockIo | None) -> None:
    if b is None or not (b.logical_block_size or b.physical_block_size):
        return
    w.leaf(
        "blockio",
        [
            ("logical_block_size", b.logical_block_size),
            ("physical_block_size", b.physical_block_size),
        ],
    )


def _parse_iotune(iotune: etree._Element | None) -> DiskIotune:
    if iotune is None:
        return DiskIotune()
    children = first_children(iotune)
    values: dict[str, object] = {}
    for name in IOTUNE_FIELDS:
        text = string_of(children.get(name))
        if text is None:
            continue
        number = parse_c_unsigned(text.strip())
        if number is None:
            raise xml_error(f"disk iotune field '{name}' must be an integer", ErrorDomain.DOMAIN)
        values[name] = number
    values["group_name"] = string_of(children.get("group_name"))
    return DiskIotune.model_validate(values)


def _format_iotune(w: XmlWriter, iotune: DiskIotune) -> None:
    content = w.child()
    for name in IOTUNE_FIELDS[:13]:
        value = getattr(iotune, name)
        if value:
            content.text(name, value)
    content.text("group_name", iotune.group_name)
    for name in IOTUNE_FIELDS[13:]:
        value = getattr(iotune, name)
        if value:
            content.text(name, value)
    w.element("iotune", [], content)


# --- <disk> ------------------------------------------------------------------------------


def parse_disk_element(node: etree._Element, *, active: bool) -> DiskDef:
    """What the ``<disk>`` element says, without any post-parse defaults or checks."""
    children = first_children(node)
    source = _parse_disk_source(node, children, active=active)
    startup: StartupPolicy | None = None
    source_node = children.get("source")
    if source_node is not None:
        startup = prop_enum(source_node, "startupPolicy", StartupPolicy, nonzero=True)
    fields: dict[str, object] = {
        "device": prop_enum(node, "device", DiskDevice) or DiskDevice.DISK,
        "model": prop_enum(node, "model", DiskModel),
        "snapshot": prop_enum(node, "snapshot", SnapshotLocation, nonzero=True),
        "rawio": prop_tristate(node, "rawio"),
        "sgio": prop_enum(node, "sgio", Sgio, nonzero=True),
        "startup_policy": startup,
    }
    if fields["model"] is DiskModel.DEFAULT:
        fields["model"] = None
    target = children.get("target")
    if target is not None:
        fields["target"] = _parse_target(target)
    geometry = children.get("geometry")
    if geometry is not None:
        fields["geometry"] = _parse_geometry(geometry)
    blockio = children.get("blockio")
    if blockio is not None:
        fields["blockio"] = _parse_blockio(blockio)
    driver = children.get("driver")
    if driver is not None:
        fields["driver"] = _parse_driver(driver)
        fmt = _parse_driver_format(driver)
        source["format"] = fmt
        source["metadata_cache_max_size"] = metadata_cache(
            driver, "./", ["metadata_cache", "max_size"]
        )
    mirror = children.get("mirror")
    if mirror is not None and active:
        fields["mirror"] = parse_mirror(mirror)
    transient = children.get("transient")
    if transient is not None:
        fields["transient"] = True
        fields["transient_share_backing"] = prop_tristate(transient, "shareBacking")
    fields.update(
        source=StorageSource.model_validate(source),
        auth_on_disk=children.get("auth") is not None,
        encryption_on_disk=children.get("encryption") is not None,
        readonly=children.get("readonly") is not None,
        shareable=children.get("shareable") is not None,
        iotune=_parse_iotune(children.get("iotune")),
        backend_domain=xpath_attr(children.get("backenddomain"), "name"),
        serial=string_of(children.get("serial")),
        wwn=string_of(children.get("wwn")),
        vendor=string_of(children.get("vendor")),
        product=string_of(children.get("product")),
        info=parse_device_info(node, active=active),
    )
    return _blank_source_is_file(DiskDef.model_validate(fields), active=active)


_TYPED_FIELDS = ("path", "fdgroup", "network", "pool", "nvme", "vhostuser")


def _blank_source_is_file(disk: DiskDef, *, active: bool) -> DiskDef:
    """A disk whose ``<source>`` says nothing is a file disk.

    libvirt reads a disk without ``<source>`` as type file and writes no
    ``<source>`` that would be empty; a ``<disk type='block'>`` with an empty
    ``<source/>`` would otherwise format to a document that reads back as a
    file disk.  Reading it as one at once keeps format(parse(x)) a fixed point.
    """
    if disk.source.type is StorageType.FILE:
        return disk
    scratch = XmlWriter()
    _write_source(scratch, disk, active=active)
    if not scratch.empty:
        return disk
    update: dict[str, object] = dict.fromkeys(_TYPED_FIELDS)
    update["type"] = StorageType.FILE
    return disk.model_copy(update={"source": disk.source.model_copy(update=update)})


def parse_disk(xml: str | bytes | etree._Element, *, active: bool) -> DiskDef:
    """Parse one ``<disk>`` (a document or an element of a parsed domain), as
    virDomainDiskDefParseXML does, without a hypervisor driver's post-parse.

    ``active=True`` reads the live form (``<mirror>``, ``index=``, aliases,
    ``labelskip``); ``active=False`` the persistent one, ignoring them.
    Raises ``VirtError`` as libvirt refuses.
    """
    return parse_disk_element(_as_element(xml), active=active)


def format_disk(disk: DiskDef, *, active: bool) -> str:
    """The ``<disk>`` element libvirt writes for ``disk``; ``active=False`` drops the
    mirror, ``index=`` attributes and live aliases as the persistent form does."""
    w = XmlWriter()
    write_disk(w, disk, active=active)
    return w.getvalue()


def write_disk(w: XmlWriter, disk: DiskDef, *, active: bool) -> None:
    """Write ``<disk>`` into ``w`` at its current indentation."""
    if disk.source.type is StorageType.NONE:
        raise VirtError(ErrorCode.INTERNAL_ERROR, "unexpected disk type 0", ErrorDomain.DOMAIN)
    snapshot = disk.snapshot
    if snapshot is SnapshotLocation.NO and disk.readonly:
        snapshot = None
    attrs: list[tuple[str, object | None]] = [
        ("type", disk.source.type),
        ("device", disk.device),
        ("model", disk.model),
        ("rawio", disk.rawio),
        ("sgio", disk.sgio),
        ("snapshot", snapshot),
    ]
    src = disk.source
    with w.block("disk", attrs) as d:
        _format_driver(d, disk)
        if src.auth is not None and disk.auth_on_disk:
            format_auth(d, src.auth)
        _write_source(d, disk, active=active)
        format_backing_store(d, src, active=active)
        if disk.backend_domain is not None:
            d.leaf("backenddomain", [("name", disk.backend_domain)])
        _format_geometry(d, disk.geometry)
        _format_blockio(d, disk.blockio)
        if disk.mirror is not None and active:
            format_mirror(d, disk.mirror)
        _format_target(d, disk)
        _format_iotune(d, disk.iotune)
        if disk.readonly:
            d.leaf("readonly")
        if disk.shareable:
            d.leaf("shareable")
        if disk.transient:
            d.leaf("transient", [("shareBacking", "yes" if disk.transient_share_backing else None)])
        d.text("serial", disk.serial)
        d.text("wwn", disk.wwn)
        d.text("vendor", disk.vendor)
        d.text("product", disk.product)
        if src.encryption is not None and disk.encryption_on_disk:
            format_encryption(d, src.encryption)
        format_device_info(d, disk.info, active=active)


def _write_source(w: XmlWriter, disk: DiskDef, *, active: bool) -> None:
    format_source(
        w,
        disk.source,
        active=active,
        startup_policy=disk.startup_policy,
        with_index=True,
        skip_auth=disk.auth_on_disk,
        skip_encryption=disk.encryption_on_disk,
    )


def start_mirror(disk: DiskDef, destination: StorageSource, job: MirrorJob) -> DiskDef:
    """``disk`` while a block copy or active commit runs towards ``destination``
    (``ready`` not yet reached).  Raises ``VirtError`` when a job already has one."""
    if disk.mirror is not None:
        raise VirtError(
            ErrorCode.BLOCK_COPY_ACTIVE,
            f"disk '{disk.target.dev}' already in active block job",
            ErrorDomain.DOMAIN,
        )
    return disk.model_copy(update={"mirror": DiskMirror(source=destination, job=job)})


def pivot(disk: DiskDef) -> DiskDef:
    """``disk`` after a pivot: the mirror's source (with its backing chain) becomes
    the disk's source and the mirror is gone.  Raises ``VirtError`` without a mirror."""
    if disk.mirror is None:
        raise VirtError(
            ErrorCode.OPERATION_INVALID,
            f"disk '{disk.target.dev}' does not have an active block job",
            ErrorDomain.DOMAIN,
        )
    return disk.model_copy(update={"source": disk.mirror.source, "mirror": None})
