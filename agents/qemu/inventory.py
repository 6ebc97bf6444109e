"""A domain's disks as the inventory shows them: the domain XML's ``<disk>`` with the
backing chain the hypervisor runs and the ``<mirror>`` of a running job; and the
domain XML rewritten after a job changed a disk's chain.  Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence

from lxml import etree

from agents.qemu.disk_postparse import parse_qemu_disk
from agents.qemu.hypervisor import Layer, LiveDisk
from shared.conf.disk import format_disk, parse_disk
from shared.conf.disk_domain import domain_disk_elements, domain_root
from shared.conf.disk_mirror import DiskMirror
from shared.conf.disk_model import DiskDef
from shared.conf.disk_source import TERMINATOR, StorageSource
from shared.conf.xmlsafe import parse_xml
from shared.util.errors import ErrorDomain

#: A ``<disk>`` element in a document's text (disks never nest).
_DISK_TEXT = re.compile(r"<disk[\s>].*?</disk\s*>", re.S)


def chain_source(layers: Sequence[Layer], top: StorageSource | None = None) -> StorageSource:
    """The storage source of ``layers`` (active first) with its ``<backingStore>``
    chain, ending in the terminator, ``index=`` counting up from 1 at the bottom.
    ``top`` (the domain XML's source) is kept for the active layer when it names
    the same image, so that what QEMU does not report (auth, seclabels) survives."""
    below: StorageSource = TERMINATOR
    for depth, layer in enumerate(reversed(layers), start=1):
        source = layer.source
        if depth == len(layers) and top is not None and _same_image(top, source):
            source = top.model_copy(update={"format": source.format})
        below = source.model_copy(update={"index": depth, "backing_store": below})
    return below


def _same_image(a: StorageSource, b: StorageSource) -> bool:
    if a.type is not b.type:
        return False
    if a.path is not None or b.path is not None:
        return a.path == b.path
    return True


def live_disk(disk: DiskDef, live: LiveDisk | None, mirror: DiskMirror | None) -> DiskDef:
    """``disk`` (from the domain XML) with its live chain and ``mirror``."""
    if live is None:
        return disk.model_copy(update={"mirror": mirror})
    source = chain_source(live.chain, disk.source)
    if mirror is not None and mirror.source.index is None:
        numbered = mirror.source.model_copy(update={"index": len(live.chain) + 1})
        mirror = mirror.model_copy(update={"source": numbered})
    return disk.model_copy(update={"source": source, "mirror": mirror})


def domain_disks(xml: str | bytes) -> list[tuple[etree._Element, DiskDef]]:
    """Each ``<disk>`` of a domain document with its parsed live form; raises ``VirtError``."""
    root = domain_root(xml)
    return [(node, parse_qemu_disk(node, active=True)) for node in domain_disk_elements(root)]


def rewrite_disk(xml: str, alias: str, disk: DiskDef) -> str:
    """The domain document with the ``<disk>`` of ``alias`` replaced by ``disk`` (its
    live form, without the mirror).  The rest of the text is kept as it was (quotes,
    comments, indentation) when the disks can be found in it, else re-serialised."""
    root = domain_root(xml)
    nodes = domain_disk_elements(root)
    aliases = [parse_disk(node, active=True).info.alias for node in nodes]
    if alias not in aliases:
        return xml
    position = aliases.index(alias)
    text = format_disk(disk.model_copy(update={"mirror": None}), active=True).rstrip("\n")
    spans = list(_DISK_TEXT.finditer(xml))
    if len(spans) == len(nodes):
        start, end = spans[position].span()
        indent = xml[:start].rpartition("\n")[2]
        indent = indent if indent.isspace() else ""
        lines = text.split("\n")
        return (
            xml[:start] + "\n".join([lines[0], *(indent + line for line in lines[1:])]) + xml[end:]
        )
    node = nodes[position]
    new = parse_xml(text, "disk", domain=ErrorDomain.DOMAIN)
    new.tail = node.tail
    parent = node.getparent()
    assert parent is not None
    parent.replace(node, new)
    return etree.tostring(root, encoding="unicode") + "\n"


def source_for(disk: DiskDef, live: LiveDisk) -> DiskDef:
    """``disk`` as written in the domain XML after its chain changed to ``live``'s."""
    return disk.model_copy(update={"source": chain_source(live.chain, disk.source)})
