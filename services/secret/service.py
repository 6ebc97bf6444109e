"""The secret service process: endpoints, events and metrics over the registry."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from pydantic import Field

from services.secret import cipher
from services.secret.registry import SecretRegistry, encode_value
from shared.api import secret as api
from shared.conf.secret import SecretDef, format_secret, parse_secret
from shared.util.api import Bound, Empty
from shared.util.errors import ErrorCode, ErrorDomain, VirtError
from shared.util.process import ServiceProcess, Teardown
from shared.util.settings import ProcessSettings

log = logging.getLogger(__name__)


class SecretSettings(ProcessSettings):
    """Settings of the secret service."""

    secret_key: str | None = Field(None, description="master key, base64 (VIRTBUS_SECRET_KEY)")
    key_file: Path | None = Field(
        None, description="master key file (default STATE_DIR/secret.key)"
    )


def _info(d: SecretDef) -> api.SecretInfo:
    assert d.uuid is not None
    return api.SecretInfo(
        uuid=d.uuid,
        usage_type=d.usage_type,
        usage_id=d.usage_id,
        ephemeral=d.ephemeral,
        private=d.private,
    )


def decode_value(text: str) -> bytes:
    """Strict base64; ``VIR_ERR_INVALID_ARG`` otherwise or when too large."""
    try:
        value = base64.b64decode(text, validate=True)
    except binascii.Error as err:
        raise VirtError(
            ErrorCode.INVALID_ARG, "secret value is not valid base64", ErrorDomain.SECRET
        ) from err
    if len(value) > api.MAX_VALUE_BYTES:
        raise VirtError(
            ErrorCode.INVALID_ARG,
            f"secret value of {len(value)} bytes exceeds {api.MAX_VALUE_BYTES}",
            ErrorDomain.SECRET,
        )
    return value


class SecretService(ServiceProcess[SecretSettings]):
    """libvirt's secret driver semantics, cluster-wide, values encrypted at rest."""

    name = "secret"
    endpoint_table = api.ENDPOINTS
    description = "libvirt secrets: XML definitions, values encrypted at rest"

    def __init__(self, settings: SecretSettings, nc: NATS | None = None) -> None:
        super().__init__(settings, nc)
        self._registry: SecretRegistry | None = None
        count = self.metrics.gauge("secrets", "Secrets defined", ["kind"])
        # Set on every change: the children are looked up once, not per change.
        self._persistent = count.labels(kind="persistent")
        self._ephemeral = count.labels(kind="ephemeral")

    @property
    def registry(self) -> SecretRegistry:
        assert self._registry is not None, "service not started"
        return self._registry

    async def setup(self, stack: Teardown) -> None:
        key_file = self.settings.key_file or self.settings.state_dir / "secret.key"
        key = cipher.load_key(self.settings.secret_key, key_file)
        ledger = await self.open_ledger()
        self._registry = SecretRegistry(ledger, cipher.ValueCipher(key))
        self._registry.on_change(self._recount)
        self._recount()

    def _recount(self) -> None:
        persistent, ephemeral = self.registry.counts()
        self._persistent.set(persistent)
        self._ephemeral.set(ephemeral)

    def endpoints(self) -> Sequence[Bound[Any, Any]]:
        return (
            api.DEFINE.bind(self.define),
            api.UNDEFINE.bind(self.undefine),
            api.LIST.bind(self.list),
            api.DUMPXML.bind(self.dumpxml),
            api.LOOKUP_BY_UUID.bind(self.lookup_by_uuid),
            api.LOOKUP_BY_USAGE.bind(self.lookup_by_usage),
            api.SET_VALUE.bind(self.set_value),
            api.GET_VALUE.bind(self.get_value),
            api.GET_VALUE_INTERNAL.bind(self.get_value_internal),
        )

    async def define(self, req: api.DefineRequest) -> api.DefineReply:
        change = await self.registry.define(parse_secret(req.xml))
        assert change.definition.uuid is not None
        return api.DefineReply(uuid=change.definition.uuid)

    async def undefine(self, req: api.UuidRequest) -> Empty:
        await self.registry.undefine(req.uuid)
        return Empty()

    async def list(self, req: api.ListRequest) -> api.ListReply:
        secrets = [
            _info(d)
            for d in self.registry.all()
            if (req.ephemeral is None or d.ephemeral == req.ephemeral)
            and (req.private is None or d.private == req.private)
        ]
        secrets.sort(key=lambda s: s.uuid)
        return api.ListReply(secrets=secrets)

    async def dumpxml(self, req: api.UuidRequest) -> api.XmlReply:
        return api.XmlReply(xml=format_secret(self.registry.get(req.uuid)))

    async def lookup_by_uuid(self, req: api.UuidRequest) -> api.SecretInfo:
        return _info(self.registry.get(req.uuid))

    async def lookup_by_usage(self, req: api.UsageRequest) -> api.SecretInfo:
        return _info(self.registry.by_usage(req.usage_type, req.usage_id))

    async def set_value(self, req: api.SetValueRequest) -> Empty:
        await self.registry.set_value(req.uuid, decode_value(req.value))
        return Empty()

    async def get_value(self, req: api.UuidRequest) -> api.ValueReply:
        return api.ValueReply(value=encode_value(self.registry.get_value(req.uuid)))

    async def get_value_internal(self, req: api.UuidRequest) -> api.ValueReply:
        value = self.registry.get_value(req.uuid, internal=True)
        return api.ValueReply(value=encode_value(value))
