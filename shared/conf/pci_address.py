"""PCI addresses ``<address domain= bus= slot= function=/>`` (device_conf.c, virpci.c)."""

from __future__ import annotations

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.xmlprops import prop_switch, prop_uint
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorDomain, xml_error

_DOMAIN = ErrorDomain.NONE  # virpci.c reports without a domain


class PciAddress(BaseModel):
    """A host PCI device address; every field as libvirt stores it (unsigned ints)."""

    model_config = ConfigDict(frozen=True)

    domain: int = 0
    bus: int = 0
    slot: int = 0
    function: int = 0

    def is_empty(self) -> bool:
        """virPCIDeviceAddressIsEmpty: no domain, bus or slot."""
        return not (self.domain or self.bus or self.slot)

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"


def parse_pci_address(node: etree._Element) -> PciAddress:
    """virPCIDeviceAddressParseXML: numbers in any C base; a non-empty address
    must be valid (bus <= 0xFF, slot <= 0x1F, function <= 7)."""
    values = {
        name: prop_uint(node, name, base=0) or 0 for name in ("domain", "bus", "slot", "function")
    }
    # multifunction is read (and checked) by libvirt but not kept for host devices
    prop_switch(node, "multifunction")
    addr = PciAddress(**values)
    if not addr.is_empty():
        _check_valid(addr)
    return addr


def _check_valid(addr: PciAddress) -> None:
    if addr.bus > 0xFF:
        raise xml_error(f"Invalid PCI address bus='0x{addr.bus:x}', must be <= 0xFF", _DOMAIN)
    if addr.slot > 0x1F:
        raise xml_error(f"Invalid PCI address slot='0x{addr.slot:x}', must be <= 0x1F", _DOMAIN)
    if addr.function > 7:
        raise xml_error(f"Invalid PCI address function=0x{addr.function:x}, must be <= 7", _DOMAIN)


def format_pci_address(w: XmlWriter, addr: PciAddress, *, with_type: bool) -> None:
    """virPCIDeviceAddressFormat (``function`` is printed in decimal after 0x, as
    libvirt does)."""
    w.leaf(
        "address",
        [
            ("type", "pci" if with_type else None),
            ("domain", f"0x{addr.domain:04x}"),
            ("bus", f"0x{addr.bus:02x}"),
            ("slot", f"0x{addr.slot:02x}"),
            ("function", f"0x{addr.function}"),
        ],
    )
