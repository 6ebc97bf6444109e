"""A bare NATS protocol client for permission tests: it says exactly what it is told
and reports what the server answers, with no client library in between."""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shared.util.credentials import split_url


class Refused(Exception):
    """The server refused: the ``-ERR`` line it sent."""


@dataclass
class Wire:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sid: int = 0

    @classmethod
    async def open(cls, url: str, tls_ca: Path | None = None) -> Wire:
        """Connect and authenticate with the URL's user and password (none if it has
        none); raises ``Refused`` when the server does not admit them.  With
        ``tls_ca``, a server that requires TLS is spoken to over TLS, verified
        against that CA; without, in the clear (which such a server refuses)."""
        server, creds = split_url(url)
        parts = urlsplit(server)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        wire = cls(reader, writer)
        info = json.loads((await wire._line()).partition(" ")[2])
        if tls_ca is not None and info.get("tls_required"):
            context = ssl.create_default_context(cafile=str(tls_ca))
            await writer.start_tls(context, server_hostname=parts.hostname)
        connect: dict[str, object] = {"verbose": False, "pedantic": False, "headers": True}
        if creds is not None:
            connect.update(user=creds.user, **{"pass": creds.password})
        # CONNECT and PING in one write: a server that refuses the user closes
        # the socket after reading them, and bytes it never read would turn its
        # close into a reset that loses the -ERR line.
        await wire._ping(f"CONNECT {json.dumps(connect)}\r\n")
        return wire

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()

    async def _send(self, text: str, payload: bytes | None = None) -> None:
        data = text.encode() if payload is None else text.encode() + payload + b"\r\n"
        self.writer.write(data)
        await self.writer.drain()

    async def _line(self) -> str:
        line = await asyncio.wait_for(self.reader.readline(), 5)
        if not line:
            raise Refused("connection closed")
        return line.decode().rstrip("\r\n")

    async def _ping(self, before: str = "") -> None:
        """``before`` and a PING, then every line up to the PONG; raises ``Refused``
        on ``-ERR`` (once the PONG is read, so that the next command starts clean)."""
        await self._send(before + "PING\r\n")
        refusal = None
        while True:
            try:
                line = await self._line()
            except Refused:
                raise Refused(refusal or "connection closed") from None
            if line == "PONG":
                break
            if line.startswith("-ERR"):
                refusal = refusal or line
            elif line == "PING":
                await self._send("PONG\r\n")
            elif line.startswith(("MSG", "HMSG")):
                size = int(line.split()[-1])
                await asyncio.wait_for(self.reader.readexactly(size + 2), 5)
        if refusal is not None:
            raise Refused(refusal)

    async def subscribe(self, subject: str) -> None:
        """Raises ``Refused`` when the server refuses the subscription."""
        self.sid += 1
        await self._send(f"SUB {subject} {self.sid}\r\n")
        await self._ping()

    async def publish(self, subject: str, payload: bytes = b"", reply: str = "") -> None:
        """Raises ``Refused`` when the server refuses the publish."""
        target = f"{subject} {reply}" if reply else subject
        await self._send(f"PUB {target} {len(payload)}\r\n", payload)
        await self._ping()

    async def request(self, subject: str, payload: bytes, inbox: str) -> bytes:
        """Publish with ``inbox`` as the reply subject and return the first reply.

        Raises ``Refused`` when the server refuses the subscription or the publish."""
        await self.subscribe(inbox)
        target = f"{subject} {inbox}"
        await self._send(f"PUB {target} {len(payload)}\r\n", payload)
        while True:
            line = await self._line()
            if line.startswith("-ERR"):
                raise Refused(line)
            if line.startswith(("MSG", "HMSG")):
                size = int(line.split()[-1])
                data = await asyncio.wait_for(self.reader.readexactly(size + 2), 5)
                return data[:-2]
