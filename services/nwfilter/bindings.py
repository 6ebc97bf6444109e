"""The bindings of this host: records in the host's ledger, and what rules each one needs.

Key ``binding.<port token>`` of the host's ledger holds a ``BindingRecord``:
the binding's XML as libvirt writes it, the learned IP address, and how its
rules stand (applied, learning, failed).  A record that does not ``decode`` is
skipped (``Ledger.decode``): the service serves the others and leaves the
rules of its port as they are.  ``plan`` decides a binding's rules
from the current filter definitions: the filter with its variables, or,
while the guest's address is being learned, the waiting rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from services.nwfilter.learning import Learning, learning_mode, waiting_filter
from services.nwfilter.resolve import (
    VAR_IP,
    FilterLookup,
    RuleInst,
    binding_variables,
    instantiate,
    missing_variables,
    unresolvable,
)
from shared.api import nwfilter as api
from shared.conf.nwfilter import NWFilterDef
from shared.conf.nwfilter_binding import NWFilterBindingDef, parse_nwfilter_binding
from shared.conf.nwfilter_params import FilterRef
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.ledger import Event
from shared.util.subjects import token

PREFIX = "binding."
APPLIED, LEARNING, FAILED = "applied", "learning", "failed"
#: A port's name as a binding may use it: a Linux interface name (at most 15
#: bytes), narrowed to what firewall chain names and nft scripts take bare
#: (``I-<port>``), so no name can reach into another port's chains or the script.
_PORTDEV = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}")


def check_portdev(portdev: str) -> None:
    """Raise ``VIR_ERR_INVALID_ARG`` for a port name no guest interface can have."""
    if not _PORTDEV.fullmatch(portdev):
        raise VirtError(
            ErrorCode.INVALID_ARG,
            f"port dev name '{portdev}' is not a valid interface name",
            ErrorDomain.NWFILTER,
        )


def key(portdev: str) -> str:
    return PREFIX + token(portdev)


class BindingRecord(BaseModel):
    """A binding as stored on its host."""

    xml: str
    ip: str | None = None
    status: str = APPLIED
    rules: int = 0
    error: str | None = None

    @property
    def definition(self) -> NWFilterBindingDef:
        return parse_nwfilter_binding(self.xml)

    def info(self) -> api.BindingInfo:
        d = self.definition
        return api.BindingInfo(
            portdev=d.portdev,
            filter=d.filter,
            status=self.status,
            rules=self.rules,
            ip=self.ip,
            error=self.error,
        )


def decode(key_: str, data: bytes) -> BindingRecord:
    """The binding stored under ``key_``; raises when the record or its XML does
    not parse, or when it is another port's (``Ledger.decode`` skips it then)."""
    record = BindingRecord.model_validate_json(data)
    if key(record.definition.portdev) != key_:
        raise ValueError("the binding's port is not its key's")
    return record


@dataclass
class Plan:
    """The rules a binding gets now, and the filters they came from."""

    rules: list[RuleInst]
    filters: list[str]
    status: str
    learning: Learning | None = None


def plan(d: NWFilterBindingDef, ip: str | None, lookup: FilterLookup) -> Plan:
    """The binding's rules with the filters as they are; raises ``VirtError``
    (missing filter, unresolvable variables) as libvirt's instantiation does."""
    top = lookup(d.filter)
    if top is None:
        raise VirtError(
            ErrorCode.INTERNAL_ERROR,
            f"referenced filter '{d.filter}' is missing",
            ErrorDomain.NWFILTER,
        )
    inst = instantiate(top, binding_variables(d.parameters, d.mac, ip), lookup)
    missing = missing_variables(inst)
    if not missing:
        return Plan(inst.rules, inst.filters, APPLIED)
    mode = learning_mode(d.parameters)
    if missing != [VAR_IP] or mode is Learning.NONE:
        raise unresolvable(missing)
    waiting = waiting_filter(mode, d.parameters)
    rules = instantiate(waiting, binding_variables(d.parameters, d.mac), lookup).rules
    return Plan(rules, inst.filters, LEARNING, mode)


def reachable(name: str, lookup: FilterLookup) -> set[str]:
    """Every filter ``name`` reaches through references (missing ones included)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        d = lookup(current)
        if d is not None:
            todo += [e.filter for e in d.entries if isinstance(e, FilterRef)]
    return seen


def overlay(lookup: FilterLookup, new: NWFilterDef) -> Callable[[str], NWFilterDef | None]:
    """``lookup`` with ``new`` in place of the filter of the same name."""
    return lambda name: new if name == new.name else lookup(name)


def lifecycle(d: NWFilterBindingDef, detail: str) -> Event:
    return Event(api.BINDING_KIND, d.portdev, api.LIFECYCLE, detail, extra={"filter": d.filter})


def rules_event(d: NWFilterBindingDef, record: BindingRecord, backend: str) -> Event:
    detail = "Failed" if record.status == FAILED else "Applied"
    extra: dict[str, object] = {"filter": d.filter, "rules": record.rules, "backend": backend}
    extra["status"] = record.status
    if record.error:
        extra["error"] = record.error
    if record.ip:
        extra["ip"] = record.ip
    return Event(api.BINDING_KIND, d.portdev, api.RULES, detail, extra=extra)
