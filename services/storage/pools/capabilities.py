"""The ``<storagepoolCapabilities>`` document (libvirt's virStoragePoolCapsFormat).

Every pool type is listed in libvirt's order, ``supported`` saying whether
this host has a backend for it, with the source formats (poolOptions) and
volume formats (volOptions) from the shared per-type table.
"""

from __future__ import annotations

from collections.abc import Collection

from shared.conf.storage_pool_types import POOL_TYPES, FormatSet, PoolType
from shared.conf.xmlwriter import XmlWriter

#: Types whose volume formats libvirt cannot enumerate: an empty enum is written.
_UNLISTED_VOLUME_FORMATS = frozenset({PoolType.RBD})


def _options(w: XmlWriter, element: str, enum_name: str, formats: FormatSet, listed: bool) -> None:
    w.open(element)
    w.leaf("defaultFormat", [("type", formats.default)])
    w.open("enum", [("name", enum_name)])
    if listed:
        for name in formats.names:
            w.text("value", name)
    w.close("enum")
    w.close(element)


def format_pool_capabilities(supported: Collection[PoolType]) -> str:
    """The capabilities document, marking the types in ``supported`` as supported."""
    w = XmlWriter()
    w.open("storagepoolCapabilities")
    for pool_type, info in POOL_TYPES.items():
        w.open("pool", [("type", pool_type.value), ("supported", pool_type in supported)])
        if info.pool_formats is not None:
            _options(w, "poolOptions", "sourceFormatType", info.pool_formats, True)
        if info.volume_formats is not None:
            listed = pool_type not in _UNLISTED_VOLUME_FORMATS
            _options(w, "volOptions", "targetFormatType", info.volume_formats, listed)
        w.close("pool")
    w.close("storagepoolCapabilities")
    return w.getvalue()
