"""The command table's vocabulary and virsh's grammar over it.

A ``Command`` declares what virsh's ``vshCmdDef`` declares: a name, a one-line
summary, a description, its options in order, and the handler (a real
function).  A ``Group`` is one ``help`` section.  From these rows come the
parser (``parse``), ``help``/``help CMD`` (``format_help``, ``format_groups``),
bash completion and docs/cli.md's command list; nothing else lists commands.

The grammar is virsh 9's (vshCommandParse): ``--name value``, ``--name=value``,
and data words filling, in declaration order, each non-boolean option not
marked ``named_only``; ``--`` makes every later word data.  Mistakes are
``UsageError`` with virsh's wording.

This module is imported on every start: it imports nothing beyond the
standard library's cheapest modules.
"""

from __future__ import annotations

from types import SimpleNamespace

# typing is not imported at run time (docs/cli.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    Handler = Callable[["Args"], int]

#: What a handler receives: one attribute per option (``-`` read as ``_``,
#: ``async`` as ``async_``), ``None``/``False`` when not given, plus the
#: global options (``connect``, ``host``, ``json``, ``command``).
Args = SimpleNamespace

BOOL = "bool"
STRING = "string"
NUMBER = "number"


def attr_name(option: str) -> str:
    """The ``Args`` attribute option ``--option`` is stored in (``--async`` as ``async_``)."""
    return "async_" if option == "async" else option.replace("-", "_")


