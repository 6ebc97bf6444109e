"""The secret commands: secret-define, -undefine, -dumpxml, -list, -set-value, -get-value."""

from __future__ import annotations

import binascii
import sys

from client.cli.output import end_failed, error, print_json, table
from client.cli.session import run
from client.cli.table import STRING, Args, Command, Group, Opt, data, flag, string, tristate

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from client.connection import Client


def read_xml_file(path: str) -> str | None:
    """The file's text, or None after printing virsh's error."""
    from pathlib import Path

    from shared.conf.xmlsafe import MAX_XML_BYTES

    try:
        size = Path(path).stat().st_size
        if size > MAX_XML_BYTES:
            error(f"file '{path}' of {size} bytes is larger than {MAX_XML_BYTES} bytes")
        else:
            return Path(path).read_text(encoding="utf-8")
    except OSError as err:
        error(f"Failed to open file '{path}': {err.strerror}")
    except UnicodeDecodeError:
        error(f"file '{path}' is not UTF-8 text")
    end_failed()
    return None


def define_(args: Args) -> int:
    xml = read_xml_file(args.file)
    if xml is None:
        return 1

    async def body(c: Client) -> int:
        uuid = await c.secret.define(xml)
        if args.json:
            print_json({"uuid": uuid})
        else:
            print(f"Secret {uuid} created\n")
        return 0

    return run(args, body, context=f"Failed to set attributes from {args.file}")


def undefine(args: Args) -> int:
    async def body(c: Client) -> int:
        await c.secret.undefine(args.uuid)
        if args.json:
            print_json({"uuid": args.secret, "undefined": True})
        else:
            print(f"Secret {args.secret} deleted\n")
        return 0

    return _with_lookup(args, body)


def _with_lookup(args: Args, body: Callable[[Client], Awaitable[int]]) -> int:
    """Run ``body`` with ``args.uuid`` set to the secret's canonical UUID; a failed
    look-up is reported as virsh's ``failed to get secret``."""

    from shared.util.errors import VirtError

    async def guarded(c: Client) -> int:
        try:
            args.uuid = (await c.secret.lookup_by_uuid(args.secret)).uuid
        except VirtError as err:
            error(f"failed to get secret '{args.secret}'", str(err))
            end_failed()
            return 1
        return await body(c)

    return run(args, guarded)


def dumpxml(args: Args) -> int:
    async def body(c: Client) -> int:
        xml = await c.secret.dumpxml(args.uuid)
        if args.json:
            print_json({"uuid": args.secret, "xml": xml})
        else:
            print(xml)
        return 0

    return _with_lookup(args, body)


def list_(args: Args) -> int:
    from client.cli.quick import Calls, print_raw, run_quick

    async def body(c: Calls) -> int:
        secrets = await c.secret_list(
            ephemeral=tristate(args.ephemeral, args.no_ephemeral),
            private=tristate(args.private, args.no_private),
        )
        if args.json:
            print_raw(secrets)
            return 0
        rows = [
            [s.uuid, f"{s.usage_type} {s.usage_id}" if s.usage_id else "Unused"] for s in secrets
        ]
        sys.stdout.write(table(["UUID", "Usage"], rows))
        return 0

    return run_quick(args, body, storage=False, context="Failed to list secrets")


_B64_RANK = {
    c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}
_B64_RANK[ord("=")] = 0


def decode_base64(text: bytes) -> bytes:
    """Base64 as glib's g_base64_decode reads it (what virsh uses): bytes outside
    the alphabet are skipped (so line breaks every 76 columns are fine), a
    trailing incomplete group is dropped, ``=`` marks padding."""
    out = bytearray()
    value = count = 0
    last = [0, 0]
    for c in text:
        rank = _B64_RANK.get(c)
        if rank is None:
            continue
        last[1], last[0] = last[0], c
        value = ((value << 6) | rank) & 0xFFFFFF
        count += 1
        if count == 4:
            out.append(value >> 16)
            if last[1] != ord("="):
                out.append((value >> 8) & 0xFF)
            if last[0] != ord("="):
                out.append(value & 0xFF)
            count = 0
    return bytes(out)


