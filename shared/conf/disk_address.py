"""A device's ``<boot>``, ``<alias>``, ``<acpi>`` and ``<address>`` (domain_conf.c device info)."""

from __future__ import annotations

import enum
import string
from dataclasses import dataclass

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.units import parse_c_unsigned
from shared.conf.xmlprops import first, member_of, prop, prop_switch, prop_uint
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, config_unsupported, xml_error


class AddressType(enum.StrEnum):
    """virDomainDeviceAddressType (``none`` is libvirt's zero value)."""

    NONE = "none"
    PCI = "pci"
    DRIVE = "drive"
    VIRTIO_SERIAL = "virtio-serial"
    CCID = "ccid"
    USB = "usb"
    SPAPR_VIO = "spapr-vio"
    VIRTIO_S390 = "virtio-s390"
    CCW = "ccw"
    VIRTIO_MMIO = "virtio-mmio"
    ISA = "isa"
    DIMM = "dimm"
    UNASSIGNED = "unassigned"


class DeviceAddress(BaseModel):
    """One ``<address>``: ``type`` plus the fields that type uses (see ``ADDRESS_FIELDS``)."""

    model_config = ConfigDict(frozen=True)

    type: AddressType
    domain: int = 0
    bus: int = 0
    slot: int = 0
    function: int = 0
    multifunction: bool | None = None
    zpci_uid: int | None = None
    zpci_fid: int | None = None
    controller: int = 0
    target: int = 0
    unit: int = 0
    port: int = 0
    usb_port: str | None = None
    reg: int | None = None
    cssid: int = 0
    ssid: int = 0
    devno: int = 0
    iobase: int = 0
    irq: int = 0
    base: int | None = None

    @property
    def pci_empty(self) -> bool:
        """libvirt's virPCIDeviceAddressIsEmpty: all of domain/bus/slot/function are 0."""
        return not (self.domain or self.bus or self.slot or self.function)


@dataclass(frozen=True)
class _Field:
    """How one attribute of an address is read (base) and written (printf-like)."""

    name: str
    base: int
    write: str  # "dec", or a format spec for hex such as "#06x"


# Per address type: the attributes read and written, in libvirt's order.
# PCI, USB, spapr-vio, ISA and DIMM have conditional output handled below.
ADDRESS_FIELDS: dict[AddressType, tuple[_Field, ...]] = {
    AddressType.PCI: (
        _Field("domain", 0, "04x"),
        _Field("bus", 0, "02x"),
        _Field("slot", 0, "02x"),
        _Field("function", 0, "d"),
    ),
    AddressType.DRIVE: (
        _Field("controller", 10, "dec"),
        _Field("bus", 10, "dec"),
        _Field("target", 10, "dec"),
        _Field("unit", 10, "dec"),
    ),
    AddressType.VIRTIO_SERIAL: (
        _Field("controller", 10, "dec"),
        _Field("bus", 10, "dec"),
        _Field("port", 10, "dec"),
    ),
    AddressType.CCID: (_Field("controller", 10, "dec"), _Field("slot", 10, "dec")),
    AddressType.CCW: (
        _Field("cssid", 0, "x"),
        _Field("ssid", 0, "x"),
        _Field("devno", 0, "04x"),
    ),
    AddressType.ISA: (_Field("iobase", 16, "x"), _Field("irq", 16, "x")),
    AddressType.USB: (_Field("bus", 10, "dec"),),
    AddressType.DIMM: (_Field("slot", 10, "dec"),),
}

_PCI_LIMITS = (("domain", 0xFFFF), ("bus", 0xFF), ("slot", 0x1F), ("function", 7))


def _check_pci(values: dict[str, int]) -> None:
    for name, limit in _PCI_LIMITS:
        if values[name] > limit:
            raise config_unsupported(
                f"Invalid PCI address {name}='0x{values[name]:x}', must be <= 0x{limit:x}",
                ErrorDomain.DOMAIN,
            )


def _check_ccw(values: dict[str, int]) -> None:
    cssid, ssid, devno = values["cssid"], values["ssid"], values["devno"]
    if cssid > 0xFE or ssid > 3 or devno > 0xFFFF:
        raise VirtError(
            ErrorCode.INTERNAL_ERROR,
            "Invalid specification for virtio ccw address: "
            f"cssid='0x{cssid:x}' ssid='0x{ssid:x}' devno='0x{devno:04x}'",
            ErrorDomain.DOMAIN,
        )


