"""The key reference (``?``): a box that scrolls (arrows, PgUp/PgDn, Home/End, the mouse) when
the terminal is too small to show it whole, e.g. at 80x24."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.widgets.keys_footer import KeysFooter

KEYS = [
    ("Steps", ""),
    ("↑ ↓ enter", "move in the step tree; the log follows the selection"),
    ("Home End", "first / last step"),
    ("f F", "next / previous failed (or timed-out) step, around the tree"),
    ("g", "go to a step by a part of its name: ↓ ↑ other matches, Enter keeps, Escape goes back"),
    ("s", "skip the selected step (pending, blocked, failed or stopped): its dependents go on"),
    (
        "r",
        "retry the selected step (failed, cancelled or succeeded); on a running service: restart",
    ),
    ("k", "stop the selected running step; again while it stops (its grace): kill it now"),
    ("a", "attach to the selected session (detach: Ctrl-a d in screen, Ctrl-b d in tmux)"),
    (
        "p",
        "pin the selected step's log beside the others; p on another step pins that one,"
        " p on the pinned step unpins",
    ),
    ("Log", ""),
    ("tab", "move focus between the tree, the logs and the ctx"),
    ("↑ PgUp", "scroll back (following pauses)"),
    ("End", "jump to the end and follow again"),
    ("/  n  N", "search the selected log, next / previous match (pauses following)"),
    ("w", "wrap the log's long lines, or cut them at its edge again"),
    ("App", ""),
    ("S", "every screen session and the sessions of each of your tmux servers (a attaches)"),
    ("c", "show or hide the ctx inspector"),
    ("ctrl+p", "command palette (every action by name)"),
    ("d", "detach: the app exits, the run goes on; orch-tui attach comes back"),
    (
        "q ctrl+q ctrl+c",
        "quit: while steps run asks: d detach, y stop the run, n cancel; sessions stay."
        " Again while the run stops (the header says stopping): kill every step now",
    ),
    ("?", "this help"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, text in KEYS:
            if not text:
                if table.row_count:
                    table.add_row("", "")
                table.add_row(Text(key, style="bold underline"), "")
            else:
                table.add_row(key, text)
        with VerticalScroll(id="help-box"):
            yield Static("[b]orch-tui keys[/]   [dim]Escape to close[/]", id="help-title")
            yield Static(table, id="help-body")
        yield KeysFooter()  # this screen's keys, not those of the steps screen under it

    def on_mount(self) -> None:
        self.query_one("#help-box").focus()  # so the scrolling keys reach it
