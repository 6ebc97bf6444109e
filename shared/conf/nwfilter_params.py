"""Filter variables and parameters (nwfilter_params.c): ``$VAR[...]`` and ``<filterref>``."""

from __future__ import annotations

import string
from typing import Literal

from lxml import etree
from pydantic import BaseModel, ConfigDict, Field

from shared.conf.nwfilter_values import parse_uint_prefix
from shared.conf.xmlprops import local_name
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

VALID_VARNAME = frozenset(string.ascii_letters + string.digits + "_")
VALID_VARVALUE = VALID_VARNAME | frozenset(".:")
#: Largest iterator id in ``$VAR[@id]``.
MAX_ITERID = 1000

_C_SPACE = " \t\n\v\f\r"
_DOMAIN = ErrorDomain.NWFILTER


class VarAccess(BaseModel):
    """A reference to a filter variable in a rule attribute.

    ``$NAME`` and ``$NAME[@N]`` iterate over the variable's values (``iterator``
    N, 0 by default); ``$NAME[N]`` takes its N-th value (``index``).
    """

    model_config = ConfigDict(frozen=True, strict=True)

    name: str
    index: int | None = Field(default=None, ge=0, le=0xFFFFFFFF)
    iterator: int = Field(default=0, ge=0, le=MAX_ITERID)


def _invalid_arg(message: str) -> VirtError:
    return VirtError(ErrorCode.INVALID_ARG, message, _DOMAIN)


def parse_var_access(text: str) -> VarAccess:
    """virNWFilterVarAccessParse of what follows the ``$``; raises ``VirtError``.

    As in libvirt, blanks are allowed around the number inside the brackets and
    anything after the closing bracket is ignored.
    """
    end = 0
    while end < len(text) and text[end] in VALID_VARNAME:
        end += 1
    name = text[:end]
    if end == len(text):
        return VarAccess(name=name)
    if text[end] != "[":
        raise _invalid_arg("Malformatted variable")
    rest = text[end + 1 :].lstrip(_C_SPACE)
    is_iterator = rest.startswith("@")
    if is_iterator:
        rest = rest[1:]
    parsed = parse_uint_prefix(rest, 10)
    if parsed is None or not rest[parsed[1] :].lstrip(_C_SPACE).startswith("]"):
        raise _invalid_arg(
            "Malformatted iterator id" if is_iterator else "Malformatted array index"
        )
    number = parsed[0]
    if not is_iterator:
        return VarAccess(name=name, index=number)
    if number > MAX_ITERID:
        raise _invalid_arg(f"Iterator ID exceeds maximum ID of {MAX_ITERID}")
    return VarAccess(name=name, iterator=number)


def format_var_access(access: VarAccess) -> str:
    """virNWFilterVarAccessPrint, without the leading ``$``."""
    if access.index is not None:
        return f"{access.name}[{access.index}]"
    if access.iterator:
        return f"{access.name}[@{access.iterator}]"
    return access.name


def is_valid_var_name(name: str) -> bool:
    """Only letters, digits and ``_`` (an empty name is valid, as in libvirt)."""
    return VALID_VARNAME.issuperset(name)


def is_valid_var_value(value: str) -> bool:
    """Non-empty, only letters, digits, ``_``, ``.`` and ``:``."""
    return bool(value) and VALID_VARVALUE.issuperset(value)


class FilterRef(BaseModel):
    """``<filterref filter=...>``: a reference to another filter with parameters.

    ``parameters`` maps a variable name to its values in document order; a
    variable given several times is a list.  libvirt keeps them in a hash
    table, so they are written sorted by name.
    """

    model_config = ConfigDict(frozen=True, strict=True)

    kind: Literal["filterref"] = "filterref"
    filter: str
    parameters: dict[str, tuple[str, ...]] = Field(default_factory=dict)


def parse_parameters(node: etree._Element) -> dict[str, tuple[str, ...]]:
    """virNWFilterParseParamAttributes: the ``<parameter>`` children of ``node``.

    A parameter without a name or value, or with characters libvirt does not
    allow in either, is skipped without an error, as libvirt does.
    """
    table: dict[str, list[str]] = {}
    for child in node:
        if not isinstance(child.tag, str) or local_name(child) != "parameter":
            continue
        name, value = child.get("name"), child.get("value")
        if name is None or value is None:
            continue
        if not is_valid_var_name(name) or not is_valid_var_value(value):
            continue
        table.setdefault(name, []).append(value)
    return {name: tuple(values) for name, values in table.items()}


def format_parameters(
    w: XmlWriter, filter_name: str, parameters: dict[str, tuple[str, ...]]
) -> None:
    """virNWFilterFormatParamAttributes: ``<filterref>`` with its parameters, by name."""
    with w.block("filterref", [("filter", filter_name)]) as ref:
        for name in sorted(parameters):
            for value in parameters[name]:
                ref.leaf("parameter", [("name", name), ("value", value)])


def parse_filterref(node: etree._Element) -> FilterRef:
    """virNWFilterIncludeParse: a ``<filterref>`` inside a ``<filter>``."""
    name = node.get("filter")
    if name is None:
        # libvirt reports a missing filter name with the rule's wording.
        raise VirtError(ErrorCode.INTERNAL_ERROR, "rule node requires action attribute", _DOMAIN)
    return FilterRef(filter=name, parameters=parse_parameters(node))


def format_filterref(w: XmlWriter, ref: FilterRef) -> None:
    """The ``<filterref>`` element of a filter entry."""
    format_parameters(w, ref.filter, ref.parameters)
