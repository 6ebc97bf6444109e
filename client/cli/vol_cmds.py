"""The storage volume commands (vol-create ... vol-pool), printing what virsh prints.

A volume is named as virsh names it: with ``--pool``, by name in that pool
first; then by key, then by path, across the host's active pools.
"""

from __future__ import annotations

import sys

from client.cli.output import print_json, table
from client.cli.pool_cmds import (
    CommandFailed,
    done,
    fail,
    pretty_capacity,
    print_xml,
    resolve_pool,
    run_storage,
    show_xml,
    with_context,
)
from client.cli.secret_cmds import read_xml_file
from client.cli.session import virt_error
from client.cli.table import Args, Command, Group, Opt, data, flag, number, string

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from client.cli.quick import Calls
    from client.storage import StorageClient
    from shared.api.storage import VolRef, VolumeInfo

    Lookup = Callable[[], Awaitable["VolumeInfo"]]


def parse_size(text: str) -> int:
    """virsh's virshVolSize: digits then an optional unit; ``CommandFailed`` otherwise."""
    from shared.conf.units import ULLONG_MAX, parse_c_unsigned, scale_integer
    from shared.util.errors import VirtError

    stripped = text.lstrip(" \t\n\v\f\r")
    digits = len(stripped) - len(stripped.lstrip("+0123456789"))
    number = parse_c_unsigned(stripped[:digits]) if digits else None
    if number is None:
        raise CommandFailed(f"Malformed size {text}")
    try:
        return scale_integer(number, stripped[digits:] or None, limit=ULLONG_MAX)
    except VirtError as err:
        raise CommandFailed(f"Malformed size {text}", str(err)) from err


async def resolve_volume(
    s: StorageClient | Calls,
    text: str,
    pool_text: str | None,
    *,
    by_name: bool = True,
    pool_option: str = "pool",
) -> VolumeInfo:
    """virshCommandOptVolBy: name in ``--pool`` (named ``pool_option`` in the
    hint a failure prints), then key, then path."""
    pool_name: str | None = None
    if pool_text:
        pool = await resolve_pool(s, pool_text)
        if pool.state != "running":
            raise CommandFailed(f"pool '{pool_text}' is not active")
        pool_name = pool.name
    last: BaseException | None = None
    lookups: list[Lookup] = []
    if pool_name is not None and by_name:
        lookups.append(lambda: s.vol_lookup_by_name(str(pool_name), text))
    lookups += [lambda: s.vol_lookup_by_key(text), lambda: s.vol_lookup_by_path(text)]
    for lookup in lookups:
        try:
            vol = await lookup()
        except Exception as exc:
            last = virt_error(exc)
            if last is None:
                raise
            continue
        if pool_name is not None and vol.pool != pool_name:
            raise CommandFailed(f"Requested volume '{text}' is not in pool '{pool_name}'")
        return vol
    # Commands without a --pool option (vol-name, vol-pool) give no hint about it.
    hint = (
        "" if pool_name is not None or not by_name else f", specifying --{pool_option} might help"
    )
    lines = [f"failed to get vol '{text}'{hint}"]
    if last is not None:
        lines.append(str(last))
    raise CommandFailed(*lines)


def _pool_opt(args: Args) -> str | None:
    return getattr(args, "pool", None)


def _ref(vol: VolumeInfo) -> VolRef:
    from shared.api.storage import VolRef

    return VolRef(pool=vol.pool, name=vol.name)


# ---- creating -------------------------------------------------------------------------


def create(args: Args) -> int:
    xml = read_xml_file(args.file)
    if xml is None:
        return 1

    async def body(s: StorageClient) -> int:
        pool = await resolve_pool(s, args.pool)
        vol = await with_context(
            s.vol_create(pool.name, xml, prealloc_metadata=args.prealloc_metadata),
            f"Failed to create vol from {args.file}",
        )
        return done(args, f"Vol {vol.name} created from {args.file}", **vol.model_dump())

    return run_storage(args, body)


async def _backing_path(s: StorageClient, pool: str, text: str) -> str:
    """vol-create-as's backing volume: by name in the pool, then key, then path."""
    from shared.util.errors import VirtError

    lookups: list[Lookup] = [
        lambda: s.vol_lookup_by_name(pool, text),
        lambda: s.vol_lookup_by_key(text),
        lambda: s.vol_lookup_by_path(text),
    ]
    for lookup in lookups:
        try:
            return (await lookup()).path
        except VirtError:
            continue
    raise CommandFailed(f"failed to get vol '{text}'")


