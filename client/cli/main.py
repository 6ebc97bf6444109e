"""``virtbus``: read the command line as virsh does and run one command, or the shell.

``virtbus [GLOBAL-OPTIONS] COMMAND [ARG]...`` runs one command from the
table in ``client.cli.commands``; without a command, the interactive shell
(``client.cli.shell``).  Global options (``-c URL``, ``--host NAME``,
``--json``, ``--connect-timeout S``) go before or after the command.  Exit
status: 0 on success, 1 on any error, usage errors included, printed as
``error: ...`` on stderr as virsh does (one JSON object with ``--json``).

Startup stays cheap: this module and the table import the standard library
only; a handler imports what its command needs when it runs.
"""

from __future__ import annotations

import sys

from client.cli.commands import find
from client.cli.output import end_failed, error, use_json
from client.cli.table import (
    GLOBAL_OPTIONS,
    Args,
    Command,
    HelpRequested,
    UsageError,
    format_help,
    format_usage,
    new_args,
    parse,
    take_global,
)

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def parse_line(words: Sequence[str]) -> tuple[Command | None, Args]:
    """The command and its arguments from a whole command line (global options
    first); raises ``UsageError``."""
    args = new_args(None)
    i = 0
    while i < len(words) and words[i].startswith("-"):
        if words[i] in ("-h", "--help"):
            args.command = "--help"
            return None, args
        nxt = take_global(args, words, i)
        if nxt is None:
            raise UsageError(f"unsupported option '{words[i]}'. See --help.")
        i = nxt
    if i == len(words):
        return None, args
    command = find(words[i])
    if command is None:
        raise UsageError(f"unknown command: '{words[i]}'")
    fresh = new_args(command)
    for name, _, _ in GLOBAL_OPTIONS:
        key = name.replace("-", "_")
        setattr(fresh, key, getattr(args, key))
    return command, parse(command, words[i + 1 :], fresh)


def run_command(command: Command, args: Args) -> int:
    """Run one parsed command; a broken pipe or Ctrl-C ends it as a shell expects."""
    from client.cli import session

    if command.name != "up" and not session.server_url(args).startswith(("ws://", "wss://")):
        # nats-py imports aiohttp only for its websocket transport; skipping it
        # saves about a third of a one-shot command's start-up time.
        sys.modules.setdefault("aiohttp", None)  # type: ignore[arg-type]
    if command.probe and session.shared is None:
        # Fail fast, before a handler imports what talking to a service needs.
        url, timeout = session.server_url(args), session.connect_timeout(args)
        if not session.connected(lambda: session.check_reachable(url, timeout, args.creds)):
            return 1
    try:
        return command.handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    use_json("--json" in words)
    try:
        command, args = parse_line(words)
    except HelpRequested as asked:
        found = find(str(asked))
        assert found is not None
        sys.stdout.write(format_help(found))
        return 0
    except UsageError as err:
        error(*err.lines)
        if err.blank:
            end_failed()
        return 1
    if args.command == "--help":
        sys.stdout.write(format_usage())
        return 0
    if command is None:
        from client.cli.shell import interactive

        return interactive(args)
    return run_command(command, args)


if __name__ == "__main__":
    sys.exit(main())
