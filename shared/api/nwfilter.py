"""The nwfilter service's endpoints (libvirt's virNWFilter* and virNWFilterBinding* API).

Filter definitions are cluster-wide, as libvirt's are global:
``virtbus.v1.nwfilter.<endpoint>``, answered by any replica.  Bindings live on
the host whose port they filter: ``virtbus.v1.nwfilter.<host>.<endpoint>``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from shared.util.api import Empty, Endpoint, memory_read

SERVICE = "nwfilter"
#: Object kinds of the service's events.
FILTER_KIND = "nwfilter"
BINDING_KIND = "binding"
#: Events: a filter's or binding's lifecycle (detail Defined/Undefined,
#: Created/Deleted), and the outcome of writing a binding's rules (detail
#: Applied/Failed; extra: rules, error, backend).
LIFECYCLE = "lifecycle"
RULES = "rules"


class FilterInfo(BaseModel):
    """What nwfilter-list shows of a filter."""

    name: str
    uuid: str


class DefineRequest(BaseModel):
    xml: str


class FilterRequest(BaseModel):
    """A filter named by name or UUID (virNWFilterLookupByName/UUIDString)."""

    name: str | None = None
    uuid: str | None = None


class FilterListReply(BaseModel):
    filters: list[FilterInfo] = Field(default_factory=list)


class XmlReply(BaseModel):
    xml: str


class BindingInfo(BaseModel):
    """What nwfilter-binding-list shows of a binding, and its state on the host."""

    portdev: str
    filter: str
    #: "applied", "learning" (waiting for the guest's IP address) or "failed".
    status: str = "applied"
    rules: int = 0
    ip: str | None = None
    error: str | None = None


class BindingCreateRequest(BaseModel):
    xml: str


class PortRequest(BaseModel):
    portdev: str


class BindingListReply(BaseModel):
    bindings: list[BindingInfo] = Field(default_factory=list)


DEFINE = Endpoint(SERVICE, "define", DefineRequest, FilterInfo)
UNDEFINE = Endpoint(SERVICE, "undefine", FilterRequest, Empty)
LIST = memory_read(SERVICE, "list", Empty, FilterListReply)
LOOKUP = memory_read(SERVICE, "lookup", FilterRequest, FilterInfo)
DUMPXML = memory_read(SERVICE, "dumpxml", FilterRequest, XmlReply)
BINDING_CREATE = Endpoint(
    SERVICE, "binding.create", BindingCreateRequest, BindingInfo, host_scoped=True, timeout=120
)
BINDING_DELETE = Endpoint(SERVICE, "binding.delete", PortRequest, Empty, host_scoped=True)
BINDING_LIST = memory_read(SERVICE, "binding.list", Empty, BindingListReply, host_scoped=True)
BINDING_LOOKUP = memory_read(SERVICE, "binding.lookup", PortRequest, BindingInfo, host_scoped=True)
BINDING_DUMPXML = memory_read(SERVICE, "binding.dumpxml", PortRequest, XmlReply, host_scoped=True)

#: Every endpoint of the nwfilter service.
ENDPOINTS = (
    DEFINE,
    UNDEFINE,
    LIST,
    LOOKUP,
    DUMPXML,
    BINDING_CREATE,
    BINDING_DELETE,
    BINDING_LIST,
    BINDING_LOOKUP,
    BINDING_DUMPXML,
)