def volume_xml(
    name: str,
    capacity: int,
    allocation: int | None,
    fmt: str | None,
    backing: str | None,
    backing_format: str | None,
) -> str:
    """The ``<volume>`` document vol-create-as sends."""
    from shared.conf.xmlwriter import XmlWriter

    w = XmlWriter()
    w.open("volume")
    w.text("name", name)
    w.text("capacity", capacity)
    w.text("allocation", allocation)
    if fmt:
        w.open("target")
        w.leaf("format", [("type", fmt)])
        w.close("target")
    if backing:
        w.open("backingStore")
        w.text("path", backing)
        if backing_format:
            w.leaf("format", [("type", backing_format)])
        w.close("backingStore")
    w.close("volume")
    return w.getvalue()


def create_as(args: Args) -> int:
    async def body(s: StorageClient) -> int:
        pool = await resolve_pool(s, args.pool)
        capacity = parse_size(args.capacity)
        allocation = parse_size(args.allocation) if args.allocation is not None else None
        backing = await _backing_path(s, pool.name, args.backing_vol) if args.backing_vol else None
        xml = volume_xml(
            args.name, capacity, allocation, args.format, backing, args.backing_vol_format
        )
        if args.print_xml:
            return print_xml(xml)
        vol = await with_context(
            s.vol_create(pool.name, xml, prealloc_metadata=args.prealloc_metadata),
            f"Failed to create vol {args.name}",
        )
        return done(args, f"Vol {args.name} created", **vol.model_dump())

    return run_storage(args, body)


async def _create_from(
    s: StorageClient,
    args: Args,
    pool: str,
    xml: str,
    source: VolumeInfo,
    failed: str,
) -> VolumeInfo:
    """The volume ``xml`` describes made in ``pool`` as a copy of ``source`` (vol-create-from
    and vol-clone, with their --prealloc-metadata and --reflink); ``failed`` heads the error."""
    created = s.vol_create_from(
        pool, xml, _ref(source), prealloc_metadata=args.prealloc_metadata, reflink=args.reflink
    )
    return await with_context(created, failed)


def create_from(args: Args) -> int:
    xml = read_xml_file(args.file)
    if xml is None:
        return 1

    async def body(s: StorageClient) -> int:
        pool = await resolve_pool(s, args.pool)
        source = await resolve_volume(s, args.vol, args.inputpool, pool_option="inputpool")
        failed = f"Failed to create vol from {args.file}"
        vol = await _create_from(s, args, pool.name, xml, source, failed)
        return done(
            args, f"Vol {vol.name} created from input vol {source.name}", **vol.model_dump()
        )

    return run_storage(args, body)


def clone_xml(source_xml: str, new_name: str) -> str:
    """virsh's virshMakeCloneXML: the source volume's XML with only the name changed
    (serialised as libxml2 writes it: double quotes, no declaration)."""
    from lxml import etree

    from shared.conf.xmlsafe import parse_xml

    root = parse_xml(source_xml, "volume")
    node = root.find("name")
    if node is not None:
        node.text = new_name
    return etree.tostring(root, encoding="unicode")


def clone(args: Args) -> int:
    async def body(s: StorageClient) -> int:
        source = await resolve_volume(s, args.vol, _pool_opt(args))
        xml = clone_xml(await s.vol_dumpxml(_ref(source)), args.newname)
        if args.print_xml:
            return print_xml(xml)
        failed = f"Failed to clone vol from {source.name}"
        vol = await _create_from(s, args, source.pool, xml, source, failed)
        return done(args, f"Vol {vol.name} cloned from {source.name}", **vol.model_dump())

    return run_storage(args, body)


# ---- changing ---------------------------------------------------------------------------


def delete(args: Args) -> int:
    async def body(s: StorageClient) -> int:
        vol = await resolve_volume(s, args.vol, _pool_opt(args))
        await with_context(
            s.vol_delete(_ref(vol), force=args.force, delete_snapshots=args.delete_snapshots),
            f"Failed to delete vol {args.vol}",
        )
        return done(args, f"Vol {args.vol} deleted", pool=vol.pool, name=vol.name)

    return run_storage(args, body)


