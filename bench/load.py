"""Driving a service the way the libvirt side is driven: ``count`` calls with
``concurrency`` of them in flight at every moment, each timed.

``concurrency`` workers take the next call number as soon as their call
returns, as the libvirt side's thread pool does; no task and no semaphore per
call, so that the harness costs little beside the calls it times.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def drive(
    count: int, concurrency: int, work: Callable[[int], Awaitable[object]]
) -> tuple[list[float], float]:
    """``work(i)`` for every i < ``count``, ``concurrency`` at a time: the
    seconds of each call, and of them all."""
    latencies: list[float] = []
    numbers = iter(range(count))

    async def worker() -> None:
        for i in numbers:
            begun = time.perf_counter()
            await work(i)
            latencies.append(time.perf_counter() - begun)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return latencies, time.perf_counter() - start
