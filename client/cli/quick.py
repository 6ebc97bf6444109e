"""The quick path of the read-only one-shot commands (secret-list, pool-list,
vol-list, vol-info): plain JSON and a socket instead of pydantic and asyncio.

``Calls`` makes the few requests those commands need with the endpoint
tables' subjects and field names, and hands back the replies' JSON objects
as ``Record``s (attribute access, ``raw`` for ``--json``);
tests/unit/test_cli_quick.py holds it to the pydantic models of shared/api.
``run_quick`` connects with ``client.cli.wire`` (nats-py only when the server
wants what the wire client lacks), finds the storage host without asking the
bus when it can, and drives the command's coroutine, which never suspends on
the socket path, without an event loop.

A storage command's host is ``--host``, else ``$VIRTBUS_HOST``, else the one
the last discovery found for this server (cached in
``$XDG_CACHE_HOME/virtbus/hosts.json``), else the answer of a fresh
``$SRV.PING.storage``: the only host with a storage service, else this
machine.  A cached host whose service has gone is forgotten and looked for
again.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

from client.cli import jsonlite
from client.cli.session import (
    authentication_failed,
    connect_timeout,
    no_connect,
    server_url,
    virt_error,
    with_credentials,
)
from client.cli.table import Args

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    from nats.aio.client import Client as NATS

    T = TypeVar("T")
    from collections.abc import Awaitable, Callable, Coroutine
    from typing import Any

    from client.cli.wire import Reply

    Send = Callable[[str, bytes, float], Awaitable["Reply"]]
    Body = Callable[["Calls"], Coroutine[Any, Any, int]]

#: Seconds a request waits for its reply (the endpoint tables' default).
REPLY_TIMEOUT = 30.0
#: Discovery: how long to wait for a first answer, then for more.
DISCOVER_FIRST, DISCOVER_SETTLE = 1.0, 0.05

SECRET, STORAGE = "secret", "storage"


class Record(SimpleNamespace):
    """A reply's JSON object with attribute access; ``raw`` is the object itself."""

    raw: dict[str, Any]


def record(data: dict[str, Any]) -> Any:
    rec = Record(**data)
    rec.raw = data
    return rec


_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def subject_of(service: str, endpoint: str, host: str | None) -> str:
    """``shared.util.subjects.api_subject``, without importing it (and ``re``) for a
    host named plainly, as hosts are (tests/unit/test_cli_quick.py compares them)."""
    if host is None:
        return f"virtbus.v1.{service}.{endpoint}"
    if not host or not _PLAIN.issuperset(host):
        from shared.util.subjects import api_subject

        return api_subject(service, endpoint, host)
    return f"virtbus.v1.{service}.{host}.{endpoint}"


def _rpc_error(code: str, message: str, *, raw: bool = False) -> Exception:
    """A ``VirtError`` of the RPC domain; the errors module (and ``enum``) is
    imported only once something fails."""
    from shared.util.errors import ErrorCode, ErrorDomain, VirtError

    return VirtError(ErrorCode[code], message, ErrorDomain.RPC, raw=raw)


