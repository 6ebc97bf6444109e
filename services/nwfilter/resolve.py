"""From a filter and its variables to the rules to instantiate (nwfilter_gentech_driver.c).

``instantiate`` walks a filter depth first: its own rules in document order,
and at each ``<filterref>`` the referenced filter's rules, with the reference's
parameters plus the inherited variables (an inherited variable wins over a
parameter of the same name, as in libvirt).  Each rule keeps the chain and
chain priority of the filter it came from.

``binding_variables`` gives a binding's variables the way libvirt builds them:
the binding's parameters, then ``MAC`` (the binding's address) and, when
known, ``IP`` (a learned address) on top.  ``missing_variables`` names what a
filter tree refers to but the variables lack, so that the caller can wait for
IP learning or refuse the binding with libvirt's error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.conf.nwfilter import NWFilterDef
from shared.conf.nwfilter_params import FilterRef
from shared.conf.nwfilter_rule import NWFilterRule
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

#: Filter name -> its definition, or None when there is no such filter.
FilterLookup = Callable[[str], NWFilterDef | None]
Variables = Mapping[str, Sequence[str]]

#: libvirt's standard variables.
VAR_MAC = "MAC"
VAR_IP = "IP"
#: Filters may nest; libvirt refuses loops at definition, this bounds a
#: definition set that was written around that check.
MAX_DEPTH = 64

_DOMAIN = ErrorDomain.NWFILTER


@dataclass(frozen=True)
class RuleInst:
    """One rule of the filter tree with what instantiating it needs."""

    rule: NWFilterRule
    filter: str
    chain: str
    chain_priority: int
    priority: int
    variables: Mapping[str, Sequence[str]]


@dataclass
class Instance:
    """A filter tree resolved for one binding: its rules, and every filter used."""

    rules: list[RuleInst] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)


def merge_variables(params: Variables, inherited: Variables) -> dict[str, tuple[str, ...]]:
    """virNWFilterCreateVarsFrom: ``params``, then ``inherited`` on top."""
    merged = {name: tuple(values) for name, values in params.items()}
    merged.update({name: tuple(values) for name, values in inherited.items()})
    return merged


def binding_variables(
    parameters: Variables, mac: str, ip: str | None = None
) -> dict[str, tuple[str, ...]]:
    """The variables a binding's filter starts with (virNWFilterCreateVarHashmap)."""
    standard = {VAR_MAC: (mac,)}
    if ip is not None:
        standard[VAR_IP] = (ip,)
    return merge_variables(parameters, standard)


def _missing_filter(name: str) -> VirtError:
    return VirtError(ErrorCode.INTERNAL_ERROR, f"referenced filter '{name}' is missing", _DOMAIN)


def instantiate(top: NWFilterDef, variables: Variables, lookup: FilterLookup) -> Instance:
    """The rules of ``top`` and of every filter it references, in instantiation order.

    Raises ``VirtError`` when a referenced filter is missing or references nest
    deeper than ``MAX_DEPTH`` (a loop).
    """
    inst = Instance()
    _walk(top, merge_variables({}, variables), lookup, inst, 0)
    return inst


def _walk(
    filt: NWFilterDef,
    variables: dict[str, tuple[str, ...]],
    lookup: FilterLookup,
    inst: Instance,
    depth: int,
) -> None:
    if depth > MAX_DEPTH:
        raise VirtError(ErrorCode.OPERATION_FAILED, "filter would introduce a loop", _DOMAIN)
    if filt.name not in inst.filters:
        inst.filters.append(filt.name)
    for entry in filt.entries:
        if isinstance(entry, FilterRef):
            child = lookup(entry.filter)
            if child is None:
                raise _missing_filter(entry.filter)
            _walk(child, merge_variables(entry.parameters, variables), lookup, inst, depth + 1)
            continue
        inst.rules.append(
            RuleInst(
                rule=entry,
                filter=filt.name,
                chain=filt.chain,
                chain_priority=filt.priority,
                priority=entry.priority,
                variables=variables,
            )
        )


def missing_variables(inst: Instance) -> list[str]:
    """Variables the rules refer to without a value, or whose element index is
    past the end of the list (virNWFilterDetermineMissingVarsRec), sorted."""
    missing: set[str] = set()
    for rule_inst in inst.rules:
        for access in rule_inst.rule.variables():
            values = rule_inst.variables.get(access.name)
            if values is None or (access.index is not None and access.index >= len(values)):
                missing.add(access.name if values is None else f"{access.name}[{access.index}]")
    return sorted(missing)


def unresolvable(missing: Sequence[str]) -> VirtError:
    """libvirt's error for variables nothing will provide."""
    return VirtError(
        ErrorCode.PARSE_FAILED,
        "Cannot instantiate filter due to unresolvable variables or unavailable "
        f"list elements: {', '.join(missing)}",
        _DOMAIN,
    )


def references(filt: NWFilterDef) -> list[str]:
    """The names of the filters ``filt`` references directly, in order."""
    return [entry.filter for entry in filt.entries if isinstance(entry, FilterRef)]


def would_loop(new: NWFilterDef, lookup: FilterLookup) -> bool:
    """virNWFilterObjListDefLoopDetect: whether defining ``new`` makes a filter
    reach itself through references (missing filters end a path)."""
    seen: set[str] = set()

    def reaches(filt: NWFilterDef) -> bool:
        for name in references(filt):
            if name == new.name:
                return True
            if name in seen:
                continue
            seen.add(name)
            child = lookup(name)
            if child is not None and reaches(child):
                return True
        return False

    return reaches(new)
