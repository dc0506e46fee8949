"""The prompt of ``g``: go to a step by a part of its name.

Each change of the text selects the first step whose name contains it (ignoring case), from the
step selected when the prompt opened, around the tree: the tree and the log follow as the user
types, above the prompt. ↓ ↑ go to the next / previous match, around; Enter keeps the step,
Escape goes back to the one selected before. With no match nothing moves, the prompt's border
says so, and Enter says so in a notice too. Opened again, the prompt holds the last text kept:
Enter then goes on to its next match (``g`` Enter, ``g`` Enter... walks through them).

One substring test per step name per change of the text (``StepTree.find_steps``), nothing
drawn for it: at 10,000 steps a few ms. The prompt reads the tree only (the app's mirror of the
run), never the run: it works as well on a run attached over its daemon.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Input

from tui.widgets.step_tree import StepTree

PLACEHOLDER = "a part of a step's name: ↓ ↑ other matches, Enter keeps, Escape goes back"


class GotoPrompt(ModalScreen[str | None]):
    """Dismissed with the text kept (Enter), or None (Escape: the selection is as before)."""

    DEFAULT_CSS = """
    GotoPrompt {
        align: center bottom;
        background: transparent;  /* the tree and the log stay readable: they follow the text */
    }
    GotoPrompt > #goto-input {
        width: 100%;
        dock: bottom;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
    }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Back"),
        Binding("down", "next", "Next match"),
        Binding("up", "previous", "Previous match"),
    ]

    def __init__(self, tree: StepTree, initial: str = "") -> None:
        super().__init__()
        self._steps = tree
        self.initial = initial
        self._origin = tree.cursor_node  # Escape comes back to it (a session's row too)
        place = tree.selected_place
        self._start = 0 if place is None else place  # the search goes on from here
        self._text = initial
        self._matches = tree.find_steps(initial)
        self._typed = False  # the text is still the one it opened with
        self._input = Input(value=initial, placeholder=PLACEHOLDER, id="goto-input")
        self._input.border_title = "go to step"
        count = len(self._matches)
        if count:
            self._say(f"{count:,} {'match' if count == 1 else 'matches'} · Enter: the next one")
        elif initial:  # kept from a search that found nothing
            self._say_none()

    def compose(self) -> ComposeResult:
        yield self._input

    def type_ahead(self, event: events.Key) -> bool:
        """A key typed right behind ``g`` (in one burst, or while the app was busy) went to
        the pane that had the focus, queued there before the prompt opened, and was lost
        (``gdeploy`` in one burst: an empty prompt). The app hands such a key here as it comes
        back from that pane: a character is typed into the prompt, after those typed before
        it (replacing the text the prompt opened with, as the first key typed does), Enter
        before the prompt has the focus keeps the step. Whether it was taken."""
        prompt = self._input
        if event.is_printable and event.character:
            prompt.select_on_focus = False  # what was typed ahead stays as it gets the focus
            text = (self._text if self._typed else "") + event.character
            prompt.value = text
            prompt.cursor_position = len(text)
            self._changed(text)
            return True
        if event.key == "enter" and self.focused is not prompt:
            self._submit()
            return True
        return False

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if event.value == self._text and (self._typed or event.value == self.initial):
            return  # the text it opened with (Input says so as it mounts), or typed ahead
        self._changed(event.value)

    def _changed(self, text: str) -> None:
        """Each change of the text: the first match from where the prompt opened."""
        self._typed = True
        self._text = text
        self._matches = self._steps.find_steps(self._text)
        if not self._text:
            self._back()
            self._say("")
        elif self._matches:
            at = bisect_left(self._matches, self._start) % len(self._matches)
            self._go(at)
        else:
            self._say_none()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def _submit(self) -> None:
        if not self._text:
            self._back()
            self.dismiss(None)
            return
        if not self._matches:
            self._back()
            self.notify(self._none(), severity="warning", markup=False)
        elif not self._typed:  # Enter on the text it opened with: the next match
            self.action_next()
        self.dismiss(self._text)

    def action_next(self) -> None:
        self._step(1)

    def action_previous(self) -> None:
        self._step(-1)

    def action_cancel(self) -> None:
        self._back()
        self.dismiss(None)

    def _step(self, direction: int) -> None:
        """The next (1) or previous (-1) match from the selected step, around the tree."""
        matches = self._matches
        if not matches:
            if self._text:
                self._say_none()
            return
        here = self._steps.selected_place
        if here is None:  # a session's row (after the steps): the first or the last match
            at = 0 if direction > 0 else -1
        elif direction > 0:
            at = bisect_right(matches, here)
        else:
            at = bisect_left(matches, here) - 1
        self._go(at % len(matches))

    def _go(self, at: int) -> None:
        self._steps.select_place(self._matches[at])
        self._say(f"{at + 1:,}/{len(self._matches):,}")

    def _back(self) -> None:
        if self._origin is not None and self._steps.cursor_node is not self._origin:
            self._steps.move_cursor(self._origin)

    def _none(self) -> str:
        return f"no step name contains {self._text!r}"

    def _say_none(self) -> None:
        self._say(Text(self._none(), style="bold red"))

    def _say(self, text: str | Text) -> None:
        self._input.border_subtitle = text
