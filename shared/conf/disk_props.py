"""Attribute and value readers with libvirt's virxml.c semantics, for the disk modules.

libvirt reads attributes through a handful of helpers (virXMLPropEnum,
virXMLPropTristateBool, virXMLPropUInt, virParseScaledValue...), each with its
own refusal wording; the disk kind uses them everywhere, so they live here once.
Enum attributes are read against a ``StrEnum`` whose first member is libvirt's
zero value ("default", "none"...), which ``nonzero=True`` refuses as libvirt does.
"""

from __future__ import annotations

import enum
from typing import TypeVar

from lxml import etree

from shared.conf.units import UINT_MAX, ULLONG_MAX, parse_c_unsigned, scale_integer
from shared.util.errors import ErrorDomain, VirtError, xml_error

E = TypeVar("E", bound=enum.StrEnum)

#: Errors raised by the domain XML parser come from libvirt's domain config code.
DOMAIN = ErrorDomain.DOMAIN


def tag(node: etree._Element) -> str:
    """The element name as libvirt prints it in messages."""
    return str(node.tag)


def prop(node: etree._Element, name: str) -> str | None:
    """An attribute's value, or None when absent (virXMLPropString)."""
    value = node.get(name)
    return None if value is None else str(value)


def _invalid(node: etree._Element, name: str, value: str, expected: str = "") -> VirtError:
    detail = f"Invalid value for attribute '{name}' in element '{tag(node)}': '{value}'."
    if expected:
        detail = detail[:-1] + f". {expected}"
    return xml_error(detail, DOMAIN)


def missing(node: etree._Element, name: str) -> VirtError:
    """libvirt's refusal of a missing required attribute."""
    return xml_error(f"Missing required attribute '{name}' in element '{tag(node)}'", DOMAIN)


def prop_enum(
    node: etree._Element,
    name: str,
    kind: type[E],
    *,
    nonzero: bool = False,
    required: bool = False,
) -> E | None:
    """An enum attribute; ``nonzero`` refuses the enum's first (zero) member."""
    value = prop(node, name)
    if value is None:
        if required:
            raise missing(node, name)
        return None
    try:
        member = kind(value)
    except ValueError:
        raise _invalid(node, name, value) from None
    if nonzero and member is next(iter(kind)):
        raise _invalid(node, name, value)
    return member


def prop_bool(node: etree._Element, name: str, *, required: bool = False) -> bool | None:
    """A yes/no attribute (virXMLPropTristateBool); None when absent."""
    return _tristate(node, name, ("yes", "no"), required)


def prop_switch(node: etree._Element, name: str) -> bool | None:
    """An on/off attribute (virXMLPropTristateSwitch); None when absent."""
    return _tristate(node, name, ("on", "off"), False)


def _tristate(
    node: etree._Element, name: str, words: tuple[str, str], required: bool
) -> bool | None:
    value = prop(node, name)
    if value is None:
        if required:
            raise missing(node, name)
        return None
    if value not in words:
        raise _invalid(node, name, value)
    return value == words[0]


def prop_uint(
    node: etree._Element,
    name: str,
    *,
    base: int = 10,
    nonzero: bool = False,
    required: bool = False,
) -> int | None:
    """An unsigned int attribute (virXMLPropUInt); None when absent."""
    value = prop(node, name)
    if value is None:
        if required:
            raise missing(node, name)
        return None
    if base == 0:
        # strtoul's automatic base: 0x for hexadecimal, a leading 0 for octal.
        stripped = value.strip().lstrip("+")
        if stripped[:2].lower() == "0x":
            base = 16
        elif len(stripped) > 1 and stripped[0] == "0":
            base = 8
        else:
            base = 10
    number = parse_c_unsigned(value, maximum=UINT_MAX, base=base)
    if number is None:
        raise _invalid(node, name, value, "Expected non-negative integer value")
    if nonzero and number == 0:
        raise xml_error(
            f"Invalid value for attribute '{name}' in element '{tag(node)}': Zero is not permitted",
            DOMAIN,
        )
    return number


def child(node: etree._Element, name: str) -> etree._Element | None:
    """The first child element called ``name`` (XPath ``./name``)."""
    for sub in node:
        if sub.tag == name:
            return sub
    return None


def children(node: etree._Element, name: str) -> list[etree._Element]:
    """Every child element called ``name``, in document order."""
    return [sub for sub in node if sub.tag == name]


def text_of(node: etree._Element | None) -> str | None:
    """XPath string() of an element: its text content, None when the element is
    absent or the text is empty (virXPathString returns NULL for "")."""
    if node is None:
        return None
    value = "".join(str(t) for t in node.itertext())
    return value or None


def child_text(node: etree._Element, name: str) -> str | None:
    """``string(./name)`` as virXPathString reads it."""
    return text_of(child(node, name))


def child_prop(node: etree._Element, name: str, attr: str) -> str | None:
    """``string(./name/@attr)``: the attribute of the first such child; None when empty."""
    sub = child(node, name)
    if sub is None:
        return None
    return prop(sub, attr) or None


def scaled_child(node: etree._Element | None, xpath: str, path: list[str]) -> int | None:
    """virParseScaledValue for the element at ``path`` under ``node`` (bytes by
    default, ``unit`` attribute honoured); None when absent."""
    target = node
    for name in path:
        if target is None:
            return None
        target = child(target, name)
    text = text_of(target)
    if target is None or text is None:
        return None
    number = parse_c_unsigned(text)
    if number is None:
        raise xml_error(f"Invalid value '{text}' for element or attribute '{xpath}'", DOMAIN)
    return scale_integer(number, prop(target, "unit"), limit=ULLONG_MAX)
