"""Tasks one owns: starting one eagerly, and ending them for sure.

``start_eagerly`` runs a coroutine at once, in the caller, up to its first
wait, and only then hands it to a task (what asyncio's eager tasks do from
Python 3.12): a request answered from memory costs no task and no loop turn.
``cancel_until_done`` cancels tasks and waits until they have ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)

#: How long a cancelled task may take to end before it is cancelled again.
RECANCEL_SECONDS = 1.0


async def cancel_until_done(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    nats-py swallows a cancellation that arrives while a publish waits for its
    flusher (``Client._flush_pending``), and the task then goes on: a task
    still running ``RECANCEL_SECONDS`` after its cancellation is cancelled
    again, until it ends.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_SECONDS)
        for task in pending:
            log.warning(
                "task %s went on after its cancellation; cancelling it again", task.get_name()
            )


def start_eagerly(
    coro: Coroutine[Any, Any, None],
    spawn: Callable[[Coroutine[Any, Any, None]], object],
) -> None:
    """Run ``coro`` now up to its first wait; if it waits, ``spawn`` a task
    that drives it from there.  An exception it raises before waiting is
    raised in that task too, so that it ends where a task's would."""
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return
    except BaseException as err:  # re-raised in the task
        spawn(_raise(err))
        return
    spawn(_resume(coro, waiting_on))


async def _raise(err: BaseException) -> None:
    raise err


async def _resume(coro: Coroutine[Any, Any, None], waiting_on: object) -> None:
    """Drive ``coro``, which yielded ``waiting_on`` (the future it waits for, or
    None for a bare turn of the loop), to its end as a task running it would."""
    while True:
        try:
            if isinstance(waiting_on, asyncio.Future):
                # Taken over from coro's yield, as a task takes it (asyncio
                # refuses to wait on a future still marked as yielded).
                waiting_on._asyncio_future_blocking = False
                await waiting_on
            else:
                await asyncio.sleep(0)
        except BaseException as err:  # handed to coro
            # The future's own outcome (its error, or its cancellation, which
            # is how cancelling this task reaches a waiting coroutine) is seen
            # by coro when it resumes; anything else, such as this task's
            # cancellation while the future was already done, is thrown in.
            own = (
                isinstance(waiting_on, asyncio.Future)
                and waiting_on.done()
                and (
                    waiting_on.cancelled()
                    if isinstance(err, asyncio.CancelledError)
                    else not waiting_on.cancelled() and waiting_on.exception() is err
                )
            )
            try:
                waiting_on = coro.send(None) if own else coro.throw(err)
            except StopIteration:
                return
            continue
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return
