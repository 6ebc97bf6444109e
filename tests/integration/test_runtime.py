"""The runtime every process uses, against a real nats-server: a process's run
states through start, failure and stop, and how it serves its endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from pydantic import BaseModel

from shared.util import api as api_module
from shared.util import process as process_module
from shared.util.api import Bound, Empty, Endpoint, call
from shared.util.errors import ErrorCode, VirtError
from shared.util.natsserver import free_port
from shared.util.process import RunState, ServiceProcess, Teardown
from shared.util.settings import ProcessSettings, load_settings

pytestmark = pytest.mark.integration


def echo_settings(nats_url: str) -> ProcessSettings:
    """The processes here (echo and its variants, whatever their names) serve the
    ``echo`` endpoints, so they connect as the ``echo`` service."""
    return ProcessSettings(
        nats_url=nats_url, creds=Path(os.environ["VIRTBUS_CREDS_DIR"]) / "echo.creds"
    )


class EchoRequest(BaseModel):
    text: str


ECHO = Endpoint("echo", "say", EchoRequest, EchoRequest)
BOOM = Endpoint("echo", "boom", Empty, Empty)
#: A read from memory, answered in the subscription's callback.
SHOUT = Endpoint("echo", "shout", EchoRequest, EchoRequest, inline=True)


class EchoProcess(ServiceProcess[ProcessSettings]):
    name = "echo"
    endpoint_table = (ECHO, BOOM, SHOUT)

    def endpoints(self) -> Sequence[Bound[Any, Any]]:
        return (ECHO.bind(self.say), BOOM.bind(self.boom), SHOUT.bind(self.shout))

    async def shout(self, req: EchoRequest) -> EchoRequest:
        if req.text == "boom":
            raise RuntimeError("secret internals")
        return EchoRequest(text=(await self.say(req)).text.upper())

    async def say(self, req: EchoRequest) -> EchoRequest:
        if not req.text:
            raise VirtError(ErrorCode.INVALID_ARG, "empty text")
        return req

    async def boom(self, _: Empty) -> Empty:
        raise RuntimeError("secret internals")


async def test_process_states_and_error_replies(nats_url: str, nc: NATS) -> None:
    process = EchoProcess(ProcessSettings(nats_url=nats_url, state_dir=Path("/nonexistent")))
    assert process.state is RunState.NEW
    await process.start()
    assert process.state is RunState.RUNNING  # type: ignore[comparison-overlap]
    assert (await call(nc, ECHO, EchoRequest(text="hi"))).text == "hi"
    with pytest.raises(VirtError) as bad:
        await call(nc, ECHO, EchoRequest(text=""))
    assert bad.value.code is ErrorCode.INVALID_ARG
    with pytest.raises(VirtError) as boom:
        await call(nc, BOOM, Empty())
    assert boom.value.code is ErrorCode.INTERNAL_ERROR
    assert "secret internals" not in str(boom.value)
    with pytest.raises(RuntimeError):
        await process.start()
    await process.stop()
    assert process.state is RunState.STOPPED
    await process.stop()  # idempotent
    assert process.state is RunState.STOPPED
    with pytest.raises(VirtError) as gone:
        await call(nc, ECHO, EchoRequest(text="hi"))
    assert gone.value.code is ErrorCode.NO_SERVER


async def test_an_inline_endpoint_answers_as_any_other(nats_url: str, nc: NATS) -> None:
    async with EchoProcess(echo_settings(nats_url)):
        replies = await asyncio.gather(
            *(call(nc, SHOUT, EchoRequest(text=f"m{i}")) for i in range(20))
        )
        assert [r.text for r in replies] == [f"M{i}" for i in range(20)]
        with pytest.raises(VirtError) as bad:
            await call(nc, SHOUT, EchoRequest(text=""))
        assert bad.value.code is ErrorCode.INVALID_ARG
        with pytest.raises(VirtError) as boom:
            await call(nc, SHOUT, EchoRequest(text="boom"))
        assert boom.value.code is ErrorCode.INTERNAL_ERROR
        assert "secret internals" not in str(boom.value)
        info = json.loads((await nc.request("$SRV.INFO.echo", b"", timeout=5)).data)
        shout = next(e for e in info["endpoints"] if e["name"] == SHOUT.micro_name)
        assert shout["metadata"]["concurrency"] == "inline"
        assert (await call(nc, SHOUT, EchoRequest(text="after"))).text == "AFTER"


LIFECYCLE = [RunState.NEW, RunState.STARTING, RunState.RUNNING, RunState.STOPPING, RunState.STOPPED]
ROLLED_BACK = [RunState.NEW, RunState.STARTING, RunState.STOPPING, RunState.STOPPED]


async def test_run_states_in_order(nats_url: str) -> None:
    process = EchoProcess(echo_settings(nats_url))
    async with process:
        pass
    await process.stop()  # idempotent
    assert process.history == LIFECYCLE


async def test_start_without_nats_rolls_back() -> None:
    settings = ProcessSettings(nats_url=f"nats://127.0.0.1:{free_port()}", nats_connect_timeout=1.0)
    process = EchoProcess(settings)
    with pytest.raises(VirtError) as info:
        await asyncio.wait_for(process.start(), 60)
    assert info.value.code is ErrorCode.NO_CONNECT
    assert process.history == ROLLED_BACK


class GatedProcess(EchoProcess):
    """Set-up that records its steps and can wait on a gate, fail, or spawn a crash."""

    name = "gated"

    def __init__(
        self, settings: ProcessSettings, *, hold: bool = False, fail: bool = False
    ) -> None:
        super().__init__(settings)
        self.hold = hold
        self.fail = fail
        self.steps: list[str] = []
        self.in_setup = asyncio.Event()
        self.crash = asyncio.Event()
        self.undo_errors: list[Exception] = []

    async def setup(self, stack: Teardown) -> None:
        self.steps.append("opened")
        stack.callback(self.steps.append, "closed")
        for err in self.undo_errors:
            stack.push_async_callback(_raise, err)
        self.spawn(self._crash_on_gate(), "crasher")
        self.in_setup.set()
        if self.hold:
            await asyncio.Event().wait()
        if self.fail:
            raise VirtError(ErrorCode.OPERATION_FAILED, "set-up refused")

    async def _crash_on_gate(self) -> None:
        await self.crash.wait()
        raise RuntimeError("watcher crashed")


async def _raise(err: Exception) -> None:
    raise err


async def test_failed_setup_is_undone(nats_url: str) -> None:
    process = GatedProcess(echo_settings(nats_url), fail=True)
    with pytest.raises(VirtError, match="set-up refused"):
        await process.start()
    assert process.history == ROLLED_BACK
    assert process.steps == ["opened", "closed"]
    assert process.http.port == 0


async def test_cancel_during_start_undoes_it(nats_url: str) -> None:
    process = GatedProcess(echo_settings(nats_url), hold=True)
    task = asyncio.create_task(process.start())
    await process.in_setup.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert process.history == ROLLED_BACK
    assert process.steps == ["opened", "closed"]
    assert process.http.port == 0


async def test_teardown_errors_leave_together(nats_url: str) -> None:
    process = GatedProcess(echo_settings(nats_url))
    first, second = OSError("first undo failed"), ValueError("second undo failed")
    process.undo_errors = [first, second]
    await process.start()
    with pytest.raises(ExceptionGroup) as group:
        await process.stop()
    assert set(group.value.exceptions) == {first, second}
    assert process.history == LIFECYCLE
    assert process.steps == ["opened", "closed"]  # the other undo steps ran


async def test_a_crashed_task_ends_the_process(nats_url: str, nc: NATS) -> None:
    process = GatedProcess(echo_settings(nats_url))
    await process.start()
    process.crash.set()
    await process.wait()  # returns: the group ended
    with pytest.raises(VirtError) as refused:
        await call(nc, ECHO, EchoRequest(text="hi"))
    assert refused.value.code is ErrorCode.OPERATION_FAILED
    with pytest.raises(ExceptionGroup) as group:
        await process.stop()
    [crash] = group.value.exceptions
    assert isinstance(crash, ExceptionGroup)
    assert [str(e) for e in crash.exceptions] == ["watcher crashed"]
    assert process.history == LIFECYCLE


class SlowProcess(EchoProcess):
    """``say`` waits on a gate, so a stop can begin while a request is under way."""

    name = "slow"

    def __init__(self, settings: ProcessSettings) -> None:
        super().__init__(settings)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.stopping = asyncio.Event()

    def state_changed(self, state: RunState) -> None:
        if state is RunState.STOPPING:
            self.stopping.set()

    async def say(self, req: EchoRequest) -> EchoRequest:
        self.entered.set()
        await self.release.wait()
        return req


async def test_stop_lets_requests_under_way_answer(nats_url: str, nc: NATS) -> None:
    process = SlowProcess(echo_settings(nats_url))
    await process.start()
    reply = asyncio.create_task(call(nc, ECHO, EchoRequest(text="late")))
    await process.entered.wait()
    stopping = asyncio.create_task(process.stop())
    await process.stopping.wait()
    process.release.set()
    await stopping
    assert (await reply).text == "late"
    assert process.history == LIFECYCLE


def test_settings_from_flags_then_environment() -> None:
    env = {"VIRTBUS_HOST": "env-host", "VIRTBUS_HTTP_PORT": "9100", "NATS_URL": "nats://n:1"}
    s = load_settings(ProcessSettings, ["--host", "flag-host"], env)
    assert (s.host, s.http_port, s.nats_url) == ("flag-host", 9100, "nats://n:1")
    s = load_settings(ProcessSettings, [], {"VIRTBUS_NATS_URL": "nats://v:2", **env})
    assert s.nats_url == "nats://v:2"
    with pytest.raises(SystemExit):
        load_settings(ProcessSettings, ["--http-port", "70000"], {})


LONG = Endpoint("patient", "wait", EchoRequest, EchoRequest, timeout=600.0)


class PatientProcess(ServiceProcess[ProcessSettings]):
    """A long endpoint (it asks for heartbeats) that answers when the test says."""

    name = "patient"
    endpoint_table = (LONG,)

    def __init__(self, settings: ProcessSettings) -> None:
        super().__init__(settings)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def endpoints(self) -> Sequence[Bound[Any, Any]]:
        return (LONG.bind(self.wait_for_release),)

    async def wait_for_release(self, req: EchoRequest) -> EchoRequest:
        self.entered.set()
        await self.release.wait()
        return req


async def test_heartbeats_keep_a_long_call_waiting(
    nats_url: str, nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_module, "HEARTBEAT_LOST_SECONDS", 0.3)
    monkeypatch.setattr(process_module, "HEARTBEAT_SECONDS", 0.05)
    async with PatientProcess(ProcessSettings(nats_url=nats_url)) as process:
        reply = asyncio.create_task(call(nc, LONG, EchoRequest(text="late")))
        await process.entered.wait()
        await asyncio.sleep(1.0)  # several loss windows: heartbeats must keep it alive
        process.release.set()
        assert (await reply).text == "late"


async def test_a_silent_service_fails_a_long_call(
    nats_url: str, nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_module, "HEARTBEAT_LOST_SECONDS", 0.3)
    process = PatientProcess(ProcessSettings(nats_url=nats_url))
    await process.start()
    reply = asyncio.create_task(call(nc, LONG, EchoRequest(text="never")))
    await process.entered.wait()
    # The process's connection goes, as with a kill -9: no heartbeat, no reply.
    await process.nc.close()
    with pytest.raises(VirtError) as died:
        await reply
    assert died.value.code is ErrorCode.RPC
    process.release.set()
    with contextlib.suppress(ExceptionGroup):
        await process.stop()
