"""The ``<virtualport>`` element (netdev_vport_profile_conf.c, virnetdevvportprofile.c).

Which ``<parameters>`` attributes a type may carry, and which it prints, are
read from ``VPORT_PARAMETERS``: one row per type.
"""

from __future__ import annotations

import enum

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.uuid import parse_uuid
from shared.conf.xmlprops import UINT_MAX, c_unsigned, member_of, prop, sub_element
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, xml_error

_DOMAIN = ErrorDomain.NONE  # netdev_vport_profile_conf.c reports without a domain
#: LIBVIRT_IFLA_VF_PORT_PROFILE_MAX: profileid must be shorter than this.
PROFILE_ID_MAX = 40


class VPortType(enum.StrEnum):
    """virNetDevVPortProfile; NONE is "no type given" and refused when written."""

    NONE = "none"
    QBG = "802.1Qbg"
    QBH = "802.1Qbh"
    OPENVSWITCH = "openvswitch"
    MIDONET = "midonet"


#: The <parameters> attributes, in the order libvirt writes them.
PARAMETERS = ("managerid", "typeid", "typeidversion", "instanceid", "interfaceid", "profileid")

#: Per type, the parameters it is formatted with.  A type without a type
#: (NONE) carries any of them; an extra one is refused for the types listed in
#: ``_EXTRAS``, in the order libvirt checks them.
VPORT_PARAMETERS: dict[VPortType, frozenset[str]] = {
    VPortType.NONE: frozenset(PARAMETERS),
    VPortType.QBG: frozenset({"managerid", "typeid", "typeidversion", "instanceid"}),
    VPortType.QBH: frozenset({"profileid"}),
    VPortType.OPENVSWITCH: frozenset({"interfaceid", "profileid"}),
    VPortType.MIDONET: frozenset({"interfaceid"}),
}
_EXTRAS: dict[VPortType, tuple[str, ...]] = {
    VPortType.QBG: ("profileid", "interfaceid"),
    VPortType.QBH: ("managerid", "typeid", "typeidversion", "instanceid", "interfaceid"),
    VPortType.OPENVSWITCH: ("managerid", "typeid", "typeidversion", "instanceid"),
}


class VirtualPort(BaseModel):
    """A port profile: the type and whichever parameters were given (None: absent)."""

    model_config = ConfigDict(frozen=True)

    type: VPortType = VPortType.NONE
    managerid: int | None = None
    typeid: int | None = None
    typeidversion: int | None = None
    instanceid: str | None = None
    interfaceid: str | None = None
    profileid: str | None = None

    def given(self) -> list[str]:
        """The parameters that are set, in ``PARAMETERS`` order."""
        return [name for name in PARAMETERS if getattr(self, name) is not None]


def _number(text: str | None, name: str, limit: int, article: str) -> int | None:
    if text is None:
        return None
    value = c_unsigned(text, base=0, limit=UINT_MAX)
    if value is None:
        raise xml_error(f"cannot parse value of {name} parameter", _DOMAIN)
    if value > limit:
        raise xml_error(f"value {article} {name} out of range", _DOMAIN)
    return value


def _uuid(text: str | None, name: str) -> str | None:
    if text is None:
        return None
    value = parse_uuid(text)
    if value is None:
        raise xml_error(f"cannot parse {name} parameter as a uuid", _DOMAIN)
    return value


def parse_virtualport(node: etree._Element, *, require_type: bool = False) -> VirtualPort:
    """virNetDevVPortProfileParse (without generating missing ids).

    ``require_type`` is libvirt's VIR_VPORT_XML_REQUIRE_TYPE (networks).
    """
    vtype = VPortType.NONE
    type_text = prop(node, "type")
    if type_text is not None:
        vtype = member_of(VPortType, type_text) or VPortType.NONE
        if vtype is VPortType.NONE:
            raise VirtError(
                ErrorCode.CONFIG_UNSUPPORTED, f"unknown virtualport type {type_text}", _DOMAIN
            )
    if vtype is VPortType.NONE and require_type:
        raise xml_error("missing required virtualport type", _DOMAIN)
    params = sub_element(node, "parameters")
    raw = {name: prop(params, name) for name in PARAMETERS}
    profileid = raw["profileid"]
    if profileid is not None and len(profileid.encode()) >= PROFILE_ID_MAX:
        raise xml_error("profileid parameter too long", _DOMAIN)
    port = VirtualPort(
        type=vtype,
        managerid=_number(raw["managerid"], "managerid", 0xFF, "of"),
        typeid=_number(raw["typeid"], "typeid", 0xFFFFFF, "for"),
        typeidversion=_number(raw["typeidversion"], "typeidversion", 0xFF, "of"),
        instanceid=_uuid(raw["instanceid"], "instanceid"),
        interfaceid=_uuid(raw["interfaceid"], "interfaceid"),
        # an empty profileid is libvirt's "unset"
        profileid=profileid or None,
    )
    for extra in _EXTRAS.get(vtype, ()):
        if getattr(port, extra) is not None:
            raise xml_error(
                f"extra {extra} unsupported in <virtualport type='{vtype}'>", ErrorDomain.NET
            )
    return port


def format_virtualport(w: XmlWriter, port: VirtualPort | None) -> None:
    """virNetDevVPortProfileFormat."""
    if port is None:
        return
    given = port.given()
    vtype = None if port.type is VPortType.NONE else port.type
    if not given:
        if vtype is not None:
            w.leaf("virtualport", [("type", vtype)])
        return
    shown = VPORT_PARAMETERS[port.type]
    w.open("virtualport", [("type", vtype)])
    w.leaf("parameters", [(name, getattr(port, name)) for name in PARAMETERS if name in shown])
    w.close("virtualport")
