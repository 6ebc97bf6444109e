"""Ending tasks one owns: cancel them and wait until they have ended, for sure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
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
