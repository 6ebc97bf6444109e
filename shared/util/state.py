"""The compare-and-set vocabulary of a service's state.

A change is written against the revision it was computed from (the ledger's
sequence, ``shared.util.ledger``): ``Conflict`` is the one exception for a lost
race, which callers turn into libvirt's error for the case or retry after
``backoff``; ``Entry`` is a key's value with its revision.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def backoff(attempt: int) -> float:
    """Full-jitter exponential wait after the ``attempt``-th lost race, so that
    many writers contending for one key spread out instead of colliding again."""
    return random.uniform(0, min(0.2, 0.002 * 2**attempt))


class Conflict(Exception):
    """A compare-and-set lost: the key exists (create) or its revision moved (update)."""


@dataclass(frozen=True)
class Entry:
    """A key's current value and the revision to compare against."""

    key: str
    value: bytes
    revision: int
