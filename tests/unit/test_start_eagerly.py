"""``start_eagerly``: a coroutine runs at once, and becomes a task only when it waits."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any

import pytest

from shared.util.tasks import start_eagerly

_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("test_eager", default="unset")


class Spawner:
    """``spawn`` for start_eagerly: makes and keeps the tasks."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def __call__(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.append(task)
        return task


async def test_a_coroutine_that_never_waits_ends_at_once_without_a_task() -> None:
    done: list[str] = []

    async def answer() -> None:
        done.append("answered")

    spawn = Spawner()
    start_eagerly(answer(), spawn)
    assert done == ["answered"]
    assert spawn.tasks == []


async def test_a_coroutine_that_waits_goes_on_in_a_task_with_what_it_waited_for() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[object] = []

    async def answer() -> None:
        _VAR.set("request 1")
        seen.append(await future)
        await asyncio.sleep(0)
        seen.append(_VAR.get())

    spawn = Spawner()
    start_eagerly(answer(), spawn)
    assert len(spawn.tasks) == 1 and seen == []
    future.set_result(42)
    await spawn.tasks[0]
    assert seen == [42, "request 1"]


async def test_the_error_of_a_future_reaches_the_coroutine() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    caught: list[BaseException] = []

    async def answer() -> None:
        try:
            await future
        except KeyError as err:
            caught.append(err)

    spawn = Spawner()
    start_eagerly(answer(), spawn)
    error = KeyError("gone")
    future.set_exception(error)
    await spawn.tasks[0]
    assert caught == [error]


async def test_cancelling_the_task_cancels_the_wait_and_runs_the_cleanup() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    cleaned: list[str] = []

    async def answer() -> None:
        try:
            await future
        finally:
            cleaned.append("released")

    spawn = Spawner()
    start_eagerly(answer(), spawn)
    await asyncio.sleep(0)
    spawn.tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await spawn.tasks[0]
    assert future.cancelled()
    assert cleaned == ["released"]


async def test_a_cancellation_after_the_future_is_done_is_still_delivered() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    after: list[str] = []

    async def answer() -> None:
        await future
        after.append("went on")

    spawn = Spawner()
    start_eagerly(answer(), spawn)
    await asyncio.sleep(0)
    future.set_result(1)
    spawn.tasks[0].cancel()  # the task has not run since the future ended
    with pytest.raises(asyncio.CancelledError):
        await spawn.tasks[0]
    assert after == []


async def test_an_error_before_the_first_wait_ends_in_a_task() -> None:
    class Crash(BaseException):
        pass

    async def answer() -> None:
        raise Crash

    spawn = Spawner()
    start_eagerly(answer(), spawn)
    assert len(spawn.tasks) == 1
    with pytest.raises(Crash):
        await spawn.tasks[0]


async def test_a_bare_turn_of_the_loop_then_a_sleep_are_driven_to_the_end() -> None:
    steps: list[str] = []

    async def answer() -> None:
        await asyncio.sleep(0)
        steps.append("turned")
        await asyncio.sleep(0.01)
        steps.append("slept")

    spawn = Spawner()
    start_eagerly(answer(), spawn)
    assert steps == []
    await spawn.tasks[0]
    assert steps == ["turned", "slept"]
