"""A DataTable that takes whole snapshots and changes only what changed.

Live screens get a fresh list of rows every second. Clearing and re-adding
them would flicker, reset the scroll position and lose the selection, so
``LiveTable.sync`` updates changed cells in place, adds and removes rows by
key, reorders when the order changed, and keeps the cursor on the same row key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

Cell = str | Text


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int


class LiveTable(DataTable[Cell]):
    """Fixed-width columns (no width recalculation per update) and keyed rows."""

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        unique: str,
        id: str | None = None,
    ) -> None:
        """``unique`` names a column whose cells differ on every row (used to reorder)."""
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self._spec = tuple(columns)
        self._unique = ColumnKey(unique)

    def on_mount(self) -> None:
        for col in self._spec:
            self.add_column(col.label, key=col.key, width=col.width)

    @property
    def selected_key(self) -> str | None:
        """The row key under the cursor, or None for an empty table."""
        if self.row_count == 0:
            return None
        row = min(self.cursor_row, self.row_count - 1)
        return self.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value

    def sync(self, rows: Sequence[tuple[str, Sequence[Cell]]]) -> bool:
        """Show ``rows`` (key, cells in column order); True when anything changed."""
        selected = self.selected_key
        wanted = [key for key, _ in rows]
        wanted_set = set(wanted)
        changed = False
        for key in [k.value for k in list(self.rows) if k.value not in wanted_set]:
            if key is not None:
                self.remove_row(key)
                changed = True
        col_keys = [ColumnKey(c.key) for c in self._spec]
        for key, cells in rows:
            row_key = RowKey(key)
            if row_key not in self.rows:
                self.add_row(*cells, key=key)
                changed = True
                continue
            for col, value in zip(col_keys, cells, strict=True):
                if self.get_cell(row_key, col) != value:
                    self.update_cell(row_key, col, value)
                    changed = True
        if [r.key.value for r in self.ordered_rows] != wanted and wanted:
            unique = self._unique
            order = {id(self.get_cell(RowKey(k), unique)): i for i, k in enumerate(wanted)}
            self.sort(unique, key=lambda cell: order[id(cell)])
            changed = True
        if selected is not None and selected in wanted_set:
            index = self.get_row_index(selected)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False, scroll=False)
        return changed
