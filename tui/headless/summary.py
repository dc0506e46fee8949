"""The end of the headless reporter's output: what a reader of a CI log looks at first.

A table of the steps (every step of a small run; of a large one the failures, the blocked and
the slowest), each root failure with the tail of its log, what the failures blocked, and one
final line (``run failed: 1 failed, 2 blocked, 3 succeeded in 4.2s``). The words for counts,
attempts and reasons are here too: the event lines and the live view use them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from core.state import FAILURES, RunState, RunStatus, Status, StepState
from core.steplog import read_tail
from core.text import clean
from tui.cells import cell_len
from tui.format import (
    cause,
    display_path,
    format_bytes,
    format_duration,
    service_note,
    signal_name,
    status_word,
    timed_out_words,
    worth_saying,
)
from tui.headless.echo import StepView
from tui.headless.table import Cell, Table
from tui.headless.terminal import Printer

if TYPE_CHECKING:
    from core.rundir import RunDir

#: Lines of a root failure's log shown in the summary, and the bytes read to find them.
TAIL_LINES = 10
TAIL_BYTES = 64 * 1024
SUMMARY_ALL_UP_TO = 40  # steps listed one by one in the summary table
SUMMARY_SLOWEST = 10
BLOCKED_NAMED = 20  # steps a "blocked by" line of the summary names, the rest counted
SUMMARY_NAME_MIN, SUMMARY_NOTE_MIN = 20, 12  # a narrow screen cuts them no narrower
_COLUMNS = (
    ("step", "left"),
    ("status", "left"),
    ("duration", "right"),
    ("attempts", "right"),
    ("exit", "right"),
    ("peak cpu", "right"),
    ("peak rss", "right"),
    ("note", "left"),
)
_OPTIONAL = ("peak cpu", "peak rss")  # left out when the screen is too narrow
_GAP = 2  # columns between two cells of the summary table
_QUIET = frozenset({Status.SUCCEEDED, Status.SKIPPED})  # what a large run's summary need not list
# failures first, then what they kept from running
_LOUD_ORDER = {
    Status.FAILED: 0,
    Status.TIMED_OUT: 0,
    "allowed": 1,
    Status.CANCELLED: 2,
    Status.BLOCKED: 3,
    Status.STOPPED: 4,
}
# (status, label) in the order the final line lists them
_COUNT_ORDER = (
    (Status.FAILED, "failed"),
    ("allowed", "failed (allowed)"),
    (Status.TIMED_OUT, "timed out"),
    (Status.BLOCKED, "blocked"),
    (Status.CANCELLED, "cancelled"),
    (Status.STOPPED, "stopped"),
    (Status.SKIPPED, "skipped"),
    (Status.SUCCEEDED, "succeeded"),
    (Status.READY, "ready"),
    (Status.RUNNING, "running"),
    (Status.PENDING, "pending"),
)


# -- words --------------------------------------------------------------------------------------
def counts(steps: Iterable[StepState]) -> str:
    """``1 failed, 2 blocked, 3 succeeded``: how many steps are in each status."""
    found: dict[str, int] = {}
    for step in steps:
        key = "allowed" if step.allowed else step.status
        found[key] = found.get(key, 0) + 1
    known = {key for key, _ in _COUNT_ORDER}
    parts = [f"{found[key]} {label}" for key, label in _COUNT_ORDER if found.get(key)]
    parts += [f"{n} {key}" for key, n in found.items() if key not in known]
    return ", ".join(parts) or "no steps"


def tries(state: StepState) -> int:
    """How many attempts the step may make (its retries, plus one)."""
    return state.retries + 1


def attempt_note(state: StepState) -> str:
    """`` (attempt 2 of 3)`` from the second attempt on; a restarted service's starts are
    counted as restarts (`` (restart 2)``), not as attempts of its ``retries``."""
    if state.restarts:
        return f" (restart {state.restarts})"
    attempts = state.attempts - state.restarts
    if attempts <= 1:
        return ""
    return f" (attempt {attempts} of {tries(state)})"


# -- the summary ---------------------------------------------------------------------------------
class Summary:
    """Prints the summary of a run's final ``state`` through ``printer``: ``views`` names and
    colours the steps, ``run_dir`` says where their logs are; ``tty`` keeps the colours of the
    logs' tails (a terminal shows them)."""

    def __init__(
        self,
        printer: Printer,
        run_dir: RunDir,
        state: RunState,
        views: dict[str, StepView],
        *,
        tty: bool,
    ) -> None:
        self.printer = printer
        self.run_dir = run_dir
        self.state = state
        self.views = views
        self.tty = tty
        self.now = time.time()

    def show(self, name: str) -> None:
        """The table (titled with the run's ``name``), the root failures, what they blocked,
        the allowed failures, the final line."""
        p = self.printer.p
        steps = list(self.state.steps.values())
        shown, hidden = self._rows(steps)
        title = f"{name or 'run'} {p('—')} run {self.state.run_id}"
        self.printer.table(self._table(title, [self._row(step) for step in shown]))
        if hidden:
            self.printer.line((self._hidden_line(hidden), "dim"))
        for step in steps:
            if step.status in FAILURES and not step.allowed:
                self._root_failure(step)
        self._blocked(steps)
        for step in steps:
            if step.allowed:
                why = cause(step.exit_code, step.signal)
                label = self.views[step.name].label
                text = f"allowed failure: {label}{f' ({why})' if why else ''}{self._see(step)}"
                self.printer.line((text, "yellow"))
        self.printer.line(self._final_line(steps))

    def _final_line(self, steps: list[StepState]) -> tuple[str, str]:
        state = self.state
        word = {
            RunStatus.SUCCEEDED: "run succeeded",
            RunStatus.FAILED: "run failed",
            RunStatus.INTERRUPTED: "run interrupted",
        }.get(state.status, f"run {state.status or 'ended'}")
        ended = state.ended or self.now
        took = f" in {format_duration(ended - state.started)}" if state.started else ""
        style = {RunStatus.SUCCEEDED: "bold green", RunStatus.FAILED: "bold red"}.get(
            state.status, "bold yellow"
        )
        return f"{word}: {counts(steps)}{took}", style

    def _blocked(self, steps: list[StepState]) -> None:
        """``blocked by build: test, deploy``, a line per root failure."""
        by_root: dict[str, list[str]] = {}
        orphans: list[str] = []
        for step in steps:
            if step.status != Status.BLOCKED:
                continue
            label = self.views[step.name].label
            if not step.blocked_by:
                orphans.append(label)
            for root in step.blocked_by:
                by_root.setdefault(clean(root), []).append(label)
        for root, names in by_root.items():
            self.printer.line((f"blocked by {root}{self._listed(names)}", "yellow"))
        if orphans:
            self.printer.line((f"blocked{self._listed(orphans)}", "yellow"))

    def _listed(self, names: list[str]) -> str:
        """``: test, deploy``; past BLOCKED_NAMED names, the first of them and how many more
        (a failure early in a 2,000-step run blocked 1,990: one line of 14,000 characters,
        which the lines each blocked step got as it was blocked had said already)."""
        if len(names) <= BLOCKED_NAMED:
            return f": {', '.join(names)}"
        where = display_path(self.run_dir.state)
        more = len(names) - BLOCKED_NAMED
        return (
            f" ({len(names):,} steps): {', '.join(names[:BLOCKED_NAMED])}"
            f" {self.printer.p('…')} and {more:,} more (every step is in {where})"
        )

    def _root_failure(self, step: StepState) -> None:
        """A step that failed on its own: why, where its log is, and the log's last lines."""
        view = self.views[step.name]
        why = cause(step.exit_code, step.signal)
        if step.status == Status.TIMED_OUT:
            why = timed_out_words(step, format_duration(step.elapsed(self.now)))
        said = worth_saying(step.reason, step.status, step.exit_code, step.signal)
        detail = clean(", ".join(x for x in (why, step.reason if said else None) if x))
        self.printer.line(
            "root failure: ",
            (view.label, f"bold {view.colour}"),
            f"{f' ({detail})' if detail else ''}{self._see(step)}",
            style="bold red",
        )
        log = self.run_dir.log(step.name)
        lines, _, _ = read_tail(log, TAIL_LINES, TAIL_BYTES, keep_sgr=self.tty)
        if lines:
            self.printer.echo(view.label, view.colour, "\n".join(lines), indent="  ")

    def _see(self, step: StepState) -> str:
        """Where a failed step's log is, or that it has none: a step's log is made by its
        first output, so one that printed nothing has no file to send the reader to."""
        log = self.run_dir.log(step.name)
        if os.path.exists(log):
            return f" {self.printer.p('—')} see {display_path(log)}"
        return f" {self.printer.p('—')} it printed nothing"

    def _row(self, step: StepState) -> list[Cell]:
        """One row of the table, a cell per ``_COLUMNS``."""
        icon, style = self.printer.icon("allowed" if step.allowed else step.status)
        status = status_word(step.status) + (" (allowed)" if step.allowed else "")
        exit_text = (
            str(step.exit_code)
            if step.exit_code is not None
            else signal_name(step.signal)
            if step.signal is not None
            else "-"
        )
        if step.status == Status.BLOCKED:
            note = "by " + ", ".join(step.blocked_by) if step.blocked_by else ""
        elif worth_saying(step.reason, step.status, step.exit_code, step.signal):
            note = step.reason or ""
        else:
            note = ""
        note = service_note(step, note)
        view = self.views[step.name]
        return [
            (view.label, view.colour),
            (f"{icon} {status}", style),
            (format_duration(step.elapsed(self.now)), ""),
            (str(step.attempts), ""),
            (exit_text, ""),
            (f"{step.peak_cpu:.0f}%" if step.peak_cpu is not None else "-", ""),
            (format_bytes(step.peak_rss), ""),
            (" ".join(clean(note).split()), ""),  # newlines and tabs would break the row
        ]

    def _table(self, title: str, rows: list[list[Cell]]) -> Table:
        """The table, each row one line wide as the screen: the note is cut first (with an
        ellipsis: the whole of it is in state.json), then a long step name down to
        ``SUMMARY_NAME_MIN``; on a narrow screen the peak cpu and rss columns go. Off a
        terminal (no width) every cell is whole."""
        width = self.printer.width
        if width is None:
            limits: list[int | None] = [None] * len(_COLUMNS)
            return Table(title, [h for h, _ in _COLUMNS], [j for _, j in _COLUMNS], limits, rows)
        natural = [
            max([len(header), *(cell_len(row[i][0]) for row in rows)])
            for i, (header, _) in enumerate(_COLUMNS)
        ]
        for drop in ((), _OPTIONAL):
            keep = [i for i, (header, _) in enumerate(_COLUMNS) if header not in drop]
            room = width - sum(natural[i] for i in keep[1:-1]) - _GAP * (len(keep) - 1)
            name = min(natural[0], max(SUMMARY_NAME_MIN, room - SUMMARY_NOTE_MIN))
            if room - name >= SUMMARY_NOTE_MIN:
                break
        limits = {0: name, len(natural) - 1: max(room - name, 1)}
        return Table(
            title=title,
            headers=[_COLUMNS[i][0] for i in keep],
            justify=[_COLUMNS[i][1] for i in keep],
            limits=[limits.get(i) for i in keep],
            rows=[[row[i] for i in keep] for row in rows],
        )

    def _rows(self, everything: list[StepState]) -> tuple[list[StepState], list[StepState]]:
        """Every step of a small run, in recipe order; of a large one, what needs reading
        (failures first), then the slowest (slowest first); also the steps left out.

        A table of a thousand steps is unreadable and costs seconds to lay out; the
        failures, the blocked, the cancelled and the slowest steps are what a summary is for.
        """
        if len(everything) <= SUMMARY_ALL_UP_TO:
            return everything, []
        now = self.now
        loud = [s for s in everything if s.status not in _QUIET or s.allowed]
        loud.sort(key=lambda s: _LOUD_ORDER.get("allowed" if s.allowed else s.status, 99))
        timed = [  # ran (instant no-op steps too: started == ended is a time of 0)
            s
            for s in everything
            if s.status in _QUIET and not s.allowed and s.elapsed(now) is not None
        ]
        timed.sort(key=lambda s: s.elapsed(now) or 0.0, reverse=True)
        shown = loud[:SUMMARY_ALL_UP_TO] + timed[:SUMMARY_SLOWEST]
        kept = {id(s) for s in shown}
        return shown, [s for s in everything if id(s) not in kept]

    def _hidden_line(self, hidden: list[StepState]) -> str:
        where = display_path(self.run_dir.state)
        if all(s.status in _QUIET and not s.allowed for s in hidden):
            what = "that succeeded or were skipped, none slower than those listed"
        else:
            what = f"({counts(hidden)})"
        return (
            f"{self.printer.p('…')} and {len(hidden)} more steps {what} (every step is in {where})"
        )
