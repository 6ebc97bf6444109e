"""The storage pool commands (pool-define ... pool-capabilities), printing what virsh prints.

Every command talks to the storage service of one host: ``--host``, else
the only host on the bus with a storage service, else this machine.
A pool is named by UUID or name, tried in that order as virsh does.
"""

from __future__ import annotations

import sys

from client.cli.output import end_failed, error, print_json, table
from client.cli.secret_cmds import read_xml_file
from client.cli.session import run, virt_error
from client.cli.table import Args, Command, Group, data, flag, string, tristate

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from typing import Any, TypeVar

    from nats.aio.client import Client as NATS

    from client.cli.quick import Calls
    from client.connection import Client
    from client.storage import StorageClient
    from shared.api.storage import BuildMode, PoolInfo

    PoolView = Any
    Body = Callable[["StorageClient"], Awaitable[int]]
    C = TypeVar("C")
    T = TypeVar("T")

#: A pool as pool-list prints it: a ``PoolInfo`` model or the quick path's record.

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_UUID_LENGTH = 36


class CommandFailed(Exception):
    """A command failed: its ``error:`` lines are in ``lines``."""

    def __init__(self, *lines: str) -> None:
        super().__init__(lines[0] if lines else "")
        self.lines = lines


def pretty_capacity(value: int) -> str:
    """virsh's vshPrettyCapacity rendered with ``%.2lf %s``."""
    scaled = float(value)
    unit = 0
    while scaled >= 1024 and unit < len(_UNITS) - 1:
        scaled /= 1024
        unit += 1
    return f"{scaled:.2f} {_UNITS[unit]}"


def fail(*lines: str) -> int:
    """Print ``error:`` lines, then the blank line virsh ends every command with
    (failed ones too); exit status 1."""
    error(*lines)
    end_failed()
    return 1


def run_on_host(
    args: Args,
    client: Callable[[NATS, str], C],
    body: Callable[[C], Awaitable[int]],
) -> int:
    """Run ``body`` with ``client(nc, host)`` for the chosen host's storage service;
    ``CommandFailed`` and ``VirtError`` become virsh's ``error:`` lines and exit
    status 1."""
    from client.storage import default_host
    from shared.util.errors import VirtError

    async def main(c: Client) -> int:
        host = args.host or await default_host(c.nc)
        try:
            return await body(client(c.nc, host))
        except CommandFailed as failure:
            return fail(*failure.lines)
        except VirtError as err:
            return fail(str(err))

    return run(args, main)


def run_storage(args: Args, body: Body) -> int:
    """Run ``body`` against the chosen host's storage service (see ``run_on_host``)."""
    from client.storage import StorageClient

    return run_on_host(args, StorageClient, body)


async def with_context(action: Awaitable[T], context: str) -> T:
    """Await ``action``; a ``VirtError`` becomes ``context`` then the error, as virsh prints."""
    try:
        return await action
    except Exception as exc:
        err = virt_error(exc)
        if err is None:
            raise
        raise CommandFailed(context, str(err)) from err


async def resolve_pool(storage: StorageClient | Calls, text: str) -> PoolInfo:
    """virshCommandOptPoolBy: by UUID when it looks like one, then by name."""
    if len(text) == _UUID_LENGTH:
        try:
            return await storage.pool_lookup_by_uuid(text)
        except Exception as exc:
            if virt_error(exc) is None:
                raise
    return await with_context(storage.pool_info(text), f"failed to get pool '{text}'")


def done(args: Args, message: str, **fields: object) -> int:
    """Print virsh's success line (and its blank line), or ``fields`` as JSON."""
    if args.json:
        print_json(fields)
    else:
        print(f"{message}\n")
    return 0


def show_xml(args: Args, xml: str, end: str = "\n", **fields: object) -> int:
    """Print an XML document as virsh does (``end`` after it), or it and ``fields`` as JSON."""
    if args.json:
        print_json({**fields, "xml": xml})
    else:
        sys.stdout.write(xml + end)
    return 0


def _build_mode(args: Args) -> BuildMode:
    from shared.api.storage import BuildMode

    if args.overwrite and args.no_overwrite:
        raise CommandFailed("Options --overwrite and --no-overwrite are mutually exclusive")
    if args.overwrite:
        return BuildMode.OVERWRITE
    if args.no_overwrite:
        return BuildMode.NO_OVERWRITE
    return BuildMode.BUILD if getattr(args, "build", False) else BuildMode.NONE


