"""Quitting while steps run asks first: d detaches (the run goes on without the app), y stops
the run and quits, n or Escape goes back. Detaching is offered only when the run is in a process
of its own (a run daemon): an in-process run ends with the app."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.format import counted
from tui.widgets.keys_footer import KeysFooter

#: cells a step's name may take in the list of running steps: a long first name left no room
#: for the others on the line ("2 steps still running: unit_tests_with_a_rather_long_na…")
NAME_CELLS = 20


def _short(name: str) -> str:
    text = Text(name)
    text.truncate(NAME_CELLS, overflow="ellipsis")
    return text.plain


class ConfirmQuit(ModalScreen[str | None]):
    """Dismissed with "detach", "stop", or None (cancel)."""

    BINDINGS = [
        Binding("d", "answer('detach')", "Detach"),
        Binding("y", "answer('stop')", "Stop and quit"),
        # the footer shows one key per action: this one names both
        Binding("n", "answer(None)", "Cancel", key_display="n/esc"),
        Binding("escape", "answer(None)", "Cancel", show=False),
    ]

    def __init__(self, running: list[str], *, detachable: bool = False) -> None:
        super().__init__()
        self.running = running
        self.detachable = detachable

    def compose(self) -> ComposeResult:
        shown = [_short(name) for name in self.running[:6]]
        names = ", ".join(shown) + (" …" if len(self.running) > 6 else "")
        detach = "[b]d[/] detach: they go on; orch-tui attach comes back\n"
        # one answer a line, each shorter than the box (66 columns inside): none wraps
        with Vertical(id="quit-box"):
            yield Static("[b]Quit orch-tui?[/]")
            # step names as they are (no markup), on one line cut with … (app.tcss)
            yield Static(
                f"{counted(len(self.running), 'step')} still running: {names}",
                id="quit-running",
                markup=False,
            )
            yield Static(
                f"\n{detach if self.detachable else ''}"
                "[b]y[/] stop them (SIGTERM, grace, SIGKILL) and quit\n"
                "[b]n[/] keep running (Escape too)\n\n"
                "Sessions stay open either way."
            )
        yield KeysFooter()  # this dialog's keys, not those of the steps screen under it

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.detachable or parameters != ("detach",)

    def action_answer(self, answer: str | None) -> None:
        self.dismiss(answer)
