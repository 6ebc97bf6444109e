"""The network service's endpoints (libvirt's virNetwork* and virNetworkPort* API).

Every endpoint is host-scoped: ``virtbus.v1.network.<host>.<endpoint>``, served
by the network service of that host.  Lease events are described here too,
since the nwfilter service reads them.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from shared.util.api import Empty, Endpoint, memory_read

SERVICE = "network"
#: object kinds of the network service's events
NETWORK_KIND = "network"
PORT_KIND = "port"
LEASE_KIND = "lease"
#: the ``event`` of a lease event; its detail is Added, Renewed or Released
LEASE_EVENT = "dhcp-lease"


class NetworkInfo(BaseModel):
    """What net-list and net-info show of a network."""

    name: str
    uuid: str
    active: bool = False
    persistent: bool = True
    autostart: bool = False
    bridge: str | None = None


class XmlRequest(BaseModel):
    xml: str


class NameRequest(BaseModel):
    name: str


class LookupRequest(BaseModel):
    """A network by name or by UUID (exactly one given)."""

    name: str | None = None
    uuid: str | None = None


class AutostartRequest(BaseModel):
    name: str
    autostart: bool = True


class ListReply(BaseModel):
    networks: list[NetworkInfo] = Field(default_factory=list)


class DumpXmlRequest(BaseModel):
    name: str
    inactive: bool = False


class XmlReply(BaseModel):
    xml: str


class UpdateRequest(BaseModel):
    """virNetworkUpdate: libvirt's command and section numbers and flags."""

    name: str
    command: int
    section: int
    xml: str
    parent_index: int = -1
    flags: int = 0


class UpdateReply(BaseModel):
    """Which definitions the update changed."""

    live: bool = False
    config: bool = False


class LeasesRequest(BaseModel):
    name: str
    mac: str | None = None


class Lease(BaseModel):
    """virNetworkDHCPLease: one lease dnsmasq handed out."""

    iface: str
    expiry_time: int = Field(description="seconds since the epoch; 0 for an infinite lease")
    type: str = Field(description="ipv4 or ipv6")
    mac: str | None = None
    iaid: str | None = None
    ipaddr: str
    prefix: int
    hostname: str | None = None
    clientid: str | None = None


class LeasesReply(BaseModel):
    leases: list[Lease] = Field(default_factory=list)


class PortCreateRequest(BaseModel):
    network: str
    xml: str


class PortRequest(BaseModel):
    network: str
    uuid: str


class PortInfo(BaseModel):
    uuid: str
    dev: str | None = Field(None, description="the host device plugged into the bridge")


class PortListRequest(BaseModel):
    network: str


class PortListReply(BaseModel):
    ports: list[PortInfo] = Field(default_factory=list)


DEFINE = Endpoint(SERVICE, "define", XmlRequest, NetworkInfo, host_scoped=True)
CREATE = Endpoint(SERVICE, "create", XmlRequest, NetworkInfo, host_scoped=True)
START = Endpoint(SERVICE, "start", NameRequest, Empty, host_scoped=True)
DESTROY = Endpoint(SERVICE, "destroy", NameRequest, Empty, host_scoped=True)
UNDEFINE = Endpoint(SERVICE, "undefine", NameRequest, Empty, host_scoped=True)
AUTOSTART = Endpoint(SERVICE, "autostart", AutostartRequest, Empty, host_scoped=True)
LIST = memory_read(SERVICE, "list", Empty, ListReply, host_scoped=True)
LOOKUP = memory_read(SERVICE, "lookup", LookupRequest, NetworkInfo, host_scoped=True)
DUMPXML = memory_read(SERVICE, "dumpxml", DumpXmlRequest, XmlReply, host_scoped=True)
UPDATE = Endpoint(SERVICE, "update", UpdateRequest, UpdateReply, host_scoped=True)
DHCP_LEASES = Endpoint(SERVICE, "dhcp-leases", LeasesRequest, LeasesReply, host_scoped=True)
PORT_CREATE = Endpoint(SERVICE, "port.create", PortCreateRequest, PortInfo, host_scoped=True)
PORT_LIST = memory_read(SERVICE, "port.list", PortListRequest, PortListReply, host_scoped=True)
PORT_DUMPXML = memory_read(SERVICE, "port.dumpxml", PortRequest, XmlReply, host_scoped=True)
PORT_DELETE = Endpoint(SERVICE, "port.delete", PortRequest, Empty, host_scoped=True)

#: Every endpoint of the network service.
ENDPOINTS = (
    DEFINE,
    CREATE,
    START,
    DESTROY,
    UNDEFINE,
    AUTOSTART,
    LIST,
    LOOKUP,
    DUMPXML,
    UPDATE,
    DHCP_LEASES,
    PORT_CREATE,
    PORT_LIST,
    PORT_DUMPXML,
    PORT_DELETE,
)
