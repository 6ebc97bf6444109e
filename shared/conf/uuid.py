"""UUIDs as libvirt reads and writes them (virUUIDParse / virUUIDFormat)."""

from __future__ import annotations

import re
import uuid as _uuid

#: A UUID already in canonical form (what define returns and clients send back).
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_uuid(text: str) -> str | None:
    """The canonical lower-case form of ``text``, or None when it is not a UUID.

    libvirt accepts 32 hex digits with leading/trailing blanks and hyphens
    anywhere between pairs of digits; the canonical form is 8-4-4-4-12.
    """
    if _CANONICAL.fullmatch(text):
        return text  # 0.3 us; uuid.UUID takes 8 us to give the same string back
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
