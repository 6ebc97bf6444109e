"""The commands of virtbus itself: help, up, status, event, completion (virsh's
"Virsh itself" group; the shell adds connect, quit and exit)."""

from __future__ import annotations

import sys

from client.cli import event_cmd, shell, status_cmd
from client.cli.output import end_failed, error
from client.cli.table import (
    Args,
    Command,
    Group,
    Opt,
    data,
    flag,
    format_group,
    format_help,
    number,
    string,
)


def help_(args: Args) -> int:
    """``help``, ``help GROUP-KEYWORD`` or ``help COMMAND``, in virsh's layout."""
    from client.cli.commands import GROUPS, find
    from client.cli.table import format_groups

    if not args.command_name:
        sys.stdout.write(format_groups(GROUPS))
        return 0
    for group in GROUPS:
        if group.keyword == args.command_name:
            sys.stdout.write(format_group(group))
            return 0
    command = find(args.command_name)
    if command is None:
        error(f"command or command group '{args.command_name}' doesn't exist")
        end_failed()
        return 1
    sys.stdout.write(format_help(command))
    return 0


def up(args: Args) -> int:
    # up's module holds the supervisor (aiohttp, nats): imported only when it runs.
    from client.cli import up as stack

    return stack.up(args)


def creds(args: Args) -> int:
    from client.cli import creds_cmd

    return creds_cmd.creds(args)


def completion(args: Args) -> int:
    """Print the bash completion script, made from the command table."""
    from client.cli.completion import bash_script

    sys.stdout.write(bash_script())
    return 0


GROUP = Group(
    "Virtbus itself",
    "virtbus",
    (
        Command(
            "help",
            "print help",
            help_,
            (
                Opt(
                    "command",
                    "string",
                    "Prints global help, command specific help, or help for "
                    "a group of related commands",
                    dest="command_name",
                    completer="command",
                ),
            ),
            description="Prints global help, command specific help, or help for a\n"
            "    group of related commands",
            probe=False,
        ),
        Command(
            "up",
            "run the local stack in the foreground",
            up,
            (
                string("nats-url", "join this NATS server instead of starting one"),
                number("nats-port", "port of the embedded server (default 4222)"),
                string("state-dir", "state folder (default: the user's state folder)", "file"),
                string(
                    "domains-dir",
                    "the QEMU agent's folder of domain XML files "
                    "(default: STATE-DIR/agent-qemu/domains)",
                    "file",
                ),
                string("tls-cert", "the embedded server's TLS certificate (PEM)", "file"),
                string("tls-key", "its private key (PEM)", "file"),
                string("tls-ca", "the CA certificate clients verify the server with", "file"),
            ),
            description="Start nats-server (unless --nats-url names one), every service and "
            "a local QEMU agent,\n    and supervise them until interrupted.",
            probe=False,
        ),
        Command(
            "creds",
            "connection details of a role",
            creds,
            (
                data("role", "admin, readonly, a service, or agent@HOST"),
                string("file", "write them to this file (mode 0600) for --creds", "file"),
            ),
            description="Print the NATS URL carrying ROLE's user and password, as the local\n"
            "    stack made them, or write it to a file for --creds.",
            probe=False,
        ),
        status_cmd.COMMAND,
        event_cmd.COMMAND,
        Command(
            "connect",
            "(re)connect to the NATS server",
            shell.connect,
            (string("name", "NATS URL (default: the one virtbus started with)"),),
            description="Connect to a NATS server: in the shell, every later command uses "
            "this connection.",
            probe=False,
        ),
        Command("exit", "quit this interactive terminal", shell.quit_, probe=False),
        Command("quit", "quit this interactive terminal", shell.quit_, probe=False),
        Command(
            "completion",
            "print the bash completion script",
            completion,
            (flag("bash", "for bash (the default and only shell)"),),
            description="Print a bash completion script; source it, or save it as\n"
            "    /etc/bash_completion.d/virtbus.",
            probe=False,
        ),
    ),
)
