"""The network filter kind: libvirt's ``<filter>`` XML (nwfilter_conf.c) <-> ``NWFilterDef``.

Rules and their protocol attributes live in ``nwfilter_rule`` (driven by the
table in ``nwfilter_protocols``), ``<filterref>`` and variables in
``nwfilter_params``.  One deliberate difference from libvirt: the filter name
and a referenced filter's name are escaped when written, where libvirt writes
them raw and so produces a broken document for a name holding ``'`` or ``&``.
"""

from __future__ import annotations

import string
from typing import Annotated

from lxml import etree
from pydantic import BaseModel, ConfigDict, Field

from shared.conf.nwfilter_params import FilterRef, format_filterref, parse_filterref
from shared.conf.nwfilter_rule import NWFilterRule, format_rule, parse_rule
from shared.conf.nwfilter_values import parse_int
from shared.conf.uuid import generate_uuid, parse_uuid
from shared.conf.xmlprops import first, local_name, string_of
from shared.conf.xmlsafe import parse_xml
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError, xml_error

_DOMAIN = ErrorDomain.NWFILTER

#: Chain names, in libvirt's order: ``root`` exactly, or a name starting with one
#: of the others (``mac``, ``arp-xyz``, ``ipv4_in``, ...).
CHAIN_PREFIXES = ("root", "mac", "vlan", "stp", "arp", "rarp", "ipv4", "ipv6")
#: The priority a chain gets when the filter gives none; other prefixes (stp) get 0.
CHAIN_PRIORITIES = {
    "root": 0,
    "mac": -800,
    "vlan": -750,
    "ipv4": -700,
    "ipv6": -600,
    "arp": -500,
    "rarp": -400,
}
MIN_FILTER_PRIORITY = -1000
MAX_FILTER_PRIORITY = 1000
#: Longest chain name: what is left of an ebtables chain name after "FO-",
#: the interface name and a separator.
MAX_CHAIN_SUFFIX_SIZE = 12
VALID_CHAINNAME = frozenset(string.ascii_letters + string.digits + "_.:-")

FilterEntry = Annotated[NWFilterRule | FilterRef, Field(discriminator="kind")]


class NWFilterDef(BaseModel):
    """What a ``<filter>`` document says.

    ``priority`` is the chain's priority; 0 is not written, so a filter whose
    chain has a non-zero default priority can never come back with 0.
    """

    model_config = ConfigDict(frozen=True, strict=True)

    name: str = Field(min_length=1)
    uuid: str
    #: False when the document had no ``<uuid>`` and parsing made one up
    #: (libvirt then saves the definition so that the UUID sticks).
    uuid_specified: bool = True
    chain: str = "root"
    priority: int = Field(default=0, ge=MIN_FILTER_PRIORITY, le=MAX_FILTER_PRIORITY)
    entries: tuple[FilterEntry, ...] = ()


def _invalid_arg(message: str) -> VirtError:
    return VirtError(ErrorCode.INVALID_ARG, message, _DOMAIN)


def chain_prefix(chain: str) -> str:
    """The prefix of CHAIN_PREFIXES that makes ``chain`` a valid chain name;
    raises ``VirtError`` (virNWFilterIsAllowedChain) when there is none."""
    if len(chain.encode()) > MAX_CHAIN_SUFFIX_SIZE:
        raise _invalid_arg(f"Name of chain is longer than {MAX_CHAIN_SUFFIX_SIZE} characters")
    if not VALID_CHAINNAME.issuperset(chain):
        raise _invalid_arg("Chain name contains invalid characters")
    if chain == "root":
        return chain
    # libvirt refuses a name merely starting with "root" without saying why;
    # we give it the same explanation as every other refused name.
    if not chain.startswith("root"):
        for prefix in CHAIN_PREFIXES[1:]:
            if chain.startswith(prefix):
                return prefix
    raise _invalid_arg(
        f"Invalid chain name '{chain}'. Please use a chain name called 'root' or any of "
        f"the following prefixes: {', '.join(CHAIN_PREFIXES[1:])}"
    )


def _parse_chain(root: etree._Element) -> tuple[str, int]:
    priority: int | None = None
    priority_text = root.get("priority") or None
    if priority_text is not None:
        priority = parse_int(priority_text)
        if priority is None:
            raise _invalid_arg(f"Could not parse chain priority '{priority_text}'")
        if not MIN_FILTER_PRIORITY <= priority <= MAX_FILTER_PRIORITY:
            raise _invalid_arg(
                f"Priority '{priority}' is outside valid range of "
                f"[{MIN_FILTER_PRIORITY},{MAX_FILTER_PRIORITY}]"
            )
    chain = root.get("chain") or None
    if chain is None:
        # Without a chain, libvirt checks the priority but does not keep it.
        return "root", 0
    prefix = chain_prefix(chain)
    if priority is None:
        priority = CHAIN_PRIORITIES.get(prefix, (MIN_FILTER_PRIORITY + MAX_FILTER_PRIORITY) // 2)
    return chain, priority


def _format_chain(chain: str, priority: int) -> list[tuple[str, object | None]]:
    return [("chain", chain), ("priority", str(priority) if priority else None)]


def _parse_uuid(root: etree._Element) -> tuple[str, bool]:
    """The filter's UUID, and whether the document gave it."""
    text = string_of(first(root, "uuid"))
    if text is None:
        return generate_uuid(), False
    uuid = parse_uuid(text)
    if uuid is None:
        raise xml_error("malformed uuid element", _DOMAIN)
    return uuid, True


def _parse_entries(root: etree._Element) -> tuple[NWFilterRule | FilterRef, ...]:
    entries: list[NWFilterRule | FilterRef] = []
    for child in root:
        if not isinstance(child.tag, str):
            continue
        name = local_name(child)
        if name == "rule":
            entries.append(parse_rule(child))
        elif name == "filterref":
            entries.append(parse_filterref(child))
    return tuple(entries)


def _format_entries(w: XmlWriter, entries: tuple[NWFilterRule | FilterRef, ...]) -> None:
    for entry in entries:
        if isinstance(entry, NWFilterRule):
            format_rule(w, entry)
        else:
            format_filterref(w, entry)


def parse_nwfilter(xml: str | bytes) -> NWFilterDef:
    """Parse a ``<filter>`` document; raises ``VirtError`` as libvirt would refuse it.

    A filter without a ``<uuid>`` gets a new random one, as in libvirt.
    """
    root = parse_xml(xml, domain=_DOMAIN)
    if local_name(root) != "filter":
        raise xml_error("unknown root element for nw filter", _DOMAIN)
    name = root.get("name")
    if not name:
        raise VirtError(ErrorCode.INTERNAL_ERROR, "filter has no name", _DOMAIN)
    chain, priority = _parse_chain(root)
    uuid, uuid_specified = _parse_uuid(root)
    return NWFilterDef(
        name=name,
        uuid=uuid,
        uuid_specified=uuid_specified,
        chain=chain,
        priority=priority,
        entries=_parse_entries(root),
    )


def format_nwfilter(nwfilter: NWFilterDef) -> str:
    """The ``<filter>`` document libvirt writes for ``nwfilter``."""
    w = XmlWriter()
    w.open("filter", [("name", nwfilter.name), *_format_chain(nwfilter.chain, nwfilter.priority)])
    w.text("uuid", nwfilter.uuid)
    _format_entries(w, nwfilter.entries)
    w.close("filter")
    return w.getvalue()
