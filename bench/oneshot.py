"""One-shot commands: wall time of a whole process, and where the CLI's import time goes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.table import Table, median, ms

#: The project's own top-level packages; the import table shows what they pull in.
_OWN = frozenset({"client", "shared", "services", "agents", "bench", "__main__"})
_TIMEOUT = 60.0


class CommandFailed(Exception):
    """A timed command exited non-zero; the message is its last stderr line."""


def virtbus_argv(*args: str) -> list[str]:
    """The installed ``virtbus`` script beside this interpreter, else ``-m client.cli.main``."""
    script = Path(sys.executable).parent / "virtbus"
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-m", "client.cli.main", *args]


def wall_times(argv: Sequence[str], runs: int) -> list[float]:
    """Seconds each of ``runs`` runs of ``argv`` took, after one unmeasured run
    (which fills the page cache).  Raises ``CommandFailed``."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=_TIMEOUT, check=False
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            raise CommandFailed(lines[-1] if lines else f"exit status {done.returncode}")
        if i:
            times.append(elapsed)
    return times


def median_cell(argv: Sequence[str] | None, runs: int, missing: str) -> str:
    """The median wall time of ``argv`` as a cell; ``missing`` when there is no argv."""
    if argv is None:
        return missing
    try:
        return ms(median(wall_times(argv, runs)))
    except (CommandFailed, subprocess.TimeoutExpired, OSError) as err:
        return f"failed: {err}"


@dataclass(frozen=True)
class Import:
    """One line of ``python -X importtime``: a module, its cost and its nesting depth."""

    name: str
    cumulative_us: int
    depth: int


def parse_importtime(stderr: str) -> list[Import]:
    """The import lines of ``-X importtime`` output, in the order printed (a module
    after everything it imported)."""
    found = []
    for text in stderr.splitlines():
        if not text.startswith("import time:") or "|" not in text:
            continue
        _, cumulative, name = text.split("|", 2)
        if not cumulative.strip().isdigit():
            continue  # the heading line
        bare = name.lstrip()
        found.append(Import(bare, int(cumulative), (len(name) - len(bare) - 1) // 2))
    return found


def _root(name: str) -> str:
    return name.split(".")[0]


def importer(imports: Sequence[Import], index: int) -> str:
    """The nearest of the project's modules above ``imports[index]`` in the import
    tree (a module's parent is the next one printed less deep)."""
    depth = imports[index].depth
    for later in imports[index + 1 :]:
        if later.depth < depth:
            if _root(later.name) in _OWN:
                return later.name
            depth = later.depth
    return "(top level)"


def import_table(imports: Sequence[Import] | str, command: str, heaviest: int = 8) -> Table:
    """Import time of interpreter start-up and of the CLI, then the heaviest
    packages the CLI pulls in, each with the project module that imports it
    (``imports`` is a string when they could not be measured: it says why)."""
    table = Table(
        f"virtbus CLI import cost (python -X importtime, {command})",
        ["imports", "cumulative", "imported by"],
    )
    if isinstance(imports, str):
        table.add("the CLI, all it imports", imports, "")
        return table
    # Start-up (site, encodings...) is printed before the first project module's
    # subtree, which begins right after the top-level entry preceding it.
    own_top = [n for n, i in enumerate(imports) if i.depth == 0 and _root(i.name) in _OWN]
    first = own_top[0] if own_top else len(imports)
    cli_start = max((n + 1 for n in range(first) if imports[n].depth == 0), default=0)
    startup = sum(i.cumulative_us for i in imports[:cli_start] if i.depth == 0)
    cli = sum(i.cumulative_us for i in imports[cli_start:] if i.depth == 0)
    table.add("interpreter start-up (site)", ms(startup / 1e6), "")
    table.add("the CLI, all it imports", ms(cli / 1e6), "")
    packages = [
        (i.cumulative_us, i.name, importer(imports, n))
        for n, i in enumerate(imports[cli_start:], start=cli_start)
        if "." not in i.name and i.name not in _OWN
    ]
    for cumulative, name, parent in sorted(packages, reverse=True)[:heaviest]:
        table.add(f"  {name}", ms(cumulative / 1e6), parent)
    table.notes.append("-X importtime slows imports; nested figures overlap")
    return table


def importtime(args: Sequence[str]) -> list[Import]:
    """The imports of one ``virtbus`` run with ``args``.  Raises ``CommandFailed``."""
    argv = virtbus_argv(*args)
    if argv[0] != sys.executable:
        argv = [sys.executable, "-X", "importtime", *argv]
    else:
        argv = [sys.executable, "-X", "importtime", *argv[1:]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    if done.returncode != 0:
        raise CommandFailed(f"virtbus {' '.join(args)} exited with status {done.returncode}")
    return parse_importtime(done.stderr)
