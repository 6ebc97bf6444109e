"""The command table: every group of commands, registered here and nowhere else.

A new group is one module holding its handlers and a ``GROUP`` (see
docs/cli.md, "Adding a command group"), added to ``GROUPS`` below.  Group
modules import only the standard library and ``client.cli`` helpers at the
top; what a handler needs (nats, pydantic models, lxml) it imports when it
runs, so reading this table costs a few milliseconds.
"""

from __future__ import annotations

from client.cli import (
    domain_cmds,
    net_cmds,
    nwfilter_cmds,
    pool_cmds,
    secret_cmds,
    virtbus_cmds,
    vol_cmds,
)
from client.cli.table import Command, Group

GROUPS: tuple[Group, ...] = (
    domain_cmds.GROUP,
    secret_cmds.GROUP,
    pool_cmds.GROUP,
    vol_cmds.GROUP,
    net_cmds.GROUP,
    nwfilter_cmds.GROUP,
    virtbus_cmds.GROUP,
)


def find(name: str) -> Command | None:
    """The command called ``name``, if any."""
    for group in GROUPS:
        for command in group.commands:
            if command.name == name:
                return command
    return None


def all_commands() -> list[Command]:
    return [c for g in GROUPS for c in g.commands]
