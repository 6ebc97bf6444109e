"""The network API (libvirt's virNetwork* and virNetworkPort* calls) as typed async methods.

Every call goes to the network service of one host, named like a libvirt
connection URI names its host.
"""

from __future__ import annotations

from nats.aio.client import Client as NATS

from shared.api import network as api
from shared.util.api import Empty, call


class NetworkClient:
    """Calls the network service of ``host``; every method raises ``VirtError`` as libvirt would."""

    def __init__(self, nc: NATS, host: str) -> None:
        self._nc = nc
        self.host = host

    async def define(self, xml: str) -> api.NetworkInfo:
        """virNetworkDefineXML."""
        return await call(self._nc, api.DEFINE, api.XmlRequest(xml=xml), host=self.host)

    async def create(self, xml: str) -> api.NetworkInfo:
        """virNetworkCreateXML: a transient network, started."""
        return await call(self._nc, api.CREATE, api.XmlRequest(xml=xml), host=self.host)

    async def start(self, name: str) -> None:
        await call(self._nc, api.START, api.NameRequest(name=name), host=self.host)

    async def destroy(self, name: str) -> None:
        await call(self._nc, api.DESTROY, api.NameRequest(name=name), host=self.host)

    async def undefine(self, name: str) -> None:
        await call(self._nc, api.UNDEFINE, api.NameRequest(name=name), host=self.host)

    async def set_autostart(self, name: str, autostart: bool) -> None:
        request = api.AutostartRequest(name=name, autostart=autostart)
        await call(self._nc, api.AUTOSTART, request, host=self.host)

    async def list_all(self) -> list[api.NetworkInfo]:
        return (await call(self._nc, api.LIST, Empty(), host=self.host)).networks

    async def lookup(self, *, name: str | None = None, uuid: str | None = None) -> api.NetworkInfo:
        request = api.LookupRequest(name=name, uuid=uuid)
        return await call(self._nc, api.LOOKUP, request, host=self.host)

    async def dumpxml(self, name: str, *, inactive: bool = False) -> str:
        request = api.DumpXmlRequest(name=name, inactive=inactive)
        return (await call(self._nc, api.DUMPXML, request, host=self.host)).xml

    async def update(
        self,
        name: str,
        command: int,
        section: int,
        xml: str,
        *,
        parent_index: int = -1,
        flags: int = 0,
    ) -> api.UpdateReply:
        """virNetworkUpdate (command, section and flags as libvirt numbers them)."""
        request = api.UpdateRequest(
            name=name,
            command=command,
            section=section,
            xml=xml,
            parent_index=parent_index,
            flags=flags,
        )
        return await call(self._nc, api.UPDATE, request, host=self.host)

    async def dhcp_leases(self, name: str, mac: str | None = None) -> list[api.Lease]:
        request = api.LeasesRequest(name=name, mac=mac)
        return (await call(self._nc, api.DHCP_LEASES, request, host=self.host)).leases

    async def port_create(self, network: str, xml: str) -> api.PortInfo:
        request = api.PortCreateRequest(network=network, xml=xml)
        return await call(self._nc, api.PORT_CREATE, request, host=self.host)

    async def port_list(self, network: str) -> list[api.PortInfo]:
        request = api.PortListRequest(network=network)
        return (await call(self._nc, api.PORT_LIST, request, host=self.host)).ports

    async def port_dumpxml(self, network: str, uuid: str) -> str:
        request = api.PortRequest(network=network, uuid=uuid)
        return (await call(self._nc, api.PORT_DUMPXML, request, host=self.host)).xml

    async def port_delete(self, network: str, uuid: str) -> None:
        request = api.PortRequest(network=network, uuid=uuid)
        await call(self._nc, api.PORT_DELETE, request, host=self.host)
