"""The secret service's endpoints (libvirt's virSecret* API) and their models."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, Field

from shared.conf.secret import SecretUsageType
from shared.util.api import Empty, Endpoint, memory_read

SERVICE = "secret"
#: libvirt's remote protocol caps a secret value at 64 KiB; so do we.
MAX_VALUE_BYTES = 65536


class SecretInfo(BaseModel):
    """What a listing shows of a secret (never its value)."""

    uuid: str
    usage_type: SecretUsageType = SecretUsageType.NONE
    usage_id: str | None = None
    ephemeral: bool = False
    private: bool = False


class DefineRequest(BaseModel):
    xml: str


class DefineReply(BaseModel):
    uuid: str


class UuidRequest(BaseModel):
    uuid: str


class UsageRequest(BaseModel):
    usage_type: SecretUsageType
    usage_id: str


class ListRequest(BaseModel):
    """Filters as virConnectListAllSecrets' flags: None means either."""

    ephemeral: bool | None = None
    private: bool | None = None


class ListReply(BaseModel):
    secrets: list[SecretInfo] = Field(default_factory=list)


class XmlReply(BaseModel):
    xml: str


class SetValueRequest(BaseModel):
    uuid: str
    value: str = Field(description="the value, base64-encoded")


class ValueReply(BaseModel):
    value: str = Field(description="the value, base64-encoded")


Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)
#: Requests of one endpoint a secret service answers at once: the registry
#: settles races between them (and between replicas) by compare-and-set.
CONCURRENCY = 16


def _ep(name: str, request: type[Req], reply: type[Rep]) -> Endpoint[Req, Rep]:
    return Endpoint(SERVICE, name, request, reply, concurrency=CONCURRENCY)


DEFINE = _ep("define", DefineRequest, DefineReply)
UNDEFINE = _ep("undefine", UuidRequest, Empty)
LIST = memory_read(SERVICE, "list", ListRequest, ListReply)
DUMPXML = memory_read(SERVICE, "dumpxml", UuidRequest, XmlReply)
LOOKUP_BY_UUID = memory_read(SERVICE, "lookup.uuid", UuidRequest, SecretInfo)
LOOKUP_BY_USAGE = memory_read(SERVICE, "lookup.usage", UsageRequest, SecretInfo)
SET_VALUE = _ep("value.set", SetValueRequest, Empty)
GET_VALUE = memory_read(SERVICE, "value.get", UuidRequest, ValueReply)
#: libvirt's VIR_SECRET_GET_VALUE_INTERNAL_CALL: other services (the storage
#: service opening a LUKS volume) may read private values.  The deploy/ NATS
#: permissions allow this subject to service users only, never to clients.
GET_VALUE_INTERNAL = memory_read(SERVICE, "internal.value.get", UuidRequest, ValueReply)

#: Every endpoint of the secret service.
ENDPOINTS = (
    DEFINE,
    UNDEFINE,
    LIST,
    DUMPXML,
    LOOKUP_BY_UUID,
    LOOKUP_BY_USAGE,
    SET_VALUE,
    GET_VALUE,
    GET_VALUE_INTERNAL,
)
