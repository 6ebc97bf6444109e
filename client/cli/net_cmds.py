"""The network commands (net-*, net-port-*), with virsh's options, messages and tables.

Every command talks to the network service of one host: ``--host``, else
this machine.  A network is named by UUID or name, as virsh allows.
"""

from __future__ import annotations

import time

from client.cli.output import print_json, table
from client.cli.pool_cmds import CommandFailed, run_on_host, with_context
from client.cli.secret_cmds import read_xml_file
from client.cli.table import Args, Command, Group, data, flag, number, string

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from client.network import NetworkClient
    from shared.api.network import Lease, NetworkInfo

    Body = Callable[["NetworkClient"], Awaitable[int]]


# virNetworkUpdateFlags
_AFFECT_LIVE = 1
_AFFECT_CONFIG = 2


def _run(args: Args, body: Body) -> int:
    from client.network import NetworkClient

    # the network service of this machine unless --host names another
    if not args.host:
        import socket  # imported here: every command reads this module at start-up

        args.host = socket.gethostname()
    return run_on_host(args, NetworkClient, body)


def _yes(value: bool) -> str:
    return "yes" if value else "no"


async def _lookup(n: NetworkClient, text: str) -> NetworkInfo:
    """virshCommandOptNetworkBy: a UUID when it looks like one, else a name."""
    from shared.util.errors import VirtError

    try:
        if len(text) == 36 and text.count("-") == 4:
            try:
                return await n.lookup(uuid=text)
            except VirtError:
                pass
        return await n.lookup(name=text)
    except VirtError as err:
        raise CommandFailed(f"failed to get network '{text}'", str(err)) from err


def _xml_or_fail(path: str) -> str:
    xml = read_xml_file(path)
    if xml is None:
        raise SystemExit(1)
    return xml


def _from_file(
    verb: str, act: Callable[[NetworkClient, str], Awaitable[NetworkInfo]]
) -> Callable[[Args], int]:
    """net-define and net-create: ``act`` on the XML of ``--file``."""

    def command(args: Args) -> int:
        xml = _xml_or_fail(args.file)

        async def body(n: NetworkClient) -> int:
            info = await with_context(act(n, xml), f"Failed to {verb} network from {args.file}")
            _say(args, f"Network {info.name} {verb}d from {args.file}", info.model_dump())
            return 0

        return _run(args, body)

    return command


define_ = _from_file("define", lambda n, xml: n.define(xml))
create = _from_file("create", lambda n, xml: n.create(xml))


def _say(args: Args, text: str, data: object) -> None:
    if args.json:
        print_json(data)
    else:
        print(text + "\n")


def _simple(
    verb: str, failed: str, act: Callable[[NetworkClient, str], Awaitable[object]]
) -> Callable[[Args], int]:
    def command(args: Args) -> int:
        async def body(n: NetworkClient) -> int:
            info = await _lookup(n, args.network)
            await with_context(act(n, info.name), f"Failed to {failed} network {info.name}")
            _say(args, f"Network {info.name} {verb}", {"name": info.name, verb: True})
            return 0

        return _run(args, body)

    return command


start = _simple("started", "start", lambda n, name: n.start(name))
destroy = _simple("destroyed", "destroy", lambda n, name: n.destroy(name))
undefine = _simple("has been undefined", "undefine", lambda n, name: n.undefine(name))


def autostart(args: Args) -> int:
    async def body(n: NetworkClient) -> int:
        info = await _lookup(n, args.network)
        on = not args.disable
        what = "mark" if on else "unmark"
        await with_context(
            n.set_autostart(info.name, on), f"failed to {what} network {info.name} as autostarted"
        )
        verb = "marked" if on else "unmarked"
        _say(args, f"Network {info.name} {verb} as autostarted", {"autostart": on})
        return 0

    return _run(args, body)


def _wanted(args: Args, info: NetworkInfo) -> bool:
    if args.all:
        pass
    elif args.inactive:
        if info.active:
            return False
    elif not info.active:
        return False
    if (args.persistent and not info.persistent) or (args.transient and info.persistent):
        return False
    return not ((args.autostart and not info.autostart) or (args.no_autostart and info.autostart))


def list_(args: Args) -> int:
    async def body(n: NetworkClient) -> int:
        nets = [i for i in await n.list_all() if _wanted(args, i)]
        if args.json:
            print_json([i.model_dump() for i in nets])
        elif args.name or args.uuid:
            for i in nets:
                print(i.uuid if args.uuid else i.name)
            print()
        else:
            rows = [
                [
                    i.name,
                    "active" if i.active else "inactive",
                    _yes(i.autostart),
                    _yes(i.persistent),
                ]
                for i in nets
            ]
            print(table(["Name", "State", "Autostart", "Persistent"], rows), end="")
        return 0

    return _run(args, body)


