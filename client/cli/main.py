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
import re
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


_POOL = "client.cli.pool_cmds"
_VOL = "client.cli.vol_cmds"


def _pool_ref(p: argparse.ArgumentParser) -> None:
    p.add_argument("pool", help="pool name or uuid")


def _build_flags(p: argparse.ArgumentParser, with_build: bool = True) -> None:
    if with_build:
        p.add_argument("--build", action="store_true", help="build the pool as normal")
    p.add_argument("--overwrite", action="store_true", help="overwrite any existing data")
    p.add_argument("--no-overwrite", action="store_true", help="do not overwrite any existing data")


def _pool_x_as(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="name of the pool")
    p.add_argument("type", help="type of the pool")
    p.add_argument("--print-xml", action="store_true", help="print XML, do not define/create")
    for option, what in (
        ("source-host", "source-host for underlying storage"),
        ("source-path", "source path for underlying storage"),
        ("source-dev", "source device for underlying storage"),
        ("source-name", "source name for underlying storage"),
        ("target", "target for underlying storage"),
        ("source-format", "format for underlying storage"),
        ("auth-type", "auth type to be used for underlying storage"),
        ("auth-username", "auth username to be used for underlying storage"),
        ("secret-usage", "auth secret usage to be used for underlying storage"),
        ("secret-uuid", "auth secret UUID to be used for underlying storage"),
        ("adapter-name", "adapter name to be used for underlying storage"),
        ("adapter-wwnn", "adapter wwnn to be used for underlying storage"),
        ("adapter-wwpn", "adapter wwpn to be used for underlying storage"),
        ("adapter-parent", "adapter parent scsi_hostN of the vHBA"),
        ("adapter-parent-wwnn", "adapter parent scsi_hostN wwnn of the vHBA"),
        ("adapter-parent-wwpn", "adapter parent scsi_hostN wwpn of the vHBA"),
        ("adapter-parent-fabric-wwn", "adapter parent scsi_hostN fabric_wwn of the vHBA"),
        ("source-protocol-ver", "nfsvers value for NFS pool mount option"),
        ("source-initiator", "initiator iqn for underlying storage"),
    ):
        p.add_argument(f"--{option}", help=what)


def _vol_ref(p: argparse.ArgumentParser, what: str = "vol name, key or path") -> None:
    p.add_argument("vol", help=what)
    p.add_argument("--pool", help="pool name or uuid")


@command("pool-define", _POOL, "define_", "define an inactive persistent storage pool from XML")
def _pool_define(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="file containing an XML pool description")
    p.add_argument("--validate", action="store_true", help="validate the XML against the schema")


@command("pool-define-as", _POOL, "define_as", "define a pool from a set of args")
def _pool_define_as(p: argparse.ArgumentParser) -> None:
    _pool_x_as(p)


@command("pool-create", _POOL, "create", "create a pool from an XML file")
def _pool_create(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="file containing an XML pool description")
    _build_flags(p)


@command("pool-create-as", _POOL, "create_as", "create a pool from a set of args")
def _pool_create_as(p: argparse.ArgumentParser) -> None:
    _pool_x_as(p)
    _build_flags(p)


@command("pool-build", _POOL, "build", "build a pool")
def _pool_build(p: argparse.ArgumentParser) -> None:
    _pool_ref(p)
    _build_flags(p, with_build=False)


@command("pool-start", _POOL, "start", "start a (previously defined) inactive pool")
def _pool_start(p: argparse.ArgumentParser) -> None:
    _pool_ref(p)
    _build_flags(p)


@command("pool-destroy", _POOL, "destroy", "destroy (stop) a pool")
def _pool_destroy(p: argparse.ArgumentParser) -> None:
    _pool_ref(p)


@command("pool-delete", _POOL, "delete", "delete a pool")
def _pool_delete(p: argparse.ArgumentParser) -> None:
    _pool_ref(p)


@command("pool-undefine", _POOL, "undefine", "undefine an inactive pool")
def _pool_undefine(p: argparse.ArgumentParser) -> None:
    _pool_ref(p)


@command("pool-autostart", _POOL, "autostart", "autostart a pool")
def _pool_autostart(p: argparse.ArgumentParser) -> None:
    _pool_ref(p)
    p.add_argument("--disable", action="store_true", help="disable autostarting")


@command("pool-refresh", _POOL, "refresh", "refresh a pool")
def _pool_refresh(p: argparse.ArgumentParser) -> None:
    _pool_ref(p)


