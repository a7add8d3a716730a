"""Tables that read at any terminal width, from 80 columns up.

The columns that name a row (a bench configuration, a preset, a branch) are never wrapped or shortened. When the
other columns do not all fit the console, a report stacks them: they go on in a second table under the first,
the naming columns repeated, so nothing is lost and no word is broken. A listing instead shows the columns that
fit, in the order it prefers them, and names the rest (`FittingTable.narrowed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

# A flexible column (a timeline) counts this wide when packing: it folds into whatever width is left.
FLEXIBLE_WIDTH = 20


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "right"
    names_row: bool = False  # in every stacked table; never wrapped or shortened
    flexible: bool = False  # marks with no words (a timeline): may fold to the width left


@dataclass
class FittingTable:
    columns: Sequence[Column]
    title: str | None = None
    caption: str | None = None
    rows: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)

    def add_row(self, *cells: Any, style: str | None = None, end_section: bool = False) -> None:
        self.rows.append((cells, {"style": style, "end_section": end_section}))

    def widths(self, console: Console) -> list[int]:
        """Each column's natural width: its header or its widest cell, on one line."""
        options = console.options.update(width=10_000)

        def width(cell: Any) -> int:
            renderable = console.render_str(cell) if isinstance(cell, str) else cell
            return Measurement.get(console, options, renderable).maximum

        found = []
        for index, column in enumerate(self.columns):
            natural = max([width(column.header), *(width(cells[index]) for cells, _ in self.rows)])
            found.append(min(natural, FLEXIBLE_WIDTH) if column.flexible else natural)
        return found

    def stacked(self, console: Console) -> list[Table]:
        """One table if every column fits the console, else several: the naming columns, then as many of the
        others, in order, as fit; the title on the first table (the caption is the caller's, `print`)."""
        widths = self.widths(console)
        naming = [i for i, column in enumerate(self.columns) if column.names_row]
        groups: list[list[int]] = []
        for index in (i for i in range(len(self.columns)) if i not in naming):
            if groups and table_width([widths[i] for i in [*naming, *groups[-1], index]]) <= console.width:
                groups[-1].append(index)
            else:
                groups.append([index])
        groups = groups or [[]]
        return [
            self.table([*naming, *group], title=self.title if number == 0 else None, caption=None)
            for number, group in enumerate(groups)
        ]

    def narrowed(self, console: Console, preference: Sequence[str], wide: bool = False) -> tuple[Table, list[str]]:
        """The naming columns and, in `preference` order (headers), the others that still fit; shown in the
        table's own column order. With `wide`, every column. Returns the table and the headers left out."""
        widths = self.widths(console)
        chosen = [i for i, column in enumerate(self.columns) if column.names_row or wide]
        index_of = {column.header: i for i, column in enumerate(self.columns)}
        for header in preference:
            index = index_of[header]
            if index not in chosen and table_width([widths[i] for i in [*chosen, index]]) <= console.width:
                chosen.append(index)
        left_out = [column.header for i, column in enumerate(self.columns) if i not in chosen]
        return self.table(sorted(chosen), self.title, self.caption), left_out

    def table(self, indices: Sequence[int], title: str | None, caption: str | None) -> Table:
        table = Table(title=title, caption=caption)
        for index in indices:
            column = self.columns[index]
            table.add_column(column.header, justify=column.justify, no_wrap=column.names_row, overflow="fold")
        for cells, options in self.rows:
            table.add_row(*(cells[index] for index in indices), **options)
        return table

    def print(self, console: Console) -> None:
        """The stacked tables, then the caption: under one table as Rich draws it, under several as a paragraph
        as wide as the console (a caption as narrow as a stacked table would run to many short lines)."""
        tables = self.stacked(console)
        if len(tables) == 1:
            tables[0].caption = self.caption
        for table in tables:
            console.print(table)
        if len(tables) > 1 and self.caption:
            console.print(self.caption, style="table.caption", highlight=False)


def table_width(widths: Sequence[int]) -> int:
    """A Rich table's width with its default box: a rule between columns and at both edges, a space each side of
    each cell."""
    return sum(widths) + 3 * len(widths) + 1


def print_at_full_width(table: Table, console: Console) -> None:
    """`table` at its natural width even when wider than the console (lines a pager or `less -S` can scroll)."""
    natural = Measurement.get(console, console.options.update(width=10_000), table).maximum
    shown = console.width
    console.width = max(shown, natural)
    try:
        console.print(table)
    finally:
        console.width = shown
