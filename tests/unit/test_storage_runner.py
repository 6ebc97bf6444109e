"""Running the external tools: output, libvirt's error wording, timeouts and
cancellation that never leave a child behind, on real processes.  Each test
runs twice: with posix_spawn and a pidfd (what a Linux host uses), and with
asyncio's subprocesses (the fallback where the kernel has no pidfd)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.storage.pools import runner as runner_module
from services.storage.pools.runner import CommandRunner
from shared.util.errors import ErrorCode, VirtError

spawn_modes = [False]
if runner_module.SPAWN_WITH_PIDFD:
    spawn_modes.insert(0, True)


@pytest.fixture(params=spawn_modes, ids=lambda pidfd: "pidfd" if pidfd else "asyncio")
def runner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> CommandRunner:
    monkeypatch.setattr(runner_module, "SPAWN_WITH_PIDFD", request.param)
    return CommandRunner()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_fd_left() -> Iterator[None]:
    before = open_fds()
    yield
    # The listing's own descriptor differs between two calls.
    assert len(open_fds() - before) <= 1


def gone(pid: int) -> bool:
    """True when no process ``pid`` exists, not even a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_stdout_and_exit_code(runner: CommandRunner, no_fd_left: None) -> None:
    assert await runner.run(["sh", "-c", "echo out; echo err >&2"]) == (0, "out\n")
    assert await runner.output(["sh", "-c", "echo $LC_ALL"]) == "C\n"


async def test_stdin_is_empty(runner: CommandRunner) -> None:
    assert await runner.output(["cat"]) == ""


async def test_the_tool_does_not_ignore_sigpipe(runner: CommandRunner) -> None:
    # Python ignores SIGPIPE; a tool must start with the default (it dies when
    # the reader of its pipe went away, as shell pipelines expect).
    status = await runner.output(["cat", "/proc/self/status"])
    ignored = int(
        next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16
    )
    assert not ignored & (1 << (signal.SIGPIPE - 1))


async def test_output_larger_than_a_pipe(runner: CommandRunner, no_fd_left: None) -> None:
    out = await runner.output(["head", "-c", "3000000", "/dev/zero"])
    assert len(out) == 3_000_000


async def test_failure_is_worded_as_libvirt(runner: CommandRunner, no_fd_left: None) -> None:
    with pytest.raises(VirtError) as failed:
        await runner.run(["sh", "-c", "echo out; echo 'bad thing' >&2; exit 3"])
    assert failed.value.code is ErrorCode.INTERNAL_ERROR
    assert failed.value.message.endswith(
        "Child process (sh -c 'echo out; echo '\\''bad thing'\\'' >&2; exit 3') "
        "unexpected exit status 3: bad thing"
    )
    with pytest.raises(VirtError) as quiet:
        await runner.run(["sh", "-c", "echo only-stdout; exit 1"])
    assert quiet.value.message.endswith("unexpected exit status 1: only-stdout")
    assert await runner.run(["sh", "-c", "exit 2"], ok_codes=(0, 2)) == (2, "")


async def test_missing_tool_runs_nothing(runner: CommandRunner) -> None:
    timed: list[str] = []
    runner = CommandRunner(lambda tool, _: timed.append(tool))
    with pytest.raises(VirtError) as missing:
        await runner.run(["virtbus-no-such-tool"])
    assert missing.value.code is ErrorCode.SYSTEM_ERROR
    assert "Cannot find 'virtbus-no-such-tool' in path" in missing.value.message
    assert timed == []
    await runner.run(["true"])
    assert timed == ["true"]


async def test_timeout_kills_and_reaps(
    runner: CommandRunner, tmp_path: Path, no_fd_left: None
) -> None:
    pid_file = tmp_path / "pid"
    script = f"echo $$ > {pid_file}; exec sleep 60"
    with pytest.raises(VirtError) as late:
        await runner.run(["sh", "-c", script], timeout=0.5)
    assert late.value.code is ErrorCode.OPERATION_TIMEOUT
    assert "ran longer than" in late.value.message
    assert gone(int(pid_file.read_text()))


async def test_cancel_kills_and_reaps(
    runner: CommandRunner, tmp_path: Path, no_fd_left: None
) -> None:
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    task = asyncio.create_task(runner.run(["sh", "-c", f"echo $$ > {fifo}; exec sleep 60"]))
    pid = int(await asyncio.to_thread(fifo.read_text))  # the child is running
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone(pid)


async def test_signal_exit_code_is_negative(runner: CommandRunner) -> None:
    with pytest.raises(VirtError) as killed:
        await runner.run(["sh", "-c", "kill -9 $$"])
    assert "unexpected exit status -9" in killed.value.message


async def test_many_at_once(runner: CommandRunner, no_fd_left: None) -> None:
    results = await asyncio.gather(*(runner.output(["echo", str(i)]) for i in range(40)))
    assert results == [f"{i}\n" for i in range(40)]