@command("pool-info", _POOL, "info", "storage pool information")
def _pool_info(p: argparse.ArgumentParser) -> None:
    _pool_ref(p)
    p.add_argument("--bytes", action="store_true", help="sizes in bytes, not pretty units")


@command("pool-list", _POOL, "list_", "list pools")
def _pool_list(p: argparse.ArgumentParser) -> None:
    for flag, what in (
        ("inactive", "list inactive pools"),
        ("all", "list inactive & active pools"),
        ("transient", "list transient pools"),
        ("persistent", "list persistent pools"),
        ("autostart", "list pools with autostart enabled"),
        ("no-autostart", "list pools with autostart disabled"),
        ("details", "display extended details for pools"),
        ("uuid", "list UUID of pools only"),
        ("name", "list name of pools only"),
    ):
        p.add_argument(f"--{flag}", action="store_true", help=what)
    p.add_argument("--type", help="only list pools of these comma-separated types")


@command("pool-dumpxml", _POOL, "dumpxml", "pool information in XML")
def _pool_dumpxml(p: argparse.ArgumentParser) -> None:
    _pool_ref(p)
    p.add_argument("--inactive", action="store_true", help="the configuration of next start")


@command("pool-capabilities", _POOL, "capabilities", "storage pool capabilities")
def _pool_capabilities(p: argparse.ArgumentParser) -> None:
    pass


@command("pool-name", _POOL, "name_", "convert a pool UUID to pool name")
def _pool_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("uuid", help="pool uuid")


@command("pool-uuid", _POOL, "uuid_", "convert a pool name to pool UUID")
def _pool_uuid(p: argparse.ArgumentParser) -> None:
    _pool_ref(p)


@command("vol-create", _VOL, "create", "create a vol from an XML file")
def _vol_create(p: argparse.ArgumentParser) -> None:
    _pool_ref(p)
    p.add_argument("file", help="file containing an XML vol description")
    p.add_argument("--prealloc-metadata", action="store_true", help="preallocate metadata")
    p.add_argument("--validate", action="store_true", help="validate the XML against the schema")


@command("vol-create-as", _VOL, "create_as", "create a volume from a set of args")
def _vol_create_as(p: argparse.ArgumentParser) -> None:
    _pool_ref(p)
    p.add_argument("name", help="name of the volume")
    p.add_argument("capacity", help="size of the vol, as scaled integer (default bytes)")
    p.add_argument("--allocation", help="initial allocation size, as scaled integer")
    p.add_argument("--format", help="file format type raw,bochs,qcow,qcow2,qed,vmdk")
    p.add_argument("--backing-vol", help="the backing volume if taking a snapshot")
    p.add_argument("--backing-vol-format", help="format of backing volume")
    p.add_argument("--prealloc-metadata", action="store_true", help="preallocate metadata")
    p.add_argument("--print-xml", action="store_true", help="print XML, do not create")


@command("vol-create-from", _VOL, "create_from", "create a vol, using another volume as input")
def _vol_create_from(p: argparse.ArgumentParser) -> None:
    _pool_ref(p)
    p.add_argument("file", help="file containing an XML vol description")
    p.add_argument("vol", help="input vol name or key")
    p.add_argument("--inputpool", help="pool name or uuid of the input volume's pool")
    p.add_argument("--prealloc-metadata", action="store_true", help="preallocate metadata")
    p.add_argument("--reflink", action="store_true", help="use btrfs COW lightweight copy")
    p.add_argument("--validate", action="store_true", help="validate the XML against the schema")


@command("vol-clone", _VOL, "clone", "clone a volume")
def _vol_clone(p: argparse.ArgumentParser) -> None:
    _vol_ref(p)
    p.add_argument("newname", help="clone name")
    p.add_argument("--prealloc-metadata", action="store_true", help="preallocate metadata")
    p.add_argument("--reflink", action="store_true", help="use btrfs COW lightweight copy")
    p.add_argument("--print-xml", action="store_true", help="print XML, do not clone")


@command("vol-delete", _VOL, "delete", "delete a vol")
def _vol_delete(p: argparse.ArgumentParser) -> None:
    _vol_ref(p)
    p.add_argument("--delete-snapshots", action="store_true", help="delete its snapshots too")
    p.add_argument("--force", action="store_true", help="even if a domain disk uses it (virtbus)")