def info(args: Args) -> int:
    async def body(n: NetworkClient) -> int:
        i = await _lookup(n, args.network)
        if args.json:
            print_json(i.model_dump())
            return 0
        lines = [
            ("Name:", i.name),
            ("UUID:", i.uuid),
            ("Active:", _yes(i.active)),
            ("Persistent:", _yes(i.persistent)),
            ("Autostart:", _yes(i.autostart)),
        ]
        if i.bridge:
            lines.append(("Bridge:", i.bridge))
        print("".join(f"{k:<15} {v}\n" for k, v in lines))
        return 0

    return _run(args, body)


def uuid(args: Args) -> int:
    async def body(n: NetworkClient) -> int:
        print((await _lookup(n, args.network)).uuid + "\n")
        return 0

    return _run(args, body)


def name(args: Args) -> int:
    from shared.util.errors import VirtError

    async def body(n: NetworkClient) -> int:
        try:
            found = await n.lookup(uuid=args.network)
        except VirtError as err:
            raise CommandFailed(f"failed to get network '{args.network}'", str(err)) from err
        print(found.name + "\n")
        return 0

    return _run(args, body)


def dumpxml(args: Args) -> int:
    async def body(n: NetworkClient) -> int:
        i = await _lookup(n, args.network)
        print(await n.dumpxml(i.name, inactive=args.inactive), end="")
        return 0

    return _run(args, body)


_COMMANDS = {"modify": 1, "delete": 2, "add-last": 3, "add": 3, "add-first": 4}
_SECTIONS = {
    "bridge": 1,
    "domain": 2,
    "ip": 3,
    "ip-dhcp-host": 4,
    "ip-dhcp-range": 5,
    "forward": 6,
    "forward-interface": 7,
    "forward-pf": 8,
    "portgroup": 9,
    "dns-host": 10,
    "dns-txt": 11,
    "dns-srv": 12,
}


def update(args: Args) -> int:
    command = _COMMANDS.get(args.command)
    section = _SECTIONS.get(args.section)
    xml = args.xml if args.xml.lstrip().startswith("<") else _xml_or_fail(args.xml)

    async def body(n: NetworkClient) -> int:
        if command is None:
            raise CommandFailed(f"unrecognized command name '{args.command}'")
        if section is None:
            raise CommandFailed(f"unrecognized section name '{args.section}'")
        i = await _lookup(n, args.network)
        flags = (_AFFECT_LIVE if args.live else 0) | (_AFFECT_CONFIG if args.config else 0)
        done = await with_context(
            n.update(
                i.name,
                command,
                section,
                xml,
                parent_index=-1 if args.parent_index is None else args.parent_index,
                flags=flags,
            ),
            f"Failed to update network {i.name}",
        )
        if args.config:
            what = "persistent config and live state" if args.live else "persistent config"
        elif args.live:
            what = "live state"
        else:
            what = "current live state" if done.live else "current persistent config"
        _say(args, f"Updated network {i.name} {what}", done.model_dump())
        return 0

    return _run(args, body)


def _lease_row(lease: Lease) -> list[str]:
    expiry = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lease.expiry_time))
        if lease.expiry_time
        else "-"
    )
    return [
        expiry,
        lease.mac or "-",
        lease.type,
        f"{lease.ipaddr}/{lease.prefix}",
        lease.hostname or "-",
        lease.clientid or "-",
    ]


def dhcp_leases(args: Args) -> int:
    async def body(n: NetworkClient) -> int:
        i = await _lookup(n, args.network)
        leases = await with_context(
            n.dhcp_leases(i.name, args.mac), f"Failed to get leases info for {i.name}"
        )
        leases.sort(key=lambda x: (x.mac or "", x.ipaddr))
        if args.json:
            print_json([x.model_dump() for x in leases])
            return 0
        headers = ["Expiry Time", "MAC address", "Protocol", "IP address", "Hostname"]
        headers.append("Client ID or DUID")
        print(table(headers, [_lease_row(x) for x in leases]), end="")
        return 0

    return _run(args, body)


def port_create(args: Args) -> int:
    xml = _xml_or_fail(args.file)

    async def body(n: NetworkClient) -> int:
        i = await _lookup(n, args.network)
        port = await with_context(
            n.port_create(i.name, xml), f"Failed to create network from {args.file}"
        )
        _say(args, f"Network port {port.uuid} created from {args.file}", port.model_dump())
        return 0

    return _run(args, body)


def port_list(args: Args) -> int:
    async def body(n: NetworkClient) -> int:
        i = await _lookup(n, args.network)
        found = await with_context(n.port_list(i.name), "Failed to list network ports")
        if args.json:
            print_json([p.model_dump() for p in found])
        elif args.uuid:
            print("".join(p.uuid + "\n" for p in found))
        else:
            print(table(["UUID"], [[p.uuid] for p in found]), end="")
        return 0

    return _run(args, body)


