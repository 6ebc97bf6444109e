"""The secrets of a pool's ``<auth>`` (iSCSI CHAP, Ceph cephx) and of encrypted
volumes, fetched from the secret service, and the private key files the
command-line tools read them from.

libvirt reads the value with virSecretGetSecretString for the pool's usage type;
every backend is given the service's ``PoolSecrets`` when it is made.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client as NATS

from shared.api import secret as secret_api
from shared.conf.encryption import SecretLookup
from shared.conf.secret import SecretUsageType
from shared.conf.storage_volume import StorageVolumeDef
from shared.util.api import call
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE

#: The secret's value, looked up by uuid or by (usage type, usage id).
FetchSecret = Callable[[SecretLookup, SecretUsageType], Awaitable[bytes]]
#: Writes the passphrase of an encrypted volume (of the pool named) to a private
#: file; yields its path.
SecretFiles = Callable[[str, StorageVolumeDef], contextlib.AbstractAsyncContextManager[str]]


@dataclass(frozen=True)
class PoolSecrets:
    """Where secret values come from, and the folder their key files are written in."""

    fetch: FetchSecret
    folder: Path

    @contextlib.asynccontextmanager
    async def key_file(self, prefix: str, data: bytes) -> AsyncIterator[str]:
        """``data`` in a file only the service can read (0600), removed afterwards."""
        await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True, mode=0o700)
        fd, path = tempfile.mkstemp(prefix=f"{prefix}.", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)


def secret_service(nc: NATS) -> FetchSecret:
    """Fetch values from the secret service over ``nc`` (its internal-call endpoint,
    which returns private values too, as libvirt's VIR_SECRET_GET_VALUE_INTERNAL_CALL)."""

    async def fetch(lookup: SecretLookup, usage: SecretUsageType) -> bytes:
        uuid = lookup.uuid
        if uuid is None:
            info = await call(
                nc,
                secret_api.LOOKUP_BY_USAGE,
                secret_api.UsageRequest(usage_type=usage, usage_id=lookup.usage or ""),
            )
            uuid = info.uuid
        reply = await call(nc, secret_api.GET_VALUE_INTERNAL, secret_api.UuidRequest(uuid=uuid))
        return base64.b64decode(reply.value)

    return fetch


def volume_secret_file(secrets: PoolSecrets) -> SecretFiles:
    """The passphrase of an encrypted volume in a private file, removed afterwards
    (libvirt's storageBackendCreateQemuImgSecretPath)."""

    @contextlib.asynccontextmanager
    async def secret_file(pool: str, vol: StorageVolumeDef) -> AsyncIterator[str]:
        enc = vol.target.encryption
        if enc is None or len(enc.secrets) != 1:
            raise VirtError(
                ErrorCode.INVALID_ARG,
                "A single <secret type='passphrase'...> element is expected in encryption "
                "description",
                _D,
            )
        value = await secrets.fetch(enc.secrets[0].lookup, SecretUsageType.VOLUME)
        async with secrets.key_file(f"{pool}.{vol.name}.secret", value) as path:
            yield path

    return secret_file
