"""A step's live log: the tail of logs/<step>.log, rendered line by line, like ``less +F``.

The pane never receives output line by line. The app tells it, at most a few times a second,
that the step's log grew; the pane then reads the end of the file (the complete log stays on
disk) and renders only the lines on screen. Following stops when the user scrolls up and the
pane counts what arrived since; End resumes. ``/`` searches the lines a paused pane loads (a
following one holds fewer: it loads them to search). A *live* pane (a session's log: no step
events say when it grows) polls its file itself. An empty pane says why
in a dim line (``empty_hint``), so a step that printed nothing does not look broken.

A line wider than the pane is cut at its edge (scroll sideways to read on), and the border
says so; ``w`` wraps the lines instead, as ``less -S`` toggles. Wrapped, the pane counts the
rows each loaded line takes (the tail it holds, not the log file: a few thousand lines, once a
load or a resize) and cuts a line into rows only when it is drawn. Rows break between
characters: a wide (CJK) character that would cross a row's edge starts the next row, since one
cut in two is drawn as two blanks.

The border's title names the step and how it ended. Where the title is too narrow for them (a
long step name at 80 columns, cut there and in the tree alike), the pane's top rows say them
whole, wrapped, above the log: the one place on screen a long name is readable.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate
from pathlib import Path

from rich.cells import cell_len, chop_cells
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer

from core.steplog import read_tail
from tui.widgets._strips import note_strip

#: the row under a head that the border's title could not hold: where the log starts
HEAD_RULE = "╌"
#: cells of the top edge the title cannot use: the corners, a line and a space on each side
TITLE_CHROME = 6
#: what the bottom border says that a narrow pane says shorter (``_fit_parts``)
SHORTER = {"earlier lines on disk": "earlier on disk"}
FOLLOW_LINES = 2000  # lines kept while following: a few screens of history
FOLLOW_BYTES = 512 * 1024
FROZEN_LINES = 20000  # lines loaded when the user scrolls back
FROZEN_BYTES = 8 * 1024 * 1024
LIVE_POLL_SECONDS = 0.1  # a live pane's own polling, as often as the app polls step logs


class LogPane(ScrollView, can_focus=True):
    """Shows one step's log. ``show`` picks the step; ``poll`` re-reads it if it grew."""

    BINDINGS = [
        Binding("end", "follow", "Follow", tooltip="Jump to the end and follow new lines"),
        Binding("home", "top", "Top", show=False),
        Binding("slash", "search", "Search"),
        Binding("n", "next_match", "Next", tooltip="The next match, up the log"),
        Binding("N", "previous_match", "Prev match", show=False),
        Binding("escape", "clear_search", "Clear search", show=False),
        Binding("w", "toggle_wrap", "Wrap", tooltip="Wrap long lines, or cut them at the edge"),
    ]

    follow: reactive[bool] = reactive(True)
    pending: reactive[int] = reactive(0)

    class SearchRequested(Message):
        def __init__(self, pane: LogPane) -> None:
            super().__init__()
            self.pane = pane

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ):
        super().__init__(name=name, id=id, classes=classes)
        self.step: str | None = None
        self.path: Path | None = None
        self._lines: list[str] = []
        self._width = 0
        self._size_seen = -1
        self._truncated = False
        self.wrap = False  # w: long lines wrapped, not cut at the edge
        self._cut = False  # unwrapped lines wider than the pane (the border says: w wraps)
        #: wrapped: the first row of each line, then the row count; and the width wrapped at
        self._starts: list[int] = [0]
        #: wrapped: the cells where each row starts, then the line's end, of the lines whose
        #: rows do not break every ``_wrap_width`` cells (``_row_cuts``), by their text: a
        #: following pane loads its tail again at each poll, mostly the same lines, and keeps
        #: their cuts (Rich's cut: ~20 µs a CJK line)
        self._cuts: dict[str, list[int]] = {}
        self._wrap_width = 0
        self._ending = ""  # how the shown step ended, if not well (show_ending)
        self._head: list[Strip] = []  # the title wrapped on top rows, when the border cuts it
        self._search: str | None = None
        self._match: int | None = None
        self.searched = (0, False)  # (lines, earlier ones left out) of the last search
        self._strip_cache: dict[int, Strip] = {}
        #: (step, path) -> the dim line an empty pane shows; set by the app
        self.empty_hint: Callable[[str | None, Path | None], str] | None = None
        self._hint = ""
        self._live: Timer | None = None

    def on_mount(self) -> None:
        self._live = self.set_interval(LIVE_POLL_SECONDS, self.poll, pause=True)

    # -- data -----------------------------------------------------------------------------------
    def show(self, step: str | None, path: Path | None, *, live: bool = False) -> None:
        """Switch to another step's log, following its end. ``live``: poll the file here (it
        may not exist yet), not only when the app says it grew."""
        if self._live is not None and live:
            self._live.resume()
        elif self._live is not None:
            self._live.pause()
        if step == self.step and path == self.path:
            return
        self.step, self.path = step, path
        self._size_seen = -1
        self.follow = True
        self.pending = 0
        self._match = None
        self.poll(force=True)
        self._update_border()

    def poll(self, *, force: bool = False) -> None:
        """Re-read the file if it changed (cheap when it did not: one stat via read_tail)."""
        self._update_hint()
        if self.path is None:
            self._set_lines([], False)
            return
        if not self.follow and not force:
            try:
                size = self.path.stat().st_size
            except OSError:
                return
            if size != self._size_seen:
                self.pending = max(0, size - self._size_seen)
            return
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        if size == self._size_seen and not force:
            return
        max_lines, max_bytes = (
            (FOLLOW_LINES, FOLLOW_BYTES) if self.follow else (FROZEN_LINES, FROZEN_BYTES)
        )
        lines, size, truncated = read_tail(self.path, max_lines, max_bytes)
        self._size_seen = size
        self._set_lines(lines, truncated)

    def _update_hint(self) -> None:
        """The empty pane's line follows the step (pending, running, done): redraw on change."""
        hint = self.empty_hint(self.step, self.path) if self.empty_hint and not self._lines else ""
        if hint != self._hint:
            self._hint = hint
            self.refresh()

    def _set_lines(self, lines: list[str], truncated: bool) -> None:
        # the border says whether earlier lines were left out, and a search's count of matches
        border_changed = truncated != self._truncated or self._search is not None
        self._lines = lines
        self._truncated = truncated
        self._strip_cache.clear()
        self._width = max((cell_len(line) for line in lines[-500:]), default=0)
        self._layout()
        border_changed |= self._lines_cut() != self._cut
        if self.follow:
            self._scroll_to_end()
            self.call_after_refresh(self._scroll_to_end)
        self._update_hint()
        if border_changed:
            self._update_border()
        self.refresh()

    def _size_content(self) -> None:
        """The head's rows scroll with no line: each row of the log stays reachable under it."""
        width = self._wrap_width if self.wrap else self._width
        self.virtual_size = Size(width, self._rows + len(self._head))

    def _layout(self) -> None:
        """Count the rows each line takes when wrapped (one each when not), then size."""
        if self.wrap:
            width = max(1, self._text_width())
            seen, self._cuts = (self._cuts if width == self._wrap_width else {}), {}
            self._wrap_width = width
            self._starts = [
                0,
                *accumulate(self._wrapped_rows(line, width, seen) for line in self._lines),
            ]
        self._size_content()

    def _wrapped_rows(self, line: str, width: int, seen: dict[str, list[int]]) -> int:
        """The rows ``line`` takes wrapped at ``width``. A line that fits, or whose characters
        take a cell each (ASCII, most Latin text: as many cells as characters), breaks every
        ``width`` cells; another is cut by Rich, or its cuts taken from the last layout's."""
        cells = cell_len(line)
        if cells <= width or cells == len(line):
            return max(1, -(-cells // width))
        cuts = seen.get(line)
        if cuts is None:
            cuts = _row_cuts(line, width)
        self._cuts[line] = cuts
        return len(cuts) - 1

    def _relayout(self, top: int) -> None:
        """Lay the lines out again (wrapping toggled, the width changed) with line ``top``
        (the one on top before) still on top, or the end still shown when following."""
        self._layout()
        y = self.max_scroll_y if self.follow else self._row_of(min(top, len(self._lines)))
        self.scroll_to(x=0, y=y, animate=False, immediate=True, force=True)
        self.call_after_refresh(self._scroll_to_end)

    def _top_line(self) -> int:
        return self._line_at(round(self.scroll_y))[0]

    def _text_width(self) -> int:
        """The cells a row of text gets, short of the scrollbar's column whether it shows or
        not: rows wrapped at the wider width would lose a cell once the scrollbar comes."""
        return self.size.width - self.styles.scrollbar_size_vertical

    @property
    def _rows(self) -> int:
        """Rows the loaded lines take."""
        return self._starts[-1] if self.wrap else len(self._lines)

    def _row_of(self, index: int) -> int:
        """The first row of line ``index``."""
        return self._starts[index] if self.wrap else index

    def _line_at(self, row: int) -> tuple[int, int]:
        """The line shown on ``row`` of the log, and which of its wrapped rows it is."""
        if not self.wrap:
            return row, 0
        index = bisect_right(self._starts, row) - 1
        return index, row - self._starts[index]

    def _lines_cut(self) -> bool:
        """Whether unwrapped lines run past the pane's edge."""
        return not self.wrap and self._width > self.scrollable_content_region.width

    def on_resize(self, event: events.Resize) -> None:
        """The first layout (and any resize) moves the end: a following pane stays on it. The
        title's room changed: the head may come, go or wrap otherwise; wrapped lines wrap anew."""
        if self.wrap and self._text_width() != self._wrap_width:
            self._relayout(self._top_line())
        self._update_border()
        self._scroll_to_end()

    def action_toggle_wrap(self) -> None:
        top = self._top_line()  # found in the layout it is shown in
        self.wrap = not self.wrap
        self._relayout(top)
        self._update_border()
        self.refresh()

    def watch_show_horizontal_scrollbar(self) -> None:
        """The sideways scrollbar (the first line wider than the pane) takes the bottom row
        once the screen lays the pane out, which may come after the end was scrolled to: a
        following pane scrolls to the end again, or its last line stays hidden under it."""
        self._scroll_to_end()

    def _scroll_to_end(self) -> None:
        if self.follow:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)

    @property
    def lines(self) -> list[str]:
        return self._lines

    # -- following ------------------------------------------------------------------------------
    def _stop_following(self) -> None:
        if self.follow:
            self.follow = False
            if self.path is not None:  # load more history to scroll through
                keep_from_end = self._rows - self.scroll_y
                lines, size, truncated = read_tail(self.path, FROZEN_LINES, FROZEN_BYTES)
                self._size_seen = size
                self._set_lines(lines, truncated)
                self.scroll_to(y=max(0, self._rows - keep_from_end), animate=False, immediate=True)

    def action_follow(self) -> None:
        self.follow = True
        self.pending = 0
        self.poll(force=True)
        self._scroll_to_end()

    def action_top(self) -> None:
        self._stop_following()
        self.scroll_home(animate=False, immediate=True)

    def action_scroll_up(self) -> None:
        self._stop_following()
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self._stop_following()
        super().action_page_up()

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._stop_following()
        super()._on_mouse_scroll_up(event)

    def watch_follow(self) -> None:
        self._update_border()

    def watch_pending(self) -> None:
        self._update_border()

    def show_ending(self, ending: str) -> None:
        """How the shown step ended when it did not succeed (tui.format.step_ending), beside
        its name: the log alone may not say (no output, a timeout, a signal)."""
        if ending != self._ending:
            self._ending = ending
            self._update_border()

    def _update_border(self) -> None:
        title = Text(self.step or "no step selected", style="bold")
        if self._ending:
            title.append(f" · {self._ending}", style="red")
        self.border_title = title
        self._wrap_head(title)
        self._cut = self._lines_cut()
        self.border_subtitle = _fit_parts(
            self._border_parts(), self.outer_size.width - TITLE_CHROME
        )

    def _border_parts(self) -> list[str]:
        """What the border's subtitle says, the keys first: at 80 columns it holds 30 to 48
        cells (the tree takes up to half the screen for its names), and the footer shows the
        pane's keys only while the pane has the focus (the tree has it first). What the user
        cannot act on comes last: it goes first where the border has no room for all
        (``_fit_parts``)."""
        parts = []
        if self._search:
            hits = sum(1 for line in self._lines if self._search in line)
            parts.append(f"/{self._search}: {hits} in view")
        if self.follow:
            parts.append("following")
        else:  # a search pauses too: say so, and how to come back
            parts += ["paused", "End to follow"]
        if self._cut:
            parts.append("w wraps")
        elif self.wrap:
            parts.append("wrapped")
        if self.pending and not self.follow:
            parts.append(f"{self.pending:,} new bytes")
        if self._truncated:
            parts.append("earlier lines on disk")
        return parts

    def _wrap_head(self, title: Text) -> None:
        """The title whole on the pane's top rows, and a rule under it, if the border cuts it.

        Wrapped short of the scrollbar's column whether it shows or not: the head's rows decide
        whether it shows (they scroll nothing), and a head wrapped wider lost a cell under it."""
        width = self._text_width()
        room = self.outer_size.width - TITLE_CHROME
        head: list[Strip] = []
        if self.step is not None and width > 0 and title.cell_len > room:
            console, style = self.app.console, self.rich_style
            rule = Text(HEAD_RULE * self.size.width)  # drawn as wide as the log's rows
            rows = [*title.wrap(console, width, overflow="fold"), rule]
            rows[-1].stylize("dim")
            head = [Strip(row.render(console)).apply_style(style) for row in rows]
        if head != self._head:
            self._head = head
            self._size_content()
            # the head's rows push the log down: a following pane keeps its last line in view
            self.call_after_refresh(self._scroll_to_end)
            self.refresh()

    # -- search ---------------------------------------------------------------------------------
    def action_search(self) -> None:
        self.post_message(self.SearchRequested(self))

    def search(self, text: str) -> bool:
        """Find ``text`` from the bottom up; True if found (the view scrolls to it)."""
        self._search = text or None
        self._match = None
        was_following = self.follow
        self.refresh_bindings()
        self._strip_cache.clear()
        found = self._find(len(self._lines), -1) if text else False
        if text and not found and self.follow and self._truncated:
            # following holds the last FOLLOW_LINES only: search the history a pause loads (a
            # line scrolling up would show was "not found" while following)
            self._stop_following()
            found = self._find(len(self._lines), -1)
        self.searched = (len(self._lines), self._truncated)
        if not found and was_following and not self.follow:
            self.action_follow()  # nothing to show: the pane follows on, as it did
        self._update_border()
        self.refresh()
        return found

    def _find(self, start: int, step: int) -> bool:
        if not self._search:
            return False
        index = start + step
        while 0 <= index < len(self._lines):
            if self._search in self._lines[index]:
                if self.follow:  # stopping reloads the lines (more history): index them anew
                    self._stop_following()
                    return self._find(len(self._lines), -1)
                self._match = index
                self.scroll_to(y=max(0, self._row_of(index) - self.size.height // 2), animate=False)
                self._strip_cache.clear()
                self.refresh()
                return True
            index += step
        return False

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """``n`` and ``N`` only while a search is on: the footer has no room at 80 columns
        for a key that does nothing (without one, ``n`` reaches the app's, which does nothing
        either)."""
        if action in ("next_match", "previous_match"):
            return self._search is not None
        return True

    def action_next_match(self) -> None:
        if self._search:
            self._find(self._match if self._match is not None else len(self._lines), -1)

    def action_previous_match(self) -> None:
        if self._search and self._match is not None:
            self._find(self._match, 1)

    def action_clear_search(self) -> None:
        self.search("")

    # -- rendering ------------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        style = self.rich_style
        if y < len(self._head):  # it stays on top: only the log under it scrolls
            return self._head[y].crop_extend(0, width, style)
        scroll_x, scroll_y = self.scroll_offset
        index, part = self._line_at(scroll_y + y - len(self._head))
        if index >= len(self._lines):
            if index == 0 and self._hint:
                return note_strip(self._hint, width, style)
            return Strip.blank(width, style)
        strip = self._strip_cache.get(index)
        if strip is None:
            strip = self._render_text(index, style)
            if len(self._strip_cache) > 1000:
                self._strip_cache.clear()
            self._strip_cache[index] = strip
        if self.wrap:
            start, end = self._row_span(index, part)
            return strip.crop_extend(start, end, style).adjust_cell_length(width, style)
        return strip.crop_extend(scroll_x, scroll_x + width, style)

    def _row_span(self, index: int, part: int) -> tuple[int, int]:
        """The cells of line ``index`` its wrapped row ``part`` shows."""
        cuts = self._cuts.get(self._lines[index])
        if cuts is not None:
            return cuts[part], cuts[part + 1]
        start = part * self._wrap_width
        return start, start + self._wrap_width

    def _render_text(self, index: int, style: Style) -> Strip:
        line = self._lines[index]
        if self._search and self._search in line:
            text = Text(line, style=style, no_wrap=True)
            text.highlight_words(
                [self._search], "black on yellow" if index == self._match else "reverse"
            )
            return Strip(text.render(self.app.console), text.cell_len)
        return Strip([Segment(line, style)], cell_len(line))


def _row_cuts(line: str, width: int) -> list[int]:
    """The cells where each row of ``line`` wrapped at ``width`` starts, then its end: Rich's
    own cut (``chop_cells``), by the cells Rich draws: between graphemes (an emoji and its
    variation selector, a joined family, are one), a row ending before a wide character that
    would cross its edge (Rich draws one cut in two as two blanks, losing it)."""
    cuts = [0]
    for row in chop_cells(line, width):
        cuts.append(cuts[-1] + cell_len(row))
    return cuts


def _fit_parts(parts: list[str], room: int) -> str:
    """The border's parts joined, whole, in ``room`` cells: said shorter (``SHORTER``), then
    the last parts left out, the least useful, until the rest fits. The border cut what did
    not fit mid-word: at 80 columns "following · w wraps · earlier lin…". The first part is
    kept even where it does not fit (the border cuts it, with …)."""
    joined = " · ".join(parts)
    if cell_len(joined) <= room:
        return joined
    parts = [SHORTER.get(part, part) for part in parts]
    while len(parts) > 1 and cell_len(" · ".join(parts)) > room:
        parts.pop()
    return " · ".join(parts)
