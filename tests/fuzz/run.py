"""The fuzzing loop: seeds of every kind, mutated round-robin, each mutant checked;
failing inputs shrunk and kept as regression cases (``regressions.json``)."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from shared.conf.network import NetworkXMLFlags
from shared.conf.storage_pool import format_storage_pool, parse_storage_pool
from shared.conf.storage_volume import VolParseFlags
from tests.fuzz.check import Failure, check
from tests.fuzz.kinds import KINDS, Context, Seed, load_seeds
from tests.fuzz.mutate import Dictionary, mutate

REGRESSIONS = Path(__file__).with_name("regressions.json")


@dataclass
class Found:
    """A failing input, shrunk, with the property it broke."""

    seed: Seed
    failure: Failure


@dataclass
class Report:
    """What one run did."""

    inputs: int = 0
    accepted: int = 0
    per_kind: Counter[str] = field(default_factory=Counter)
    found: list[Found] = field(default_factory=list)

    @property
    def kinds(self) -> int:
        return len(self.per_kind)

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.per_kind.items()))
        return (
            f"inputs {self.inputs}, accepted by parse {self.accepted}, kinds {self.kinds}, "
            f"crashes {len(self.found)}\n  per kind: {kinds}"
        )


def shrink(seed: Seed, failure: Failure, budget: int = 300) -> Seed:
    """A smaller input breaking the same property: elements, then attributes, dropped
    one at a time while the failure stays."""
    kind = KINDS[seed.kind]
    current = seed.text

    def still_fails(text: str) -> bool:
        found = check(kind, text, seed.context)
        return found is not None and found.property == failure.property

    for _ in range(budget):
        try:
            root = etree.fromstring(current.encode())
        except (etree.XMLSyntaxError, ValueError):
            break
        smaller = None
        nodes = [e for e in root.iter() if isinstance(e.tag, str)]
        candidates: list[tuple[int, str | None]] = []
        for index, node in enumerate(nodes):
            if node is not root:
                candidates.append((index, None))
            candidates.extend((index, str(name)) for name in node.attrib)
        for index, attr in candidates:
            trial = etree.fromstring(current.encode())
            node = [e for e in trial.iter() if isinstance(e.tag, str)][index]
            if attr is None:
                parent = node.getparent()
                assert parent is not None
                parent.remove(node)
            else:
                del node.attrib[attr]
            text = etree.tostring(trial, encoding="unicode")
            if still_fails(text):
                smaller = text
                break
        if smaller is None:
            break
        current = smaller
    return Seed(seed.kind, seed.name, current, seed.context)


def fuzz(
    seeds: list[Seed],
    *,
    rng: random.Random,
    per_kind: int | None = None,
    seconds: float | None = None,
    kinds: list[str] | None = None,
) -> Report:
    """Mutate and check: ``per_kind`` mutants of each kind, or as many as fit in
    ``seconds``, kinds taken in turn.  One failure per (kind, property, place) is kept."""
    words = Dictionary()
    words.learn(s.text for s in seeds)
    by_kind: dict[str, list[Seed]] = {}
    for seed in seeds:
        if kinds is None or seed.kind in kinds:
            by_kind.setdefault(seed.kind, []).append(seed)
    report = Report()
    seen: set[tuple[str, str, str]] = set()
    deadline = None if seconds is None else time.monotonic() + seconds
    round_number = 0
    while by_kind:
        if per_kind is not None and round_number >= per_kind:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        round_number += 1
        for name, pool in by_kind.items():
            seed = rng.choice(pool)
            text = mutate(rng, seed.text, words)
            report.inputs += 1
            report.per_kind[name] += 1
            mutant = Seed(name, seed.name, text, seed.context)
            failure = check(KINDS[name], text, seed.context)
            if failure is None:
                report.accepted += _parses(mutant)
                continue
            place = failure.detail.split(" at ")[-1].split("\n")[0]
            key = (name, failure.property, place)
            if key in seen:
                continue
            seen.add(key)
            small = shrink(mutant, failure)
            report.found.append(
                Found(small, check(KINDS[name], small.text, small.context) or failure)
            )
    return report


def _parses(seed: Seed) -> int:
    try:
        KINDS[seed.kind].parse(seed.text, seed.context)
    except Exception:
        return 0
    return 1


# --- regression cases: the project's own small files ----------------------------------


def _context_json(seed: Seed) -> dict[str, Any]:
    if seed.kind == "storage-volume":
        pool, flags = seed.context
        return {"pool": format_storage_pool(pool), "flags": int(flags)}
    if seed.kind == "network":
        return {"flags": int(seed.context or 0)}
    return {}


def _context_of(kind: str, data: dict[str, Any]) -> Context:
    if kind == "storage-volume":
        return (parse_storage_pool(data["pool"]), VolParseFlags(data["flags"]))
    if kind == "network":
        return NetworkXMLFlags(data.get("flags", 0))
    return None


def load_regressions(path: Path = REGRESSIONS) -> list[tuple[str, Seed]]:
    """(why it was kept, the case) for every kept regression case."""
    if not path.is_file():
        return []
    out = []
    for entry in json.loads(path.read_text()):
        seed = Seed(entry["kind"], entry["name"], entry["text"], _context_of(entry["kind"], entry))
        out.append((entry["broke"], seed))
    return out


def save_regressions(found: list[Found], path: Path = REGRESSIONS) -> int:
    """Append the new failing inputs; returns how many were new."""
    entries = json.loads(path.read_text()) if path.is_file() else []
    known = {(e["kind"], e["text"]) for e in entries}
    added = 0
    for item in found:
        seed = item.seed
        if (seed.kind, seed.text) in known:
            continue
        known.add((seed.kind, seed.text))
        entries.append(
            {
                "kind": seed.kind,
                "name": f"mutant of {seed.name}",
                "broke": item.failure.property,
                "text": seed.text,
                **_context_json(seed),
            }
        )
        added += 1
    path.write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n")
    return added


def all_seeds(folder: Path) -> list[Seed]:
    return load_seeds(folder)