class Calls:
    """The requests of the quick commands; each raises ``VirtError`` as the
    typed clients (``client.secret``, ``client.storage``) do."""

    def __init__(self, send: Send, host: str | None, *, private: bool = False) -> None:
        self._send = send
        self.host = host
        #: Whether the connection is TLS or loopback: secret values go only there.
        self.private = private

    async def _call(self, service: str, endpoint: str, body: dict[str, Any]) -> Any:
        scoped = service != SECRET
        subject = subject_of(service, endpoint, self.host if scoped else None)
        try:
            reply = await self._send(subject, jsonlite.dumps(body).encode(), REPLY_TIMEOUT)
        except TimeoutError:
            raise _rpc_error(
                "OPERATION_TIMEOUT", f"no reply from the {service} service to {endpoint}"
            ) from None
        if reply.status == "503":
            where = f" on host '{self.host}'" if scoped else ""
            raise _rpc_error(
                "NO_SERVER", f"no {service} service is running{where} (subject {subject})"
            )
        if "Nats-Service-Error-Code" in reply.headers:
            from shared.util.errors import VirtError

            try:
                raise VirtError.from_dict(jsonlite.loads(reply.data))
            except (ValueError, TypeError):
                message = reply.headers.get("Nats-Service-Error", "unknown error")
                raise _rpc_error("INTERNAL_ERROR", message, raw=True) from None
        return jsonlite.loads(reply.data)

    # -- secret ----------------------------------------------------------------------

    async def secret_list(self, *, ephemeral: bool | None, private: bool | None) -> list[Any]:
        reply = await self._call(SECRET, "list", {"ephemeral": ephemeral, "private": private})
        return [record(s) for s in reply["secrets"]]

    async def secret_lookup_by_uuid(self, uuid: str) -> Any:
        return record(await self._call(SECRET, "lookup.uuid", {"uuid": uuid}))

    async def secret_get_value(self, uuid: str) -> bytes:
        """The value (``client.secret.SecretClient.get_value``): over TLS or loopback only."""
        if not self.private:
            from shared.util.errors import not_private

            raise not_private("secret values")
        import binascii

        reply = await self._call(SECRET, "value.get", {"uuid": uuid})
        return binascii.a2b_base64(reply["value"])

    # -- storage ---------------------------------------------------------------------

    async def pool_info(self, pool: str) -> Any:
        return record(await self._call(STORAGE, "pool.info", {"pool": pool}))

    async def pool_lookup_by_uuid(self, uuid: str) -> Any:
        return record(await self._call(STORAGE, "pool.lookup.uuid", {"uuid": uuid}))

    async def pool_list(
        self,
        *,
        active: bool | None,
        persistent: bool | None,
        autostart: bool | None,
        types: list[str],
    ) -> list[Any]:
        body = {"active": active, "persistent": persistent, "autostart": autostart}
        reply = await self._call(STORAGE, "pool.list", {**body, "types": types})
        return [record(p) for p in reply["pools"]]

    async def vol_lookup_by_name(self, pool: str, name: str) -> Any:
        return record(await self._call(STORAGE, "vol.lookup.name", {"pool": pool, "name": name}))

    async def vol_lookup_by_key(self, key: str) -> Any:
        return record(await self._call(STORAGE, "vol.lookup.key", {"key": key}))

    async def vol_lookup_by_path(self, path: str) -> Any:
        return record(await self._call(STORAGE, "vol.lookup.path", {"path": path}))

    async def vol_info(self, pool: str, name: str) -> Any:
        body = {"vol": {"pool": pool, "name": name}}
        return record(await self._call(STORAGE, "vol.info", body))

    async def vol_list(self, pool: str, *, details: bool) -> list[Any]:
        reply = await self._call(STORAGE, "vol.list", {"pool": pool, "details": details})
        return [record(v) for v in reply["volumes"]]

    async def vol_list_brief(self, pool: str) -> list[Any]:
        reply = await self._call(STORAGE, "vol.brief.list", {"pool": pool})
        return [record(v) for v in reply["volumes"]]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end without an event loop: on the socket path nothing
    it awaits ever suspends."""
    try:
        coro.send(None)
    except StopIteration as done:
        value: T = done.value
        return value
    coro.close()
    raise RuntimeError("a quick command suspended outside an event loop")


# ---- finding the storage host -----------------------------------------------------------


def _cache_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "virtbus", "hosts.json")


def _cached_hosts() -> dict[str, str]:
    try:
        with open(_cache_path(), "rb") as f:
            data = jsonlite.loads(f.read())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember_host(url: str, host: str | None) -> None:
    """Cache (or, with None, forget) the storage host found for ``url``."""
    hosts = _cached_hosts()
    if host is None:
        hosts.pop(url, None)
    else:
        hosts[url] = host
    path = _cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(jsonlite.dumps(hosts))
        os.replace(tmp, path)
    except OSError:
        pass


def pick_host(replies: list[bytes]) -> str:
    """From ``$SRV.PING.storage`` answers: the only host, else this machine's name."""
    import _socket

    hosts = set()
    for data in replies:
        try:
            host = (jsonlite.loads(data).get("metadata") or {}).get("host")
        except (ValueError, AttributeError):
            continue
        if host:
            hosts.add(str(host))
    return hosts.pop() if len(hosts) == 1 else _socket.gethostname()


# ---- running ----------------------------------------------------------------------------


