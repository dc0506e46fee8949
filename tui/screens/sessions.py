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
from tui.format import counted
from tui.widgets.keys_footer import KeysFooter

if TYPE_CHECKING:
    from core.sessions.base import SessionInfo

REFRESH_SECONDS = 2.0


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

    def compose(self) -> ComposeResult:
        yield Static(
            "[b]Sessions[/] on this machine   [dim]a attach · Escape back[/]", id="sessions-title"
        )
        table: DataTable[str] = DataTable(
            id="sessions-table", cursor_type="row", zebra_stripes=True
        )
        table.add_columns("backend", "socket", "name", "state", "pid", "created", "run")
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
        table = self.query_one(DataTable)
        keep = table.cursor_row
        table.clear()
        self._rows = rows
        for row in rows:
            created = (
                time.strftime("%m-%d %H:%M", time.localtime(row.created)) if row.created else ""
            )
            table.add_row(
                row.backend,
                escape(clean(row.server)),
                escape(clean(row.name)),  # any user's session name: no escapes, no markup
                f"[green]{row.state}[/]" if row.state == "attached" else escape(clean(row.state)),
                str(row.pid or ""),
                created,
                escape(clean(row.run_id or "")),
            )
        if rows:
            table.move_cursor(row=min(keep, len(rows) - 1))
        note = " · ".join(notes) if notes else counted(len(rows), "session")
        self.query_one("#sessions-note", Static).update(f"[dim]{note}[/]")

    def action_attach(self) -> None:
        table = self.query_one(DataTable)
        if not self._rows or table.cursor_row >= len(self._rows):
            self.notify("no session selected", severity="warning")
            return
        row = self._rows[table.cursor_row]
        # a screen session's socket is a file in its SCREENDIR, not a tmux server
        server = row.socket if row.backend == "tmux" else None
        self.app.attach(row.backend, row.name, server)  # type: ignore[attr-defined]
        self.action_reload()
