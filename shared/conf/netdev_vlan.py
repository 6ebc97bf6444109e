"""The ``<vlan>`` element of networks, portgroups and ports (netdev_vlan_conf.c)."""

from __future__ import annotations

import enum

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.xmlprops import every, prop_enum, prop_uint, xpath_attr
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorDomain, xml_error

_DOMAIN = ErrorDomain.NONE  # netdev_vlan_conf.c reports without a domain


class NativeVlanMode(enum.StrEnum):
    """virNativeVlanMode; DEFAULT (libvirt's zero) is refused in XML."""

    DEFAULT = "default"
    TAGGED = "tagged"
    UNTAGGED = "untagged"


class Vlan(BaseModel):
    """One or more VLAN tags; ``native_mode`` applies to the tag ``native_tag``."""

    model_config = ConfigDict(frozen=True)

    tags: tuple[int, ...]
    trunk: bool = False
    native_mode: NativeVlanMode | None = None
    native_tag: int = 0


def parse_vlan(node: etree._Element) -> Vlan:
    """virNetDevVlanParse; raises ``VirtError`` as libvirt would refuse the element."""
    tag_nodes = every(node, "tag")
    if not tag_nodes:
        raise xml_error(
            "missing tag id - each <vlan> must have at least one <tag id='n'/> subelement",
            _DOMAIN,
        )
    tags: list[int] = []
    native_mode: NativeVlanMode | None = None
    native_tag = 0
    for tag_node in tag_nodes:
        tag = prop_uint(tag_node, "id", required=True)
        assert tag is not None
        if tag > 4095:
            raise xml_error(f"vlan tag id {tag} too large (maximum 4095)", _DOMAIN)
        tags.append(tag)
        mode = prop_enum(tag_node, "nativeMode", NativeVlanMode, nonzero=True)
        if mode is not None:
            if native_mode is not None:
                raise xml_error("duplicate native vlan setting", _DOMAIN)
            native_mode, native_tag = mode, tag
    trunk = len(tags) > 1
    trunk_text = xpath_attr(node, "trunk")
    if trunk_text is not None:
        trunk = trunk_text.lower() == "yes"
        if not trunk:
            if len(tags) > 1:
                raise xml_error(
                    f"invalid \"trunk='{trunk_text}'\" in <vlan> - trunk='yes' is required "
                    "for more than one vlan tag",
                    _DOMAIN,
                )
            if native_mode is not None:
                raise xml_error(
                    "invalid configuration in <vlan> - \"trunk='no'\" is not allowed "
                    "with a native vlan id",
                    _DOMAIN,
                )
            if trunk_text.lower() != "no":
                raise xml_error(
                    f"invalid \"trunk='{trunk_text}'\" in <vlan> - must be yes or no", _DOMAIN
                )
    return Vlan(tags=tuple(tags), trunk=trunk, native_mode=native_mode, native_tag=native_tag)


def format_vlan(w: XmlWriter, vlan: Vlan | None) -> None:
    """virNetDevVlanFormat."""
    if vlan is None or not vlan.tags:
        return
    w.open("vlan", [("trunk", "yes" if vlan.trunk else None)])
    for tag in vlan.tags:
        native = vlan.native_mode is not None and tag == vlan.native_tag
        w.leaf("tag", [("id", tag), ("nativeMode", vlan.native_mode if native else None)])
    w.close("vlan")