@command("vol-wipe", _VOL, "wipe", "wipe a vol")
def _vol_wipe(p: argparse.ArgumentParser) -> None:
    _vol_ref(p)
    p.add_argument("--algorithm", help="perform selected wiping algorithm")
    p.add_argument("--force", action="store_true", help="even if a domain disk uses it (virtbus)")


@command("vol-resize", _VOL, "resize", "resize a vol")
def _vol_resize(p: argparse.ArgumentParser) -> None:
    # virsh takes "-1G" (with --shrink) as a size, not as an option.
    p._negative_number_matcher = re.compile(r"^-[0-9]+[A-Za-z]*$")
    p.add_argument("vol", help="vol name, key or path")
    p.add_argument("capacity", help="new capacity, as scaled integer (default bytes)")
    p.add_argument("--pool", help="pool name or uuid")
    p.add_argument("--allocate", action="store_true", help="allocate the new capacity")
    p.add_argument("--delta", action="store_true", help="capacity is a change, not a size")
    p.add_argument("--shrink", action="store_true", help="allow the resize to shrink")
    p.add_argument("--force", action="store_true", help="shrink even if a disk uses it (virtbus)")


@command("vol-info", _VOL, "info", "storage vol information")
def _vol_info(p: argparse.ArgumentParser) -> None:
    _vol_ref(p)
    p.add_argument("--bytes", action="store_true", help="sizes in bytes, not pretty units")
    p.add_argument("--physical", action="store_true", help="show the physical size")
    p.add_argument("--users", action="store_true", help="also list the disks using it (virtbus)")


@command("vol-list", _VOL, "list_", "list vols")
def _vol_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("pool", nargs="?", help="pool name or uuid")
    p.add_argument("--pool", dest="pool_opt", help="pool name or uuid")
    p.add_argument("--details", action="store_true", help="display extended details")


@command("vol-dumpxml", _VOL, "dumpxml", "vol information in XML")
def _vol_dumpxml(p: argparse.ArgumentParser) -> None:
    _vol_ref(p)


@command("vol-path", _VOL, "path", "returns the volume path for a given volume name or key")
def _vol_path(p: argparse.ArgumentParser) -> None:
    _vol_ref(p, "volume name or key")


@command("vol-key", _VOL, "key", "returns the volume key for a given volume name or path")
def _vol_key(p: argparse.ArgumentParser) -> None:
    _vol_ref(p, "volume name or path")


@command("vol-name", _VOL, "name_", "returns the volume name for a given volume key or path")
def _vol_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("vol", help="volume key or path")


def _stream_opts(p: argparse.ArgumentParser) -> None:
    _vol_ref(p)
    p.add_argument("file", help="file")
    p.add_argument("--offset", type=int, default=0, help="volume offset to start at")
    p.add_argument("--length", type=int, default=0, help="amount of data to transfer")
    p.add_argument("--sparse", action="store_true", help="preserve sparseness of volume")


@command("vol-upload", _VOL, "upload", "upload file contents to a volume")
def _vol_upload(p: argparse.ArgumentParser) -> None:
    _stream_opts(p)


@command("vol-download", _VOL, "download", "download volume contents to a file")
def _vol_download(p: argparse.ArgumentParser) -> None:
    _stream_opts(p)


@command("vol-pool", _VOL, "pool", "returns the storage pool for a given volume key or path")
def _vol_pool(p: argparse.ArgumentParser) -> None:
    p.add_argument("vol", help="volume key or path")
    p.add_argument("--uuid", action="store_true", help="return the pool uuid, not its name")


_DOMAIN = "client.cli.domain_cmds"
_BLOCKJOB = "client.cli.blockjob_cmds"


def _domain_disk(p: argparse.ArgumentParser, what: str = "fully-qualified path of disk") -> None:
    p.add_argument("domain", help="domain name")
    p.add_argument("path", help=what)


def _job_wait(p: argparse.ArgumentParser, wait_help: str, timeout_help: str) -> None:
    p.add_argument("--bandwidth", help="bandwidth limit in MiB/s")
    p.add_argument("--bytes", action="store_true", help="the bandwidth limit is in bytes/s")
    p.add_argument("--wait", action="store_true", help=wait_help)
    p.add_argument("--verbose", action="store_true", help="with --wait, display the progress")
    p.add_argument("--timeout", help=timeout_help)
    p.add_argument(
        "--async", dest="async_", action="store_true", help="with --wait, don't wait for cancel"
    )


