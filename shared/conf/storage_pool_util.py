"""Pieces pool and volume XML share: libvirt's XPath/attribute reading rules, path
sanitising, and ``<permissions>`` (virStorageDefParsePerms and its formatter)."""

from __future__ import annotations

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.units import LLONG_MAX, UINT_MAX, parse_c_signed
from shared.conf.xmlprops import first, first_children, string_of
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorDomain, xml_error

STORAGE = ErrorDomain.STORAGE
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def child_text(node: etree._Element | None, path: str) -> str | None:
    """``string(./path)`` of ``node`` (first match), None when absent or empty."""
    if node is None:
        return None
    return string_of(first(node, path))


def child_attr(node: etree._Element | None, path: str, name: str) -> str | None:
    """``string(./path/@name)`` of ``node``: the attribute of the first ``path``
    match that has it, None when there is none or it is empty."""
    if node is None:
        return None
    for found in node.iterchildren(path) if "/" not in path else node.iterfind(path):
        value = found.get(name)
        if value is not None:
            return value or None
    return None


def prop_int(node: etree._Element, name: str) -> int | None:
    """A signed int attribute, base 10 (virXMLPropInt); None when absent."""
    value = node.get(name)
    if value is None:
        return None
    number = parse_c_signed(value, minimum=INT_MIN, maximum=INT_MAX)
    if number is None:
        raise xml_error(
            f"Invalid value for attribute '{name}' in element '{node.tag}': '{value}'. "
            "Expected integer value",
            ErrorDomain.XML,
        )
    return number


def sanitize_path(path: str) -> str:
    """virFileSanitizePath: drop repeated and trailing slashes, keep a leading "//"
    (valid POSIX) and leave URIs alone."""
    if "//" not in path and (len(path) < 2 or path[-1] != "/"):
        return path  # nothing to drop: the common case, without the scan below
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


def _parse_id(found: etree._Element | None, name: str) -> int | None:
    if found is None:
        return None
    text = string_of(found)
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
    children = first_children(node)
    mode: int | None = None
    mode_text = string_of(children.get("mode"))
    if mode_text is not None:
        mode = parse_c_signed(mode_text, minimum=INT_MIN, maximum=INT_MAX, base=8)
        if mode is None or mode & ~0o777:
            raise xml_error("malformed octal mode", STORAGE)
    return Permissions(
        mode=mode,
        owner=_parse_id(children.get("owner"), "owner"),
        group=_parse_id(children.get("group"), "group"),
        label=string_of(children.get("label")),
    )


def format_permissions(w: XmlWriter, perms: Permissions | None) -> None:
    """``<permissions>`` with whatever is set; nothing when nothing is."""
    if perms is None or perms.empty:
        return
    w.open("permissions")
    if perms.mode is not None:
        w.line(f"<mode>0{perms.mode:o}</mode>")
    if perms.owner is not None:
        # libvirt prints ids through an (int) cast, so that one past INT_MAX comes
        # out negative and is refused when read back; written unsigned here
        w.line(f"<owner>{perms.owner}</owner>")
    if perms.group is not None:
        w.line(f"<group>{perms.group}</group>")
    w.text("label", perms.label)
    w.close("permissions")
