"""JSON for the quick path without importing ``json`` (which imports ``re``).

``loads`` runs the C scanner ``json`` itself uses (``_json.make_scanner``);
``dumps`` writes the small request bodies of ``client.cli.quick``: ``None``,
booleans, integers, strings, lists and dicts with string keys.  ``loads``
raises ``ValueError`` on malformed input, as ``json.loads`` does.
"""

from __future__ import annotations

import _json

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_SPACE = " \t\n\r"


def _constant(name: str) -> float:
    return float(name.lower().replace("infinity", "inf"))


class _Context:
    """What ``_json.make_scanner`` reads from a decoder: json.JSONDecoder's defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_constant)
    memo: dict[str, str] = {}


# typeshed types the argument as a scanner; CPython reads these attributes from it.
_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]


def loads(data: bytes | str) -> Any:
    text = data.decode() if isinstance(data, bytes) else data
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as err:
        raise ValueError(f"malformed JSON at {err.value}") from None
    if text[end:].strip(_SPACE):
        raise ValueError(f"extra data after JSON at {end}")
    return value


def dumps(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return str(_json.encode_basestring_ascii(value))
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as JSON here")
