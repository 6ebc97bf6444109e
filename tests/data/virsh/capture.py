"""Record what virsh 9.0.0 prints, as this project's own test data.

Run by hand where Debian's libvirt-clients is installed::

    python tests/data/virsh/capture.py grammar   # usage errors (test:///default)
    python tests/data/virsh/capture.py help      # help CMD, for every command virsh has
    python tests/data/virsh/capture.py scenarios USER   # as USER, on qemu:///session

Writes ``grammar.json`` (argv, exit status, stdout, stderr of each case),
``help/<command>.txt`` and ``scenarios.json`` beside this file.  A scenario is
a list of steps run in a fresh folder (``{dir}`` in the steps and outputs,
always ``/tmp/vbscn-`` and 8 characters, so tables keep their widths): shell
lines, and virsh command lines whose output tests/integration replays
against virtbus.  Nothing here runs in the test suite.
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


S1 = "11111111-2222-3333-4444-555555555555"

#: name -> steps: ("sh", line) or ("virsh", argv...).  Only virsh steps are compared.
SCENARIOS: dict[str, list[list[str]]] = {
    "volumes": [
        ["sh", "mkdir {dir}/pool && head -c 3000000 /dev/zero | tr '\\0' x > {dir}/big.bin"],
        [
            "sh",
            "printf '<volume><name>c.img</name><capacity>1024</capacity></volume>' > {dir}/c.xml",
        ],
        ["virsh", "pool-create-as", "scn", "dir", "--target", "{dir}/pool"],
        ["virsh", "vol-create-as", "scn", "a.img", "1M"],
        ["sh", "ln -s {dir}/big.bin {dir}/pool/link.img && ln -s /nonexistent {dir}/pool/gone"],
        ["virsh", "pool-refresh", "scn"],
        ["virsh", "vol-list", "scn"],
        ["virsh", "vol-path", "link.img", "scn"],
        ["virsh", "vol-upload", "a.img", "{dir}/big.bin", "scn"],
        ["virsh", "vol-info", "a.img", "scn"],
        ["virsh", "vol-create-as", "scn", "b.img", "1M"],
        ["virsh", "vol-upload", "b.img", "{dir}/big.bin", "scn", "--length", "1000"],
        ["virsh", "vol-download", "b.img", "{dir}/out", "scn", "--offset", "5000000"],
        ["sh", "stat -c %s {dir}/out"],
        ["virsh", "vol-resize", "b.img", "4M", "scn", "--allocate"],
        ["virsh", "vol-info", "b.img", "scn", "--bytes"],
        ["virsh", "vol-delete", "b.img", "scn", "--delete-snapshots"],
        ["virsh", "vol-create-as", "scn", "sparse.img", "1M", "--allocation", "0"],
        ["virsh", "vol-resize", "sparse.img", "2M", "scn", "--allocate"],
        ["virsh", "vol-info", "sparse.img", "scn", "--bytes"],
        ["virsh", "vol-create-as", "scn", "big", "16E"],
        ["virsh", "vol-create-as", "scn", "big", "99999999999999999999"],
        ["virsh", "vol-info", "a\x01b"],
        ["virsh", "pool-info", "p\x01q"],
        ["virsh", "vol-create-from", "scn", "{dir}/c.xml", "nosuch"],
        ["virsh", "vol-create-from", "scn", "{dir}/c.xml", "nosuch", "--inputpool", "scn"],
        ["virsh", "pool-define-as", "rel", "dir", "--target", "relpath"],
        ["virsh", "pool-build", "rel"],
        ["virsh", "pool-undefine", "rel"],
        ["virsh", "pool-destroy", "scn"],
    ],
    "secrets": [
        [
            "sh",
            "printf \"<secret><uuid>%s</uuid><usage type='ceph'><name>scn</name></usage>"
            '</secret>" ' + S1 + " > {dir}/s.xml",
        ],
        ["sh", "head -c 100 /dev/zero | tr '\\0' y | base64 -w 76 > {dir}/wrapped"],
        ["sh", "printf 'h\\351llo' > {dir}/latin"],
        ["virsh", "secret-define", "{dir}/s.xml"],
        ["virsh", "secret-set-value", S1, "--file", "{dir}/wrapped"],
        ["virsh", "secret-get-value", S1],
        ["virsh", "secret-set-value", S1, "--file", "{dir}/latin"],
        ["virsh", "secret-get-value", S1],
        ["virsh", "secret-set-value", S1, "--base64", ""],
        ["virsh", "secret-set-value", S1, "%%%"],
        ["virsh", "secret-set-value", S1],
        ["virsh", "secret-dumpxml", "notauuid"],
        ["virsh", "secret-dumpxml", "a b"],
        ["virsh", "secret-undefine", "11111111-2222-3333-4444-55555555555"],
        ["virsh", "secret-get-value", "11111111222233334444555555555555"],
        ["virsh", "secret-dumpxml", "11111111-2222-3333-4444-555555555556"],
        *(
            step
            for i, doc in enumerate(
                (
                    "<secret ephemeral='maybe'/>",
                    "<secret><usage type='bogus'/></secret>",
                    "<secret><uuid>nope</uuid></secret>",
                    "<secret><usage type='ceph'/></secret>",
                    "<notsecret/>",
                    "<secret private='x'/>",
                    "<secret><usage type='volume'/></secret>",
                )
            )
            for step in (
                ["sh", f'printf "{doc}" > {{dir}}/x{i}.xml'],
                ["virsh", "secret-define", f"{{dir}}/x{i}.xml"],
            )
        ),
        ["virsh", "secret-undefine", S1],
    ],
}


def unescape(word: str) -> str:
    """Steps spell control characters as ``\\x01``."""
    return word.encode().decode("unicode_escape") if "\\x" in word else word


def run_scenarios(user: str) -> None:
    import os
    import tempfile

    recorded = {}
    for name, steps in SCENARIOS.items():
        folder = tempfile.mkdtemp(prefix="vbscn-", dir="/tmp")
        os.chmod(folder, 0o777)
        out_steps = []
        for step in steps:
            kind, *words = step
            if kind == "sh":
                argv = ["runuser", "-u", user, "--", "sh", "-c", words[0].replace("{dir}", folder)]
            else:
                argv = [
                    "runuser",
                    "-u",
                    user,
                    "--",
                    "env",
                    f"XDG_RUNTIME_DIR=/home/{user}/run",
                    f"HOME=/home/{user}",
                    "virsh",
                    "-c",
                    "qemu:///session",
                ]
                argv += [unescape(w).replace("{dir}", folder) for w in words]
            done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=folder)
            out_steps.append({
                "step": step,
                "rc": done.returncode,
                "out": done.stdout.replace(folder, "{dir}"),
                "err": done.stderr.replace(folder, "{dir}"),
            })  # fmt: skip
        recorded[name] = out_steps
    (HERE / "scenarios.json").write_text(json.dumps(recorded, indent=1) + "\n")


def main(what: str) -> None:
    if what == "scenarios":
        run_scenarios(sys.argv[2])
        return
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
