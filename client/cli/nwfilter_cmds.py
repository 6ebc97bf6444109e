"""The network filter commands (nwfilter-*, nwfilter-binding-*), with virsh's options and output.

Filters are cluster-wide; bindings belong to a host: ``--host``, else this
machine.  A filter is named by UUID or name, as virsh allows.
"""

from __future__ import annotations

import sys

from client.cli.output import print_json, table
from client.cli.pool_cmds import CommandFailed, run_on_host
from client.cli.secret_cmds import read_xml_file
from client.cli.session import run
from client.cli.table import Args, Command, Group, data, flag

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client as NATS

    from client.connection import Client
    from client.nwfilter import NWFilterClient
    from shared.api.nwfilter import FilterInfo


class _OnHost:
    """The nwfilter client and the host whose bindings a command works on."""

    __slots__ = ("api", "host")

    def __init__(self, api: NWFilterClient, host: str) -> None:
        self.api = api
        self.host = host


def _on_host(nc: NATS, host: str) -> _OnHost:
    from client.nwfilter import NWFilterClient

    return _OnHost(NWFilterClient(nc), host)


def _run_bindings(args: Args, body: Callable[[_OnHost], Awaitable[int]]) -> int:
    if not args.host:
        import socket  # imported here: every command reads this module at start-up

        args.host = socket.gethostname()
    return run_on_host(args, _on_host, body)


async def _lookup(c: Client, text: str) -> FilterInfo:
    """virshCommandOptNWFilterBy: a UUID when it looks like one, else a name."""
    from shared.util.errors import VirtError

    try:
        if len(text) == 36 and text.count("-") == 4:
            try:
                return await c.nwfilter.lookup(uuid=text)
            except VirtError:
                pass
        return await c.nwfilter.lookup(name=text)
    except VirtError as err:
        raise CommandFailed(f"failed to get nwfilter '{text}'", str(err)) from err


def _guarded(
    args: Args, body: Callable[[Client], Awaitable[int]], context: str | None = None
) -> int:
    from client.cli.pool_cmds import fail

    async def main(c: Client) -> int:
        try:
            return await body(c)
        except CommandFailed as failure:
            return fail(*failure.lines)

    return run(args, main, context=context)


def define(args: Args) -> int:
    xml = read_xml_file(args.file)
    if xml is None:
        return 1

    async def body(c: Client) -> int:
        info = await c.nwfilter.define(xml)
        if args.json:
            print_json(info.model_dump())
        else:
            print(f"Network filter {info.name} defined from {args.file}\n")
        return 0

    return _guarded(args, body, context=f"Failed to define network filter from {args.file}")


def undefine(args: Args) -> int:
    async def body(c: Client) -> int:
        from shared.util.errors import VirtError

        info = await _lookup(c, args.nwfilter)
        try:
            await c.nwfilter.undefine(name=info.name)
        except VirtError as err:
            raise CommandFailed(
                f"Failed to undefine network filter {args.nwfilter}", str(err)
            ) from err
        if args.json:
            print_json({"name": info.name, "undefined": True})
        else:
            print(f"Network filter {args.nwfilter} undefined\n")
        return 0

    return _guarded(args, body)


def dumpxml(args: Args) -> int:
    async def body(c: Client) -> int:
        info = await _lookup(c, args.nwfilter)
        xml = await c.nwfilter.dumpxml(name=info.name)
        if args.json:
            print_json({"name": info.name, "xml": xml})
        else:
            print(xml)
        return 0

    return _guarded(args, body)


def list_(args: Args) -> int:
    async def body(c: Client) -> int:
        filters = sorted(await c.nwfilter.list(), key=lambda f: f.name)
        if args.json:
            print_json([f.model_dump() for f in filters])
        else:
            sys.stdout.write(table(["UUID", "Name"], [[f.uuid, f.name] for f in filters]))
        return 0

    return _guarded(args, body, context="Failed to list network filters")


