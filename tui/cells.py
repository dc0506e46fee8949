"""The columns a terminal draws for a string, without Rich: East Asian wide and full-width
characters take two, combining marks none.

For the plain tables of the command line (``runs``, ``ctl status``, ``sessions``), the
headless summary and the app's sessions screen, which must line up under a step named in CJK
and must not import Rich (a tenth of a second of start-up) or the headless front end to do it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Sequence

ELLIPSIS = "…"


def cell_len(text: str) -> int:
    """Terminal cells ``text`` takes."""
    if text.isascii():
        return len(text)
    return sum(char_cells(char) for char in text)


def char_cells(char: str) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def crop(text: str, width: int) -> str:
    """The start of ``text`` that fits ``width`` cells, padded with a space where a wide
    character did not fit."""
    kept, used = [], 0
    for char in text:
        cells = char_cells(char)
        if used + cells > width:
            break
        kept.append(char)
        used += cells
    return "".join(kept) + " " * (width - used)


def crop_left(text: str, width: int) -> str:
    """``text`` in ``width`` cells, its beginning given up for an ellipsis if need be (a path,
    whose end is the part worth keeping)."""
    if cell_len(text) <= width:
        return text
    start, used = len(text), cell_len(ELLIPSIS)
    while start > 0 and used + char_cells(text[start - 1]) <= width:
        start -= 1
        used += char_cells(text[start])
    return ELLIPSIS + text[start:]


def ellipsized(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, its end given up for an ellipsis if need be."""
    if cell_len(text) <= width:
        return text
    return crop(text, width - 1) + ELLIPSIS


def fit_widths(
    natural: Sequence[int], room: int, cuttable: Collection[int], least: Sequence[int]
) -> list[int]:
    """Column widths whose sum fits ``room``: only the ``cuttable`` columns (free text, whose
    start tells the rows apart) give cells, the widest first, none under its ``least``; the
    others (ids, numbers, times: useless cut) stay whole. They may still not fit."""
    widths = list(natural)
    excess = sum(widths) - room
    while excess > 0:
        shrinkable = [i for i in cuttable if widths[i] > least[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        others = [widths[i] for i in shrinkable if i != widest]
        target = max(least[widest], max(others, default=0), widths[widest] - excess)
        cut = max(1, widths[widest] - target)
        widths[widest] -= cut
        excess -= cut
    return widths


def fit_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], room: int, cuttable: Collection[int]
) -> tuple[list[int], list[tuple[str, ...]]]:
    """A table fitted to ``room`` cells: its columns' widths (``fit_widths``, none under its
    header) and its rows, a cell wider than its column cut with an ellipsis. For the sessions
    screen and ``orch-tui sessions`` alike."""
    natural = [max(cell_len(text) for text in column) for column in zip(header, *rows, strict=True)]
    widths = fit_widths(natural, room, cuttable, [cell_len(title) for title in header])
    fitted = [
        tuple(ellipsized(text, w) for text, w in zip(row, widths, strict=True)) for row in rows
    ]
    return widths, fitted