# ---- define / create ----------------------------------------------------------------


class _Adapter:
    """pool-*-as's adapter options."""

    def __init__(self, args: Args) -> None:
        self.name: str | None = args.adapter_name
        self.wwnn: str | None = args.adapter_wwnn
        self.wwpn: str | None = args.adapter_wwpn
        self.parent: str | None = args.adapter_parent
        self.parent_wwnn: str | None = args.adapter_parent_wwnn
        self.parent_wwpn: str | None = args.adapter_parent_wwpn
        self.parent_fabric_wwn: str | None = args.adapter_parent_fabric_wwn


def _adapter_attrs(a: _Adapter) -> list[tuple[str, object | None]] | None:
    if a.wwnn and a.wwpn:
        attrs: list[tuple[str, object | None]] = [("type", "fc_host")]
        if a.parent:
            attrs.append(("parent", a.parent))
        elif a.parent_wwnn and a.parent_wwpn:
            attrs += [("parent_wwnn", a.parent_wwnn), ("parent_wwpn", a.parent_wwpn)]
        elif a.parent_fabric_wwn:
            attrs.append(("parent_fabric_wwn", a.parent_fabric_wwn))
        return [*attrs, ("wwnn", a.wwnn), ("wwpn", a.wwpn)]
    if a.name:
        return [("type", "scsi_host"), ("name", a.name)]
    return None


def build_pool_xml(args: Args) -> str:
    """The ``<pool>`` document pool-define-as and pool-create-as send (virshBuildPoolXML)."""
    from shared.conf.xmlwriter import XmlWriter

    if args.secret_usage and args.secret_uuid:
        raise CommandFailed("Options --secret-usage and --secret-uuid are mutually exclusive")
    adapter = _Adapter(args)
    adapter_attrs = _adapter_attrs(adapter)
    w = XmlWriter()
    w.open("pool", [("type", args.type)])
    w.text("name", args.name)
    has_source = any(
        (
            args.source_host,
            args.source_path,
            args.source_dev,
            args.source_initiator,
            args.source_format,
            args.source_name,
            adapter_attrs,
        )
    )
    if has_source:
        w.open("source")
        if args.source_host:
            w.leaf("host", [("name", args.source_host)])
        if args.source_path:
            w.leaf("dir", [("path", args.source_path)])
        if args.source_dev:
            w.leaf("device", [("path", args.source_dev)])
        if args.source_initiator:
            w.open("initiator")
            w.leaf("iqn", [("name", args.source_initiator)])
            w.close("initiator")
        if adapter_attrs:
            w.leaf("adapter", adapter_attrs)
        if args.auth_type and args.auth_username and (args.secret_usage or args.secret_uuid):
            w.open("auth", [("type", args.auth_type), ("username", args.auth_username)])
            key = "usage" if args.secret_usage else "uuid"
            w.leaf("secret", [(key, args.secret_usage or args.secret_uuid)])
            w.close("auth")
        if args.source_format:
            w.leaf("format", [("type", args.source_format)])
        w.text("name", args.source_name)
        if args.source_protocol_ver:
            w.leaf("protocol", [("ver", args.source_protocol_ver)])
        w.close("source")
    if args.target:
        w.open("target")
        w.text("path", args.target)
        w.close("target")
    w.close("pool")
    return w.getvalue()


def define_(args: Args) -> int:
    xml = read_xml_file(args.file)
    if xml is None:
        return 1

    async def body(s: StorageClient) -> int:
        info = await with_context(s.pool_define(xml), f"Failed to define pool from {args.file}")
        return done(args, f"Pool {info.name} defined from {args.file}", **info.model_dump())

    return run_storage(args, body)


def print_xml(xml: str) -> int:
    """Print the XML a --print-xml option asks for, as virsh does; exit status 0."""
    sys.stdout.write(xml + "\n")
    return 0


def define_as(args: Args) -> int:
    try:
        xml = build_pool_xml(args)
    except CommandFailed as failure:
        return fail(*failure.lines)
    if args.print_xml:
        return print_xml(xml)

    async def body(s: StorageClient) -> int:
        info = await with_context(s.pool_define(xml), f"Failed to define pool {args.name}")
        return done(args, f"Pool {info.name} defined", **info.model_dump())

    return run_storage(args, body)