def binding_create(args: Args) -> int:
    xml = read_xml_file(args.file)
    if xml is None:
        return 1

    async def body(h: _OnHost) -> int:
        from shared.util.errors import VirtError

        try:
            info = await h.api.binding_create(h.host, xml)
        except VirtError as err:
            raise CommandFailed(
                f"Failed to create network filter from {args.file}", str(err)
            ) from err
        if args.json:
            print_json(info.model_dump())
        else:
            print(f"Network filter binding on {info.portdev} created from {args.file}\n")
        return 0

    return _run_bindings(args, body)


def binding_delete(args: Args) -> int:
    async def body(h: _OnHost) -> int:
        from shared.util.errors import VirtError

        try:
            await h.api.binding_lookup(h.host, args.binding)
        except VirtError as err:
            raise CommandFailed(
                f"failed to get network filter binding '{args.binding}'", str(err)
            ) from err
        try:
            await h.api.binding_delete(h.host, args.binding)
        except VirtError as err:
            raise CommandFailed(
                f"Failed to delete network filter binding {args.binding}", str(err)
            ) from err
        if args.json:
            print_json({"portdev": args.binding, "deleted": True})
        else:
            print(f"Network filter binding on {args.binding} deleted\n")
        return 0

    return _run_bindings(args, body)


def binding_dumpxml(args: Args) -> int:
    async def body(h: _OnHost) -> int:
        from shared.util.errors import VirtError

        try:
            xml = await h.api.binding_dumpxml(h.host, args.binding)
        except VirtError as err:
            raise CommandFailed(
                f"failed to get network filter binding '{args.binding}'", str(err)
            ) from err
        if args.json:
            print_json({"portdev": args.binding, "xml": xml})
        else:
            print(xml)
        return 0

    return _run_bindings(args, body)


def binding_list(args: Args) -> int:
    async def body(h: _OnHost) -> int:
        bindings = await h.api.binding_list(h.host)
        if args.json:
            print_json([b.model_dump() for b in bindings])
        else:
            rows = [[b.portdev, b.filter] for b in bindings]
            sys.stdout.write(table(["Port Dev", "Filter"], rows))
        return 0

    return _run_bindings(args, body)


_FILTER = data("nwfilter", "network filter name or uuid", "nwfilter")
_BINDING = data("binding", "network filter binding port dev")

GROUP = Group(
    "Network Filter",
    "filter",
    (
        Command(
            "nwfilter-define",
            "define or update a network filter from an XML file",
            define,
            (
                data("file", "file containing an XML network filter description", "file"),
                flag("validate", "validate the XML against the schema"),
            ),
            description="Define a new network filter or update an existing one.",
        ),
        Command(
            "nwfilter-dumpxml",
            "network filter information in XML",
            dumpxml,
            (_FILTER,),
            description="Output the network filter information as an XML dump to stdout.",
        ),
        Command(
            "nwfilter-list",
            "list network filters",
            list_,
            (),
            description="Returns list of network filters.",
        ),
        Command(
            "nwfilter-undefine",
            "undefine a network filter",
            undefine,
            (_FILTER,),
            description="Undefine a given network filter.",
        ),
        Command(
            "nwfilter-binding-create",
            "create a network filter binding from an XML file",
            binding_create,
            (
                data("file", "file containing an XML network filter binding description", "file"),
                flag("validate", "validate the XML against the schema"),
            ),
            description="Create a new network filter binding.",
        ),
        Command(
            "nwfilter-binding-delete",
            "delete a network filter binding",
            binding_delete,
            (_BINDING,),
            description="Delete a given network filter binding.",
        ),
        Command(
            "nwfilter-binding-dumpxml",
            "network filter information in XML",
            binding_dumpxml,
            (_BINDING,),
            description="Output the network filter binding information as an XML dump to stdout.",
        ),
        Command(
            "nwfilter-binding-list",
            "list network filter bindings",
            binding_list,
            (),
            description="Returns list of network filter bindings.",
        ),
    ),
)
