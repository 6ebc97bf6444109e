"""Element and attribute readers with libvirt's virxml.c semantics, for any kind.

libvirt reads a document two ways, and the difference shows in edge cases:

* XPath (``virXPathString("string(./x[1]/@y)")``, ``virXPathNode("./x")``) only
  matches elements without a namespace, and turns an empty string into
  "absent";
* node helpers (``virXMLPropString``, ``virXMLNodeGetSubelement``) match
  elements by local name whatever their namespace, and keep an empty
  attribute as the empty string.

The typed attribute readers (``virXMLPropEnum``, ``virXMLPropUInt``...) raise
``VirtError`` with virxml.c's own wording, in its error domain
(``VIR_FROM_XML``).  Numbers follow the C library's ``strtoul`` as wrapped by
libvirt's ``virStrToLong_*`` family (blanks and sign accepted, base 0 reads
``0x``/``0`` prefixes, the ``p`` variants refuse a minus sign).
Sizes with a ``unit`` attribute follow ``virParseScaledValue``.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from typing import TypeVar, cast

from lxml import etree

# c_unsigned (libvirt's virStrToLong_u*) is the readers' number model; re-exported.
from shared.conf.units import c_unsigned as c_unsigned
from shared.conf.units import scale_integer
from shared.util.errors import ErrorDomain, VirtError, xml_error

E = TypeVar("E", bound=enum.StrEnum)

Node = etree._Element

UINT_MAX = 2**32 - 1
ULONG_MAX = 2**64 - 1
LONG_MAX = 2**63 - 1


def local_name(node: Node) -> str:
    """The element's name without namespace, as libvirt's ``node->name``."""
    return str(node.tag).rpartition("}")[2]


def first(node: Node | None, name: str) -> Node | None:
    """XPath ``(./name)[1]``: the first child element ``name`` without a namespace;
    ``name`` may be a path (``target/path``): the first match in document order."""
    if node is None:
        return None
    # lxml's tag filter (a bare name matches no namespaced element) runs in C;
    # ElementPath's find() does the same walk at twice the cost
    if "/" not in name:
        return next(node.iterchildren(name), None)
    head, _, rest = name.partition("/")
    for sub in node.iterchildren(head):
        found = first(sub, rest)
        if found is not None:
            return found
    return None


def first_children(node: Node) -> dict[str, Node]:
    """``first(node, name)`` for every name at once, from one walk of the children:
    each name's first child element (a namespaced one is keyed ``{uri}name``, so
    a bare name never finds it, as with ``first``).  For an element whose
    children a parser looks up one by one: a look-up here costs a tenth of
    ``first``'s, which matches names anew on each call."""
    return {child.tag: child for child in reversed(node)}


def every(node: Node, name: str) -> list[Node]:
    """XPath ``./name``: every child element ``name`` without a namespace."""
    return list(node.iterchildren(name))


def sub_element(node: Node, name: str) -> Node | None:
    """virXMLNodeGetSubelement: the first child whose local name is ``name``."""
    return next(node.iterchildren("{*}" + name), None)


def sub_elements(node: Node, name: str) -> list[Node]:
    """virXMLNodeGetSubelementList: every child whose local name is ``name``."""
    return list(node.iterchildren("{*}" + name))


def content(node: Node) -> str:
    """xmlNodeGetContent: the concatenated text of the element and its descendants."""
    if not len(node):  # a leaf (the parser keeps no comments): its own text only
        return node.text or ""
    return "".join(str(text) for text in node.itertext())


def string_of(node: Node | None) -> str | None:
    """XPath ``string(node)``: the element's text, None when absent or empty."""
    if node is None:
        return None
    if not len(node):  # a leaf: content() without the call
        return node.text or None
    return content(node) or None


def xpath_attr(node: Node | None, name: str) -> str | None:
    """XPath ``string(./@name)``: the attribute, None when absent or empty."""
    if node is None:
        return None
    return node.get(name) or None


def prop(node: Node | None, name: str) -> str | None:
    """virXMLPropString: the attribute as written ("" kept), None when absent."""
    if node is None:
        return None
    return node.get(name)


def missing_attr(node: Node, name: str) -> VirtError:
    """virxml.c's refusal of a required attribute that is absent."""
    return xml_error(
        f"Missing required attribute '{name}' in element '{local_name(node)}'", ErrorDomain.XML
    )


