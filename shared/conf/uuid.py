"""UUIDs as libvirt reads and writes them (virUUIDParse / virUUIDFormat)."""

from __future__ import annotations

import uuid as _uuid


def parse_uuid(text: str) -> str | None:
    """The canonical lower-case form of ``text``, or None when it is not a UUID.

    libvirt accepts 32 hex digits with leading/trailing blanks and hyphens
    anywhere between pairs of digits; the canonical form is 8-4-4-4-12.
    """
    digits = text.strip().replace("-", "")
    if len(digits) != 32:
        return None
    try:
        return str(_uuid.UUID(hex=digits))
    except ValueError:
        return None


def generate_uuid() -> str:
    """A random (version 4) UUID in canonical form."""
    return str(_uuid.uuid4())
