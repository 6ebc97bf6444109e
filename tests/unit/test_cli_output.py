"""The CLI prints virsh's table shape."""

from __future__ import annotations

from client.cli.output import table


def test_table_matches_virsh_layout() -> None:
    out = table(["Name", "State", "Autostart"], [["default-pool", "active", "no"]])
    assert out == (
        " Name           State    Autostart\n"
        "------------------------------------\n"
        " default-pool   active   no\n"
        "\n"
    )


def test_empty_table_keeps_header_and_rule() -> None:
    assert table(["UUID", "Usage"], []) == " UUID   Usage\n---------------\n\n"
