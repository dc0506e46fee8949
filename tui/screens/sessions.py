"""Every GNU screen and tmux session of the user, ours and theirs, on every tmux server: what
replaces typing ``screen -ls`` and ``screen -r``. Listed by a worker thread (the multiplexers are
subprocesses), refreshed every two seconds; ``a`` or Enter attaches (to the row's tmux server).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from core.text import clean
from tui.cells import cell_len, fit_table
from tui.format import counted
from tui.widgets.keys_footer import KeysFooter

if TYPE_CHECKING:
    from core.sessions.base import SessionInfo

REFRESH_SECONDS = 2.0
COLUMNS = ("backend", "socket", "name", "state", "pid", "created", "run")
#: the columns cut (with an ellipsis) when the rows are wider than the screen: the free text
#: (a tmux socket, a session name); the run id, pid and time say nothing once cut
CUTTABLE = (COLUMNS.index("socket"), COLUMNS.index("name"))
STATE = COLUMNS.index("state")


class SessionsScreen(Screen[None]):
    BINDINGS = [
        Binding("a", "attach", "Attach"),
        Binding("enter", "attach", "Attach", show=False),
        Binding("escape", "app.pop_screen", "Back"),
        Binding("S", "app.pop_screen", "Back", show=False),
        Binding("f5", "reload", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._rows: list[SessionInfo] = []
        self._notes: list[str] = []
        self._widths: list[int] = []  # each column's width as drawn

    def compose(self) -> ComposeResult:
        yield Static(
            "[b]Sessions[/] on this machine   [dim]a attach · Escape back[/]", id="sessions-title"
        )
        table: DataTable[str] = DataTable(
            id="sessions-table", cursor_type="row", zebra_stripes=True
        )
        yield table
        yield Static("", id="sessions-note")
        yield KeysFooter()  # the steps screen's: compact under 100 columns, as few rebuilds

    def on_mount(self) -> None:
        from tui.handover import import_libtmux

        import_libtmux()  # here, before the worker needs it
        self.action_reload()
        self.set_interval(REFRESH_SECONDS, self.action_reload)

    def action_reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="sessions")
    def _load(self) -> None:
        from core.sessions.base import list_sessions

        rows, notes = list_sessions()
        self.app.call_from_thread(self._show, rows, notes)

    def _show(self, rows: list[SessionInfo], notes: list[str]) -> None:
        self._rows, self._notes = rows, notes
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        """The rows, each one line as wide as the table: a wider one is cut in its free text
        (a long session name), never in the run id."""
        table = self.query_one(DataTable)
        keep = table.cursor_row
        cells = [_cells(row) for row in self._rows]
        room = table.size.width - 2 * table.cell_padding * len(COLUMNS)
        if len(cells) >= table.size.height:  # a row each, under the header: it scrolls
            room -= table.styles.scrollbar_size_vertical
        widths, fitted = fit_table(COLUMNS, cells, room, CUTTABLE)
        self._widths = widths
        table.clear(columns=True)  # a column only ever widens to its cells: set each again
        for header, width in zip(COLUMNS, widths, strict=True):
            table.add_column(header, width=width)
        for row in fitted:
            shown = [escape(text) for text in row]
            if shown[STATE] == "attached":
                shown[STATE] = "[green]attached[/]"
            table.add_row(*shown)
        if cells:
            table.move_cursor(row=min(keep, len(cells) - 1))
        self._update_note()

    def on_data_table_row_highlighted(self) -> None:
        self._update_note()

    def _update_note(self) -> None:
        """Under the table: the selected row's name (and socket) whole when its cell cut it,
        since cut names often look alike (``sess-4…`` for sess-40 to sess-49); then the count
        or what the listing could not say."""
        note = " · ".join(self._notes) if self._notes else counted(len(self._rows), "session")
        row = self._selected()
        if row is not None and self._cut(row):
            where = f" (socket {row.server})" if row.server else ""
            note = clean(f"{row.name}{where}") + f" · {note}"
        self.query_one("#sessions-note", Static).update(f"[dim]{escape(note)}[/]")

    def _cut(self, row: SessionInfo) -> bool:
        """Whether the table shows the row's session name or socket cut."""
        cells = _cells(row)
        return any(cell_len(cells[i]) > self._widths[i] for i in CUTTABLE)

    def _selected(self) -> SessionInfo | None:
        row = self.query_one(DataTable).cursor_row
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def action_attach(self) -> None:
        row = self._selected()
        if row is None:
            self.notify("no session selected", severity="warning")
            return
        # a screen session's socket is a file in its SCREENDIR, not a tmux server
        server = row.socket if row.backend == "tmux" else None
        self.app.attach(row.backend, row.name, server)  # type: ignore[attr-defined]
        self.action_reload()


def _cells(row: SessionInfo) -> list[str]:
    """A session's row as plain text, a cell per ``COLUMNS`` (any user's session name: no
    escapes; markup is escaped once it is cut)."""
    created = time.strftime("%m-%d %H:%M", time.localtime(row.created)) if row.created else ""
    texts = [row.backend, row.server, row.name, row.state, str(row.pid or ""), created]
    return [clean(text) for text in texts] + [clean(row.run_id or "")]
