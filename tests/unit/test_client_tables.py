"""One table renderer for command output: piped, no cell is wrapped; narrow, one column gives."""

from __future__ import annotations

import io

from rich.console import Console

from client.tables import PIPE_WIDTH, Column, console, print_table

COLUMNS = (Column("HOST"), Column("FREE", right=True), Column("WHY", fill=True))
LONG = "role dev does not grant host my-2; latency 120.0 ms exceeds 50 ms"
ROWS = [["sg-a100-long-name-1", "3", LONG], ["[green]my-1[/]", "10", "ok"]]


def _render(width: int) -> list[str]:
    out = io.StringIO()
    print_table(COLUMNS, ROWS, Console(file=out, width=width, highlight=False))
    return out.getvalue().splitlines()


def test_piped_tables_never_wrap() -> None:
    assert not console().is_terminal and console().width == PIPE_WIDTH  # pytest captures
    lines = _render(PIPE_WIDTH)
    assert len(lines) == 3 and LONG in lines[1] and "sg-a100-long-name-1" in lines[1]
    assert lines[2].startswith("my-1 ") and lines[2].split()[1] == "10"


def test_a_narrow_terminal_cuts_the_fill_column_only() -> None:
    lines = _render(40)
    assert len(lines) == 3 and all(len(line.rstrip()) <= 40 for line in lines)
    assert lines[1].startswith("sg-a100-long-name-1") and lines[1].rstrip().endswith("…")
