"""Pieces pool and volume XML share: libvirt's XPath/attribute reading rules, path
sanitising, and ``<permissions>`` (virStorageDefParsePerms and its formatter)."""

from __future__ import annotations

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.units import LLONG_MAX, UINT_MAX, parse_c_signed, parse_c_unsigned
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorDomain, xml_error

STORAGE = ErrorDomain.STORAGE
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def text_of(node: etree._Element | None) -> str | None:
    """XPath ``string(node)`` as virXPathString returns it: None when absent or empty."""
    if node is None:
        return None
    text = "".join(str(t) for t in node.itertext())
    return text or None


def child_text(node: etree._Element | None, path: str) -> str | None:
    """``string(./path)`` of ``node`` (first match), None when absent or empty."""
    if node is None:
        return None
    return text_of(node.find(path))


def child_attr(node: etree._Element | None, path: str, name: str) -> str | None:
    """``string(./path/@name)`` of ``node``: the attribute of the first ``path``
    match that has it, None when there is none or it is empty."""
    if node is None:
        return None
    for found in node.iterfind(path):
        value = found.get(name)
        if value is not None:
            return value or None
    return None


def _invalid(node: etree._Element, name: str, value: str, expected: str = "") -> Exception:
    return xml_error(
        f"Invalid value for attribute '{name}' in element '{node.tag}': '{value}'.{expected}",
        ErrorDomain.XML,
    )


def prop_tristate_bool(node: etree._Element | None, name: str) -> bool | None:
    """A yes/no attribute (virXMLPropTristateBool); None when absent."""
    if node is None:
        return None
    value = node.get(name)
    if value is None:
        return None
    if value not in ("yes", "no"):
        raise _invalid(node, name, value)
    return value == "yes"


def prop_int(node: etree._Element, name: str) -> int | None:
    """A signed int attribute, base 10 (virXMLPropInt); None when absent."""
    value = node.get(name)
    if value is None:
        return None
    number = parse_c_signed(value, minimum=INT_MIN, maximum=INT_MAX)
    if number is None:
        raise _invalid(node, name, value, " Expected integer value")
    return number


def prop_uint_auto(node: etree._Element, name: str) -> int | None:
    """An unsigned int attribute read with base 0 (0x hex, 0 octal; virXMLPropUInt)."""
    value = node.get(name)
    if value is None:
        return None
    stripped = value.lstrip(" \t\n\v\f\r").removeprefix("+")
    if stripped[:2].lower() == "0x":
        number = parse_c_unsigned(stripped[2:], maximum=UINT_MAX, base=16)
    elif stripped.startswith("0") and len(stripped) > 1:
        number = parse_c_unsigned(stripped[1:], maximum=UINT_MAX, base=8)
    else:
        number = parse_c_unsigned(stripped, maximum=UINT_MAX)
    if number is None or stripped[:3].lower() == "0x+":
        raise _invalid(node, name, value, " Expected non-negative integer value")
    return number


def sanitize_path(path: str) -> str:
    """virFileSanitizePath: drop repeated and trailing slashes, keep a leading "//"
    (valid POSIX) and leave URIs alone."""
    uri_at = path.find("://")
    if uri_at >= 0 and path.find("/") > uri_at:
        return path
    out: list[str] = []
    i = 0
    if path.startswith("//") and path[2:3] != "/":
        out.append("//")
        i = 2
    while i < len(path):
        if path[i] != "/":
            out.append(path[i])
            i += 1
            continue
        while i < len(path) and path[i] == "/":
            i += 1
        if out and i == len(path):
            break
        out.append("/")
    return "".join(out)


class Permissions(BaseModel):
    """``<permissions>``: octal mode, numeric owner and group, security label.

    None means "not given" (libvirt's -1); uid/gid 4294967295 reads back as
    not given, the way libvirt's (uid_t)-1 does.
    """

    model_config = ConfigDict(frozen=True)

    mode: int | None = None
    owner: int | None = None
    group: int | None = None
    label: str | None = None

    @property
    def empty(self) -> bool:
        """True when nothing would be written."""
        return (
            self.mode is None and self.owner is None and self.group is None and self.label is None
        )


def _parse_id(node: etree._Element, name: str) -> int | None:
    if node.find(name) is None:
        return None
    text = child_text(node, name)
    value = (
        None if text is None else parse_c_signed(text, minimum=-LLONG_MAX - 1, maximum=LLONG_MAX)
    )
    # libvirt earlier wrote -1 for "unset", so it still reads it.
    if value is None or not (value == -1 or 0 <= value <= UINT_MAX):
        raise xml_error(f"malformed {name} element", STORAGE)
    return None if value in (-1, UINT_MAX) else value


def parse_permissions(node: etree._Element | None) -> Permissions:
    """Parse a ``<permissions>`` element; an absent element means no permissions."""
    if node is None:
        return Permissions()
    mode: int | None = None
    mode_text = child_text(node, "mode")
    if mode_text is not None:
        mode = parse_c_signed(mode_text, minimum=INT_MIN, maximum=INT_MAX, base=8)
        if mode is None or mode & ~0o777:
            raise xml_error("malformed octal mode", STORAGE)
    return Permissions(
        mode=mode,
        owner=_parse_id(node, "owner"),
        group=_parse_id(node, "group"),
        label=child_text(node, "label"),
    )


def _c_int(value: int) -> int:
    # libvirt prints uid/gid through an (int) cast.
    return value - 2**32 if value > INT_MAX else value


def format_permissions(w: XmlWriter, perms: Permissions | None) -> None:
    """``<permissions>`` with whatever is set; nothing when nothing is."""
    if perms is None or perms.empty:
        return
    w.open("permissions")
    if perms.mode is not None:
        w.line(f"<mode>0{perms.mode:o}</mode>")
    if perms.owner is not None:
        w.line(f"<owner>{_c_int(perms.owner)}</owner>")
    if perms.group is not None:
        w.line(f"<group>{_c_int(perms.group)}</group>")
    w.text("label", perms.label)
    w.close("permissions")
