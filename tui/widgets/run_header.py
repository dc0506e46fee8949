"""One line at the top: the recipe, the run's state, step counts and the elapsed time.

The time comes from the injected clock, so snapshot tests are not at the mercy of the wall.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.status import STATUS_STYLE, format_duration, status_icon

RUN_STYLE = {
    "running": "bold yellow",
    "waiting": "bold red",
    "done": "bold green",
    "succeeded": "bold green",
    "failed": "bold red",
    "interrupted": "bold magenta",
    "stopping": "bold magenta",
}


class RunHeader(Static):
    def show(
        self,
        *,
        recipe: str,
        run_state: str,
        counts: dict[str, int],
        total: int,
        elapsed: float,
    ) -> None:
        text = Text()
        text.append(" orch-tui ", style="bold reverse")
        text.append(f" {recipe} ", style="bold")
        text.append("· ")
        text.append(run_state, style=RUN_STYLE.get(run_state, ""))
        done = sum(counts.get(s, 0) for s in ("succeeded", "skipped", "stopped"))
        text.append(f" · {done}/{total}", style="dim")
        for status in ("running", "ready", "failed", "timed_out", "blocked"):
            if counts.get(status):
                text.append(f" {status_icon(status)}{counts[status]}", STATUS_STYLE[status])
        text.append(f" · {format_duration(elapsed)}", style="dim")
        self.update(text)
