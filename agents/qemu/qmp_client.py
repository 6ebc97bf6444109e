"""An asyncio QMP client: one connection to a QEMU monitor's unix socket.

Run state: ``idle -> connecting -> running -> disconnecting -> closed``.
``connect`` reads the greeting and negotiates capabilities, rolling back (closing
the socket) when either fails or is cancelled.  ``execute`` sends a command with
a unique id and waits for the reply with that id.  Asynchronous events go to the
``events`` queue in arrival order; ``None`` is queued once when the connection
ends.  ``disconnect`` is idempotent.

Errors::

    QmpError                the base
    +-- QmpCommandError     QEMU answered ``{"error": {"class", "desc"}}``
    +-- QmpConnectionError  no connection, or it was lost (pending commands fail with it)
    +-- QmpProtocolError    the peer did not speak QMP (bad greeting, bad JSON)

``asyncio.TimeoutError`` (``TimeoutError``) leaves ``execute`` after its timeout;
cancellation is never wrapped.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import json
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
#: QMP replies (query-named-block-nodes on a long chain) can exceed asyncio's 64 KiB line.
_READ_LIMIT = 64 * 1024 * 1024


class QmpState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    RUNNING = "running"
    DISCONNECTING = "disconnecting"
    CLOSED = "closed"


class QmpError(Exception):
    """Anything that went wrong talking QMP."""


class QmpCommandError(QmpError):
    """QEMU refused a command: ``error_class`` (``GenericError``...) and QEMU's message."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"{command}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


class QmpConnectionError(QmpError):
    """Not connected, or the connection was lost."""


class QmpProtocolError(QmpError):
    """The peer sent something that is not QMP."""


@dataclass(frozen=True)
class QmpEvent:
    """An asynchronous QMP event: its name, data and QEMU's timestamp (seconds)."""

    name: str
    data: dict[str, Any]
    timestamp: float


class QmpClient:
    """One QMP session; create, ``connect``, ``execute``..., ``disconnect``."""

    def __init__(self, name: str = "qmp") -> None:
        self.name = name
        self.state = QmpState.IDLE
        self.greeting: dict[str, Any] = {}
        self.events: asyncio.Queue[QmpEvent | None] = asyncio.Queue()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._read_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self.state is QmpState.RUNNING

    async def connect(self, path: str, timeout: float = 5.0) -> None:
        """Open the socket, read the greeting, enable capabilities.

        Raises ``QmpConnectionError`` when the socket cannot be opened or closes,
        ``QmpProtocolError`` on a bad greeting, ``TimeoutError`` after ``timeout``.
        """
        if self.state is not QmpState.IDLE:
            raise QmpConnectionError(f"{self.name}: cannot connect a client that is {self.state}")
        self.state = QmpState.CONNECTING
        try:
            async with asyncio.timeout(timeout):
                try:
                    self._reader, self._writer = await asyncio.open_unix_connection(
                        path, limit=_READ_LIMIT
                    )
                except OSError as err:
                    msg = f"{self.name}: cannot connect to {path}: {err}"
                    raise QmpConnectionError(msg) from err
                greeting = await self._read_message()
                if "QMP" not in greeting:
                    raise QmpProtocolError(f"{self.name}: no QMP greeting from {path}")
                self.greeting = greeting["QMP"]
                self._read_task = asyncio.create_task(self._read_loop(), name=f"qmp-{self.name}")
                self.state = QmpState.RUNNING
                await self.execute("qmp_capabilities")
        except BaseException:
            await self._close()
            raise

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Run ``command`` and return its ``return`` value.

        Raises ``QmpCommandError`` when QEMU refuses it, ``QmpConnectionError``
        when not connected or the connection drops, ``TimeoutError``.
        """
        if self.state is not QmpState.RUNNING or self._writer is None:
            raise QmpConnectionError(f"{self.name}: not connected")
        msg_id = f"{self.name}-{next(self._ids)}"
        message: dict[str, Any] = {"execute": command, "id": msg_id}
        if arguments:
            message["arguments"] = arguments
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        try:
            self._writer.write(json.dumps(message).encode() + b"\n")
            await self._writer.drain()
            async with asyncio.timeout(timeout or DEFAULT_TIMEOUT):
                reply = await future
        except TimeoutError:
            raise  # an OSError too, but not a lost connection
        except (ConnectionError, OSError) as err:
            raise QmpConnectionError(f"{self.name}: {command}: {err}") from err
        finally:
            self._pending.pop(msg_id, None)
        if "error" in reply:
            error = reply["error"]
            raise QmpCommandError(command, error.get("class", ""), error.get("desc", ""))
        return reply.get("return")

    async def disconnect(self) -> None:
        """Close the connection; pending commands fail with ``QmpConnectionError``."""
        if self.state in (QmpState.IDLE, QmpState.CLOSED):
            self.state = QmpState.CLOSED
            return
        await self._close()

    async def wait_closed(self) -> None:
        """Until the connection has ended (either side)."""
        await self._closed.wait()

    # -- internals --------------------------------------------------------------------

    async def _read_message(self) -> dict[str, Any]:
        assert self._reader is not None
        line = await self._reader.readline()
        if not line:
            raise QmpConnectionError(f"{self.name}: connection closed by QEMU")
        try:
            message = json.loads(line)
        except ValueError as err:
            raise QmpProtocolError(f"{self.name}: not JSON: {line[:80]!r}") from err
        if not isinstance(message, dict):
            raise QmpProtocolError(f"{self.name}: not a JSON object: {line[:80]!r}")
        return message

    async def _read_loop(self) -> None:
        error: QmpError = QmpConnectionError(f"{self.name}: connection closed by QEMU")
        try:
            while True:
                message = await self._read_message()
                if "event" in message:
                    stamp = message.get("timestamp", {})
                    when = stamp.get("seconds", 0) + stamp.get("microseconds", 0) / 1e6
                    self.events.put_nowait(
                        QmpEvent(str(message["event"]), message.get("data", {}), when)
                    )
                    continue
                future = self._pending.get(str(message.get("id")))
                if future is not None and not future.done():
                    future.set_result(message)
                else:
                    log.debug("unexpected QMP reply", extra={"qmp": self.name, "reply": message})
        except QmpError as err:
            error = err
        except (ConnectionError, OSError) as err:
            error = QmpConnectionError(f"{self.name}: {err}")
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(error)
            if self.state is QmpState.RUNNING:
                # Lost from QEMU's side: close our half and tell the consumers.
                self._read_task = None
                if self._writer is not None:
                    self._writer.close()
                self._mark_closed()

    async def _close(self) -> None:
        if self.state is QmpState.CLOSED:
            return
        self.state = QmpState.DISCONNECTING
        task, self._read_task = self._read_task, None
        if task is not None:
            task.cancel()
            # wait() neither raises the task's CancelledError nor hides our own.
            await asyncio.wait({task})
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        self._mark_closed()

    def _mark_closed(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(QmpConnectionError(f"{self.name}: disconnected"))
        self._writer = self._reader = None
        self.state = QmpState.CLOSED
        self.events.put_nowait(None)
        self._closed.set()
