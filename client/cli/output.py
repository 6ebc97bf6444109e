"""Printing as virsh prints: its tables, its error lines, and ``--json``.

With ``--json`` (``use_json(True)``), ``error`` writes one JSON object on
stderr instead of ``error:`` lines: ``{"error": {"message": ..., "lines": [...]}}``.
"""

from __future__ import annotations

import sys

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

_json_errors = False


def use_json(on: bool) -> None:
    """Report errors as JSON (``--json``) or as virsh's ``error:`` lines."""
    global _json_errors
    _json_errors = on


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """virsh's table (vshTable): a leading blank, columns padded and three blanks
    apart, the last column unpadded, a dashed rule, and a blank line after."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(widths[i]) for i, c in enumerate(cells[:-1])] + [cells[-1]]
        return " " + "   ".join(padded)

    rule = "-" * (1 + sum(widths) + 3 * (len(widths) - 1) + 2)
    out = [line(headers), rule] + [line(r) for r in rows]
    return "\n".join(out) + "\n\n"


def error(*lines: str) -> None:
    """``error: ...`` lines on stderr, as virsh reports failures (JSON with ``--json``)."""
    if _json_errors:
        import json

        body = {"error": {"message": ": ".join(lines), "lines": list(lines)}}
        print(json.dumps(body), file=sys.stderr)
        return
    for text in lines:
        print(f"error: {text}", file=sys.stderr)


def end_failed() -> None:
    """The blank line virsh prints on stdout after a failed command (not with
    ``--json``, whose stdout holds JSON only)."""
    if not _json_errors:
        print()


def print_json(value: Any) -> None:
    import json

    print(json.dumps(value, indent=2, default=str))
