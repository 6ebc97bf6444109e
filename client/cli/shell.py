"""``virtbus`` without a command: an interactive shell, as virsh's.

Commands are read with readline (history kept in ``~/.virtbus_history``, TAB
completes command names, their options and ``help`` keywords), split as a
shell splits words (quotes work; ``;`` separates commands), and run through
the same table and handlers as one-shot commands.  Every command uses the
shell's one NATS connection, held with its event loop in a thread of its own;
``connect [URL]`` replaces it, ``quit``/``exit`` or Ctrl-D leave.
"""

from __future__ import annotations

import os
import sys

from client.cli import session
from client.cli.output import end_failed, error
from client.cli.table import Args, HelpRequested, UsageError, format_help, parse

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable
    from typing import Any

    from client.cli.quick import Body as QuickBody
    from client.cli.session import Body
    from client.connection import Client

HISTORY = os.path.join(os.path.expanduser("~"), ".virtbus_history")
BANNER = (
    "Welcome to virtbus, libvirt's storage, network, secret and nwfilter over NATS.\n"
    "\n"
    "Type:  'help' for help with commands\n"
    "       'quit' to quit\n"
    "\n"
)


class Connection(session.Shared):
    """The shell's client and the event loop (in its own thread) it lives on."""

    def __init__(self, args: Args) -> None:
        import asyncio
        import threading

        self.args = args
        self.url = session.server_url(args)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.client: Client | None = None
        self._host: str | None = None

    def _wait(self, awaitable: Awaitable[Any]) -> Any:
        import asyncio

        async def wrapped() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result()

    def open(self, url: str) -> None:
        """Connect to ``url`` (closing the connection held before); raises ``VirtError``."""
        from client.connection import Client

        self.close_client()
        session.check_reachable(url, session.connect_timeout(self.args))
        self.client = self._wait(Client.connect(url, deadline=session.connect_timeout(self.args)))
        self.url, self._host = url, None

    def close_client(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            self._wait(client.close())

    def close(self) -> None:
        self.close_client()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def _need(self) -> Client:
        if self.client is None:
            from shared.util.errors import ErrorCode, ErrorDomain, VirtError

            raise VirtError(
                ErrorCode.NO_CONNECT, "no connection: use 'connect URL'", ErrorDomain.RPC, raw=True
            )
        return self.client

    def run(self, body: Body) -> int:
        client = self._need()
        result: int = self._wait(body(client))
        return result

    def run_calls(self, body: QuickBody, host: str | None) -> int:
        from client.cli.pool_cmds import CommandFailed, fail
        from client.cli.quick import Calls, nats_send
        from shared.util.bus import private_channel

        nc = self._need().nc
        send = nats_send(nc)

        async def go() -> int:
            from client.storage import default_host

            chosen = host or self._host
            if chosen is None:
                chosen = self._host = await default_host(nc)
            return await body(Calls(send, chosen, private=private_channel(nc)))

        try:
            result: int = self._wait(go())
        except CommandFailed as failure:
            return fail(*failure.lines)
        except Exception as exc:
            err = session.virt_error(exc)
            if err is None:
                raise
            return fail(str(err))
        return result


def split_line(line: str) -> list[list[str]]:
    """The commands of one line: words split as a shell does, ``;`` between commands."""
    import shlex

    lexer = shlex.shlex(line, posix=True, punctuation_chars=";")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) == {";"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def run_line(conn: Connection, line: str) -> bool:
    """Run every command of ``line``; False when the shell should end."""
    from client.cli.commands import find
    from client.cli.main import run_command

    try:
        commands = split_line(line)
    except ValueError as err:
        error(f"{err}")
        return True
    for words in commands:
        if words[0] in ("quit", "exit"):
            return False
        command = find(words[0])
        if command is None:
            error(f"unknown command: '{words[0]}'")
            continue
        args = session_args(conn.args, command.name)
        try:
            parsed = parse(command, words[1:], args)
        except HelpRequested:
            sys.stdout.write(format_help(command))
            continue
        except UsageError as err:
            error(*err.lines)
            if err.blank:
                end_failed()
            continue
        try:
            run_command(command, parsed)
        except Exception as exc:  # one command's failure never ends the shell
            virt = session.virt_error(exc)
            error(str(virt) if virt is not None else f"{type(exc).__name__}: {exc}")
            end_failed()
    return True


def session_args(base: Args, name: str) -> Args:
    """A command's starting arguments: the shell's global options, then its own."""
    from client.cli.commands import find
    from client.cli.table import new_args

    args = new_args(find(name))
    for key in ("connect", "host", "json", "connect_timeout"):
        setattr(args, key, getattr(base, key))
    return args


def completer(text: str, state: int) -> str | None:
    """readline's completer: command names first, then the command's options."""
    import readline

    from client.cli.commands import GROUPS, all_commands, find

    line = readline.get_line_buffer()
    words = line[: readline.get_begidx()].split()
    if not words or words[-1] == ";":
        candidates = [c.name for c in all_commands()] + ["quit", "exit"]
    elif words[0] == "help" and len(words) == 1:
        candidates = [c.name for c in all_commands()] + [g.keyword for g in GROUPS]
    else:
        command = find(words[0])
        candidates = [f"--{o.name}" for o in command.opts] if command else []
    matches = sorted(c for c in candidates if c.startswith(text))
    if len(matches) == 1:
        # Python's readline appends nothing to a completed word; a shell adds a space.
        matches = [matches[0] + " "]
    return matches[state] if state < len(matches) else None


def interactive(args: Args) -> int:
    """Read and run commands until ``quit``, ``exit`` or end of input."""
    tty = sys.stdin.isatty()
    conn = Connection(args)
    previous, session.shared = session.shared, conn
    readline = _readline() if tty else None
    try:
        if tty:
            sys.stdout.write(BANNER)
        session.connected(lambda: conn.open(conn.url))
        while True:
            try:
                line = input("virtbus # " if tty else "")
            except EOFError:
                if tty:
                    print()
                break
            except KeyboardInterrupt:
                print()
                continue
            if not run_line(conn, line):
                break
        return 0
    finally:
        if readline is not None:
            try:
                readline.write_history_file(HISTORY)
            except OSError:
                pass
        session.shared = previous
        conn.close()


def _readline() -> Any:
    import readline

    try:
        readline.read_history_file(HISTORY)
    except OSError:
        pass
    readline.set_history_length(1000)
    readline.set_completer_delims(" \t\n;")
    readline.set_completer(completer)
    readline.parse_and_bind("tab: complete")
    return readline


def connect(args: Args) -> int:
    """``connect [URL]``: in the shell, replace its connection; alone, check the server."""
    url = args.name or session.server_url(args)
    shared = session.shared
    if isinstance(shared, Connection):
        return 0 if session.connected(lambda: shared.open(url)) else 1
    timeout = session.connect_timeout(args)
    return 0 if session.connected(lambda: session.check_reachable(url, timeout)) else 1


def quit_(args: Args) -> int:
    """``quit``/``exit``: the shell ends; alone, nothing to do."""
    return 0