def wipe(args: Args) -> int:
    from shared.api.storage import WipeAlgorithm

    algorithm = WipeAlgorithm.ZERO
    if args.algorithm is not None:
        try:
            algorithm = WipeAlgorithm(args.algorithm)
        except ValueError:
            return fail(f"Unsupported algorithm '{args.algorithm}'")

    async def body(s: StorageClient) -> int:
        vol = await resolve_volume(s, args.vol, _pool_opt(args))
        await with_context(
            s.vol_wipe(_ref(vol), algorithm, force=args.force), f"Failed to wipe vol {args.vol}"
        )
        return done(args, f"Vol {args.vol} wiped", pool=vol.pool, name=vol.name)

    return run_storage(args, body)


def resize(args: Args) -> int:
    text = args.capacity.lstrip(" \t\n\v\f\r")
    delta = args.delta
    if text.startswith("-"):
        if not args.shrink:
            return fail("negative size requires --shrink")
        text, delta = text[1:], True

    async def body(s: StorageClient) -> int:
        vol = await resolve_volume(s, args.vol, _pool_opt(args))
        capacity = parse_size(text)
        how = "by" if delta else "to"
        resized = s.vol_resize(
            _ref(vol),
            capacity,
            allocate=args.allocate,
            delta=delta,
            shrink=args.shrink,
            force=args.force,
        )
        failed = f"Failed to change size of volume '{vol.name}' {how} {text}"
        new = await with_context(resized, failed)
        message = f"Size of volume '{vol.name}' successfully changed {how} {text}"
        return done(args, message, **new.model_dump())

    return run_storage(args, body)


# ---- information ----------------------------------------------------------------------


def info(args: Args) -> int:
    from client.cli.quick import print_raw, run_quick

    async def body(s: Calls) -> int:
        vol = await resolve_volume(s, args.vol, args.pool)
        fresh = await s.vol_info(vol.pool, vol.name)
        if args.json:
            print_raw(fresh)
            return 0
        second = (
            ("Physical:", fresh.physical) if args.physical else ("Allocation:", fresh.allocation)
        )
        lines = [f"{'Name:':<15} {fresh.name}", f"{'Type:':<15} {fresh.type}"]
        for label, value in (("Capacity:", fresh.capacity), second):
            shown = f"{value} bytes" if args.bytes else pretty_capacity(value)
            lines.append(f"{label:<15} {shown}")
        if args.users:
            # virtbus only, on request, so that the default output stays virsh's
            users = ", ".join(sorted({f"{u['domain']}/{u['disk']}" for u in fresh.users})) or "-"
            lines.append(f"{'Users:':<15} {users}")
        print("\n".join(lines) + "\n")
        return 0

    return run_quick(args, body, storage=True)


def list_(args: Args) -> int:
    from client.cli.quick import print_raw, run_quick

    async def body(s: Calls) -> int:
        pool = await resolve_pool(s, args.pool)
        if not (args.details or args.json):
            # virsh's columns: the volumes' names and paths, without their figures.
            named = await with_context(s.vol_list_brief(pool.name), "Failed to list volumes")
            sys.stdout.write(table(["Name", "Path"], [[v.name, v.path] for v in named]))
            return 0
        vols = await with_context(
            s.vol_list(pool.name, details=args.details), "Failed to list volumes"
        )
        if args.json:
            print_raw(vols)
            return 0
        rows = [
            [v.name, v.path, v.type, pretty_capacity(v.capacity), pretty_capacity(v.allocation)]
            for v in vols
        ]
        sys.stdout.write(table(["Name", "Path", "Type", "Capacity", "Allocation"], rows))
        return 0

    return run_quick(args, body, storage=True)


def dumpxml(args: Args) -> int:
    async def body(s: StorageClient) -> int:
        vol = await resolve_volume(s, args.vol, _pool_opt(args))
        xml = await s.vol_dumpxml(_ref(vol))
        return show_xml(args, xml, pool=vol.pool, name=vol.name)

    return run_storage(args, body)


def _print_field(args: Args, field: str, by_name: bool = True) -> int:
    async def body(s: StorageClient) -> int:
        vol = await resolve_volume(s, args.vol, _pool_opt(args), by_name=by_name)
        value = str(getattr(vol, field))
        return done(args, value, **{field: value})

    return run_storage(args, body)


def path(args: Args) -> int:
    return _print_field(args, "path")


def key(args: Args) -> int:
    return _print_field(args, "key")


