"""The filters that exist, cluster-wide, in the service's ledger.

Key ``filter.<name token>`` holds the filter's XML as libvirt writes it; a
record that does not parse is skipped (``Ledger.decode``), as if absent.
Every replica keeps all filters in memory from the ledger's watch; a define
or undefine is one ledger message carrying its event.  libvirt's rules hold:
a filter keeps its UUID when redefined, one UUID belongs to one name,
reference loops are refused, and a filter in use cannot be undefined (the
caller says what is in use, since bindings live on their hosts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

from services.nwfilter.resolve import would_loop
from services.nwfilter.stdfilters import standard_filters
from shared.api import nwfilter as api
from shared.conf.nwfilter import NWFilterDef, format_nwfilter, parse_nwfilter
from shared.conf.uuid import parse_uuid
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.ledger import Conflict, Event, Ledger, Record
from shared.util.state import backoff
from shared.util.subjects import token

_D = ErrorDomain.NWFILTER
_PREFIX = "filter."
_RETRIES = 60


def _key(name: str) -> str:
    return _PREFIX + token(name)


def _decode(key: str, data: bytes) -> NWFilterDef:
    """A stored filter; one stored under another name's key is malformed too."""
    d = parse_nwfilter(data)
    if _key(d.name) != key:
        raise ValueError("the filter's name is not its key's")
    return d


def lifecycle(d: NWFilterDef, detail: str) -> Event:
    return Event(api.FILTER_KIND, d.name, api.LIFECYCLE, detail, extra={"uuid": d.uuid})


def no_filter_name(name: str) -> VirtError:
    return VirtError(ErrorCode.NO_NWFILTER, f"no nwfilter with matching name '{name}'", _D)


def no_filter_uuid(uuid: str) -> VirtError:
    return VirtError(ErrorCode.NO_NWFILTER, f"no nwfilter with matching uuid '{uuid}'", _D)


class FilterRegistry:
    """Every operation on filter definitions."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._filters: dict[str, NWFilterDef] = {}
        self._listeners: list[Callable[[str, NWFilterDef | None, NWFilterDef | None], None]] = []
        for record in ledger.items(_PREFIX):
            self._on_change(record.key, record)
        ledger.on_change(self._on_change)

    def on_change(
        self, listener: Callable[[str, NWFilterDef | None, NWFilterDef | None], None]
    ) -> None:
        """Call ``listener(name, old, new)`` after a filter changed (None: absent)."""
        self._listeners.append(listener)

    def _on_change(self, key: str, record: Record | None) -> None:
        if not key.startswith(_PREFIX):
            return
        new = None if record is None else self._ledger.decode(record, partial(_decode, key))
        name = new.name if new is not None else self._name_of_key(key)
        if name is None:
            return
        old = self._filters.get(name)
        if new is None:
            self._filters.pop(name, None)
        else:
            self._filters[name] = new
        for listener in self._listeners:
            listener(name, old, new)

    def _name_of_key(self, key: str) -> str | None:
        return next((n for n in self._filters if _key(n) == key), None)

    # -- look-ups (memory) -----------------------------------------------------------

    def lookup(self, name: str) -> NWFilterDef | None:
        return self._filters.get(name)

    def all(self) -> list[NWFilterDef]:
        return sorted(self._filters.values(), key=lambda d: d.name)

    def get(self, name: str | None = None, uuid: str | None = None) -> NWFilterDef:
        """A filter by name or UUID; ``VIR_ERR_NO_NWFILTER`` when there is none."""
        if name is not None:
            found = self._filters.get(name)
            if found is None:
                raise no_filter_name(name)
            return found
        if uuid is None:
            raise VirtError(ErrorCode.INVALID_ARG, "a filter name or UUID is required", _D)
        wanted = parse_uuid(uuid) or uuid
        for d in self._filters.values():
            if d.uuid == wanted:
                return d
        raise no_filter_uuid(uuid)

    # -- changes -------------------------------------------------------------------

    async def _retry(self, attempt: Callable[[], Awaitable[NWFilterDef]], what: str) -> NWFilterDef:
        for n in range(_RETRIES):
            try:
                return await attempt()
            except Conflict:
                await asyncio.sleep(backoff(n))
        raise VirtError(ErrorCode.OPERATION_FAILED, f"nwfilter '{what}' kept changing", _D)

    def _check_define(self, new: NWFilterDef) -> NWFilterDef:
        """virNWFilterObjListAssignDef's checks; the definition to store."""
        for other in self._filters.values():
            if other.uuid == new.uuid and other.name != new.name and new.uuid_specified:
                raise VirtError(
                    ErrorCode.OPERATION_FAILED,
                    f"filter with same UUID but different name ('{other.name}') already exists",
                    _D,
                )
        old = self._filters.get(new.name)
        if old is not None:
            if new.uuid_specified and old.uuid != new.uuid:
                raise VirtError(
                    ErrorCode.OPERATION_FAILED,
                    f"filter '{new.name}' already exists with uuid {old.uuid}",
                    _D,
                )
            new = new.model_copy(update={"uuid": old.uuid, "uuid_specified": True})
        if would_loop(new, self.lookup):
            raise VirtError(ErrorCode.OPERATION_FAILED, "filter would introduce a loop", _D)
        return new.model_copy(update={"uuid_specified": True})

    async def define(
        self, new: NWFilterDef, check: Callable[[NWFilterDef], None] | None = None
    ) -> NWFilterDef:
        """Add or replace a filter (virNWFilterDefineXML).  ``check`` may refuse
        the new definition (bindings that could not be instantiated with it)."""

        async def attempt() -> NWFilterDef:
            stored = self._check_define(new)
            if check is not None:
                check(stored)
            await self._ledger.write(
                _key(stored.name),
                format_nwfilter(stored).encode(),
                [lifecycle(stored, "Defined")],
                what=f"nwfilter '{stored.name}'",
            )
            return stored

        return await self._retry(attempt, new.name)

    async def undefine(self, d: NWFilterDef, in_use: Callable[[str], bool]) -> NWFilterDef:
        """Remove a filter unless ``in_use(name)`` (virNWFilterUndefine)."""

        async def attempt() -> NWFilterDef:
            current = self._filters.get(d.name)
            if current is None:
                raise no_filter_name(d.name)
            if in_use(d.name):
                raise VirtError(ErrorCode.OPERATION_INVALID, "nwfilter is in use", _D)
            await self._ledger.write(
                _key(d.name), None, [lifecycle(current, "Undefined")], what=f"nwfilter '{d.name}'"
            )
            return current

        return await self._retry(attempt, d.name)

    async def install_standard(self) -> None:
        """Define the standard filters that do not exist yet, or whose record is
        malformed (``Ledger.decode``).  A filter a user already defined under a
        standard name is left alone."""
        for d in standard_filters():
            if d.name in self._filters:
                continue
            key = _key(d.name)
            try:
                await self._ledger.write(
                    key,
                    format_nwfilter(d).encode(),
                    [lifecycle(d, "Defined")],
                    expect=self._ledger.seq(key) if key in self._ledger.bad_keys else 0,
                    what=f"nwfilter '{d.name}'",
                )
            except Conflict:
                continue  # another replica installed it first
