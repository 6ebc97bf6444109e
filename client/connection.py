"""``Client``: one NATS connection and the typed sub-clients that use it."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Self

from nats.aio.client import Client as NATS

from client.nwfilter import NWFilterClient
from client.secret import SecretClient
from shared.util import bus
from shared.util.settings import DEFAULT_NATS_URL


def default_url() -> str:
    """``VIRTBUS_NATS_URL``, else ``NATS_URL``, else the embedded default."""
    return os.environ.get("VIRTBUS_NATS_URL") or os.environ.get("NATS_URL") or DEFAULT_NATS_URL


class Client:
    """The public API.  Give it a connection (it is yours to close) or let
    ``connect`` open one (closed with the client)."""

    def __init__(self, nc: NATS, *, owned: bool = False) -> None:
        self.nc = nc
        self._owned = owned
        self.secret = SecretClient(nc)
        self.nwfilter = NWFilterClient(nc)

    @classmethod
    async def connect(cls, url: str | None = None, *, deadline: float = 5.0) -> Client:
        """Connect to ``url`` (default: ``default_url()``); raises ``VirtError``."""
        nc = await bus.connect(url or default_url(), "virtbus-client", deadline=deadline)
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
