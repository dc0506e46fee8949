"""The summary's table as plain text, the way Rich draws it, without Rich.

Off a terminal (a CI log) the reporter must not import Rich (a tenth of a second of start-up,
for a table), yet the table should read as it does on a terminal: Rich's ``SIMPLE_HEAD`` box
without edges, collapsed padding (two columns between cells), cells cut with an ellipsis, the
title wrapped at the table's width; on a stream that cannot encode the box, Rich's ``ASCII``
box (``|`` between cells, ``-+-`` under the header). ``live.RichPrinter`` draws the same
``Table`` with Rich on a terminal. Widths are terminal cells (wide characters count two).
"""

from __future__ import annotations

import re

import msgspec

from tui.cells import cell_len, crop, ellipsized

#: a cell: its text and its Rich style
Cell = tuple[str, str]


class Table(msgspec.Struct):
    """What the summary shows as a table: ``limits`` caps a column's width (None: as wide as
    its widest cell); every cell stays on one line, cut with an ellipsis."""

    title: str
    headers: list[str]
    justify: list[str]  # "left" or "right", per column
    limits: list[int | None]
    rows: list[list[Cell]]

    def widths(self) -> list[int]:
        """Each column's width: its widest cell or header, within its limit."""
        widths = []
        for i, header in enumerate(self.headers):
            natural = max(cell_len(header), *(cell_len(row[i][0]) for row in self.rows))
            limit = self.limits[i]
            widths.append(natural if limit is None else max(1, min(natural, limit)))
        return widths


def render_plain(table: Table, *, ascii_box: bool) -> list[str]:
    """The table's lines, without trailing blanks."""
    widths = table.widths()
    divider, horizontal, cross = ("|", "-", "+") if ascii_box else (" ", "─", "─")

    def row(cells: list[str]) -> str:
        last = len(cells) - 1
        parts = [
            _fit(text, width, justify) + ("" if i == last else " ")
            for i, (text, width, justify) in enumerate(
                zip(cells, widths, table.justify, strict=True)
            )
        ]
        return divider.join(parts).rstrip()

    rule = cross.join(horizontal * (w + (i < len(widths) - 1)) for i, w in enumerate(widths))
    total = len(rule)
    lines = [line.rstrip() for line in _wrap(table.title, total)]
    lines += [row(table.headers), rule]
    lines += [row([text for text, _ in cells]) for cells in table.rows]
    return lines


def _fit(text: str, width: int, justify: str) -> str:
    """``text`` in exactly ``width`` cells: cut with an ellipsis, padded on the side
    ``justify`` leaves free."""
    text = ellipsized(text, width)
    size = cell_len(text)
    room = " " * max(0, width - size)
    return room + text if justify == "right" else text + room


_WORD = re.compile(r"\s*\S+\s*")


def _wrap(text: str, width: int) -> list[str]:
    """``text`` broken into lines of at most ``width`` cells between words, a word longer
    than a line cut in pieces (Rich's ``divide_line``, which draws the title on a terminal)."""
    lines: list[str] = []
    line = ""
    for word in _WORD.findall(text):
        if cell_len(line) + cell_len(word.rstrip()) <= width:
            line += word
            continue
        if line:
            lines.append(line)
            line = ""
        while cell_len(word.rstrip()) > width:
            piece = crop(word, width).rstrip()
            lines.append(piece)
            word = word[len(piece) :]
        line = word
    return [*lines, line] if line or not lines else lines
