"""One-shot commands: wall time of a whole process, and where the CLI's import time goes.

``python -m bench.oneshot [--runs N] [--virsh-uri URI]`` prints the side-by-side
table of the brief: the median wall time of N runs of secret-list, pool-list,
vol-list and vol-info, virtbus against ``virtbus up`` (started here on a free
port and a fresh state folder) and virsh against libvirt (``qemu:///system``
by default), on the same pool, volume and secret made on both sides; then the
floor a Python CLI cannot go under (interpreter start, importing the command
table, one bare request).  The project's modules are byte-compiled first and
run without ``PYTHONDONTWRITEBYTECODE``, as an installed package runs.
"""

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


def once(argv: Sequence[str], env: dict[str, str] | None = None) -> float:
    """Seconds one run of ``argv`` took.  Raises ``CommandFailed``."""
    start = time.perf_counter()
    done = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=_TIMEOUT, check=False,
        env=env,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise CommandFailed(lines[-1] if lines else f"exit status {done.returncode}")
    return elapsed


def wall_times(argv: Sequence[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    """Seconds each of ``runs`` runs of ``argv`` took, after one unmeasured run
    (which fills the page cache).  Raises ``CommandFailed``."""
    once(argv, env)
    return [once(argv, env) for _ in range(runs)]


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


# ---- python -m bench.oneshot: virtbus and virsh side by side --------------------------------

_ROOT = Path(__file__).resolve().parent.parent
_NAME = "virtbus-oneshot"
_SECRET_XML = (
    "<secret ephemeral='no' private='no'><usage type='ceph'><name>{}</name></usage></secret>"
)
_QUICK = (("secret-list",), ("pool-list",), ("vol-list", _NAME), ("vol-info", "v.img", _NAME))


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _quiet(argv: Sequence[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, capture_output=True, timeout=_TIMEOUT, check=False, env=env)


def _start_stack(folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    from shared.util.credentials import read_file
    from shared.util.natsserver import free_port

    port = free_port()
    proc = subprocess.Popen(
        virtbus_argv("up", "--nats-port", str(port), "--state-dir", str(folder / "state")),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    for raw in proc.stdout:
        if b"virtbus is up" in raw:
            # The admin's user and password, which root's CLI finds by itself
            # only in the default state folder.
            admin = read_file(folder / "state" / "creds" / "admin.creds")
            return proc, admin.url(f"nats://127.0.0.1:{port}")
    raise CommandFailed("virtbus up ended before it was up")


def _floor_script(url: str) -> str:
    from shared.util.roles import ADMIN, inbox_prefix

    return (
        "from client.cli.wire import Wire\n"
        f"w = Wire({url!r}, timeout=1, inbox_prefix={inbox_prefix(ADMIN)!r})\n"
        "w.request('virtbus.v1.secret.list', b'{}')\n"
    )


def _rounds(
    lines: dict[str, tuple[list[str], dict[str, str] | None]], runs: int
) -> dict[str, list[float]]:
    """Seconds of each run of each command line: ``runs`` rounds, every line once
    per round in turn, after two unmeasured rounds."""
    times: dict[str, list[float]] = {label: [] for label in lines}
    for n in range(runs + 2):
        for label, (argv, env) in lines.items():
            taken = once(argv, env)
            if n >= 2:
                times[label].append(taken)
    return times


def run(runs: int, virsh_uri: str) -> list[Table]:
    import compileall
    import shutil
    import signal
    import tempfile

    compileall.compile_dir(str(_ROOT / "client"), quiet=1)
    compileall.compile_dir(str(_ROOT / "shared"), quiet=1)
    env = _env()
    virsh_bin = shutil.which("virsh")
    folder = Path(tempfile.mkdtemp(prefix="virtbus-oneshot-"))
    proc, url = _start_stack(folder, env)
    ours_env = {**env, "VIRTBUS_NATS_URL": url}
    virsh = [virsh_bin, "-c", virsh_uri] if virsh_bin else None
    try:
        (folder / "s.xml").write_text(_SECRET_XML.format(_NAME))
        setup = [
            ("pool-create-as", _NAME, "dir", "--target", str(folder / "{side}"), "--build"),
            ("vol-create-as", _NAME, "v.img", "1M"),
            ("secret-define", str(folder / "s.xml")),
        ]
        for step in setup:
            _quiet(virtbus_argv(*(w.format(side="ours") for w in step)), ours_env)
            if virsh:
                _quiet([*virsh, *(w.format(side="virsh") for w in step)])
        # Every measured command line runs once per round, in turn, so that the
        # machine's load at any moment weighs on both sides alike.
        lines: dict[str, tuple[list[str], dict[str, str] | None]] = {}
        for args in _QUICK:
            lines[f"virtbus {' '.join(args)}"] = (virtbus_argv(*args), ours_env)
            if virsh:
                lines[f"virsh {' '.join(args)}"] = ([*virsh, *args], None)
        python = sys.executable
        floors = {
            "python -c pass (interpreter and site)": [python, "-c", "pass"],
            "python -I -S -c pass (bare interpreter)": [python, "-I", "-S", "-c", "pass"],
            "import the command table": [python, "-c", "import client.cli.main"],
            "one request over client.cli.wire": [python, "-c", _floor_script(url)],
        }
        for label, argv in floors.items():
            lines[label] = (argv, env)
        times = _rounds(lines, runs)
        table = Table(
            f"one-shot commands, median wall time of {runs} runs",
            ["command", f"virsh ({virsh_uri})", "virtbus", "virtbus / virsh"],
        )
        for args in _QUICK:
            ours = median(times[f"virtbus {' '.join(args)}"])
            theirs = median(times[f"virsh {' '.join(args)}"]) if virsh else None
            ratio = f"{ours / theirs:.2f}x" if theirs else "n/a"
            table.add(" ".join(args), ms(theirs) if theirs else "n/a (no virsh)", ms(ours), ratio)
        floor = Table(
            f"the floor of a Python one-shot command, median of {runs} runs",
            ["what", "wall time"],
        )
        for label in floors:
            floor.add(label, ms(median(times[label])))
        floor.notes.append(
            f"command: python -m bench.oneshot --runs {runs} --virsh-uri {virsh_uri}"
        )
        return [table, floor]
    finally:
        if virsh:
            _quiet([*virsh, "pool-destroy", _NAME])
            for line in subprocess.run(
                [*virsh, "secret-list"], capture_output=True, text=True, check=False
            ).stdout.splitlines():
                if _NAME in line:
                    _quiet([*virsh, "secret-undefine", line.split()[0]])
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.oneshot", description=__doc__)
    parser.add_argument("--runs", type=int, default=10, help="runs per command (median)")
    parser.add_argument("--virsh-uri", default="qemu:///system", help="libvirt URI for virsh")
    args = parser.parse_args(argv)
    for table in run(args.runs, args.virsh_uri):
        print(table.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
