"""The secret commands: secret-define, -undefine, -dumpxml, -list, -set-value, -get-value."""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from client.cli.output import error, print_json, table
from client.cli.session import run
from client.connection import Client
from shared.conf.xmlsafe import MAX_XML_BYTES
from shared.util.errors import VirtError


def read_xml_file(path: str) -> str | None:
    """The file's text, or None after printing virsh's error."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_XML_BYTES:
            error(f"file '{path}' of {size} bytes is larger than {MAX_XML_BYTES} bytes")
            return None
        return Path(path).read_text(encoding="utf-8")
    except OSError as err:
        error(f"Failed to open file '{path}': {err.strerror}")
    except UnicodeDecodeError:
        error(f"file '{path}' is not UTF-8 text")
    return None


def define_(args: argparse.Namespace) -> int:
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


def undefine(args: argparse.Namespace) -> int:
    async def body(c: Client) -> int:
        await c.secret.undefine(args.secret)
        if args.json:
            print_json({"uuid": args.secret, "undefined": True})
        else:
            print(f"Secret {args.secret} deleted\n")
        return 0

    return _with_lookup(args, body)


def _with_lookup(args: argparse.Namespace, body: Callable[[Client], Awaitable[int]]) -> int:
    """Run ``body``; a failed look-up is reported as virsh's ``failed to get secret``."""

    async def guarded(c: Client) -> int:
        try:
            await c.secret.lookup_by_uuid(args.secret)
        except VirtError as err:
            error(f"failed to get secret '{args.secret}'", str(err))
            return 1
        return await body(c)

    return run(args, guarded)


def dumpxml(args: argparse.Namespace) -> int:
    async def body(c: Client) -> int:
        xml = await c.secret.dumpxml(args.secret)
        if args.json:
            print_json({"uuid": args.secret, "xml": xml})
        else:
            print(xml)
        return 0

    return _with_lookup(args, body)


def _flag(yes: bool, no: bool) -> bool | None:
    if yes and not no:
        return True
    if no and not yes:
        return False
    return None


def list_(args: argparse.Namespace) -> int:
    async def body(c: Client) -> int:
        secrets = await c.secret.list(
            ephemeral=_flag(args.ephemeral, args.no_ephemeral),
            private=_flag(args.private, args.no_private),
        )
        if args.json:
            print_json([s.model_dump(mode="json") for s in secrets])
            return 0
        rows = [
            [s.uuid, f"{s.usage_type.value} {s.usage_id}" if s.usage_id else "Unused"]
            for s in secrets
        ]
        sys.stdout.write(table(["UUID", "Usage"], rows))
        return 0

    return run(args, body, context="Failed to list secrets")


def _value_from_args(args: argparse.Namespace) -> bytes | None:
    """The value to set, from exactly one source; None after printing the error."""
    given = [
        x for x in (args.base64_value, args.base64_opt, args.file, args.interactive or None) if x
    ]
    if len(given) != 1:
        error("exactly one of BASE64, --base64, --file or --interactive is required")
        return None
    if args.plain and not (args.file or args.interactive):
        error("--plain applies to --file or --interactive only")
        return None
    if args.file:
        try:
            raw = Path(args.file).read_bytes()
        except OSError as err:
            error(f"failed to read '{args.file}': {err.strerror}")
            return None
        if args.plain:
            return raw
        text = raw.decode("ascii", "replace").strip()
    elif args.interactive:
        entered = getpass.getpass("Enter new value for secret:")
        if args.plain:
            return entered.encode()
        text = entered.strip()
    else:
        text = (args.base64_value or args.base64_opt).strip()
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        error("Failed to set secret value", "invalid argument: value is not valid base64")
        return None


def set_value(args: argparse.Namespace) -> int:
    value = _value_from_args(args)
    if value is None:
        return 1

    async def body(c: Client) -> int:
        await c.secret.set_value(args.secret, value)
        if args.json:
            print_json({"uuid": args.secret, "value_set": True})
        else:
            print("Secret value set\n")
        return 0

    return _with_lookup(args, body)


def get_value(args: argparse.Namespace) -> int:
    async def body(c: Client) -> int:
        value = await c.secret.get_value(args.secret)
        if args.json:
            print_json({"uuid": args.secret, "value": base64.b64encode(value).decode()})
        elif args.plain:
            sys.stdout.buffer.write(value + b"\n")
        else:
            print(base64.b64encode(value).decode())
        return 0

    return _with_lookup(args, body)