def _check_ccw_presence(node: etree._Element) -> None:
    # libvirt requires all three numbers or none (then the address is auto-assigned).
    present = [prop(node, name) is not None for name in ("cssid", "ssid", "devno")]
    if any(present) and not all(present):
        raise VirtError(
            ErrorCode.INTERNAL_ERROR,
            "Invalid partial specification for virtio ccw address",
            ErrorDomain.DOMAIN,
        )


def _parse_usb_port(text: str) -> str:
    parts = text.split(".")
    if len(parts) > 4 or any(parse_c_unsigned(p) is None for p in parts):
        raise VirtError(
            ErrorCode.INTERNAL_ERROR, "Cannot parse <address> 'port' attribute", ErrorDomain.DOMAIN
        )
    return ".".join(str(int(p)) for p in parts)


def parse_address(node: etree._Element) -> DeviceAddress:
    """Parse an ``<address>`` element (virDomainDeviceAddressParseXML)."""
    type_text = prop(node, "type")
    if type_text is None:
        raise VirtError(
            ErrorCode.INTERNAL_ERROR, "No type specified for device address", ErrorDomain.DOMAIN
        )
    kind = member_of(AddressType, type_text) or AddressType.NONE
    if kind is AddressType.NONE:
        raise config_unsupported(f"unknown address type '{type_text}'", ErrorDomain.DOMAIN)
    if kind is AddressType.VIRTIO_S390:
        raise xml_error("virtio-s390 bus doesn't have an address", ErrorDomain.DOMAIN)
    values: dict[str, int] = {}
    for field in ADDRESS_FIELDS.get(kind, ()):
        number = prop_uint(node, field.name, base=field.base, required=kind is AddressType.DIMM)
        values[field.name] = number or 0
    extra: dict[str, object] = {}
    if kind is AddressType.PCI:
        extra["multifunction"] = prop_switch(node, "multifunction")
        if any(values.values()):
            _check_pci(values)
        zpci = first(node, "zpci")
        if zpci is not None:
            extra["zpci_uid"] = prop_uint(zpci, "uid", base=0)
            extra["zpci_fid"] = prop_uint(zpci, "fid", base=0)
    elif kind is AddressType.CCW:
        _check_ccw(values)
        _check_ccw_presence(node)
    elif kind is AddressType.USB:
        port = prop(node, "port")
        if port is not None:
            extra["usb_port"] = _parse_usb_port(port)
    elif kind is AddressType.SPAPR_VIO:
        reg = prop(node, "reg")
        if reg is not None:
            number = parse_c_unsigned(reg, base=16)
            if number is None:
                raise xml_error(
                    f"Invalid value for attribute 'reg' in element 'address': '{reg}'. "
                    "Expected non-negative value",
                    ErrorDomain.DOMAIN,
                )
            extra["reg"] = number
    elif kind is AddressType.DIMM:
        base = prop(node, "base")
        if base is not None:
            extra["base"] = parse_c_unsigned(base, base=16)
    return DeviceAddress.model_validate({"type": kind, **values, **extra})


def _field_text(value: int, spec: str) -> str:
    if spec == "dec":
        return str(value)
    if spec == "d":
        return f"0x{value}"
    return f"0x{value:{spec}}"


