"""A disk's ``<mirror>``: the destination of a running block copy or active commit
(domain_conf.c virDomainDiskDefMirrorParse / virDomainDiskDefFormatMirror).

Two input forms exist.  The current one carries a full storage source::

    <mirror type='file' job='copy' ready='yes'>
      <format type='qcow2'/>
      <source file='/dst.qcow2'/>
      <backingStore/>
    </mirror>

The old one, still accepted, names a file only: ``<mirror file='/dst' format='raw'/>``
(copy jobs only).  Output is always the current form; for a file destination of a
copy job libvirt also repeats ``file=`` and ``format=`` as attributes, for tools
that only know the old form.  The mirror is live state: inactive XML has none.
"""

from __future__ import annotations

import enum

from lxml import etree
from pydantic import BaseModel, ConfigDict

from shared.conf.disk_source import (
    StorageFormat,
    StorageSource,
    StorageType,
    format_backing_store,
    format_format,
    format_required_source,
    metadata_cache,
    parse_backing_store,
    parse_index,
    parse_storage_format,
    parse_storage_type,
    source_fields,
    source_path,
)
from shared.conf.xmlprops import first, member_of, prop
from shared.conf.xmlwriter import XmlWriter
from shared.util.errors import ErrorDomain, config_unsupported, xml_error


class MirrorJob(enum.StrEnum):
    """The block jobs that keep a ``<mirror>`` (virDomainBlockJobType, named ones)."""

    COPY = "copy"
    ACTIVE_COMMIT = "active-commit"


class MirrorState(enum.StrEnum):
    """virDomainDiskMirrorState: ``none`` (never written), then the ``ready=`` values."""

    NONE = "none"
    YES = "yes"
    ABORT = "abort"
    PIVOT = "pivot"


class DiskMirror(BaseModel):
    """A block job's destination: a full storage source plus the job and its state."""

    model_config = ConfigDict(frozen=True)

    source: StorageSource
    job: MirrorJob = MirrorJob.COPY
    ready: MirrorState = MirrorState.NONE


def parse_mirror(node: etree._Element) -> DiskMirror:
    """Parse a ``<mirror>`` element in either form (always live data)."""
    job = MirrorJob.COPY
    job_text = prop(node, "job")
    if job_text is not None:
        given_job = member_of(MirrorJob, job_text)
        if given_job is None:
            raise config_unsupported(f"unknown mirror job type '{job_text}'", ErrorDomain.DOMAIN)
        job = given_job
    type_text = prop(node, "type")
    format_text: str | None
    index_text: str | None = None
    if type_text is not None:
        format_node = first(node, "format")
        format_text = prop(format_node, "type") if format_node is not None else None
        source_node = first(node, "source")
        index_text = prop(source_node, "index") if source_node is not None else None
    else:
        if job is not MirrorJob.COPY:
            raise xml_error("mirror without type only supported by copy job", ErrorDomain.DOMAIN)
        format_text = prop(node, "format")
    kind = parse_storage_type(type_text)
    fmt = parse_storage_format(format_text) if format_text else None
    index = parse_index(index_text)
    cache = metadata_cache(node, "./format/", ["format", "metadata_cache", "max_size"])
    base: dict[str, object] = {"format": fmt, "index": index, "metadata_cache_max_size": cache}
    if type_text is not None:
        source_node = first(node, "source")
        if source_node is None:
            raise xml_error("mirror requires source element", ErrorDomain.DOMAIN)
        fields = source_fields(source_node, kind, active=True, **base)
        fields["backing_store"] = parse_backing_store(node, active=True)
        source = StorageSource.model_validate(fields)
    else:
        path = prop(node, "file")
        if path is None:
            raise xml_error("mirror requires file name", ErrorDomain.DOMAIN)
        # libvirt keeps this empty name once, and drops it (source_path) when it
        # reads its own output: dropped at once here.
        source = StorageSource.model_validate(
            {"type": StorageType.FILE, "path": source_path(path), **base}
        )
    ready = MirrorState.NONE
    ready_text = prop(node, "ready")
    if ready_text is not None:
        given_state = member_of(MirrorState, ready_text)
        if given_state is None:
            raise xml_error(f"unknown mirror ready state {ready_text}", ErrorDomain.DOMAIN)
        ready = given_state
    return DiskMirror(source=source, job=job, ready=ready)


def format_mirror(w: XmlWriter, mirror: DiskMirror) -> None:
    """Write ``<mirror>`` in the current form, with the old-form attributes libvirt
    keeps for file destinations of copy jobs."""
    src = mirror.source
    fmt = src.format if src.format is not StorageFormat.NONE else None
    attrs: list[tuple[str, object | None]] = [("type", src.type)]
    if src.type is StorageType.FILE and mirror.job is MirrorJob.COPY:
        attrs += [("file", src.path), ("format", fmt)]
    attrs.append(("job", mirror.job))
    if mirror.ready is not MirrorState.NONE:
        attrs.append(("ready", mirror.ready))
    with w.block("mirror", attrs) as m:
        format_format(m, fmt, src.metadata_cache_max_size)
        format_required_source(m, src, active=True, with_index=True)
        format_backing_store(m, src, active=True)
