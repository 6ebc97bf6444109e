"""The secrets of a pool's ``<auth>`` (iSCSI CHAP, Ceph cephx), fetched from the secret
service, and the private key files the command-line tools read them from.

libvirt reads the value with virSecretGetSecretString for the pool's usage type;
the storage service hands each backend that needs one a ``PoolSecrets``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from shared.conf.encryption import SecretLookup
from shared.conf.secret import SecretUsageType
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

_D = ErrorDomain.STORAGE

#: The secret's value, looked up by uuid or by (usage type, usage id).
FetchSecret = Callable[[SecretLookup, SecretUsageType], Awaitable[bytes]]


@dataclass(frozen=True)
class PoolSecrets:
    """Where secret values come from, and the folder their key files are written in."""

    fetch: FetchSecret
    folder: Path

    async def value(self, lookup: SecretLookup, usage: SecretUsageType) -> bytes:
        return await self.fetch(lookup, usage)

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


class UsesSecrets:
    """A backend that reads the secret of its pool's ``<auth>``; the service sets
    ``secrets`` when it starts."""

    secrets: PoolSecrets | None = None

    def _pool_secrets(self) -> PoolSecrets:
        if self.secrets is None:
            # Without a secret service there is no value to give the tool.
            raise VirtError(
                ErrorCode.INTERNAL_ERROR, "no secret service to fetch the pool's auth secret", _D
            )
        return self.secrets
