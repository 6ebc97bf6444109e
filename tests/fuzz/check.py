"""The properties every input must keep: parse raises only ``VirtError``; what format
writes parses again; and after that one round neither format(parse(x)) nor the
model changes any more.  (The first round may drop what libvirt's format drops,
such as the ``<source>`` parts a pool type does not use.)"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from pydantic import BaseModel

from shared.util.errors import VirtError
from tests.fuzz.kinds import Context, Kind


@dataclass(frozen=True)
class Failure:
    """A broken property: which one and the error or difference."""

    property: str
    detail: str


def _where(err: BaseException) -> str:
    frame = traceback.extract_tb(err.__traceback__)[-1]
    return f"{type(err).__name__}: {str(err)[:200]} at {frame.filename}:{frame.lineno}"


def difference(a: object, b: object, path: str = "") -> str:
    """Where two models first differ, as ``path: a != b``."""
    if isinstance(a, BaseModel) and type(a) is type(b):
        for name in type(a).model_fields:
            x, y = getattr(a, name), getattr(b, name)
            if x != y:
                return difference(x, y, f"{path}.{name}")
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return difference(x, y, f"{path}[{i}]")
    return f"{path or 'model'}: {str(a)[:300]} != {str(b)[:300]}"


def check(kind: Kind, text: str, context: Context) -> Failure | None:
    """None when ``text`` keeps every property of ``kind``, else the first broken one.
    Returns ``None`` for input that parse refuses with a ``VirtError``."""
    try:
        model = kind.parse(text, context)
    except VirtError:
        return None
    except Exception as err:
        return Failure("parse raises only VirtError", _where(err))
    try:
        once = kind.format(model, context)
    except Exception as err:
        return Failure("a parsed model formats", _where(err))
    try:
        again = kind.parse(once, context)
    except Exception as err:
        return Failure("format's output parses again", f"{_where(err)}\n{once}")
    try:
        twice = kind.format(again, context)
    except Exception as err:
        return Failure("a parsed model formats", _where(err))
    if twice != once:
        return Failure("format(parse(x)) is stable after one round", f"{once}\n---\n{twice}")
    third = kind.parse(twice, context)
    if kind.generated and isinstance(third, BaseModel) and isinstance(again, BaseModel):
        third = third.model_copy(update={f: getattr(again, f) for f in kind.generated})
    if third != again:
        return Failure("after one round the model is stable", difference(again, third))
    return None
