"""Writes XML the way libvirt's virBuffer does, shared by every format_<kind>.

libvirt's output has a fixed shape: two-space indentation, single-quoted
attributes in the order the formatter writes them, ``<a/>`` for an element
with no content, text elements on one line, and its own escaping (the five
XML specials as entities, other control characters dropped).  ``XmlWriter``
reproduces exactly that, so formatted documents compare byte for byte with
libvirt's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from types import TracebackType

Attrs = Iterable[tuple[str, object | None]]

_ESCAPES = {"<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;"}
# virBufferEscapeString drops these control characters; tab, LF and CR stay.
_DROPPED = "".join(chr(c) for c in range(0x01, 0x20) if chr(c) not in "\t\n\r")
# A reader turns a raw CR into LF (XML 1.0 section 2.11), so libvirt's output
# would not read back as it was written: CR is written as a reference.
_TEXT_ESCAPES = {**_ESCAPES, "\r": "&#13;"}
_NEEDS_ESCAPE = re.compile("[" + re.escape("".join(_TEXT_ESCAPES) + _DROPPED) + "]")
_TABLE = str.maketrans({**_TEXT_ESCAPES, **dict.fromkeys(_DROPPED)})


def escape(value: str) -> str:
    """Escape ``value`` for a text node as libvirt does (and CR kept)."""
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    return value.translate(_TABLE)


# In an attribute, a reader turns a raw tab, LF or CR into a space (XML 1.0
# section 3.3.3), so libvirt's output would not read back as it was written;
# these are written as character references instead.
_ATTR_ESCAPES = {**_TEXT_ESCAPES, "\t": "&#9;", "\n": "&#10;"}
_ATTR_NEEDS_ESCAPE = re.compile("[" + re.escape("".join(_ATTR_ESCAPES) + _DROPPED) + "]")
_ATTR_TABLE = str.maketrans({**_ATTR_ESCAPES, **dict.fromkeys(_DROPPED)})


def escape_attr(value: str) -> str:
    """Escape ``value`` for an attribute: as ``escape``, and whitespace other than
    the space kept through a character reference."""
    if _ATTR_NEEDS_ESCAPE.search(value) is None:
        return value
    return value.translate(_ATTR_TABLE)


_attr_unsafe = _ATTR_NEEDS_ESCAPE.search


def attrs_text(attrs: Attrs) -> str:
    """`` name='value'`` pairs in the given order; ``None`` values are left out."""
    out = ""
    for name, value in attrs:
        if value is None:
            continue
        # escape_attr inlined: most values are plain strings that need nothing
        text = value if isinstance(value, str) else _text(value)
        if _attr_unsafe(text) is not None:
            text = text.translate(_ATTR_TABLE)
        out += f" {name}='{text}'"
    return out


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


class XmlWriter:
    """An indenting line buffer with libvirt's element conventions."""

    __slots__ = ("_indent", "_lines", "_pad")

    def __init__(self, indent: int = 0) -> None:
        self._lines: list[str] = []
        self._indent = indent
        #: The indentation of the current level, made when the level changes.
        self._pad = "  " * indent

    @property
    def level(self) -> int:
        """The current indentation depth (two spaces a level)."""
        return self._indent

    @property
    def empty(self) -> bool:
        """True when nothing has been written yet."""
        return not self._lines

    def line(self, text: str) -> None:
        """Write one raw line at the current indentation."""
        self._lines.append(self._pad + text)

    def open(self, name: str, attrs: Attrs = ()) -> None:
        """Write ``<name ...>`` and indent what follows."""
        rendered = attrs_text(attrs) if attrs else ""
        self._lines.append(f"{self._pad}<{name}{rendered}>")
        self._indent += 1
        self._pad = "  " * self._indent

    def close(self, name: str) -> None:
        """Unindent and write ``</name>``."""
        self._indent -= 1
        self._pad = "  " * self._indent
        self._lines.append(f"{self._pad}</{name}>")

    def leaf(self, name: str, attrs: Attrs = ()) -> None:
        """Write a self-closing ``<name .../>``."""
        rendered = attrs_text(attrs) if attrs else ""
        self._lines.append(f"{self._pad}<{name}{rendered}/>")

    def text(self, name: str, value: object | None, attrs: Attrs = ()) -> None:
        """Write ``<name ...>value</name>`` on one line; nothing when value is None."""
        if value is None:
            return
        text = escape(value if isinstance(value, str) else _text(value))
        rendered = attrs_text(attrs) if attrs else ""
        self._lines.append(f"{self._pad}<{name}{rendered}>{text}</{name}>")

    def child(self) -> XmlWriter:
        """A writer for the content of an element about to be written at this level."""
        return XmlWriter(self._indent + 1)

    def extend(self, other: XmlWriter) -> None:
        """Append the lines another writer produced (its indentation kept)."""
        self._lines.extend(other._lines)

    def element(self, name: str, attrs: Attrs, content: XmlWriter) -> None:
        """libvirt's virXMLFormatElement: nothing if both are empty, ``<name/>``
        without content, else the element wrapped around ``content``."""
        rendered = attrs_text(attrs)
        if content._lines:
            self._lines.append(f"{self._pad}<{name}{rendered}>")
            self._lines.extend(content._lines)
            self._lines.append(f"{self._pad}</{name}>")
        elif rendered:
            self._lines.append(f"{self._pad}<{name}{rendered}/>")

    def block(self, name: str, attrs: Attrs = ()) -> _Block:
        """Write an element around whatever the body of the ``with`` writes into
        the writer it yields; self-closing when the body writes nothing, nothing
        at all when the body raises."""
        return _Block(self, name, attrs)

    def getvalue(self) -> str:
        """The document, one element per line, ending with a newline."""
        return "\n".join(self._lines) + "\n" if self._lines else ""


class _Block:
    """``XmlWriter.block``'s context (a class: a generator-based context manager
    costs three times as much, and formatters open one per nested element)."""

    __slots__ = ("_attrs", "_content", "_name", "_parent")

    def __init__(self, parent: XmlWriter, name: str, attrs: Attrs) -> None:
        self._parent, self._name, self._attrs = parent, name, attrs
        self._content = parent.child()

    def __enter__(self) -> XmlWriter:
        return self._content

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            return
        parent, name, lines = self._parent, self._name, self._content._lines
        rendered = attrs_text(self._attrs)
        if lines:
            parent._lines.append(f"{parent._pad}<{name}{rendered}>")
            parent._lines.extend(lines)
            parent._lines.append(f"{parent._pad}</{name}>")
        else:
            parent._lines.append(f"{parent._pad}<{name}{rendered}/>")
