"""A one-shot command's NATS connection: requests over a plain socket, no asyncio.

nats-py and asyncio take about 250 ms to import here, twenty times what a
request to a local server takes, so a one-shot CLI command that only asks
and prints speaks NATS's text protocol itself: INFO, CONNECT, PING/PONG,
SUB and PUB, and reads MSG/HMSG replies.  It does user and password (from
the URL), a reply-inbox prefix, and TLS when the server asks for it; a
server wanting anything else (nkeys, JWTs) raises ``Unsupported`` and the
command uses nats-py instead.

It uses the C ``_socket`` module and ``client.cli.jsonlite``: ``socket``,
``json`` and what they import (``enum``, ``selectors``, ``re``) cost more to
import than the whole request takes.

Errors: ``OSError`` (and ``TimeoutError``) from the socket, ``Refused`` when
the server answers ``-ERR``, ``Unsupported`` as above.
"""

from __future__ import annotations

import _socket
import os

from client.cli import jsonlite

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_CRLF = b"\r\n"


class Unsupported(Exception):
    """The server asks for what this client does not do; use nats-py."""


class Refused(Exception):
    """The server answered ``-ERR``: the text is its reason."""


class Reply:
    """One reply: its status (``503`` for no responders), headers and data."""

    __slots__ = ("data", "headers", "status")

    def __init__(self, status: str, headers: dict[str, str], data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data


def _unquote(text: str) -> str:
    """%XX escapes of a URL's user or password."""
    if "%" not in text:
        return text
    out, i = bytearray(), 0
    raw = text.encode()
    while i < len(raw):
        if raw[i] == ord("%") and i + 3 <= len(raw):
            try:
                out.append(int(raw[i + 1 : i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return out.decode(errors="replace")


def address(url: str) -> tuple[str, str, int, str | None, str | None]:
    """(scheme, host, port, user, password) of the first server of ``url``."""
    first = url.split(",")[0].strip()
    scheme, sep, rest = first.partition("://")
    if not sep:
        scheme, rest = "nats", first
    rest = rest.split("/", 1)[0]
    userinfo, at, hostport = rest.rpartition("@")
    user = password = None
    if at:
        name, colon, secret = userinfo.partition(":")
        user, password = _unquote(name), (_unquote(secret) if colon else None)
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = hostport.partition(":")
    return scheme, host or "127.0.0.1", int(port_text) if port_text else 4222, user, password


def _connect(host: str, port: int, timeout: float) -> _socket.socket:
    """A TCP connection to the first address of ``host`` that answers."""
    last: OSError | None = None
    # bytes: an ASCII name or address needs no idna codec (another import)
    name = host.encode() if host.isascii() else host
    for family, kind, proto, _, where in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(where)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            return sock
        except OSError as err:
            sock.close()
            last = err
    raise last or OSError(f"no address for {host}")


class Wire:
    """A connected, authenticated NATS client for request/reply, one at a time."""

    def __init__(self, url: str, *, timeout: float, inbox_prefix: str = "_INBOX") -> None:
        # A cluster's URL lists its servers: the first that answers is used.
        last: OSError | None = None
        for server in [u for u in url.split(",") if u.strip()] or [url]:
            scheme, host, port, user, password = address(server)
            if scheme not in ("nats", "tls"):
                raise Unsupported(f"scheme {scheme}")
            try:
                self._sock: Any = _connect(host, port, timeout)
                break
            except OSError as err:
                last = err
        else:
            raise last or OSError(f"no server in {url}")
        self._timeout = timeout
        self._buf = b""
        self._sid = 0
        self._inbox = f"{inbox_prefix}.{os.urandom(8).hex()}"
        try:
            self._handshake(scheme, host, user, password)
        except BaseException:
            self._sock.close()
            raise

    def _handshake(self, scheme: str, host: str, user: str | None, password: str | None) -> None:
        kind, rest = self._line().split(b" ", 1)
        if kind != b"INFO":
            raise Refused(f"unexpected greeting {kind!r}")
        info = jsonlite.loads(rest)
        if info.get("nonce") and not user:
            raise Unsupported("nkey or JWT authentication")
        tls = bool(info.get("tls_required")) or scheme == "tls"
        peer = self._sock.getpeername()[0]
        #: What is sent cannot be read on the way (``shared.util.bus.private_channel``).
        self.private = tls or peer == "::1" or peer.startswith("127.")
        if tls:
            import socket
            import ssl

            context = ssl.create_default_context()
            ca = os.environ.get("VIRTBUS_TLS_CA")
            if ca:
                context.load_verify_locations(ca)
            plain = socket.socket(fileno=self._sock.detach())
            plain.settimeout(self._timeout)
            self._sock = context.wrap_socket(plain, server_hostname=host)
        connect: dict[str, object] = {
            "verbose": False,
            "pedantic": False,
            "headers": True,
            "no_responders": True,
            "protocol": 1,
            "lang": "python-virtbus-cli",
            "version": "1",
            "name": "virtbus-cli",
        }
        if user is not None:
            connect.update(user=user, **{"pass": password or ""})
        self._send(b"CONNECT " + jsonlite.dumps(connect).encode() + _CRLF + b"PING" + _CRLF)
        while True:
            line = self._line()
            if line == b"PONG":
                break
            if line.startswith(b"-ERR"):
                raise Refused(line[5:].decode(errors="replace").strip(" '"))
        self._send(f"SUB {self._inbox}.* 1\r\n".encode())

    def _send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the NATS server closed the connection")
        self._buf += chunk

    def _line(self) -> bytes:
        while _CRLF not in self._buf:
            self._fill()
        line, _, self._buf = self._buf.partition(_CRLF)
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self._buf) < n + 2:
            self._fill()
        data, self._buf = self._buf[:n], self._buf[n + 2 :]
        return data

    def request(self, subject: str, data: bytes, timeout: float | None = None) -> Reply:
        """Send ``data`` to ``subject`` and return the first reply."""
        self._sid += 1
        reply_to = f"{self._inbox}.{self._sid}"
        self._sock.settimeout(timeout or self._timeout)
        self._send(f"PUB {subject} {reply_to} {len(data)}\r\n".encode() + data + _CRLF)
        while True:
            got = self._message()
            if got is not None and got[0] == reply_to:
                return got[1]

    def gather(self, subject: str, *, first: float, settle: float) -> list[Reply]:
        """Publish an empty message to ``subject`` and collect the replies: wait
        ``first`` seconds for one, then until none came for ``settle`` seconds."""
        self._sid += 1
        reply_to = f"{self._inbox}.{self._sid}"
        self._send(f"PUB {subject} {reply_to} 0\r\n\r\n".encode())
        replies: list[Reply] = []
        self._sock.settimeout(first)
        try:
            while True:
                got = self._message()
                if got is not None and got[0] == reply_to:
                    replies.append(got[1])
                    self._sock.settimeout(settle)
        except TimeoutError:
            return replies

    def _message(self) -> tuple[str, Reply] | None:
        """The next message (its subject and reply), or None after a control line."""
        line = self._line()
        if line == b"PING":
            self._send(b"PONG" + _CRLF)
            return None
        if line.startswith(b"-ERR"):
            raise Refused(line[5:].decode(errors="replace").strip(" '"))
        words = line.decode().split(" ")
        if words[0] == "MSG":
            return words[1], Reply("", {}, self._exactly(int(words[-1])))
        if words[0] == "HMSG":
            header_len, total = int(words[-2]), int(words[-1])
            raw = self._exactly(total)
            status, headers = _headers(raw[:header_len])
            return words[1], Reply(status, headers, raw[header_len:])
        return None

    def close(self) -> None:
        self._sock.close()


def _headers(raw: bytes) -> tuple[str, dict[str, str]]:
    lines = raw.decode(errors="replace").split("\r\n")
    status = lines[0][len("NATS/1.0") :].strip().split(" ")[0] if lines else ""
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip()] = value.strip()
    return status, headers