def run_quick(args: Args, body: Body, *, storage: bool, context: str | None = None) -> int:
    """Run a quick command's ``body``; ``CommandFailed`` and ``VirtError`` become
    virsh's ``error:`` lines (``context`` first, for a ``VirtError``), its blank
    line and exit status 1."""
    from client.cli import session
    from client.cli.pool_cmds import CommandFailed, fail
    from client.cli.wire import Refused, Unsupported, Wire

    if session.shared is not None:
        return session.shared.run_calls(body, args.host)
    url = server_url(args)
    try:
        signed, inbox = with_credentials(url, getattr(args, "creds", None))
        try:
            wire = Wire(signed, timeout=connect_timeout(args), inbox_prefix=inbox)
        except Unsupported:
            return _run_with_nats(args, url, body, storage)
        except Refused as err:
            if "authorization violation" in str(err).lower():
                return fail(authentication_failed(url, "@" in signed))
            return fail("failed to connect to the hypervisor", str(no_connect(url, err)))
        except OSError as err:
            return fail("failed to connect to the hypervisor", str(no_connect(url, err)))
        try:
            return _run_on_wire(args, url, wire, body, storage)
        finally:
            wire.close()
    except CommandFailed as failure:
        return fail(*failure.lines)
    except Exception as exc:
        virt = virt_error(exc)
        if virt is None:
            raise
        return fail(*([context] if context else []), str(virt))


def _run_on_wire(args: Args, url: str, wire: Any, body: Body, storage: bool) -> int:
    from client.cli.wire import Refused

    async def send(subject: str, data: bytes, timeout: float) -> Reply:
        try:
            return wire.request(subject, data, timeout)  # type: ignore[no-any-return]
        except Refused as err:
            # As shared.util.bus.request words the server's refusal.
            if "permissions violation for publish" not in str(err).lower():
                raise
            from shared.util.errors import send_refused

            raise send_refused(subject) from None

    if not storage:
        return run_sync(body(Calls(send, None, private=wire.private)))
    host = args.host or os.environ.get("VIRTBUS_HOST")
    cached = None if host else _cached_hosts().get(url)
    if host is None and cached is not None:
        try:
            return run_sync(body(Calls(send, cached)))
        except Exception as exc:
            err = virt_error(exc)
            if err is None or err.name != "VIR_ERR_NO_SERVER":
                raise
            remember_host(url, None)
    if host is None:
        from shared.util.subjects import service_subject

        answers = wire.gather(
            service_subject("PING", "storage"), first=DISCOVER_FIRST, settle=DISCOVER_SETTLE
        )
        host = pick_host([a.data for a in answers])
        if answers:
            remember_host(url, host)
    return run_sync(body(Calls(send, host)))


def nats_send(nc: NATS) -> Send:
    """Requests over a nats-py connection, answered as the wire client answers them."""
    from client.cli.wire import Reply

    async def send(subject: str, data: bytes, timeout: float) -> Reply:
        from nats.errors import NoRespondersError

        from shared.util import bus

        try:
            # bus.request: a refused publish is VIR_ERR_ACCESS_DENIED at once.
            msg = await bus.request(nc, subject, data, timeout)
        except NoRespondersError:
            return Reply("503", {}, b"")
        return Reply("", dict(msg.headers or {}), msg.data)

    return send


def _run_with_nats(args: Args, url: str, body: Body, storage: bool) -> int:
    """The same, over nats-py, for servers the wire client cannot talk to."""
    import asyncio

    from client.connection import Client
    from client.storage import default_host
    from shared.util.bus import private_channel

    async def main() -> int:
        from pathlib import Path

        creds = getattr(args, "creds", None)
        client = await Client.connect(
            url, creds=Path(creds) if creds else None, deadline=connect_timeout(args)
        )
        nc = client.nc
        send = nats_send(nc)
        try:
            host = (args.host or await default_host(nc)) if storage else None
            return await body(Calls(send, host, private=private_channel(nc)))
        finally:
            await client.close()

    return asyncio.run(main())


def print_raw(records: Any) -> None:
    """``--json`` of what the quick calls returned."""
    from client.cli.output import print_json

    if isinstance(records, list):
        print_json([r.raw for r in records])
    else:
        print_json(records.raw)