@command("domblklist", _DOMAIN, "domblklist", "list all domain blocks")
def _domblklist(p: argparse.ArgumentParser) -> None:
    p.add_argument("domain", help="domain name")
    p.add_argument("--details", action="store_true", help="also show the type and device")


@command("disk-dumpxml", _DOMAIN, "disk_dumpxml", "a domain disk as the inventory holds it")
def _disk_dumpxml(p: argparse.ArgumentParser) -> None:
    p.add_argument("domain", help="domain name")
    p.add_argument("target", help="disk target (vda) or source path")


@command("blockcopy", _BLOCKJOB, "blockcopy", "Start a block copy operation.")
def _blockcopy(p: argparse.ArgumentParser) -> None:
    _domain_disk(p, "fully-qualified path of source disk")
    p.add_argument("dest_arg", nargs="?", metavar="dest", help="path of the copy to create")
    p.add_argument("--dest", help="path of the copy to create")
    _job_wait(p, "wait for job to reach mirroring phase", "implies --wait, abort after seconds")
    p.add_argument("--shallow", action="store_true", help="make the copy share a backing chain")
    p.add_argument("--reuse-external", action="store_true", help="reuse existing destination")
    p.add_argument("--raw", dest="format", action="store_const", const="raw", help="format=raw")
    p.add_argument("--blockdev", action="store_true", help="destination is a block device")
    p.add_argument("--pivot", action="store_true", help="implies --wait, pivot when mirroring")
    p.add_argument("--finish", action="store_true", help="implies --wait, quit when mirroring")
    p.add_argument("--xml", help="file with the XML description of the copy destination")
    p.add_argument("--format", help="format of the destination file")
    p.add_argument("--granularity", help="power-of-two granularity to use during the copy")
    p.add_argument("--buf-size", help="maximum amount of in-flight data during the copy")
    p.add_argument("--transient-job", action="store_true", help="accepted: no job outlives QEMU")
    p.add_argument("--synchronous-writes", action="store_true", help="write guest data to both")
    p.add_argument("--print-xml", action="store_true", help="print the destination XML only")
    p.add_argument("--pool", help="copy into a new volume of this pool (virtbus)")
    p.add_argument("--name", help="name of that new volume (virtbus)")


@command("blockcommit", _BLOCKJOB, "blockcommit", "Start a block commit operation.")
def _blockcommit(p: argparse.ArgumentParser) -> None:
    _domain_disk(p)
    _job_wait(p, "wait for job to complete (with --active, to sync)", "implies --wait")
    p.add_argument("--base", help="path of base file to commit into (default bottom of chain)")
    p.add_argument("--shallow", action="store_true", help="use backing file of top as base")
    p.add_argument("--top", help="path of top file to commit from (default top of chain)")
    p.add_argument("--active", action="store_true", help="two-stage active commit of top file")
    p.add_argument("--delete", action="store_true", help="delete files successfully committed")
    p.add_argument("--pivot", action="store_true", help="implies --active --wait, then pivot")
    p.add_argument("--keep-overlay", action="store_true", help="implies --active --wait, quit")
    p.add_argument("--keep-relative", action="store_true", help="keep relative backing names")


@command("blockpull", _BLOCKJOB, "blockpull", "Populate a disk from its backing image.")
def _blockpull(p: argparse.ArgumentParser) -> None:
    _domain_disk(p)
    _job_wait(p, "wait for job to finish", "with --wait, abort after seconds")
    p.add_argument("--base", help="path of backing file in chain for a partial pull")
    p.add_argument("--keep-relative", action="store_true", help="keep relative backing names")


@command("blockjob", _BLOCKJOB, "blockjob", "Manage active block operations")
def _blockjob(p: argparse.ArgumentParser) -> None:
    _domain_disk(p)
    p.add_argument("--abort", action="store_true", help="abort the active job on the disk")
    p.add_argument("--async", dest="async_", action="store_true", help="don't wait for the end")
    p.add_argument("--pivot", action="store_true", help="conclude and pivot a copy or commit")
    p.add_argument("--info", action="store_true", help="get active job information")
    p.add_argument("--bytes", action="store_true", help="bandwidth in bytes, not MiB/s")
    p.add_argument("--raw", action="store_true", help="implies --info; details, not a summary")
    p.add_argument("--bandwidth", help="set the bandwidth limit in MiB/s")


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