def create(args: Args) -> int:
    xml = read_xml_file(args.file)
    if xml is None:
        return 1

    async def body(s: StorageClient) -> int:
        mode = _build_mode(args)
        info = await with_context(
            s.pool_create(xml, mode), f"Failed to create pool from {args.file}"
        )
        return done(args, f"Pool {info.name} created from {args.file}", **info.model_dump())

    return run_storage(args, body)


def create_as(args: Args) -> int:
    try:
        xml = build_pool_xml(args)
        mode = _build_mode(args)
    except CommandFailed as failure:
        return fail(*failure.lines)
    if args.print_xml:
        return print_xml(xml)

    async def body(s: StorageClient) -> int:
        info = await with_context(s.pool_create(xml, mode), f"Failed to create pool {args.name}")
        return done(args, f"Pool {info.name} created", **info.model_dump())

    return run_storage(args, body)


# ---- actions on one pool ------------------------------------------------------------


def _pool_action(
    args: Args,
    act: Callable[[StorageClient, str], Awaitable[object]],
    failed: str,
    succeeded: str,
) -> int:
    """Resolve the pool, act on it; ``failed``/``succeeded`` take the given pool text."""

    async def body(s: StorageClient) -> int:
        info = await resolve_pool(s, args.pool)
        await with_context(act(s, info.name), failed.format(args.pool))
        return done(args, succeeded.format(args.pool), pool=info.name, uuid=info.uuid)

    return run_storage(args, body)


def build(args: Args) -> int:
    from shared.api.storage import BuildMode

    try:
        mode = _build_mode(args)
    except CommandFailed as failure:
        return fail(*failure.lines)
    mode = BuildMode.BUILD if mode is BuildMode.NONE else mode
    return _pool_action(
        args, lambda s, p: s.pool_build(p, mode), "Failed to build pool {}", "Pool {} built"
    )


def start(args: Args) -> int:
    try:
        mode = _build_mode(args)
    except CommandFailed as failure:
        return fail(*failure.lines)
    return _pool_action(
        args, lambda s, p: s.pool_start(p, mode), "Failed to start pool {}", "Pool {} started"
    )


def destroy(args: Args) -> int:
    from client.storage import StorageClient

    return _pool_action(
        args, StorageClient.pool_destroy, "Failed to destroy pool {}", "Pool {} destroyed"
    )


def delete(args: Args) -> int:
    from client.storage import StorageClient

    return _pool_action(
        args, StorageClient.pool_delete, "Failed to delete pool {}", "Pool {} deleted"
    )


def undefine(args: Args) -> int:
    from client.storage import StorageClient

    return _pool_action(
        args,
        StorageClient.pool_undefine,
        "Failed to undefine pool {}",
        "Pool {} has been undefined",
    )


def refresh(args: Args) -> int:
    from client.storage import StorageClient

    return _pool_action(
        args, StorageClient.pool_refresh, "Failed to refresh pool {}", "Pool {} refreshed"
    )


def autostart(args: Args) -> int:
    on = not args.disable
    verb = "mark" if on else "unmark"
    return _pool_action(
        args,
        lambda s, p: s.pool_set_autostart(p, on),
        f"failed to {verb} pool {{}} as autostarted",
        f"Pool {{}} {verb}ed as autostarted",
    )


# ---- information ----------------------------------------------------------------------


def _field(label: str, value: object) -> str:
    return f"{label:<15} {value}"


def info(args: Args) -> int:
    from shared.api.storage import PoolState

    async def body(s: StorageClient) -> int:
        p = await resolve_pool(s, args.pool)
        if args.json:
            print_json(p.model_dump(mode="json"))
            return 0
        lines = [
            _field("Name:", p.name),
            _field("UUID:", p.uuid),
            _field("State:", p.state.value),
            _field("Persistent:", "yes" if p.persistent else "no"),
            _field("Autostart:", "yes" if p.autostart else "no"),
        ]
        if p.state in (PoolState.RUNNING, PoolState.DEGRADED):
            for label, value in (
                ("Capacity:", p.capacity),
                ("Allocation:", p.allocation),
                ("Available:", p.available),
            ):
                lines.append(_field(label, value if args.bytes else pretty_capacity(value)))
        print("\n".join(lines) + "\n")
        return 0

    return run_storage(args, body)


