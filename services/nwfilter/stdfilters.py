"""The standard filters users expect by name (clean-traffic and its parts, ...).

They carry libvirt's names and behaviour; the XML is this project's own, one
file per filter in ``standard/``.  Their UUIDs are derived from the name,
so that every host installs the same definition.
"""

from __future__ import annotations

import uuid
from importlib import resources

from shared.conf.nwfilter import NWFilterDef, parse_nwfilter

#: Namespace of the standard filters' name-based UUIDs.
_NAMESPACE = uuid.UUID("6f1c3a52-2d0e-4c55-9a43-8e0b7c0f51d3")


def standard_filters() -> list[NWFilterDef]:
    """Every standard filter, sorted by name."""
    folder = resources.files(__package__).joinpath("standard")
    filters = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".xml"):
            continue
        parsed = parse_nwfilter(entry.read_text(encoding="utf-8"))
        filters.append(parsed.model_copy(update={"uuid": str(uuid.uuid5(_NAMESPACE, parsed.name))}))
    return filters
