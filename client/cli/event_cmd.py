"""``virtbus event``: print events as they arrive, as ``virsh event`` does."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from client.cli.output import print_json
from client.cli.session import run
from client.connection import Client
from client.events import format_event, format_timestamp, subscribe


def event(args: argparse.Namespace) -> int:
    async def body(c: Client) -> int:
        count = 0
        timed_out = False

        async def consume() -> None:
            nonlocal count
            async with subscribe(c.nc, replay=args.replay) as events:
                async for ev in events:
                    if args.event and ev.data.event != args.event:
                        continue
                    if args.json:
                        print_json(ev.model_dump(mode="json"))
                    else:
                        prefix = f"{format_timestamp(ev)}: " if args.timestamp else ""
                        print(prefix + format_event(ev), flush=True)
                    count += 1
                    if not args.loop:
                        return

        try:
            await asyncio.wait_for(consume(), timeout=args.timeout)
        except TimeoutError:
            timed_out = True
        if not args.json:
            if timed_out:
                print("event loop timed out")
            print(f"events received: {count}")
        return 0

    with contextlib.suppress(KeyboardInterrupt):
        return run(args, body)
    return 0
