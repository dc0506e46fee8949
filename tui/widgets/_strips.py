"""Line rendering the scrolling panes share (the log pane, the session mirror)."""

from __future__ import annotations

from rich.console import Console
from rich.style import Style
from rich.text import Text
from textual.strip import Strip


def note_strip(console: Console, note: str, width: int, style: Style) -> Strip:
    """The dim, italic line an empty pane shows in its first row, saying why it is empty."""
    text = Text(note, style=style + Style(dim=True, italic=True))
    return Strip(text.render(console), text.cell_len).crop_extend(0, width, style)
