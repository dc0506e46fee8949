"""Line rendering the scrolling panes share (the log pane, the session mirror)."""

from __future__ import annotations

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip


def note_strip(note: str, width: int, style: Style) -> Strip:
    """The dim, italic line an empty pane shows in its first row, saying why it is empty.

    One segment with its style, not ``Text.render``: that gave a segment without a style, on
    which Textual's monochrome filter (``NO_COLOR=1``) failed, and the app crashed at once."""
    segment = Segment(note, style + Style(dim=True, italic=True))
    return Strip([segment], cell_len(note)).crop_extend(0, width, style)
