"""Tables on stdout: rich for a small table on a terminal, plain text otherwise.

rich lays out every cell on its own (measure, pad, style), which is slow for
thousands of rows (benchmarks/results/cli.md). :func:`plain_lines` writes the
same layout directly (rich's ``SIMPLE_HEAD`` box without edges: columns three
spaces apart, a rule of ``─`` under the header, right-aligned number columns,
no trailing spaces), so on a pipe the output is the same byte for byte
(``tests/test_cli_show.py`` compares them) and a big table on a terminal only
loses the bold header and wrapping to the terminal's width.

Only the standard library at top level: rich is imported by the path that
uses it.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

#: up to this many rows a table on a terminal goes through rich (bold header,
#: wrapped to the terminal); more rows are written as plain text
RICH_MAX_ROWS = 200
_RULE = "\u2500"


def _is_plain(text: str) -> bool:
    """Whether ``len`` is the cell's width and rich would print it unchanged.

    Every character takes one terminal cell, and no space at either end
    (rich trims those).
    """
    return text.isascii() and text.isprintable() and text == text.strip(" ")


def plain_lines(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The table as lines (without newlines), laid out as rich lays out a pipe's table.

    Columns whose name ends in ``>`` are right-aligned. Cells must be
    printable ASCII without spaces at either end (:func:`print_table` checks).
    """
    names = [c.rstrip(">") for c in columns]
    right = [c.endswith(">") for c in columns]
    widths = [len(n) for n in names]
    if rows:
        by_column = zip(*rows, strict=True)
        widths = [max(w, *map(len, cells)) for w, cells in zip(widths, by_column, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if r else cell.ljust(w)
            for cell, w, r in zip(cells, widths, right, strict=True)
        ]
        return "   ".join(parts).rstrip()

    out = [line(names), _RULE * (sum(widths) + 3 * (len(widths) - 1))]
    out += [line(row) for row in rows]
    return out


def rich_lines(columns: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> list[str]:
    """The table as rich renders it at *width* columns, trailing spaces removed."""
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=width, highlight=False).print(_rich_table(columns, rows))
    return [line.rstrip() for line in buf.getvalue().splitlines()]


def _rich_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for col in columns:
        right = col.endswith(">")
        table.add_column(col.rstrip(">"), justify="right" if right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> None:
    """A table on stdout; *empty* (one line) when there are no rows.

    Columns whose name ends in ``>`` are right-aligned (numbers). On a pipe
    rows never wrap: the table is as wide as it needs to be.
    """
    out = sys.stdout
    if not rows:
        out.write(empty + "\n")
        return
    plain = all(_is_plain(c) for c in columns) and all(_is_plain(c) for r in rows for c in r)
    tty = out.isatty()
    if plain and (not tty or len(rows) > RICH_MAX_ROWS):
        out.write("\n".join(plain_lines(columns, rows)) + "\n")
        return
    if tty:
        from rich.console import Console

        Console(file=out, highlight=False).print(_rich_table(columns, rows))
        return
    out.write("".join(line + "\n" for line in rich_lines(columns, rows, 100_000)))