def prop_required(node: Node, name: str) -> str:
    """virXMLPropStringRequired."""
    value = prop(node, name)
    if value is None:
        raise missing_attr(node, name)
    return value


def _present(node: Node | None, name: str, required: bool) -> str | None:
    """The attribute's value; a missing one is refused when ``required``."""
    if node is None:
        return None
    value = node.get(name)
    if value is None and required:
        raise missing_attr(node, name)
    return value


def _invalid(node: Node, name: str, value: str, expected: str | None = None) -> VirtError:
    detail = f"Invalid value for attribute '{name}' in element '{local_name(node)}': '{value}'."
    if expected:
        detail += f" {expected}"
    return xml_error(detail, ErrorDomain.XML)


def _zero(node: Node, name: str) -> VirtError:
    return xml_error(
        f"Invalid value for attribute '{name}' in element '{local_name(node)}': "
        "Zero is not permitted",
        ErrorDomain.XML,
    )


def prop_enum(
    node: Node | None,
    name: str,
    kind: type[E],
    *,
    nonzero: bool = False,
    required: bool = False,
) -> E | None:
    """virXMLPropEnum over a StrEnum whose first member is libvirt's zero value;
    ``nonzero`` refuses that member.  None when the attribute is absent."""
    value = _present(node, name, required)
    if node is None or value is None:
        return None
    member = member_of(kind, value)
    if member is None or (nonzero and member is _members(kind)[0]):
        raise _invalid(node, name, value)
    return member


def member_of(kind: type[E], value: str) -> E | None:
    """The member of ``kind`` whose value is ``value``, None when there is none:
    ``kind(value)`` without the exception, at a tenth of its cost."""
    return cast("E | None", _members(kind)[1].get(value))


@functools.cache
def _members(kind: type[enum.StrEnum]) -> tuple[enum.StrEnum, dict[str, enum.StrEnum]]:
    """The first member of ``kind`` (libvirt's zero value) and its members by value."""
    return next(iter(kind)), {member.value: member for member in kind}


def prop_tristate(node: Node | None, name: str, *, required: bool = False) -> bool | None:
    """virXMLPropTristateBool: ``yes``/``no`` as True/False, None when absent."""
    return _prop_words(node, name, ("yes", "no"), required)


def prop_switch(node: Node | None, name: str, *, required: bool = False) -> bool | None:
    """virXMLPropTristateSwitch: ``on``/``off`` as True/False, None when absent."""
    return _prop_words(node, name, ("on", "off"), required)


def _prop_words(
    node: Node | None, name: str, words: tuple[str, str], required: bool
) -> bool | None:
    value = _present(node, name, required)
    if node is None or value is None:
        return None
    if value not in words:
        raise _invalid(node, name, value)
    return value == words[0]


def prop_uint(
    node: Node | None,
    name: str,
    *,
    base: int = 10,
    nonzero: bool = False,
    required: bool = False,
    limit: int = UINT_MAX,
) -> int | None:
    """virXMLPropUInt (``limit`` ULONG_MAX: virXMLPropULongLong): a non-negative
    integer, None when absent."""
    value = _present(node, name, required)
    if node is None or value is None:
        return None
    number = c_unsigned(value, base=base, limit=limit, positive=True)
    if number is None:
        raise _invalid(node, name, value, "Expected non-negative integer value")
    if nonzero and number == 0:
        raise _zero(node, name)
    return number


def scaled_value(
    node: Node | None, path: Sequence[str], xpath: str, *, limit: int = ULONG_MAX
) -> int | None:
    """virParseScaledValue of an optional value: the text of the element reached by
    following ``path`` down from ``node``, in bytes unless its ``unit`` attribute
    says otherwise; None when that element is absent or its text empty.

    ``xpath`` is the path as libvirt's caller spells it, quoted in the refusal of
    text that is not a non-negative decimal integer.  Raises ``VirtError``
    (``VIR_ERR_XML_ERROR`` from virxml.c, or virScaleInteger's unit and overflow
    errors, see ``shared.conf.units.scale_integer``).
    """
    target = node
    for name in path:
        target = first(target, name)
    text = string_of(target)
    if target is None or text is None:
        return None
    number = c_unsigned(text, limit=ULONG_MAX, positive=True)
    if number is None:
        raise xml_error(
            f"Invalid value '{text}' for element or attribute '{xpath}'", ErrorDomain.XML
        )
    return scale_integer(number, prop(target, "unit"), limit=limit)