def list_(args: Args) -> int:
    from client.cli.quick import print_raw, run_quick

    for a, b in (("all", "inactive"), ("details", "uuid"), ("details", "name")):
        if getattr(args, a) and getattr(args, b):
            return fail(f"Options --{a} and --{b} are mutually exclusive")
    types = [t for t in (args.type or "").split(",") if t]
    if types:
        from shared.conf.storage_pool_types import PoolType

        for t in types:
            if t not in {p.value for p in PoolType}:
                return fail(f"Invalid pool type '{t}'")
    active: bool | None = None if args.all else not args.inactive

    async def body(s: Calls) -> int:
        pools = await s.pool_list(
            active=active,
            persistent=tristate(args.persistent, args.transient),
            autostart=tristate(args.autostart, args.no_autostart),
            types=types,
        )
        if args.json:
            print_raw(pools)
            return 0
        sys.stdout.write(format_pool_list(pools, args.details, args.uuid, args.name))
        return 0

    return run_quick(args, body, storage=True)


def format_pool_list(pools: Sequence[PoolView], details: bool, uuid: bool, name: bool) -> str:
    """pool-list's output, in its three shapes (plain, --details, --uuid/--name).
    States are compared as text: records and models (a ``StrEnum``) both equal it."""
    if not details and (uuid or name):
        lines = []
        for p in pools:
            text = f"{p.uuid:<36}" if uuid else ""
            if uuid and name:
                text += " "
            if name:
                text += f"{p.name:<20}"
            lines.append(text)
        return "".join(line + "\n" for line in lines) + "\n"
    if not details:
        rows = [
            [p.name, "active" if p.state == "running" else "inactive",
             "yes" if p.autostart else "no"]
            for p in pools
        ]  # fmt: skip
        return table(["Name", "State", "Autostart"], rows)
    rows = []
    for p in pools:
        running = p.state in ("running", "degraded")
        sizes = [pretty_capacity(v) if running else "-" for v in (p.capacity, p.allocation,
                                                                   p.available)]  # fmt: skip
        rows.append(
            [p.name, str(p.state), "yes" if p.autostart else "no",
             "yes" if p.persistent else "no", *sizes]
        )  # fmt: skip
    headers = ["Name", "State", "Autostart", "Persistent", "Capacity", "Allocation", "Available"]
    return table(headers, rows)


def dumpxml(args: Args) -> int:
    async def body(s: StorageClient) -> int:
        p = await resolve_pool(s, args.pool)
        xml = await s.pool_dumpxml(p.name, inactive=args.inactive)
        return show_xml(args, xml, pool=p.name)

    return run_storage(args, body)


def capabilities(args: Args) -> int:
    async def body(s: StorageClient) -> int:
        # virsh adds a newline to this document and then its usual blank line.
        return show_xml(args, await s.pool_capabilities(), "\n\n")

    return run_storage(args, body)


def name_(args: Args) -> int:
    async def body(s: StorageClient) -> int:
        p = await with_context(
            s.pool_lookup_by_uuid(args.pool), f"failed to get pool '{args.pool}'"
        )
        return done(args, p.name, pool=p.name, uuid=p.uuid)

    return run_storage(args, body)


def uuid_(args: Args) -> int:
    async def body(s: StorageClient) -> int:
        p = await resolve_pool(s, args.pool)
        return done(args, p.uuid, pool=p.name, uuid=p.uuid)

    return run_storage(args, body)


# ---- the table ------------------------------------------------------------------------------

_POOL = data("pool", "pool name or uuid", "pool")
_BUILD = (
    flag("build", "build the pool as normal"),
    flag("no-overwrite", "do not overwrite any existing data"),
    flag("overwrite", "overwrite any existing data"),
)
_SOURCE = "for underlying storage"
_VHBA = "to be used for underlying vHBA storage"
_X_AS = (
    data("name", "name of the pool"),
    data("type", "type of the pool"),
    flag("print-xml", "print XML document, but don't define/create"),
    string("source-host", f"source-host {_SOURCE}"),
    string("source-path", f"source path {_SOURCE}", "file"),
    string("source-dev", f"source device {_SOURCE}", "file"),
    string("source-name", f"source name {_SOURCE}"),
    string("target", f"target {_SOURCE}", "file"),
    string("source-format", f"format {_SOURCE}"),
    string("auth-type", f"auth type to be used {_SOURCE}"),
    string("auth-username", f"auth username to be used {_SOURCE}"),
    string("secret-usage", f"auth secret usage to be used {_SOURCE}"),
    string("secret-uuid", f"auth secret UUID to be used {_SOURCE}", "secret"),
    string("adapter-name", f"adapter name to be used {_SOURCE}"),
    string("adapter-wwnn", f"adapter wwnn to be used {_SOURCE}"),
    string("adapter-wwpn", f"adapter wwpn to be used {_SOURCE}"),
    string("adapter-parent", f"adapter parent scsi_hostN {_VHBA}"),
    string("adapter-parent-wwnn", f"adapter parent scsi_hostN wwnn {_VHBA}"),
    string("adapter-parent-wwpn", f"adapter parent scsi_hostN wwpn {_VHBA}"),
    string("adapter-parent-fabric-wwn", f"adapter parent scsi_hostN fabric_wwn {_VHBA}"),
    string("source-protocol-ver", "nfsvers value for NFS pool mount option"),
    string("source-initiator", f"initiator iqn {_SOURCE}"),
)
_FILE = data("file", "file containing an XML pool description", "file")
_VALIDATE = flag("validate", "validate the XML against the schema")

