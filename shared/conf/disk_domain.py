"""The ``<disk>`` elements of a whole domain document (domain_conf.c reads them from
``/domain/devices/disk``).  The QEMU driver's domain-wide steps (addresses, checks
across disks) are not here: only the conformance harness replays them."""

from __future__ import annotations

from lxml import etree

from shared.conf.xmlprops import every, first
from shared.conf.xmlsafe import parse_xml
from shared.util.errors import ErrorDomain


def domain_root(domain: str | bytes | etree._Element) -> etree._Element:
    """The ``<domain>`` element of a document (parsed safely) or an element."""
    if isinstance(domain, etree._Element):
        return domain
    return parse_xml(domain, "domain", domain=ErrorDomain.DOMAIN)


def domain_disk_elements(domain: str | bytes | etree._Element) -> list[etree._Element]:
    """The ``/domain/devices/disk`` elements, in document order."""
    devices = first(domain_root(domain), "devices")
    return every(devices, "disk") if devices is not None else []
