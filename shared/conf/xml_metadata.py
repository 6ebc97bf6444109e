"""The ``<metadata>`` element: kept and written back the way libvirt keeps it (virxml.c).

libvirt copies the element out of the document (namespaces declared outside
it are re-declared on the copy), drops children without a namespace and
later children repeating an earlier child's namespace
(virXMLNodeSanitizeNamespaces), and writes it back with libxml2's
serializer: double-quoted attributes, namespace declarations first, two
spaces per level, elements holding text written as they came.  The parser
drops ignorable blanks the way libxml2's ``keepBlanks = 0`` heuristic does.
``MetadataXml`` is that element as text, written at indentation level 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from shared.conf.xmlsafe import parse_xml
from shared.conf.xmlwriter import XmlWriter

_XML_NS = "http://www.w3.org/XML/1998/namespace"
_BLANK = " \t\n\r"


@dataclass
class _Element:
    prefix: str | None
    name: str
    href: str | None
    nsdecls: list[tuple[str | None, str]] = field(default_factory=list)
    attrs: list[tuple[str, str]] = field(default_factory=list)
    children: list[_Element | str] = field(default_factory=list)

    @property
    def qname(self) -> str:
        return f"{self.prefix}:{self.name}" if self.prefix else self.name


def _own_nsdecls(node: etree._Element) -> list[tuple[str | None, str]]:
    parent = node.getparent()
    inherited = parent.nsmap if parent is not None else {}
    return [(p, uri) for p, uri in node.nsmap.items() if inherited.get(p) != uri]


def _content(node: etree._Element) -> list[etree._Element | str]:
    """The element's children with libxml2's ignorable blanks left out (areBlanks)."""
    items: list[etree._Element | str] = []
    segments: list[etree._Element | str] = [node.text] if node.text else []
    for sub in node:
        segments.append(sub)
        if sub.tail:
            segments.append(sub.tail)
    has_elements = len(node) > 0
    for seg in segments:
        if isinstance(seg, str):
            blank = all(c in _BLANK for c in seg)
            keep = (
                not blank
                or not has_elements
                or (bool(items) and isinstance(items[-1], str))
                or (bool(items) and isinstance(items[0], str))
            )
            if not keep:
                continue
            if items and isinstance(items[-1], str):
                items[-1] += seg
                continue
        items.append(seg)
    return items


class _Copier:
    """xmlCopyNode(node, 1): a detached copy whose out-of-scope namespaces are
    declared on the copy's root."""

    def __init__(self) -> None:
        self.root: _Element | None = None

    def _resolve(self, prefix: str | None, href: str, scope: list[_Element]) -> None:
        if prefix == "xml":
            return
        for elem in reversed(scope):
            if any(p == prefix for p, _ in elem.nsdecls):
                return
        assert self.root is not None
        self.root.nsdecls.append((prefix, href))

    def copy(self, node: etree._Element, scope: list[_Element]) -> _Element:
        qname = etree.QName(node)
        elem = _Element(prefix=node.prefix, name=qname.localname, href=qname.namespace)
        elem.nsdecls = _own_nsdecls(node)
        if self.root is None:
            self.root = elem
        scope = [*scope, elem]
        if elem.href is not None:
            self._resolve(elem.prefix, elem.href, scope)
        for key, value in node.attrib.items():
            attr = etree.QName(key)
            name = attr.localname
            if attr.namespace is not None:
                prefix = _attr_prefix(node, attr.namespace)
                if prefix is not None:
                    self._resolve(prefix, attr.namespace, scope)
                    name = f"{prefix}:{name}"
            elem.attrs.append((name, str(value)))
        for item in _content(node):
            elem.children.append(item if isinstance(item, str) else self.copy(item, scope))
        return elem


def _attr_prefix(node: etree._Element, href: str) -> str | None:
    if href == _XML_NS:
        return "xml"
    for prefix, uri in node.nsmap.items():
        if uri == href and prefix is not None:
            return prefix
    return None


def _sanitize(root: _Element) -> None:
    """virXMLNodeSanitizeNamespaces on the copy's direct children."""
    kept: list[_Element | str] = []
    for child in root.children:
        if isinstance(child, str) or child.href is None:
            continue
        if any(isinstance(k, _Element) and k.href == child.href for k in kept):
            continue
        kept.append(child)
    root.children = kept


def _char_ref(c: str) -> str:
    return f"&#x{ord(c):X};"


def _escape_text(text: str) -> str:
    out = []
    for c in text:
        if c == "<":
            out.append("&lt;")
        elif c == ">":
            out.append("&gt;")
        elif c == "&":
            out.append("&amp;")
        elif " " <= c < "\x80" or c in "\n\t":
            out.append(c)
        else:
            out.append(_char_ref(c))
    return "".join(out)


_ATTR_ESCAPES = {
    "<": "&lt;",
    ">": "&gt;",
    "&": "&amp;",
    '"': "&quot;",
    "\n": "&#10;",
    "\r": "&#13;",
    "\t": "&#9;",
}


def _escape_attr(value: str) -> str:
    return "".join(_ATTR_ESCAPES.get(c) or (_char_ref(c) if c >= "\x80" else c) for c in value)


def _quoted(href: str) -> str:
    if '"' not in href:
        return f'"{href}"'
    if "'" not in href:
        return f"'{href}'"
    return '"' + href.replace('"', "&quot;") + '"'


def _dump(elem: _Element, level: int, formatted: bool, is_root: bool, out: list[str]) -> None:
    """libxml2's xmlNodeDumpOutput with format=1 and xmlIndentTreeOutput=1."""
    if formatted and not is_root:
        out.append("  " * level)
    out.append(f"<{elem.qname}")
    for prefix, href in elem.nsdecls:
        out.append(f" xmlns:{prefix}={_quoted(href)}" if prefix else f" xmlns={_quoted(href)}")
    for name, value in elem.attrs:
        out.append(f' {name}="{_escape_attr(value)}"')
    if not elem.children:
        out.append("/>")
        return
    inner = formatted and not any(isinstance(c, str) for c in elem.children)
    out.append(">\n" if inner else ">")
    for child in elem.children:
        if isinstance(child, str):
            out.append(_escape_text(child))
        else:
            _dump(child, level + 1, inner, False, out)
        if inner:
            out.append("\n")
    if inner:
        out.append("  " * level)
    out.append(f"</{elem.qname}>")


def _serialize(node: etree._Element, level: int) -> str:
    copier = _Copier()
    root = copier.copy(node, [])
    _sanitize(root)
    out: list[str] = []
    _dump(root, level, True, True, out)
    return "".join(out)


def parse_metadata(node: etree._Element) -> str:
    """The ``<metadata>`` element as libvirt keeps it, written at level 0."""
    return _serialize(node, 0)


def canonical_metadata(text: str) -> str:
    """``text`` (a ``<metadata>`` element) as ``parse_metadata`` would keep it;
    raises ``VirtError`` when it is not such an element."""
    return parse_metadata(parse_xml(text, "metadata"))


def format_metadata(w: XmlWriter, metadata: str | None) -> None:
    """virXMLFormatMetadata: ``metadata`` re-indented for the writer's level."""
    if metadata is None:
        return
    w.line(_serialize(parse_xml(metadata, "metadata"), w.level))
