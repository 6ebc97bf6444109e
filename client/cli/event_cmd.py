"""``virtbus event``: print events as they arrive, as ``virsh event`` does."""

from __future__ import annotations

from client.cli.output import error, print_json
from client.cli.session import run
from client.cli.table import Args, Command, flag, number, string

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import datetime

    from client.connection import Client


def event(args: Args) -> int:
    import asyncio

    from client.events import format_event, format_timestamp, subscribe

    try:
        since = _since(args.since)
    except ValueError:
        error(f"invalid time '{args.since}' for --since (ISO 8601, e.g. 2026-12-05T10:00:00Z)")
        return 1
    if args.from_seq is not None and args.from_seq < 1:
        error("--from-seq must be 1 or more")
        return 1
    if since is not None and args.from_seq is not None:
        error("--since and --from-seq cannot be used together")
        return 1

    async def body(c: Client) -> int:
        count = 0
        timed_out = False

        async def consume() -> None:
            nonlocal count
            async with subscribe(
                c.nc, replay=args.replay, since=since, from_seq=args.from_seq
            ) as events:
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

    try:
        return run(args, body)
    except KeyboardInterrupt:
        return 0


def _since(text: str | None) -> datetime | None:
    """``--since``: an ISO 8601 time (UTC when it names no zone)."""
    from datetime import UTC, datetime

    if text is None:
        return None
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


COMMAND = Command(
    "event",
    "wait for events and print them",
    event,
    (
        flag("all", "all event types of all services"),
        string("event", "only events of this name (lifecycle, refresh, ...)"),
        flag("loop", "keep printing events until interrupted"),
        number("timeout", "stop after this many seconds"),
        flag("timestamp", "print a timestamp on each event"),
        flag("replay", "start from the oldest stored event"),
        string("since", "first print the stored events from this time on (ISO 8601)"),
        number("from-seq", "first print the stored events from this stream sequence on"),
    ),
    description="Print the events of every service as they arrive (virsh's event, for all "
    "of virtbus's objects).",
)
