"""Tables in command output, drawn one way: rich, no box, bold headers, no cell wrapped.

    print_table([Column("HOST"), Column("FREE", right=True), Column("WHY", fill=True)], rows)

Cells are rich markup (escape text that comes from elsewhere). On a terminal the
table fits the width: the ``fill`` column gives way with an ellipsis and the
others keep theirs. Piped, the table is as wide as its longest row, so a script
(or ``grep``) reads whole cells, never a word broken over two lines.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

PIPE_WIDTH = 10_000  # "as wide as it needs": piped output is never wrapped
GAP = 2  # rich's padding between columns with box=None, pad_edge=False
MIN_FILL = 8


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False
    fill: bool = False
    """The column that is cut (with an ellipsis) when a terminal is too narrow."""


def console() -> Console:
    """The console for a command's output: the terminal's width, or unbounded when piped."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)


def print_table(
    columns: Sequence[Column], rows: Iterable[Sequence[str]], out: Console | None = None
) -> None:
    out = out or console()
    body = [list(r) for r in rows]
    widths = [
        max([len(c.header), *(Text.from_markup(r[i]).cell_len for r in body)])
        for i, c in enumerate(columns)
    ]
    fixed = sum(w for w, c in zip(widths, columns, strict=True) if not c.fill)
    room = max(MIN_FILL, out.width - fixed - GAP * (len(columns) - 1))
    table = Table(box=None, header_style="bold", pad_edge=False)
    for c in columns:
        table.add_column(
            c.header,
            justify="right" if c.right else "left",
            no_wrap=True,
            overflow="ellipsis",
            max_width=room if c.fill else None,
        )
    for r in body:
        table.add_row(*r)
    out.print(table)
