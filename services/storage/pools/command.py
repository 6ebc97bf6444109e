"""External commands as argument lists, and their text as libvirt shows them (virCommandToString).

Builders return ``list[str]`` (program first); ``render_command`` gives the
text libvirt's tests compare against: each argument shell-quoted, and a line
continuation (space, backslash, newline) before every argument except an
option's value, so that an option and its value share a line.
"""

from __future__ import annotations

from collections.abc import Sequence

# virBufferEscapeShell quotes an argument holding any of these.
_SHELL_SPECIAL = frozenset(" \t\n\v\f\r!\"#$&'()*;<>?[\\]^`{|}~")


def shell_quote(arg: str) -> str:
    """``arg`` as a POSIX shell word: bare when safe, else single-quoted."""
    if not arg:
        return "''"
    if not any(c in _SHELL_SPECIAL for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def _is_option(arg: str) -> bool:
    return arg.startswith("-")


def render_command(argv: Sequence[str]) -> str:
    """The command as libvirt's test data writes it, without a final newline.

    An argument stays on the line of the one before only when it is not an
    option, an option came earlier, and the previous argument or a later one
    is an option (libvirt's wrapping of test command lines).
    """
    if not argv:
        raise ValueError("empty command")
    out = [shell_quote(argv[0])]
    seen_option = False
    args = list(argv[1:])
    for i, arg in enumerate(args):
        same_line = (
            not _is_option(arg)
            and seen_option
            and (_is_option(args[i - 1]) or any(_is_option(a) for a in args[i + 1 :]))
        )
        out.append(" " if same_line else " \\\n")
        out.append(shell_quote(arg))
        seen_option = seen_option or _is_option(arg)
    return "".join(out)