class Opt:
    """One option of a command (virsh's vshCmdOptDef).

    ``kind`` is ``BOOL``, ``STRING`` or ``NUMBER`` (a NUMBER is checked and
    converted to ``int``, or ``float`` when ``real``; kept as text when ``text``,
    for handlers that read virsh's scaled numbers themselves).  ``required`` options
    are virsh's DATA options, shown ``<name>``.  Any non-boolean option may be
    given by position unless ``named_only`` (virsh's VSH_OFLAG_REQ_OPT).
    ``completer`` names what the value is, for shell completion: ``file``,
    ``pool``, ``vol``, ``secret`` or a fixed list of words.
    """

    __slots__ = (
        "completer",
        "dest",
        "help",
        "kind",
        "name",
        "named_only",
        "real",
        "required",
        "text",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        kind: str,
        help: str,
        *,
        required: bool = False,
        named_only: bool = False,
        real: bool = False,
        text: bool = False,
        completer: str | Sequence[str] | None = None,
        dest: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.help = help
        self.required = required
        self.named_only = named_only
        self.real = real
        self.text = text
        self.completer = completer
        self.dest = dest or attr_name(name)

    @property
    def positional(self) -> bool:
        return self.kind != BOOL and not self.named_only


def flag(name: str, help: str) -> Opt:
    """A boolean option."""
    return Opt(name, BOOL, help)


def tristate(yes: bool, no: bool) -> bool | None:
    """A ``--X``/``--no-X`` pair of flags: True, False, or None for neither (or both)."""
    return None if yes == no else yes


def data(name: str, help: str, completer: str | None = None) -> Opt:
    """A required option virsh shows as ``<name>``, usually given by position."""
    return Opt(name, STRING, help, required=True, completer=completer)


def string(name: str, help: str, completer: str | Sequence[str] | None = None) -> Opt:
    """An optional option with a value."""
    return Opt(name, STRING, help, completer=completer)


def number(name: str, help: str, *, real: bool = False, text: bool = False) -> Opt:
    """An optional option with a numeric value."""
    return Opt(name, NUMBER, help, real=real, text=text)


class Command:
    """One command: virsh's vshCmdDef plus the handler that runs it.

    ``probe``: before the handler runs, check that the NATS server answers, so
    that an unreachable one fails at once (commands that do not talk to the bus,
    or that connect first thing themselves, say False)."""

    __slots__ = ("description", "handler", "name", "opts", "probe", "summary")

    def __init__(
        self,
        name: str,
        summary: str,
        handler: Handler,
        opts: Sequence[Opt] = (),
        *,
        description: str = "",
        probe: bool = True,
    ) -> None:
        self.name = name
        self.summary = summary
        self.description = description
        self.opts = tuple(opts)
        self.handler = handler
        self.probe = probe

    def option(self, name: str) -> Opt | None:
        for opt in self.opts:
            if opt.name == name:
                return opt
        return None


class Group:
    """One section of ``help``: a title, its keyword and its commands."""

    __slots__ = ("commands", "keyword", "title")

    def __init__(self, title: str, keyword: str, commands: Sequence[Command]) -> None:
        self.title = title
        self.keyword = keyword
        self.commands = tuple(commands)


class UsageError(Exception):
    """A command line virsh refuses before running anything: ``lines`` are its
    ``error:`` lines (exit status 1).  ``blank``: virsh found it while running
    the command, and so ends with the blank line it prints after every command."""

    def __init__(self, *lines: str, blank: bool = False) -> None:
        super().__init__(lines[0] if lines else "")
        self.lines = lines
        self.blank = blank


class HelpRequested(Exception):
    """``CMD --help``: virsh prints the command's help instead of running it."""


#: Options every command takes, before or after its name: (name, value name, help).
GLOBAL_OPTIONS: tuple[tuple[str, str | None, str], ...] = (
    ("connect", "URL", "NATS URL (default: $VIRTBUS_NATS_URL, $NATS_URL, nats://127.0.0.1:4222)"),
    ("host", "NAME", "host whose services to address (default: the only one, else this one)"),
    ("json", None, "machine-readable output, errors included"),
    ("connect-timeout", "SECONDS", "give up connecting after this long (default 1)"),
    ("creds", "FILE", "NATS credentials (default: $VIRTBUS_CREDS, else the local stack's)"),
)
_GLOBAL_SHORT = {"-c": "connect"}


def new_args(command: Command | None) -> Args:
    """The namespace a handler gets before any word is read."""
    args = Args(command=command.name if command else None, connect=None, host=None, json=False)
    args.connect_timeout = None
    args.creds = None
    if command is not None:
        for opt in command.opts:
            setattr(args, opt.dest, False if opt.kind == BOOL else None)
    return args


def take_global(args: Args, words: Sequence[str], i: int) -> int | None:
    """If ``words[i]`` is a global option, store it and return the next index."""
    word = words[i]
    name, eq, value = word.partition("=")
    key = _GLOBAL_SHORT.get(name) or (name[2:] if name.startswith("--") else None)
    spec = next((g for g in GLOBAL_OPTIONS if g[0] == key), None)
    if spec is None or key is None:
        return None
    if spec[1] is None:
        if eq:
            raise UsageError(f"invalid '=' after option --{key}")
        setattr(args, key.replace("-", "_"), True)
        return i + 1
    if not eq:
        if i + 1 >= len(words):
            raise UsageError(f"expected syntax: --{key} <{spec[1].lower()}>")
        value = words[i + 1]
        i += 1
    if key == "connect-timeout":
        try:
            args.connect_timeout = float(value)
        except ValueError:
            raise UsageError(f"invalid timeout '{value}'") from None
    else:
        setattr(args, key, value)
    return i + 1


def _convert(command: Command, opt: Opt, text: str) -> object:
    if opt.kind != NUMBER or opt.text:
        return text
    try:
        return float(text) if opt.real else int(text, 10)
    except ValueError:
        raise UsageError(
            f"Numeric value '{text}' for <{opt.name}> option is malformed or out of range",
            blank=True,
        ) from None


def parse(command: Command, words: Sequence[str], args: Args | None = None) -> Args:
    """Read ``words`` (what follows the command's name) as virsh does; raises ``UsageError``."""
    args = args or new_args(command)
    pending = [o for o in command.opts if o.positional]
    seen: set[str] = set()
    data_only = False
    i = 0
    while i < len(words):
        word = words[i]
        is_option = not data_only and word.startswith("--") and word[2:3].isalnum()
        if not is_option and not data_only and word == "--":
            data_only = True
            i += 1
            continue
        if is_option:
            name, eq, value = word[2:].partition("=")
            opt = command.option(name)
            if opt is None and name == "help" and not eq:
                raise HelpRequested(command.name)
            if opt is None:
                nxt = take_global(args, words, i)
                if nxt is None:
                    raise UsageError(f"command '{command.name}' doesn't support option --{name}")
                i = nxt
                continue
            if opt.name in seen:
                raise UsageError(f"option --{opt.name} already seen")
            seen.add(opt.name)
            if opt in pending:
                pending.remove(opt)
            if opt.kind == BOOL:
                if eq:
                    raise UsageError(f"invalid '=' after option --{opt.name}")
                setattr(args, opt.dest, True)
                i += 1
                continue
            if not eq:
                if i + 1 >= len(words):
                    raise UsageError(f"expected syntax: --{opt.name} <{opt.kind}>")
                value = words[i + 1]
                i += 1
            setattr(args, opt.dest, _convert(command, opt, value))
            i += 1
            continue
        if not data_only and word.startswith("-") and word[:2] in _GLOBAL_SHORT:
            i = take_global(args, words, i) or i + 1
            continue
        if not pending:
            raise UsageError(f"unexpected data '{word}'")
        opt = pending.pop(0)
        seen.add(opt.name)
        setattr(args, opt.dest, _convert(command, opt, word))
        i += 1
    missing = [o for o in command.opts if o.required and o.name not in seen]
    if missing:
        raise UsageError(*(f"command '{command.name}' requires <{o.name}> option" for o in missing))
    return args


# ---- help, in virsh's layout ------------------------------------------------------------


def _synopsis_part(opt: Opt) -> str:
    if opt.kind == BOOL:
        return f"[--{opt.name}]"
    if opt.required:
        return f"<{opt.name}>"
    return f"[--{opt.name} <{opt.kind}>]"


def _option_label(opt: Opt) -> str:
    if opt.kind == BOOL:
        return f"--{opt.name}"
    if opt.required:
        return f"[--{opt.name}] <{opt.kind}>"
    return f"--{opt.name} <{opt.kind}>"


def synopsis(command: Command) -> str:
    """The command's one-line synopsis: ``vol-info <vol> [--pool <string>] [--bytes]``."""
    return " ".join([command.name, *(_synopsis_part(o) for o in command.opts)])


def format_help(command: Command) -> str:
    """``help CMD``: NAME, SYNOPSIS, DESCRIPTION and OPTIONS as virsh lays them out."""
    out = [f"  NAME\n    {command.name} - {command.summary}\n"]
    out.append(f"\n  SYNOPSIS\n    {synopsis(command)}\n")
    if command.description:
        out.append(f"\n  DESCRIPTION\n    {command.description}\n")
    if command.opts:
        out.append("\n  OPTIONS\n")
        out += [f"    {_option_label(o):<15}  {o.help}\n" for o in command.opts]
    out.append("\n\n")
    return "".join(out)


def format_group(group: Group) -> str:
    lines = [f" {group.title} (help keyword '{group.keyword}'):\n"]
    lines += [f"    {c.name:<30} {c.summary}\n" for c in group.commands]
    return "".join(lines) + "\n"


def format_groups(groups: Sequence[Group]) -> str:
    """``help``: every group's commands, as virsh's ``Grouped commands:`` listing."""
    return "Grouped commands:\n\n" + "".join(format_group(g) for g in groups) + "\n"


def format_usage() -> str:
    """What ``virtbus --help`` prints: the global options, then how to get more."""
    lines = ["", "virtbus [OPTIONS] [COMMAND [ARG]...]", "", "  options:"]
    for name, value, text in GLOBAL_OPTIONS:
        short = "-c | " if name == "connect" else "     "
        label = f"{short}--{name}" + (f" {value}" if value else "")
        lines.append(f"    {label:<24} {text}")
    lines += [
        f"    {'-h | --help':<24} this help",
        "",
        "  commands (non interactive mode):",
        "    'virtbus help' lists them; 'virtbus help COMMAND' tells about one.",
        "  Without a command, virtbus reads commands from an interactive shell.",
        "",
    ]
    return "\n".join(lines) + "\n"
