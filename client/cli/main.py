"""``virtbus``: parse the command line and run one command.

Startup stays cheap: only argparse is imported here; a command's module (and
with it nats, pydantic, lxml) is imported when that command runs.  Global
options (``-c URL``, ``--json``, ``--host NAME``) go before or after the
command.  Exit status: 0 on success, 1 on an error (printed as ``error: ...``
on stderr, as virsh does), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

Configure = Callable[[argparse.ArgumentParser], None]

# command -> (module, function, help, configure)
_COMMANDS: dict[str, tuple[str, str, str, Configure]] = {}


def command(
    name: str, module: str, function: str, help_text: str
) -> Callable[[Configure], Configure]:
    def register(configure: Configure) -> Configure:
        _COMMANDS[name] = (module, function, help_text, configure)
        return configure

    return register


_SECRET = "client.cli.secret_cmds"


@command("secret-define", _SECRET, "define_", "define or modify a secret from an XML file")
def _secret_define(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="file containing secret attributes in XML")


@command("secret-undefine", _SECRET, "undefine", "undefine a secret")
def _secret_undefine(p: argparse.ArgumentParser) -> None:
    p.add_argument("secret", help="secret UUID")


@command("secret-dumpxml", _SECRET, "dumpxml", "secret attributes in XML")
def _secret_dumpxml(p: argparse.ArgumentParser) -> None:
    p.add_argument("secret", help="secret UUID")


@command("secret-list", _SECRET, "list_", "list secrets")
def _secret_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ephemeral", action="store_true", help="list ephemeral secrets")
    p.add_argument("--no-ephemeral", action="store_true", help="list non-ephemeral secrets")
    p.add_argument("--private", action="store_true", help="list private secrets")
    p.add_argument("--no-private", action="store_true", help="list non-private secrets")


@command("secret-set-value", _SECRET, "set_value", "set a secret value")
def _secret_set_value(p: argparse.ArgumentParser) -> None:
    p.add_argument("secret", help="secret UUID")
    p.add_argument("base64_value", nargs="?", metavar="BASE64", help="base64-encoded value")
    p.add_argument("--base64", dest="base64_opt", help="base64-encoded secret value")
    p.add_argument("--file", help="read secret from file")
    p.add_argument("--plain", action="store_true", help="file holds the raw value, not base64")
    p.add_argument("--interactive", action="store_true", help="read the secret from the terminal")


@command("secret-get-value", _SECRET, "get_value", "output a secret value")
def _secret_get_value(p: argparse.ArgumentParser) -> None:
    p.add_argument("secret", help="secret UUID")
    p.add_argument("--plain", action="store_true", help="get value without converting to base64")


@command("event", "client.cli.event_cmd", "event", "wait for events and print them")
def _event(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="all event types of all services")
    p.add_argument("--event", help="only events of this name (lifecycle, refresh, ...)")
    p.add_argument("--loop", action="store_true", help="keep printing events until interrupted")
    p.add_argument("--timeout", type=int, help="stop after this many seconds")
    p.add_argument("--timestamp", action="store_true", help="print a timestamp on each event")
    p.add_argument("--replay", action="store_true", help="start from the oldest stored event")


@command("status", "client.cli.status_cmd", "status", "list the services on the bus")
def _status(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", type=float, default=0.5, help="seconds to wait for answers")


@command("up", "client.cli.up", "up", "run the local stack in the foreground")
def _up(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats-url", help="join this NATS server instead of starting one")
    p.add_argument("--nats-port", type=int, default=4222, help="port of the embedded server")
    p.add_argument("--state-dir", help="state folder (default: the user's state folder)")


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("-c", "--connect", metavar="URL", default=default, help="NATS URL")
    parser.add_argument("--host", default=default, help="host whose services to address")
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="machine-readable output",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="virtbus", description="libvirt's storage, network, secret and nwfilter on NATS"
    )
    _global_options(parser, suppress=False)
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_text, configure) in _COMMANDS.items():
        sub = subs.add_parser(name, help=help_text, description=help_text)
        _global_options(sub, suppress=True)
        configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module_name, function, _, _ = _COMMANDS[args.command]
    url = args.connect or os.environ.get("VIRTBUS_NATS_URL") or os.environ.get("NATS_URL") or ""
    if args.command != "up" and not url.startswith(("ws://", "wss://")):
        # nats-py imports aiohttp only for its websocket transport; skipping it
        # saves about a third of a one-shot command's start-up time.
        sys.modules.setdefault("aiohttp", None)  # type: ignore[arg-type]
    handler: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(module_name), function
    )
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