def _value_from_args(args: Args) -> bytes | None:
    """The value to set, as virsh's cmdSecretSetValue reads it; None after printing
    virsh's error (and its blank line)."""
    from pathlib import Path

    for a, b in (("file", "base64"), ("interactive", "file"), ("plain", "base64")):
        if getattr(args, a) and getattr(args, b) is not None and getattr(args, b) is not False:
            return _refuse(f"Options --{a} and --{b} are mutually exclusive")
    if args.interactive and args.base64 is not None:
        return _refuse("Options --interactive and --base64 are mutually exclusive")
    if args.base64 == "":
        return _refuse("Failed to get option 'base64': Option argument is empty")
    if args.file == "":
        return _refuse("Failed to get option 'file': Option argument is empty")
    if args.base64 is None and args.file is None and not args.interactive:
        return _refuse("Input secret value is missing")
    if args.base64 is not None:
        error("Passing secret value as command-line argument is insecure!")
        raw = args.base64.encode()
    elif args.file is not None:
        try:
            raw = Path(args.file).read_bytes()
        except OSError as err:
            return _refuse(f"Failed to open file '{args.file}': {err.strerror}")
    else:
        import getpass

        raw = getpass.getpass("Enter new value for secret:").encode()
    value = raw if args.plain else decode_base64(raw)
    if not value:
        return _refuse("Failed to set secret value", "value in virSecretSetValue must not be NULL")
    return value


def _refuse(*lines: str) -> bytes | None:
    """Print virsh's error lines and its blank line; None (nothing to set)."""
    error(*lines)
    end_failed()
    return None


def set_value(args: Args) -> int:
    value = _value_from_args(args)
    if value is None:
        return 1

    async def body(c: Client) -> int:
        await c.secret.set_value(args.uuid, value)
        if args.json:
            print_json({"uuid": args.secret, "value_set": True})
        else:
            print("Secret value set\n")
        return 0

    return _with_lookup(args, body)


def get_value(args: Args) -> int:
    from client.cli.quick import Calls, run_quick

    async def body(c: Calls) -> int:
        from shared.util.errors import VirtError

        try:
            uuid = (await c.secret_lookup_by_uuid(args.secret)).uuid
        except VirtError as err:
            error(f"failed to get secret '{args.secret}'", str(err))
            end_failed()
            return 1
        value = await c.secret_get_value(uuid)
        encoded = binascii.b2a_base64(value, newline=False).decode()
        if args.json:
            print_json({"uuid": args.secret, "value": encoded})
        elif args.plain:
            sys.stdout.buffer.write(value + b"\n")
        else:
            print(encoded)
        return 0

    return run_quick(args, body, storage=False)


GROUP = Group(
    "Secret",
    "secret",
    (
        Command(
            "secret-define",
            "define or modify a secret from an XML file",
            define_,
            (
                data("file", "file containing secret attributes in XML", "file"),
                flag("validate", "validate the XML against the schema"),
            ),
            description="Define or modify a secret.",
        ),
        Command(
            "secret-dumpxml",
            "secret attributes in XML",
            dumpxml,
            (data("secret", "secret UUID", "secret"),),
            description="Output attributes of a secret as an XML dump to stdout.",
        ),
        Command(
            "secret-get-value",
            "Output a secret value",
            get_value,
            (
                data("secret", "secret UUID", "secret"),
                flag("plain", "get value without converting to base64"),
            ),
            description="Output a secret value to stdout.",
        ),
        Command(
            "secret-list",
            "list secrets",
            list_,
            (
                flag("ephemeral", "list ephemeral secrets"),
                flag("no-ephemeral", "list non-ephemeral secrets"),
                flag("private", "list private secrets"),
                flag("no-private", "list non-private secrets"),
            ),
            description="Returns a list of secrets",
            probe=False,  # connects first thing itself
        ),
        Command(
            "secret-set-value",
            "set a secret value",
            set_value,
            (
                data("secret", "secret UUID", "secret"),
                Opt("file", STRING, "read secret from file", named_only=True, completer="file"),
                flag("plain", "read the secret from file without converting from base64"),
                flag("interactive", "read the secret from the terminal"),
                string("base64", "base64-encoded secret value"),
            ),
            description="Set a secret value.",
        ),
        Command(
            "secret-undefine",
            "undefine a secret",
            undefine,
            (data("secret", "secret UUID", "secret"),),
            description="Undefine a secret.",
        ),
    ),
)
