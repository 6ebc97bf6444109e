"""The command table and virsh's grammar over it, against what virsh 9.0.0 printed
(recorded in tests/data/virsh by its capture.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from client.cli import docs
from client.cli.commands import GROUPS, all_commands, find
from client.cli.completion import bash_script
from client.cli.main import main, parse_line
from client.cli.table import Command, UsageError, format_help

DATA = Path(__file__).parents[1] / "data" / "virsh"
ROOT = Path(__file__).parents[2]
GRAMMAR = json.loads((DATA / "grammar.json").read_text())


@pytest.mark.parametrize("case", GRAMMAR, ids=[" ".join(c["argv"]) for c in GRAMMAR])
def test_usage_errors_as_virsh_prints_them(
    case: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = case["argv"]
    assert isinstance(argv, list)
    assert main(argv) == case["rc"]
    out, err = capsys.readouterr()
    assert (out, err) == (case["out"], case["err"])


def _virtbus_only(command: Command) -> Command:
    """``command`` without the options virsh lacks."""
    opts = [o for o in command.opts if not o.help.endswith("(virtbus)")]
    return Command(command.name, command.summary, command.handler, opts,
                   description=command.description)  # fmt: skip


_NOT_IMPLEMENTED = ("[--xpath <string>] [--wrap]", "--xpath <string>", "--wrap ")


@pytest.mark.parametrize("path", sorted((DATA / "help").glob("*.txt")), ids=lambda p: p.stem)
def test_help_command_in_virsh_layout(path: Path) -> None:
    command = find(path.stem)
    assert command is not None
    theirs = path.read_text()
    for text in _NOT_IMPLEMENTED:
        theirs = "\n".join(
            line.replace(" " + text, "") for line in theirs.split("\n")
            if not line.strip().startswith(text)
        )  # fmt: skip
    if command.name in ("event", "domblklist", "disk-dumpxml"):
        pytest.skip("virtbus's own command under virsh's name: options differ on purpose")
    assert format_help(_virtbus_only(command)) == theirs


def test_positional_and_named_forms_are_the_same() -> None:
    def parsed(*words: str) -> dict[str, object]:
        return vars(parse_line(words)[1])

    assert parsed("vol-info", "a.img", "p") == parsed("vol-info", "--vol", "a.img", "--pool=p")
    assert parsed("vol-create-as", "--pool", "p", "--name", "n", "--capacity", "1M") == parsed(
        "vol-create-as", "p", "n", "1M"
    )
    assert parsed("vol-create", "--file", "f.xml", "p") == parsed("vol-create", "p", "f.xml")
    assert parsed("vol-dumpxml", "--vol", "v", "--pool", "p")["pool"] == "p"
    # secret-set-value's --file is named only: the second word is the value
    assert parsed("secret-set-value", "u", "aGk=")["base64"] == "aGk="
    assert parsed("vol-resize", "v", "-1G", "--shrink")["capacity"] == "-1G"
    assert parsed("pool-list", "--", "--all")["type"] == "--all"
    assert parsed("vol-upload", "v", "f", "--offset", "10")["offset"] == 10


def test_global_options_before_or_after_the_command() -> None:
    _, before = parse_line(["-c", "nats://h:1", "--json", "pool-list", "--all"])
    _, after = parse_line(["pool-list", "--all", "--json", "--connect=nats://h:1"])
    assert vars(before) == vars(after)
    assert before.json and before.connect == "nats://h:1"
    with pytest.raises(UsageError, match="unknown command"):
        parse_line(["--json", "nosuch"])


def test_help_lists_every_group_in_virsh_layout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Grouped commands:\n\n Domain Management (help keyword 'domain'):\n")
    assert "    vol-info                       storage vol information\n" in out
    assert main(["help", "secret"]) == 0
    assert capsys.readouterr().out.startswith(" Secret (help keyword 'secret'):\n")


def test_names_are_unique() -> None:
    names = [c.name for c in all_commands()]
    assert len(names) == len(set(names))
    for command in all_commands():
        assert len({o.name for o in command.opts}) == len(command.opts), command.name
        required = [o.required for o in command.opts if o.positional]
        # virsh: mandatory options come first among those given by position
        assert required == sorted(required, reverse=True), command.name


#: What reading the table must not import: the bus client and models, and the
#: standard modules that cost a one-shot command more than its request does.
HEAVY = (
    "nats", "pydantic", "lxml", "asyncio", "shared", "dataclasses", "argparse", "typing", "re",
    "json", "socket", "enum", "contextlib", "inspect",
)  # fmt: skip


def test_reading_the_table_imports_no_heavy_module() -> None:
    probe = (
        "import sys, client.cli.main, client.cli.commands\n"
        f"heavy = {set(HEAVY)!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_docs_command_list_is_generated_from_the_table() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    assert docs.rewrite(text) == text, "run: python -m client.cli.docs"
    for group in GROUPS:
        assert f"`help {group.keyword}`" in text


def test_bash_completion_script(tmp_path: Path) -> None:
    script = tmp_path / "virtbus.bash"
    script.write_text(bash_script())
    probe = (
        f"source {script}\n"
        "COMP_WORDS=(virtbus vol-i); COMP_CWORD=1; _virtbus; echo ${COMPREPLY[*]}\n"
        "COMP_WORDS=(virtbus vol-info x --p); COMP_CWORD=3; _virtbus; echo ${COMPREPLY[*]}\n"
        "COMP_WORDS=(virtbus vol-wipe v --algorithm ze); COMP_CWORD=4; _virtbus;"
        " echo ${COMPREPLY[*]}\n"
    )
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["vol-info", "--pool --physical", "zero"]


def test_shell_splits_lines_as_a_shell_does() -> None:
    from client.cli.shell import split_line

    assert split_line("vol-info 'a b.img' p; vol-list p # all") == [
        ["vol-info", "a b.img", "p"],
        ["vol-list", "p"],
    ]
    assert split_line("  ") == []


def test_command_help_option_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    # virsh prints a command's help for `CMD --help`, wherever the option is
    theirs = (DATA / "help" / "vol-list.txt").read_text()
    assert main(["vol-list", "--help"]) == 0
    assert capsys.readouterr().out == theirs
    assert main(["vol-list", "p", "--help"]) == 0
    assert capsys.readouterr().out == theirs
