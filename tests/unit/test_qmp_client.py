"""The agent's QMP client against a fake QMP server on a unix socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agents.qemu.qmp_client import (
    QmpClient,
    QmpCommandError,
    QmpConnectionError,
    QmpProtocolError,
    QmpState,
)

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}
Reply = Callable[[dict[str, Any], asyncio.StreamWriter], Awaitable[None]]


class FakeQemu:
    """Answers each command with ``replies[name]`` (default: an empty return)."""

    def __init__(self, path: Path, greeting: bytes | None = None) -> None:
        self.path = path
        self.greeting = greeting if greeting is not None else json.dumps(GREETING).encode()
        self.received: list[dict[str, Any]] = []
        self.replies: dict[str, Reply] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._client, str(self.path))

    async def stop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def send(self, message: dict[str, Any]) -> None:
        assert self.writer is not None
        self.writer.write(json.dumps(message).encode() + b"\r\n")
        await self.writer.drain()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        writer.write(self.greeting + b"\r\n")
        await writer.drain()
        while line := await reader.readline():
            message = json.loads(line)
            self.received.append(message)
            reply = self.replies.get(message["execute"])
            if reply is not None:
                await reply(message, writer)
            else:
                await self.send({"return": {}, "id": message["id"]})


@pytest.fixture
async def qemu(tmp_path: Path) -> AsyncIterator[FakeQemu]:
    fake = FakeQemu(tmp_path / "qmp.sock")
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_connect_negotiates_and_executes(qemu: FakeQemu) -> None:
    client = QmpClient("t")
    states = [client.state]
    await client.connect(str(qemu.path))
    states.append(client.state)
    assert states == [QmpState.IDLE, QmpState.RUNNING]
    assert client.greeting["version"]["qemu"]["major"] == 7
    assert qemu.received[0]["execute"] == "qmp_capabilities"

    async def answer(message: dict[str, Any], _: asyncio.StreamWriter) -> None:
        await qemu.send({"return": [{"id": "job"}], "id": message["id"]})

    qemu.replies["query-jobs"] = answer
    assert await client.execute("query-jobs") == [{"id": "job"}]
    await client.execute("job-cancel", {"id": "job"})
    assert qemu.received[-1] == {"execute": "job-cancel", "id": "t-3", "arguments": {"id": "job"}}
    await client.disconnect()
    await client.disconnect()
    assert client.state is QmpState.CLOSED


async def test_replies_are_matched_by_id(qemu: FakeQemu) -> None:
    held: list[dict[str, Any]] = []

    async def hold(message: dict[str, Any], _: asyncio.StreamWriter) -> None:
        held.append(message)
        if len(held) == 2:  # answer the second one first
            for m in reversed(held):
                await qemu.send({"return": m["arguments"]["n"], "id": m["id"]})

    qemu.replies["echo"] = hold
    client = QmpClient("t")
    await client.connect(str(qemu.path))
    first, second = await asyncio.gather(
        client.execute("echo", {"n": 1}), client.execute("echo", {"n": 2})
    )
    assert (first, second) == (1, 2)
    await client.disconnect()


async def test_error_reply_raises_command_error(qemu: FakeQemu) -> None:
    async def refuse(message: dict[str, Any], _: asyncio.StreamWriter) -> None:
        error = {"class": "GenericError", "desc": "Job 'x' not found"}
        await qemu.send({"error": error, "id": message["id"]})

    qemu.replies["job-complete"] = refuse
    client = QmpClient("t")
    await client.connect(str(qemu.path))
    with pytest.raises(QmpCommandError) as caught:
        await client.execute("job-complete", {"id": "x"})
    assert caught.value.error_class == "GenericError"
    assert caught.value.desc == "Job 'x' not found"
    assert client.connected
    await client.disconnect()


async def test_events_are_queued_in_order(qemu: FakeQemu) -> None:
    client = QmpClient("t")
    await client.connect(str(qemu.path))
    stamp = {"seconds": 10, "microseconds": 500000}
    for status in ("created", "running", "ready"):
        event = {"event": "JOB_STATUS_CHANGE", "data": {"id": "j", "status": status}}
        await qemu.send({**event, "timestamp": stamp})
    got = [await asyncio.wait_for(client.events.get(), 2) for _ in range(3)]
    assert [e.data["status"] for e in got if e is not None] == ["created", "running", "ready"]
    assert got[0] is not None and got[0].timestamp == 10.5
    await client.disconnect()
    assert await client.events.get() is None


async def test_peer_closing_fails_pending_commands(qemu: FakeQemu) -> None:
    async def hang_up(_: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        writer.close()

    qemu.replies["quit"] = hang_up
    client = QmpClient("t")
    await client.connect(str(qemu.path))
    with pytest.raises(QmpConnectionError):
        await client.execute("quit")
    await asyncio.wait_for(client.wait_closed(), 2)
    assert client.state is QmpState.CLOSED
    assert await client.events.get() is None
    with pytest.raises(QmpConnectionError):
        await client.execute("query-jobs")


async def test_bad_greeting_rolls_back(tmp_path: Path) -> None:
    fake = FakeQemu(tmp_path / "qmp.sock", greeting=b'{"hello": 1}')
    await fake.start()
    try:
        client = QmpClient("t")
        with pytest.raises(QmpProtocolError):
            await client.connect(str(fake.path))
        assert client.state is QmpState.CLOSED
    finally:
        await fake.stop()


async def test_no_socket_and_timeouts(qemu: FakeQemu, tmp_path: Path) -> None:
    with pytest.raises(QmpConnectionError):
        await QmpClient("t").connect(str(tmp_path / "absent.sock"))

    async def never(_: dict[str, Any], __: asyncio.StreamWriter) -> None:
        return None

    qemu.replies["slow"] = never
    client = QmpClient("t")
    await client.connect(str(qemu.path))
    with pytest.raises(TimeoutError):
        await client.execute("slow", timeout=0.1)
    assert client.connected  # a late reply is dropped, the session goes on
    await client.execute("query-jobs")
    await client.disconnect()


async def test_cancelled_connect_leaves_nothing_open(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never greets

    server = await asyncio.start_unix_server(silent, str(path))
    try:
        client = QmpClient("t")
        task = asyncio.create_task(client.connect(str(path)))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.state is QmpState.CLOSED
    finally:
        server.close()
        await server.wait_closed()