def format_address(w: XmlWriter, addr: DeviceAddress) -> None:
    """Write ``<address>`` as virDomainDeviceInfoFormat does; nothing for ``none``."""
    if addr.type in (AddressType.NONE, AddressType.VIRTIO_S390):
        return
    attrs: list[tuple[str, object | None]] = [("type", addr.type)]
    content = w.child()
    kind = addr.type
    if kind is AddressType.PCI:
        if not addr.pci_empty:
            for field in ADDRESS_FIELDS[kind]:
                attrs.append((field.name, _field_text(getattr(addr, field.name), field.write)))
        if addr.multifunction is not None:
            attrs.append(("multifunction", "on" if addr.multifunction else "off"))
        if addr.zpci_uid is not None or addr.zpci_fid is not None:
            content.leaf(
                "zpci",
                [("uid", f"0x{addr.zpci_uid or 0:04x}"), ("fid", f"0x{addr.zpci_fid or 0:08x}")],
            )
    elif kind is AddressType.USB:
        attrs.append(("bus", addr.bus))
        if addr.usb_port is not None and not addr.usb_port.startswith("0"):
            attrs.append(("port", addr.usb_port))
    elif kind is AddressType.SPAPR_VIO:
        if addr.reg is not None:
            attrs.append(("reg", f"0x{addr.reg:08x}"))
    elif kind is AddressType.ISA:
        if addr.iobase:
            attrs.append(("iobase", f"0x{addr.iobase:x}"))
        if addr.irq:
            attrs.append(("irq", f"0x{addr.irq:x}"))
    elif kind is AddressType.DIMM:
        attrs.append(("slot", addr.slot))
        if addr.base:
            attrs.append(("base", f"0x{addr.base:x}"))
    else:
        for field in ADDRESS_FIELDS.get(kind, ()):
            attrs.append((field.name, _field_text(getattr(addr, field.name), field.write)))
    w.element("address", attrs, content)


class DeviceInfo(BaseModel):
    """The device-generic children of a device element (virDomainDeviceInfo)."""

    model_config = ConfigDict(frozen=True)

    boot_order: int | None = None
    loadparm: str | None = None
    alias: str | None = None
    acpi_index: int | None = None
    address: DeviceAddress | None = None

    @property
    def address_type(self) -> AddressType:
        """The address type, ``none`` when there is no address."""
        return self.address.type if self.address is not None else AddressType.NONE


_USER_ALIAS_CHARS = set(string.ascii_letters + string.digits + "_-")
_LOADPARM_CHARS = set(string.ascii_uppercase + string.digits + ". ")


def _parse_loadparm(text: str) -> str:
    upper = text.upper()
    if len(upper) > 8:
        raise xml_error(
            f"loadparm value '{upper}' must be between 1 and 8 characters", ErrorDomain.DOMAIN
        )
    if not set(upper) <= _LOADPARM_CHARS:
        raise xml_error(
            f"invalid loadparm char '{next(c for c in upper if c not in _LOADPARM_CHARS)}', "
            "expecting chars in set of [a-zA-Z0-9.] and blank spaces",
            ErrorDomain.DOMAIN,
        )
    return upper


def parse_device_info(node: etree._Element, *, active: bool) -> DeviceInfo:
    """The device info children of ``node`` (virDomainDeviceInfoParseXML with boot
    allowed).  Inactive parsing keeps only user aliases (``ua-`` prefix), as the
    QEMU driver does."""
    alias: str | None = None
    alias_node = first(node, "alias")
    alias_text = prop(alias_node, "name") if alias_node is not None else None
    if alias_text and (active or is_user_alias(alias_text)):
        alias = alias_text
    boot_order: int | None = None
    loadparm: str | None = None
    boot = first(node, "boot")
    if boot is not None:
        boot_order = prop_uint(boot, "order", required=True, nonzero=True)
        text = prop(boot, "loadparm")
        if text is not None:
            loadparm = _parse_loadparm(text)
    acpi_index: int | None = None
    acpi = first(node, "acpi")
    if acpi is not None:
        acpi_index = prop_uint(acpi, "index", nonzero=True)
    address_node = first(node, "address")
    address = parse_address(address_node) if address_node is not None else None
    return DeviceInfo(
        boot_order=boot_order,
        loadparm=loadparm,
        alias=alias,
        acpi_index=acpi_index,
        address=address,
    )


def is_user_alias(alias: str) -> bool:
    """A user-chosen alias (``ua-`` prefix), the only kind persistent XML keeps."""
    return alias.startswith("ua-") and set(alias) <= _USER_ALIAS_CHARS


def format_device_info(w: XmlWriter, info: DeviceInfo, *, active: bool = True) -> None:
    """Write boot, alias, acpi and address in libvirt's order; the persistent form
    keeps only user aliases (libvirt's persistent definitions hold no others)."""
    if info.boot_order:
        w.leaf("boot", [("order", info.boot_order), ("loadparm", info.loadparm)])
    if info.alias and (active or is_user_alias(info.alias)):
        w.leaf("alias", [("name", info.alias)])
    if info.acpi_index:
        w.leaf("acpi", [("index", info.acpi_index)])
    if info.address is not None:
        format_address(w, info.address)
