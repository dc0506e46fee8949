"""Quitting while steps run asks first: y stops them and quits, n or Escape goes back."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class ConfirmQuit(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes, stop and quit"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel", show=False),
    ]

    def __init__(self, running: list[str]) -> None:
        super().__init__()
        self.running = running

    def compose(self) -> ComposeResult:
        names = ", ".join(self.running[:6]) + (" …" if len(self.running) > 6 else "")
        with Vertical(id="quit-box"):
            yield Static("[b]Quit orch-tui?[/]")
            yield Static(
                f"{len(self.running)} step(s) still running: {names}\n"
                "They will be stopped (SIGTERM, grace, SIGKILL). Sessions stay.\n\n"
                "[b]y[/] stop them and quit    [b]n[/] / Escape keep running"
            )

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
