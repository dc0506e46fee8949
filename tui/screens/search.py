"""A one-line prompt for searching a log pane (``/``)."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Input


class SearchPrompt(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, initial: str = "") -> None:
        super().__init__()
        self.initial = initial
        self._input = Input(
            value=initial,
            placeholder="search the log (Enter to find, Escape to cancel)",
            id="search-input",
        )
        self._ahead = False  # a key was typed ahead (type_ahead)

    def compose(self) -> ComposeResult:
        yield self._input

    def type_ahead(self, event: events.Key) -> bool:
        """A key typed right behind ``/`` (in one burst, or while the app was busy) went to the
        pane that had the focus, queued there before the prompt opened, and was lost (``/beta``
        in one burst: an empty prompt). The app hands it here as it comes back from that pane:
        a character is typed in (replacing the text the prompt opened with, as the first key
        typed does), Enter before the prompt has the focus searches. Whether it was taken."""
        prompt = self._input
        if event.is_printable and event.character:
            prompt.select_on_focus = False  # what was typed ahead stays as it gets the focus
            text = (prompt.value if self._ahead else "") + event.character
            self._ahead = True
            prompt.value = text
            prompt.cursor_position = len(text)
            return True
        if event.key == "enter" and self.focused is not prompt:
            self.dismiss(prompt.value)
            return True
        return False

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
