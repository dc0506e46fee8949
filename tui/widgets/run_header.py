"""One line at the top: the recipe, the run's state, step counts and the elapsed time.

The time comes from the injected clock, so snapshot tests are not at the mercy of the wall.
The app calls ``show`` on every tick: the line is repainted only when its text changed, and
never re-laid out (``Static.update`` would reflow the whole screen, 15 times a second).
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from core.state import Status
from tui.format import ALLOWED, RESTARTING, format_duration, status_icon, status_style

#: Statuses that count as done, and those counted one by one beside the total: every step
#: is in one or the other but for the pending ones (a step stopped with `k` or cut short by
#: the run's stop is cancelled, and was in neither: "0/2 ⏱1" for a run of two steps).
DONE = (Status.SUCCEEDED, Status.SKIPPED, Status.STOPPED)
COUNTED = (
    Status.RUNNING,
    Status.READY,
    Status.FAILED,
    Status.TIMED_OUT,
    Status.BLOCKED,
    Status.CANCELLED,
    ALLOWED,  # a continue_on_error failure: a yellow ⚠, not one that fails the run
    RESTARTING,  # a service waiting out its restart delay (↻), neither up nor pending
)
RUN_STYLE = {
    "running": "bold yellow",
    "waiting": "bold red",
    "done": "bold green",
    "succeeded": "bold green",
    "failed": "bold red",
    "interrupted": "bold magenta",
    "stopping": "bold magenta",
}


#: the app's name, first on the line
BADGE = " orch-tui "


class RunHeader(Widget):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._recipe = ""
        self._rest = Text()  # the run's state and counts: after the recipe's name

    def render(self) -> Text:
        """The line at this width: a recipe name too long for it is cut (…), never the run's
        state after it."""
        name = Text(f" {self._recipe} ", style="bold")
        room = self.size.width - len(BADGE) - self._rest.cell_len
        if room < name.cell_len:  # counts alone as wide as the line: the name is "…"
            name.truncate(max(room - 1, 2), overflow="ellipsis")
            name.append(" ", style="bold")
        return Text.assemble((BADGE, "bold reverse"), name, self._rest)

    def show(
        self,
        *,
        recipe: str,
        run_state: str,
        hint: str = "",
        counts: dict[str, int],
        total: int,
        elapsed: float,
        note: str = "",
    ) -> None:
        """``hint``: beside the state, what may be done about it ("r retries"); ``note``: said
        last, dim (a past run's "exit 1 · read-only")."""
        text = Text("· ")
        text.append(run_state, style=RUN_STYLE.get(run_state, ""))
        if hint:
            text.append(f" · {hint}")
        done = sum(counts.get(s, 0) for s in DONE)
        text.append(f" · {done}/{total}", style="dim")
        for status in COUNTED:
            if counts.get(status):
                text.append(f" {status_icon(status)}{counts[status]}", status_style(status))
        text.append(f" · {format_duration(elapsed)}", style="dim")
        if note:
            text.append(f" · {note}", style="dim")
        if (recipe, text) != (self._recipe, self._rest):
            self._recipe, self._rest = recipe, text
            self.refresh()
