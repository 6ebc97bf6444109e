"""The secret API (libvirt's virSecret* calls) as typed async methods."""

from __future__ import annotations

import base64

from nats.aio.client import Client as NATS

from shared.api import secret as api
from shared.conf.secret import SecretUsageType
from shared.conf.uuid import parse_uuid
from shared.util.api import call
from shared.util.bus import require_private_channel
from shared.util.errors import ErrorCode, ErrorDomain, VirtError


class SecretClient:
    """Calls the secret service; every method raises ``VirtError`` as libvirt would."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc

    async def define(self, xml: str) -> str:
        """Define (or redefine) a secret; returns its UUID."""
        return (await call(self._nc, api.DEFINE, api.DefineRequest(xml=xml))).uuid

    async def undefine(self, uuid: str) -> None:
        await call(self._nc, api.UNDEFINE, api.UuidRequest(uuid=uuid))

    async def list(
        self, *, ephemeral: bool | None = None, private: bool | None = None
    ) -> list[api.SecretInfo]:
        reply = await call(
            self._nc, api.LIST, api.ListRequest(ephemeral=ephemeral, private=private)
        )
        return reply.secrets

    async def dumpxml(self, uuid: str) -> str:
        return (await call(self._nc, api.DUMPXML, api.UuidRequest(uuid=uuid))).xml

    async def lookup_by_uuid(self, uuid: str) -> api.SecretInfo:
        """virSecretLookupByUUIDString: ``uuid`` in any form libvirt reads (hyphens
        optional); anything else is refused here, as libvirt's library does."""
        canonical = parse_uuid(uuid)
        if canonical is None:
            raise VirtError(
                ErrorCode.INVALID_ARG,
                "uuidstr in virSecretLookupByUUIDString must be a valid UUID",
                ErrorDomain.SECRET,
                raw=True,
            )
        return await call(self._nc, api.LOOKUP_BY_UUID, api.UuidRequest(uuid=canonical))

    async def lookup_by_usage(self, usage_type: SecretUsageType, usage_id: str) -> api.SecretInfo:
        return await call(
            self._nc,
            api.LOOKUP_BY_USAGE,
            api.UsageRequest(usage_type=usage_type, usage_id=usage_id),
        )

    async def set_value(self, uuid: str, value: bytes) -> None:
        require_private_channel(self._nc, "secret values")
        request = api.SetValueRequest(uuid=uuid, value=base64.b64encode(value).decode())
        await call(self._nc, api.SET_VALUE, request)

    async def get_value(self, uuid: str) -> bytes:
        require_private_channel(self._nc, "secret values")
        reply = await call(self._nc, api.GET_VALUE, api.UuidRequest(uuid=uuid))
        return base64.b64decode(reply.value)
