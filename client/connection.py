"""``Client``: one NATS connection and the typed sub-clients that use it."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Self

from nats.aio.client import Client as NATS

from client.nwfilter import NWFilterClient
from client.secret import SecretClient
from shared.util import bus, credentials
from shared.util.roles import ADMIN
from shared.util.settings import DEFAULT_NATS_URL

#: Where the TLS CA of the server is named when not given (a PEM file).
ENV_TLS_CA = "VIRTBUS_TLS_CA"


def default_url(creds: credentials.Credentials | None = None) -> str:
    """``VIRTBUS_NATS_URL``, else ``NATS_URL``, else the server ``creds`` were
    issued for, else the embedded default."""
    from_env = os.environ.get("VIRTBUS_NATS_URL") or os.environ.get("NATS_URL")
    return from_env or (creds.server if creds and creds.server else DEFAULT_NATS_URL)


class Client:
    """The public API.  Give it a connection (it is yours to close) or let
    ``connect`` open one (closed with the client)."""

    def __init__(self, nc: NATS, *, owned: bool = False) -> None:
        self.nc = nc
        self._owned = owned
        self.secret = SecretClient(nc)
        self.nwfilter = NWFilterClient(nc)

    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        *,
        creds: Path | None = None,
        role: str = ADMIN,
        tls_ca: Path | None = None,
        deadline: float = 5.0,
    ) -> Client:
        """Connect to ``url`` (default: ``default_url()``) as the user of ``creds``
        (default: ``VIRTBUS_CREDS``, else ``role``'s credentials of the local
        stack, found as ``shared.util.credentials.find`` does); raises
        ``VirtError``, ``VIR_ERR_AUTH_FAILED`` at once when the server refuses."""
        found = credentials.find(role, creds)
        ca = tls_ca or (Path(os.environ[ENV_TLS_CA]) if os.environ.get(ENV_TLS_CA) else None)
        nc = await bus.connect(
            url or default_url(found), "virtbus-client", creds=found, tls_ca=ca, deadline=deadline
        )
        return cls(nc, owned=True)

    async def close(self) -> None:
        if self._owned:
            await bus.close(self.nc)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
