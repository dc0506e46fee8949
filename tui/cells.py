"""The columns a terminal draws for a string, without Rich: East Asian wide and full-width
characters take two, combining marks none.

For the plain tables of the command line (``runs``, ``ctl status``, ``sessions``) and the
headless summary, which must line up under a step named in CJK and must not import Rich (a
tenth of a second of start-up) or the headless front end to do it.
"""

from __future__ import annotations

import unicodedata

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