GROUP = Group(
    "Storage Pool",
    "pool",
    (
        Command(
            "pool-autostart",
            "autostart a pool",
            autostart,
            (_POOL, flag("disable", "disable autostarting")),
            description="Configure a pool to be automatically started at boot.",
        ),
        Command(
            "pool-build",
            "build a pool",
            build,
            (_POOL, *_BUILD[1:]),
            description="Build a given pool.",
        ),
        Command(
            "pool-create-as",
            "create a pool from a set of args",
            create_as,
            (*_X_AS, *_BUILD),
            description="Create a pool.",
        ),
        Command(
            "pool-create",
            "create a pool from an XML file",
            create,
            (_FILE, *_BUILD),
            description="Create a pool.",
        ),
        Command(
            "pool-define-as",
            "define a pool from a set of args",
            define_as,
            _X_AS,
            description="Define a pool.",
        ),
        Command(
            "pool-define",
            "define an inactive persistent storage pool or modify an existing persistent one "
            "from an XML file",
            define_,
            (_FILE, _VALIDATE),
            description="Define or modify a persistent storage pool.",
        ),
        Command(
            "pool-delete", "delete a pool", delete, (_POOL,), description="Delete a given pool."
        ),
        Command(
            "pool-destroy",
            "destroy (stop) a pool",
            destroy,
            (_POOL,),
            description="Forcefully stop a given pool. Raw data in the pool is untouched",
        ),
        Command(
            "pool-dumpxml",
            "pool information in XML",
            dumpxml,
            (_POOL, flag("inactive", "show inactive defined XML")),
            description="Output the pool information as an XML dump to stdout.",
        ),
        Command(
            "pool-info",
            "storage pool information",
            info,
            (_POOL, flag("bytes", "Return pool info in bytes")),
            description="Returns basic information about the storage pool.",
        ),
        Command(
            "pool-list",
            "list pools",
            list_,
            (
                flag("inactive", "list inactive pools"),
                flag("all", "list inactive & active pools"),
                flag("transient", "list transient pools"),
                flag("persistent", "list persistent pools"),
                flag("autostart", "list pools with autostart enabled"),
                flag("no-autostart", "list pools with autostart disabled"),
                string("type", "only list pool of specified type(s) (if supported)"),
                flag("details", "display extended details for pools"),
                flag("uuid", "list UUID of active pools only"),
                flag("name", "list name of active pools only"),
            ),
            description="Returns list of pools.",
            probe=False,  # connects first thing itself
        ),
        Command(
            "pool-name",
            "convert a pool UUID to pool name",
            name_,
            (data("pool", "pool name or uuid", "pool"),),
        ),
        Command(
            "pool-refresh",
            "refresh a pool",
            refresh,
            (_POOL,),
            description="Refresh a given pool.",
        ),
        Command(
            "pool-start",
            "start a (previously defined) inactive pool",
            start,
            (_POOL, *_BUILD),
            description="Start a pool.",
        ),
        Command(
            "pool-undefine",
            "undefine an inactive pool",
            undefine,
            (_POOL,),
            description="Undefine the configuration for an inactive pool.",
        ),
        Command("pool-uuid", "convert a pool name to pool UUID", uuid_, (_POOL,)),
        Command(
            "pool-capabilities",
            "storage pool capabilities",
            capabilities,
            description="Returns capabilities of storage pool support.",
        ),
    ),
)
