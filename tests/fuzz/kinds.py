"""The fuzzed kinds: how each is parsed and formatted, and its seeds, read at run time
from the conformance folder (never copied into the project).

A seed is a document plus the context its kind needs (a volume's pool, a
network's format flags).  Fragments are kinds of their own: a ``<disk>`` as an
agent publishes it and the storage service reads it (live form), a ``<disk>`` in
its persistent form, and the ``--xml`` of ``blockcopy`` (only its source is used).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

from agents.qemu.disk_postparse import parse_qemu_disk
from shared.api.blockjob import destination_source
from shared.conf.disk import format_disk, parse_disk
from shared.conf.disk_domain import domain_disk_elements
from shared.conf.disk_model import DiskDef, DiskTarget
from shared.conf.disk_source import StorageSource
from shared.conf.network import NetworkXMLFlags, format_network, parse_network
from shared.conf.network_port import format_network_port, parse_network_port
from shared.conf.nwfilter import format_nwfilter, parse_nwfilter
from shared.conf.nwfilter_binding import format_nwfilter_binding, parse_nwfilter_binding
from shared.conf.secret import format_secret, parse_secret
from shared.conf.storage_pool import StoragePoolDef, format_storage_pool, parse_storage_pool
from shared.conf.storage_volume import VolParseFlags, format_storage_volume, parse_storage_volume
from shared.util.errors import VirtError

Context = Any


@dataclass(frozen=True)
class Seed:
    """One starting document of a kind, with the context it is parsed in."""

    kind: str
    name: str
    text: str
    context: Context = None


@dataclass(frozen=True)
class Kind:
    """A parse and a format function pair; ``parse`` raises only ``VirtError``."""

    name: str
    parse: Callable[[str, Context], object]
    format: Callable[[Any, Context], str]
    #: fields parse makes up when the document has none (a random UUID), left out
    #: when two models are compared
    generated: tuple[str, ...] = ()


def _vol_parse(text: str, ctx: Context) -> object:
    pool, flags = ctx
    return parse_storage_volume(text, pool, flags)


def _vol_format(vol: Any, ctx: Context) -> str:
    return format_storage_volume(ctx[0], vol)


def _blockcopy_format(src: Any, ctx: Context) -> str:
    """The destination as the ``--xml`` a client sends: a disk holding only it."""
    assert isinstance(src, StorageSource)
    return format_disk(DiskDef(source=src, target=DiskTarget(dev="vda")), active=True)


def _document(
    name: str,
    parse: Callable[[str], object],
    format_: Callable[[Any], str],
    generated: tuple[str, ...] = (),
) -> Kind:
    """A kind whose parse and format need no context."""
    return Kind(name, lambda t, c: parse(t), lambda m, c: format_(m), generated)


def _disk(name: str, *, active: bool) -> Kind:
    return _document(
        name,
        lambda t: parse_disk(t, active=active),
        lambda m: format_disk(m, active=active),
    )


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        _document("secret", parse_secret, format_secret),
        _document("storage-pool", parse_storage_pool, format_storage_pool, ("uuid",)),
        Kind("storage-volume", _vol_parse, _vol_format),
        Kind("network", lambda t, c: parse_network(t), format_network, ("uuid",)),
        _document("network-port", parse_network_port, format_network_port),
        _document("nwfilter", parse_nwfilter, format_nwfilter, ("uuid",)),
        _document("nwfilter-binding", parse_nwfilter_binding, format_nwfilter_binding),
        _disk("disk-live", active=True),
        _disk("disk-config", active=False),
        _document(
            "agent-disk",
            lambda t: parse_qemu_disk(t, active=True),
            lambda m: format_disk(m, active=True),
        ),
        Kind("blockcopy-xml", lambda t, c: destination_source(t), _blockcopy_format),
    ]
}

_VOL_FLAGS = {
    "VIR_VOL_XML_PARSE_NO_CAPACITY": VolParseFlags.NO_CAPACITY,
    "VIR_VOL_XML_PARSE_OPT_CAPACITY": VolParseFlags.OPT_CAPACITY,
}


def _manifest(folder: Path, suite: str) -> list[dict[str, Any]]:
    path = folder / suite / "cases.json"
    if not path.is_file():
        return []
    cases: list[dict[str, Any]] = json.loads(path.read_text())["cases"]
    return cases


def _read(folder: Path, suite: str, relative: str) -> str:
    return (folder / suite / relative).read_text()


def _documents(folder: Path, suites: list[str], *fields: str) -> Iterator[tuple[str, str]]:
    """(name, text) of every distinct input file named in ``fields`` of the suites."""
    seen: set[tuple[str, str]] = set()
    for suite in suites:
        for case in _manifest(folder, suite):
            for name in fields:
                relative = case.get(name)
                if isinstance(relative, str) and (suite, relative) not in seen:
                    seen.add((suite, relative))
                    yield f"{suite}/{relative}", _read(folder, suite, relative)


def _pool_seed(folder: Path, suite: str, relative: str) -> StoragePoolDef | None:
    try:
        return parse_storage_pool(_read(folder, suite, relative))
    except VirtError:
        return None


def _disk_fragments(text: str) -> list[str]:
    try:
        nodes = domain_disk_elements(text)
    except VirtError:
        return []
    out = []
    for node in nodes:
        copy = etree.fromstring(etree.tostring(node))
        copy.tail = None
        out.append(etree.tostring(copy, encoding="unicode"))
    return out


def load_seeds(folder: Path) -> list[Seed]:
    """Every kind's seeds from the conformance folder (empty when it is missing)."""
    seeds: list[Seed] = []

    def add(kind: str, suites: list[str], *fields: str, context: Context = None) -> None:
        for name, text in _documents(folder, suites, *fields):
            seeds.append(Seed(kind, name, text, context))

    add("secret", ["secretxml2xml"], "input")
    add("storage-pool", ["storagepoolxml2xml", "storagepoolxml2argv"], "input")
    add("storage-pool", ["storagevolxml2xml", "storagevolxml2argv"], "pool", "inputpool")
    add("network-port", ["networkportxml2xml"], "input")
    add("nwfilter", ["nwfilterxml2xml", "nwfilterxml2firewall"], "input")
    add("nwfilter-binding", ["nwfilterbindingxml2xml"], "input")
    for suite in ("networkxml2xml", "networkxml2conf", "networkxml2firewall"):
        for case in _manifest(folder, suite):
            flags = NetworkXMLFlags(0)
            for flag in case.get("format_flags") or []:
                flags |= NetworkXMLFlags[flag.removeprefix("VIR_NETWORK_XML_")]
            text = _read(folder, suite, case["input"])
            seeds.append(Seed("network", f"{suite}/{case['input']}", text, flags))
    for suite in ("storagevolxml2xml", "storagevolxml2argv"):
        for case in _manifest(folder, suite):
            pool = _pool_seed(folder, suite, case["pool"])
            if pool is None:
                continue
            vol_flags = VolParseFlags.NONE
            for flag in case.get("parse_flags") or []:
                vol_flags |= _VOL_FLAGS[flag]
            text = _read(folder, suite, case["input"])
            context = (pool, vol_flags)
            seeds.append(Seed("storage-volume", f"{suite}/{case['input']}", text, context))
    fragments: dict[str, str] = {}
    for name, text in _documents(folder, ["domaindisks"], "input"):
        for number, fragment in enumerate(_disk_fragments(text), start=1):
            fragments.setdefault(fragment, f"{name}#disk{number}")
    for fragment, name in fragments.items():
        seeds.append(Seed("disk-live", name, fragment))
        seeds.append(Seed("disk-config", name, fragment))
        seeds.append(Seed("agent-disk", name, fragment))
        seeds.append(Seed("blockcopy-xml", name, fragment))
    return seeds
