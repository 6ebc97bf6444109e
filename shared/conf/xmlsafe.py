"""Hardened XML parsing, the one entry point every kind in shared.conf parses through.

Untrusted documents arrive from users and over the bus, so the parser accepts
no DTD (and with it no entity definitions, internal or external), loads
nothing from the network or the file system, and bounds both the size of the
document and the depth of its nesting.  Every refusal is a ``VirtError`` with
``VIR_ERR_XML_ERROR`` and a message that says what was refused.
"""

from __future__ import annotations

import re
import threading

from lxml import etree

from shared.util.errors import ErrorDomain, xml_error

#: Largest XML document accepted, in bytes.  libvirt's own definitions are a
#: few kilobytes; a megabyte leaves room for the largest networks and filters.
MAX_XML_BYTES = 1024 * 1024
#: Deepest element nesting accepted (libxml2's own limit without XML_PARSE_HUGE
#: is 256; ours is tighter and reports clearly).
MAX_XML_DEPTH = 64

# True when some element lies deeper than the limit (one XPath evaluation in C).
_TOO_DEEP = etree.XPath("boolean(/*" + "/*" * MAX_XML_DEPTH + ")")
_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


#: One parser per thread (an lxml parser must not parse in two threads at
#: once), made on first use: making one costs as much as a third of a parse.
_PARSERS = threading.local()


def _parser() -> etree.XMLParser:
    parser: etree.XMLParser | None = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = _new_parser()
    return parser


def _new_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


def parse_xml(
    text: str | bytes,
    root: str | None = None,
    *,
    domain: ErrorDomain = ErrorDomain.XML,
    max_bytes: int = MAX_XML_BYTES,
) -> etree._Element:
    """Parse ``text`` safely and return its root element.

    ``root`` names the element the document must have at its root.  Raises
    ``VirtError`` (``VIR_ERR_XML_ERROR``) for an empty, oversized, malformed,
    DTD-carrying or too deeply nested document, or the wrong root element.
    """
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if len(data) > max_bytes:
        raise xml_error(
            f"document of {len(data)} bytes exceeds the limit of {max_bytes} bytes", domain
        )
    if not data.strip():
        raise xml_error("empty document", domain)
    if b"<!" in data and _DOCTYPE.search(data):
        raise xml_error("DTD and entity declarations are not allowed", domain)
    try:
        element = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as err:
        raise xml_error(f"malformed document: {err.msg}", domain) from err
    if element is None:  # pragma: no cover - lxml raises before this for empty input
        raise xml_error("empty document", domain)
    docinfo = element.getroottree().docinfo
    # The byte check above refuses a DTD before parsing only where "<!DOCTYPE"
    # is spelled in ASCII bytes; in UTF-16, UTF-32 or UTF-7 it is not.  Any
    # DOCTYPE, with or without an internal subset, leaves the parsed document
    # an internal subset node, and asking for it costs less than a byte search.
    # The byte check stays first: it refuses before libxml2 reads any subset,
    # and a malformed subset gets the DTD message rather than a parse error.
    # No entity can be declared without one, so no entity reference can be in
    # the tree either (an undeclared one is malformed).
    if docinfo.internalDTD is not None:
        raise xml_error("DTD and entity declarations are not allowed", domain)
    # The search below costs more than the rest of these checks together, and
    # most documents need none: in a document read as UTF-8 (no declaration,
    # or one naming UTF-8; a UTF-16 or UTF-32 one read by its byte order mark
    # has its "<" as this byte too) each start tag takes a "<" byte, so nesting
    # past the limit needs more "<" bytes than the limit.
    utf8 = str(docinfo.encoding).upper() == "UTF-8"
    if (not utf8 or data.count(b"<") > MAX_XML_DEPTH) and _TOO_DEEP(element):
        raise xml_error(f"elements nested deeper than {MAX_XML_DEPTH} levels", domain)
    if root is not None and element.tag != root:
        raise xml_error(f"expecting root element of '{root}', not '{element.tag}'", domain)
    return element
