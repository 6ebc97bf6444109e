"""The nwfilter API (virNWFilter* and virNWFilterBinding* calls) as typed async methods."""

from __future__ import annotations

import builtins

from nats.aio.client import Client as NATS

from shared.api import nwfilter as api
from shared.util.api import Empty, call


class NWFilterClient:
    """Calls the nwfilter service; every method raises ``VirtError`` as libvirt would.

    Filters are cluster-wide; bindings belong to a host, named by ``host``.
    """

    def __init__(self, nc: NATS) -> None:
        self._nc = nc

    async def define(self, xml: str) -> api.FilterInfo:
        """Define or redefine a filter (virNWFilterDefineXML)."""
        return await call(self._nc, api.DEFINE, api.DefineRequest(xml=xml))

    async def undefine(self, *, name: str | None = None, uuid: str | None = None) -> None:
        await call(self._nc, api.UNDEFINE, api.FilterRequest(name=name, uuid=uuid))

    async def list(self) -> list[api.FilterInfo]:
        return (await call(self._nc, api.LIST, Empty())).filters

    async def lookup(self, *, name: str | None = None, uuid: str | None = None) -> api.FilterInfo:
        return await call(self._nc, api.LOOKUP, api.FilterRequest(name=name, uuid=uuid))

    async def dumpxml(self, *, name: str | None = None, uuid: str | None = None) -> str:
        return (await call(self._nc, api.DUMPXML, api.FilterRequest(name=name, uuid=uuid))).xml

    async def binding_create(self, host: str, xml: str) -> api.BindingInfo:
        """Instantiate a filter on a port of ``host`` (virNWFilterBindingCreateXML)."""
        return await call(
            self._nc, api.BINDING_CREATE, api.BindingCreateRequest(xml=xml), host=host
        )

    async def binding_delete(self, host: str, portdev: str) -> None:
        await call(self._nc, api.BINDING_DELETE, api.PortRequest(portdev=portdev), host=host)

    async def binding_list(self, host: str) -> builtins.list[api.BindingInfo]:
        return (await call(self._nc, api.BINDING_LIST, Empty(), host=host)).bindings

    async def binding_lookup(self, host: str, portdev: str) -> api.BindingInfo:
        return await call(self._nc, api.BINDING_LOOKUP, api.PortRequest(portdev=portdev), host=host)

    async def binding_dumpxml(self, host: str, portdev: str) -> str:
        request = api.PortRequest(portdev=portdev)
        return (await call(self._nc, api.BINDING_DUMPXML, request, host=host)).xml
