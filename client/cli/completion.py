"""Bash completion for ``virtbus``, generated from the command table.

The script holds the command and option names itself (no Python start per
TAB); option values complete as files for file options, as the table's fixed
words where it lists them, as command names for ``help``, and as pool, secret,
network or nwfilter names by asking ``virtbus`` (``pool-list --all --name``,
``secret-list``, ``net-list --all --name``, ``nwfilter-list``); volume names
do not complete.
"""

from __future__ import annotations

from client.cli.commands import all_commands
from client.cli.table import BOOL, GLOBAL_OPTIONS, Command


def _value_cases(command: Command) -> list[str]:
    cases = []
    for opt in command.opts:
        if opt.kind == BOOL or opt.completer is None:
            continue
        if isinstance(opt.completer, str):
            action = f"_virtbus_values {opt.completer}"
        else:
            action = f'COMPREPLY=($(compgen -W "{" ".join(opt.completer)}" -- "$cur"))'
        cases.append(f"            --{opt.name}) {action}; return;;")
    return cases


def bash_script() -> str:
    """The completion script ``virtbus completion`` prints."""
    commands = all_commands()
    globals_ = " ".join(f"--{name}" for name, _, _ in GLOBAL_OPTIONS) + " -c"
    out = [
        "# bash completion for virtbus, generated from its command table",
        "_virtbus_values() {",
        '    case "$1" in',
        '        file) COMPREPLY=($(compgen -f -- "$cur"));;',
        '        pool) COMPREPLY=($(compgen -W "$(virtbus pool-list --all --name 2>/dev/null)"'
        ' -- "$cur"));;',
        '        secret) COMPREPLY=($(compgen -W "$(virtbus secret-list 2>/dev/null'
        ' | awk \'NR>2 {print $1}\')" -- "$cur"));;',
        '        network) COMPREPLY=($(compgen -W "$(virtbus net-list --all --name 2>/dev/null)"'
        ' -- "$cur"));;',
        '        nwfilter) COMPREPLY=($(compgen -W "$(virtbus nwfilter-list 2>/dev/null'
        ' | awk \'NR>2 {print $2}\')" -- "$cur"));;',
        f'        command) COMPREPLY=($(compgen -W "{" ".join(c.name for c in all_commands())}"'
        ' -- "$cur"));;',
        "        *) COMPREPLY=();;",
        "    esac",
        "}",
        "_virtbus() {",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        "    local cmd='' i",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        case "${COMP_WORDS[i]}" in',
        "            -c|--connect|--host|--connect-timeout) ((i++));;",
        "            -*) ;;",
        '            *) cmd="${COMP_WORDS[i]}"; break;;',
        "        esac",
        "    done",
        '    if [[ -z "$cmd" ]]; then',
        f'        COMPREPLY=($(compgen -W "{" ".join(c.name for c in commands)} {globals_}"'
        ' -- "$cur"))',
        "        return",
        "    fi",
        '    case "$cmd" in',
    ]
    for command in commands:
        options = " ".join(f"--{o.name}" for o in command.opts)
        out.append(f"        {command.name})")
        first = next((o for o in command.opts if o.positional), None)
        if first is not None and isinstance(first.completer, str):
            out.append(
                f'            if [[ "$cur" != -* && "$prev" == "{command.name}" ]]; then'
                f" _virtbus_values {first.completer}; return; fi"
            )
        cases = _value_cases(command)
        if cases:
            out.append('            case "$prev" in')
            out += ["    " + c for c in cases]
            out.append("            esac")
        out.append(f'            COMPREPLY=($(compgen -W "{options} {globals_}" -- "$cur"));;')
    out += [
        "    esac",
        "}",
        "complete -o default -F _virtbus virtbus",
        "",
    ]
    return "\n".join(out)
