"""The filter binding kind: ``<filterbinding>`` XML (virnwfilterbindingdef.c) <-> model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.conf.macaddr import normalize_mac
from shared.conf.nwfilter_params import format_parameters, parse_parameters
from shared.conf.uuid import parse_uuid
from shared.conf.xmlprops import first, local_name, string_of, xpath_attr
from shared.conf.xmlsafe import parse_xml
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, xml_error

_DOMAIN = ErrorDomain.NWFILTER


class NWFilterBindingDef(BaseModel):
    """A filter instantiated on a guest's network port: who owns the port, the
    port's devices and MAC address, and the filter with its parameters."""

    model_config = ConfigDict(frozen=True, strict=True)

    owner_name: str = Field(min_length=1)
    owner_uuid: str
    portdev: str = Field(min_length=1)
    linkdev: str | None = Field(default=None, min_length=1)
    mac: str
    filter: str = Field(min_length=1)
    parameters: dict[str, tuple[str, ...]] = Field(default_factory=dict)


def _required(value: str | None, message: str) -> str:
    """``value``, or libvirt's internal error ``message`` when it is missing."""
    if value is None:
        raise VirtError(ErrorCode.INTERNAL_ERROR, message, _DOMAIN)
    return value


def parse_nwfilter_binding(xml: str | bytes) -> NWFilterBindingDef:
    """Parse a ``<filterbinding>`` document; raises ``VirtError`` as libvirt would."""
    root = parse_xml(xml, domain=_DOMAIN)
    if local_name(root) != "filterbinding":
        raise xml_error("unknown root element for nwfilter binding", _DOMAIN)
    portdev = _required(
        xpath_attr(first(root, "portdev"), "name"), "filter binding has no port dev name"
    )
    linkdev = None
    linkdev_node = first(root, "linkdev")
    if linkdev_node is not None:
        linkdev = _required(xpath_attr(linkdev_node, "name"), "filter binding has no link dev name")
    owner_name = _required(string_of(first(root, "owner/name")), "filter binding has no owner name")
    uuid_text = _required(string_of(first(root, "owner/uuid")), "filter binding has no owner UUID")
    owner_uuid = _required(parse_uuid(uuid_text), f"Unable to parse UUID '{uuid_text}'")
    mac_text = _required(
        xpath_attr(first(root, "mac"), "address"), "filter binding has no MAC address"
    )
    mac = _required(normalize_mac(mac_text), f"Unable to parse MAC '{mac_text}'")
    filterref = first(root, "filterref")
    filter_name = xpath_attr(filterref, "filter")
    if filter_name is None or filterref is None:
        raise VirtError(ErrorCode.INTERNAL_ERROR, "filter binding has no filter reference", _DOMAIN)
    return NWFilterBindingDef(
        owner_name=owner_name,
        owner_uuid=owner_uuid,
        portdev=portdev,
        linkdev=linkdev,
        mac=mac,
        filter=filter_name,
        parameters=parse_parameters(filterref),
    )


def format_nwfilter_binding(binding: NWFilterBindingDef) -> str:
    """The ``<filterbinding>`` document libvirt writes for ``binding``."""
    w = XmlWriter()
    w.open("filterbinding")
    w.open("owner")
    w.text("name", binding.owner_name)
    w.text("uuid", binding.owner_uuid)
    w.close("owner")
    w.leaf("portdev", [("name", binding.portdev)])
    if binding.linkdev is not None:
        w.leaf("linkdev", [("name", binding.linkdev)])
    w.leaf("mac", [("address", binding.mac)])
    format_parameters(w, binding.filter, binding.parameters)
    w.close("filterbinding")
    return w.getvalue()