def port_dumpxml(args: Args) -> int:
    async def body(n: NetworkClient) -> int:
        i = await _lookup(n, args.network)
        xml = await with_context(
            n.port_dumpxml(i.name, args.port), f"failed to get network port '{args.port}'"
        )
        print(xml, end="")
        return 0

    return _run(args, body)


def port_delete(args: Args) -> int:
    async def body(n: NetworkClient) -> int:
        i = await _lookup(n, args.network)
        await with_context(
            n.port_delete(i.name, args.port), f"Failed to delete network port {args.port}"
        )
        _say(args, f"Network port {args.port} deleted", {"uuid": args.port})
        return 0

    return _run(args, body)


_NETWORK = data("network", "network name or uuid", "network")
_FILE = data("file", "file containing an XML network description", "file")

GROUP = Group(
    "Networking",
    "network",
    (
        Command(
            "net-autostart",
            "autostart a network",
            autostart,
            (_NETWORK, flag("disable", "disable autostarting")),
            description="Configure a network to be automatically started at boot.",
        ),
        Command(
            "net-create",
            "create a network from an XML file",
            create,
            (_FILE, flag("validate", "validate the XML against the schema")),
            description="Create a network.",
        ),
        Command(
            "net-define",
            "define an inactive persistent virtual network or modify an existing persistent "
            "one from an XML file",
            define_,
            (_FILE, flag("validate", "validate the XML against the schema")),
            description="Define or modify a persistent virtual network.",
        ),
        Command(
            "net-destroy",
            "destroy (stop) a network",
            destroy,
            (_NETWORK,),
            description="Forcefully stop a given network.",
        ),
        Command(
            "net-dhcp-leases",
            "print lease info for a given network",
            dhcp_leases,
            (_NETWORK, string("mac", "MAC address")),
            description="Print lease info for a given network",
        ),
        Command(
            "net-dumpxml",
            "network information in XML",
            dumpxml,
            (_NETWORK, flag("inactive", "show inactive defined XML")),
            description="Output the network information as an XML dump to stdout.",
        ),
        Command(
            "net-info",
            "network information",
            info,
            (_NETWORK,),
            description="Returns basic information about the network",
        ),
        Command(
            "net-list",
            "list networks",
            list_,
            (
                flag("inactive", "list inactive networks"),
                flag("all", "list inactive & active networks"),
                flag("persistent", "list persistent networks"),
                flag("transient", "list transient networks"),
                flag("autostart", "list networks with autostart enabled"),
                flag("no-autostart", "list networks with autostart disabled"),
                flag("uuid", "list uuid's only"),
                flag("name", "list network names only"),
                flag("table", "list table (default)"),
            ),
            description="Returns list of networks.",
        ),
        Command(
            "net-name",
            "convert a network UUID to network name",
            name,
            (data("network", "network uuid", "network"),),
        ),
        Command(
            "net-start",
            "start a (previously defined) inactive network",
            start,
            (_NETWORK,),
            description="Start a network.",
        ),
        Command(
            "net-undefine",
            "undefine a persistent network",
            undefine,
            (_NETWORK,),
            description="Undefine the configuration for a persistent network.",
        ),
        Command(
            "net-update",
            "update parts of an existing network's configuration",
            update,
            (
                _NETWORK,
                data("command", "type of update (add-first, add-last (add), delete, or modify)"),
                data("section", "which section of network configuration to update"),
                data(
                    "xml",
                    "name of file containing xml (or, if it starts with '<', the complete "
                    "xml element itself) to add/modify, or to be matched for search",
                ),
                number("parent-index", "which parent object to search through"),
                flag("config", "affect next network startup"),
                flag("live", "affect running network"),
                flag("current", "affect current state of network"),
            ),
        ),
        Command(
            "net-uuid",
            "convert a network name to network UUID",
            uuid,
            (data("network", "network name", "network"),),
        ),
        Command(
            "net-port-create",
            "create a network port from an XML file",
            port_create,
            (
                _NETWORK,
                data("file", "file containing an XML network port description", "file"),
                flag("validate", "validate the XML against the schema"),
            ),
            description="Create a network port.",
        ),
        Command(
            "net-port-delete",
            "delete the specified network port",
            port_delete,
            (_NETWORK, data("port", "port UUID")),
            description="Delete the specified network port.",
        ),
        Command(
            "net-port-dumpxml",
            "network port information in XML",
            port_dumpxml,
            (_NETWORK, data("port", "port UUID")),
            description="Output the network port information as an XML dump to stdout.",
        ),
        Command(
            "net-port-list",
            "list network ports",
            port_list,
            (_NETWORK, flag("uuid", "list uuid's only"), flag("table", "list table (default)")),
            description="Returns list of network ports.",
        ),
    ),
)
