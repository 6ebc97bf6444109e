"""Record what virsh 9.0.0 prints, as this project's own test data.

Run by hand where Debian's libvirt-clients is installed::

    python tests/data/virsh/capture.py grammar   # usage errors (test:///default)
    python tests/data/virsh/capture.py help      # help CMD, for every command virsh has

Writes ``grammar.json`` (argv, exit status, stdout, stderr of each case) and
``help/<command>.txt`` beside this file.  Nothing here runs in the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

#: Command lines virsh refuses (or accepts) before talking to any driver.
GRAMMAR = [
    ["vol-create-as"],
    ["vol-create-as", "default-pool"],
    ["vol-info", "a.img", "--foo"],
    ["vol-info", "a.img", "p", "extra"],
    ["vol-info", "a.img", "--pool"],
    ["vol-info", "a.img", "--bytes=1"],
    ["vol-info", "a.img", "--pool", "a", "--pool", "b"],
    ["vol-info", "a.img", "--vol", "b"],
    ["vol-upload", "a.img", "f", "--pool", "p", "--offset", "abc"],
    ["pool-list", "--type"],
    ["secret-list", "--foo"],
    ["secret-dumpxml"],
    ["pool-define-as", "p"],
    ["vol-resize", "v"],
    ["help", "nosuch"],
    ["nosuch"],
]


def run(argv: list[str]) -> dict[str, object]:
    done = subprocess.run(
        ["virsh", "-c", "test:///default", *argv], capture_output=True, text=True, check=False
    )
    return {"argv": argv, "rc": done.returncode, "out": done.stdout, "err": done.stderr}


def main(what: str) -> None:
    if what == "grammar":
        cases = [run(argv) for argv in GRAMMAR]
        (HERE / "grammar.json").write_text(json.dumps(cases, indent=1) + "\n")
    elif what == "help":
        from client.cli.commands import all_commands

        (HERE / "help").mkdir(exist_ok=True)
        for command in all_commands():
            done = subprocess.run(["virsh", "help", command.name], capture_output=True, text=True)
            if done.returncode == 0:
                (HERE / "help" / f"{command.name}.txt").write_text(done.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