def name_(args: Args) -> int:
    return _print_field(args, "name", by_name=False)


def pool(args: Args) -> int:
    async def body(s: StorageClient) -> int:
        vol = await resolve_volume(s, args.vol, None, by_name=False)
        owner = await with_context(s.pool_lookup_by_volume(_ref(vol)), "failed to get parent pool")
        value = owner.uuid if args.uuid else owner.name
        return done(args, value, pool=owner.name, uuid=owner.uuid)

    return run_storage(args, body)


# ---- streams ------------------------------------------------------------------------------


class ProgressBar:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._shown = -1
        self._on = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self._on or total <= 0:
            return
        percent = done * 100 // total
        if percent == self._shown:
            return
        self._shown = percent
        filled = percent * 30 // 100
        bar = "#" * filled + " " * (30 - filled)
        sys.stderr.write(f"\r{self._label} [{bar}] {percent:3d}% {pretty_capacity(done)}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _transfer(args: Args, upload: bool) -> int:
    from client import storage_stream
    from shared.util.errors import VirtError

    args.offset = args.offset or 0
    args.length = args.length or 0
    if args.offset < 0:
        return fail("Numeric value for <offset> option is malformed or out of range")
    # virsh reads a negative length as "everything" (an unsigned wrap).
    length = max(args.length, 0)

    async def body(s: StorageClient) -> int:
        vol = await resolve_volume(s, args.vol, _pool_opt(args))
        bar = ProgressBar(f"{'Uploading' if upload else 'Downloading'} {vol.name}")
        kwargs = {"offset": args.offset, "length": length, "sparse": args.sparse, "progress": bar}
        try:
            if upload:
                moved = await storage_stream.upload(s, _ref(vol), args.file, **kwargs)
            else:
                moved = await storage_stream.download(s, _ref(vol), args.file, **kwargs)
        except FileNotFoundError as err:
            what = "read" if upload else "create"
            raise CommandFailed(f"cannot {what} {args.file}") from err
        except (VirtError, OSError) as err:
            verb = "send data to" if upload else "receive data from"
            raise CommandFailed(f"cannot {verb} volume {args.vol}", str(err)) from err
        if args.json:
            print_json({"pool": vol.pool, "name": vol.name, "bytes": moved})
        else:
            print()
        return 0

    return run_storage(args, body)


def upload(args: Args) -> int:
    return _transfer(args, upload=True)


def download(args: Args) -> int:
    return _transfer(args, upload=False)


# ---- the table ------------------------------------------------------------------------------

_VOL = data("vol", "vol name, key or path", "vol")
_POOL_OPT = string("pool", "pool name or uuid", "pool")
_PREALLOC = flag("prealloc-metadata", "preallocate metadata (for qcow2 instead of full allocation)")
_VALIDATE = flag("validate", "validate the XML against the schema")
_XML_FILE = data("file", "file containing an XML vol description", "file")


def _stream(verb: str, to: str) -> tuple[Opt, ...]:
    return (
        _VOL,
        data("file", "file", "file"),
        _POOL_OPT,
        number("offset", f"volume offset to {verb} {to}"),
        number("length", f"amount of data to {verb}"),
        flag("sparse", "preserve sparseness of volume"),
    )


GROUP = Group(
    "Storage Volume",
    "volume",
    (
        Command(
            "vol-clone",
            "clone a volume.",
            clone,
            (
                _VOL,
                data("newname", "clone name"),
                _POOL_OPT,
                _PREALLOC,
                flag("reflink", "use btrfs COW lightweight copy"),
                flag("print-xml", "print XML document rather than clone the volume"),
            ),
            description="Clone an existing volume within the parent pool.",
        ),
        Command(
            "vol-create-as",
            "create a volume from a set of args",
            create_as,
            (
                data("pool", "pool name", "pool"),
                data("name", "name of the volume"),
                data("capacity", "size of the vol, as scaled integer (default bytes)"),
                string("allocation", "initial allocation size, as scaled integer (default bytes)"),
                string(
                    "format",
                    "file format type raw,bochs,qcow,qcow2,qed,vmdk",
                    ("raw", "bochs", "qcow", "qcow2", "qed", "vmdk"),
                ),
                string("backing-vol", "the backing volume if taking a snapshot", "vol"),
                string("backing-vol-format", "format of backing volume if taking a snapshot"),
                _PREALLOC,
                flag("print-xml", "print XML document, but don't define/create"),
            ),
            description="Create a vol.",
        ),
        Command(
            "vol-create",
            "create a vol from an XML file",
            create,
            (data("pool", "pool name", "pool"), _XML_FILE, _PREALLOC, _VALIDATE),
            description="Create a vol.",
        ),
        Command(
            "vol-create-from",
            "create a vol, using another volume as input",
            create_from,
            (
                data("pool", "pool name or uuid", "pool"),
                _XML_FILE,
                _VOL,
                string("inputpool", "pool name or uuid of the input volume's pool", "pool"),
                _PREALLOC,
                flag("reflink", "use btrfs COW lightweight copy"),
                _VALIDATE,
            ),
            description="Create a vol from an existing volume.",
        ),
        Command(
            "vol-delete",
            "delete a vol",
            delete,
            (
                _VOL,
                _POOL_OPT,
                flag(
                    "delete-snapshots",
                    "delete snapshots associated with volume (must be supported by storage driver)",
                ),
                flag("force", "delete even if a domain disk uses it (virtbus)"),
            ),
            description="Delete a given vol.",
        ),
        Command(
            "vol-download",
            "download volume contents to a file",
            download,
            _stream("download", "from"),
            description="Download volume contents to a file",
        ),
        Command(
            "vol-dumpxml",
            "vol information in XML",
            dumpxml,
            (_VOL, _POOL_OPT),
            description="Output the vol information as an XML dump to stdout.",
        ),
        Command(
            "vol-info",
            "storage vol information",
            info,
            (
                _VOL,
                _POOL_OPT,
                flag("bytes", "sizes are represented in bytes rather than pretty units"),
                flag("physical", "return the physical size of the volume in allocation field"),
                flag("users", "also list the domain disks using it (virtbus)"),
            ),
            description="Returns basic information about the storage vol.",
            probe=False,  # connects first thing itself
        ),
        Command(
            "vol-key",
            "returns the volume key for a given volume name or path",
            key,
            (data("vol", "volume name or path", "vol"), _POOL_OPT),
        ),
        Command(
            "vol-list",
            "list vols",
            list_,
            (
                data("pool", "pool name or uuid", "pool"),
                flag("details", "display extended details for volumes"),
            ),
            description="Returns list of vols by pool.",
            probe=False,  # connects first thing itself
        ),
        Command(
            "vol-name",
            "returns the volume name for a given volume key or path",
            name_,
            (data("vol", "volume key or path", "vol"),),
        ),
        Command(
            "vol-path",
            "returns the volume path for a given volume name or key",
            path,
            (data("vol", "volume name or key", "vol"), _POOL_OPT),
        ),
        Command(
            "vol-pool",
            "returns the storage pool for a given volume key or path",
            pool,
            (
                data("vol", "volume key or path", "vol"),
                flag("uuid", "return the pool uuid rather than pool name"),
            ),
        ),
        Command(
            "vol-resize",
            "resize a vol",
            resize,
            (
                _VOL,
                data("capacity", "new capacity for the vol, as scaled integer (default bytes)"),
                _POOL_OPT,
                flag("allocate", "allocate the new capacity, rather than leaving it sparse"),
                flag("delta", "use capacity as a delta to current size, rather than the new size"),
                flag("shrink", "allow the resize to shrink the volume"),
                flag("force", "shrink even if a domain disk uses it (virtbus)"),
            ),
            description="Resizes a storage volume. This is safe only for storage volumes not "
            "in use by an active guest.\nSee blockresize for live resizing.",
        ),
        Command(
            "vol-upload",
            "upload file contents to a volume",
            upload,
            _stream("upload", "to"),
            description="Upload file contents to a volume",
        ),
        Command(
            "vol-wipe",
            "wipe a vol",
            wipe,
            (
                _VOL,
                _POOL_OPT,
                string(
                    "algorithm",
                    "perform selected wiping algorithm",
                    (
                        "zero",
                        "nnsa",
                        "dod",
                        "bsi",
                        "gutmann",
                        "schneier",
                        "pfitzner7",
                        "pfitzner33",
                        "random",
                        "trim",
                    ),
                ),
                flag("force", "wipe even if a domain disk uses it (virtbus)"),
            ),
            description="Ensure data previously on a volume is not accessible to future reads",
        ),
    ),
)
