"""The headless reporter: what ``orch-tui RECIPE --no-ui`` prints.

It follows a run through its control (core.control: the run's state and events, nothing of
the runner's): the events (``handle``, called in order from one dispatcher thread) and, at the
end, the final state (``close``). It prints:

* off a terminal (CI logs, pipes): plain lines with no ANSI codes, one per event that matters
  (``12:00:02 ✓ build succeeded in 1.2s``), and every line each step wrote, prefixed by the
  step's name (``build | compiling...``: echo.py); Rich is not even imported;
* on a terminal: a Rich ``Live`` view with one line per step (status, duration, spinner,
  attempt, CPU/memory), the steps' output scrolling above it, capped per step so a step
  printing half a million lines a second does not drown the terminal (live.py).

Both end with a summary (summary.py): a table of every step, the root failures with the tail
of their logs, what they blocked, and one final line
(``run failed: 1 failed, 2 blocked, 3 succeeded in 4.2s``).
"""

from __future__ import annotations

import codecs
import os
import stat
import sys
import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from core.events import (
    Event,
    ResourcesSampled,
    RunFinished,
    RunMessage,
    RunStarted,
    StepFinished,
    StepHealth,
    StepOutput,
    StepReady,
    StepRestart,
    StepStarted,
    StepStatus,
)
from core.state import ACTIVE, Health, Status, StepState
from core.text import clean
from tui.format import (
    cause,
    counted,
    display_path,
    format_duration,
    status_word,
    timed_out_words,
    worth_saying,
)
from tui.headless.echo import Echo, StepView
from tui.headless.summary import BLOCKED_NAMED, Summary, attempt_note, tries
from tui.headless.terminal import MARKS, Printer, Terminal, stdout_timeout

if TYPE_CHECKING:
    from rich.console import RenderableType

    from core.control import RunControl
    from tui.headless.live import RichPrinter


class HeadlessReporter:
    """Prints a run's progress, its steps' output and a final summary to ``stream``.

    It subscribes to ``control``'s events itself, from the snapshot it takes as it does.

    ``tty`` (default: ``stream.isatty()``) picks the Rich live view or plain lines; ``color``
    (default: on a terminal unless ``NO_COLOR`` is set) whether ANSI colours are used at all;
    ``echo_output`` whether the steps' output is printed (never to /dev/null: a step's
    millions of lines would be read back from its log, prefixed and written for nothing; the
    log has them all). ``width`` fixes the terminal width
    (tests); ``refresh_per_second`` is the live view's refresh rate.
    """

    def __init__(
        self,
        control: RunControl,
        *,
        stream: TextIO = sys.stdout,
        tty: bool | None = None,
        color: bool | None = None,
        echo_output: bool = True,
        width: int | None = None,
        refresh_per_second: float = 8.0,
    ) -> None:
        self.control = control
        self.run_dir = control.run_dir
        if tty is None:
            try:
                tty = bool(stream.isatty())
            except (AttributeError, ValueError, OSError):
                tty = False
        self.tty = tty
        if color is None:
            color = tty and "NO_COLOR" not in os.environ
        self.color = color
        self.echo_output = echo_output and not _discards(stream)
        self.refresh_per_second = refresh_per_second
        encoding = getattr(stream, "encoding", None) or "utf-8"
        try:
            encoding = codecs.lookup(encoding).name
        except LookupError:
            encoding = "ascii"
        # the run as the events tell it (a mirror: core.state), and how each step is shown;
        # the lock guards them against the live view's refresh thread, and the first events
        # against the snapshot taken after subscribing
        self._views: dict[str, StepView] = {}
        self._lock = threading.Lock()
        with self._lock:
            control.subscribe(self.handle)
            self._run = control.snapshot()
            for name in self._run.steps:
                self._views[name] = StepView(name)
        self._name = ""
        self._system: tuple[float, float] | None = None  # cpu %, mem %
        self._finished: RunFinished | None = None
        self._said: deque[str] = deque()  # ``say``'s lines not yet printed
        self._closed = False
        self._out = Terminal(stream, encoding)
        self._rich: RichPrinter | None = None
        self._printer: Printer
        if tty:  # Rich only here: off a terminal it is never imported
            from tui.headless.live import RichPrinter

            self._printer = self._rich = RichPrinter(self._out, color=color, width=width)
        else:
            self._printer = Printer(self._out, color=color)
        self._echo = Echo(
            self.run_dir, self._printer, tty=tty, refresh_per_second=refresh_per_second
        )

    # == events ======================================================================================
    def say(self, text: str) -> None:
        """A line of the front end's own (the stop a signal asked for), printed by the thread
        that prints the events, with the next one (the stop's first), above the live view. A
        signal handler that wrote to the terminal itself wrote under the live view, whose next
        refresh wiped that line and left rows of the view above it, a stale frame."""
        self._said.append(text)

    def _print_said(self) -> None:
        while True:
            try:
                text = self._said.popleft()
            except IndexError:  # none left (or taken by close, racing the dispatcher)
                return
            self._printer.line(text)

    def handle(self, event: Event) -> None:
        """Consume one event (from the single dispatcher thread, in order)."""
        if self._closed:
            return
        self._print_said()
        with self._lock:
            if event.seq <= self._run.seq:
                return  # in the snapshot the reporter started from
            before = self._run.steps.get(event.step) if isinstance(event, StepStatus) else None
            self._run.apply(event)
            step = getattr(event, "step", None)
            if step is not None and step not in self._views:
                self._views[step] = StepView(step)
        if isinstance(event, StepOutput):
            self._show_output(self._views[event.step], final=False, upto=event.size)
        elif isinstance(event, StepStarted):
            self._on_started(event)
        elif isinstance(event, StepFinished):
            self._on_finished(event)
        elif isinstance(event, StepStatus):
            self._on_status(event, before)
        elif isinstance(event, StepRestart):
            text = f"{event.reason}: restarting in {format_duration(event.delay)}"
            self._event_line(event.ts, "retry", self._views[event.step], text)
        elif isinstance(event, StepHealth):
            detail = (
                f": {event.detail}" if event.detail and event.health == Health.UNHEALTHY else ""
            )
            text = f"{event.health}{detail}"
            self._event_line(event.ts, event.health, self._views[event.step], text)
        elif isinstance(event, StepReady):
            self._event_line(event.ts, Status.READY, self._views[event.step], "ready")
        elif isinstance(event, ResourcesSampled):
            with self._lock:
                self._system = (event.cpu_percent, event.mem_percent)
                for name, figures in event.steps.items():
                    view = self._views.get(name)
                    if view is not None:
                        view.cpu = figures.get("cpu")  # type: ignore[assignment]
                        view.rss = figures.get("rss")  # type: ignore[assignment]
        elif isinstance(event, RunMessage):
            icon = event.level if event.level in MARKS else "info"
            where = f"{event.step}: " if event.step else ""
            self._event_line(event.ts, icon, None, f"{event.level}: {where}{event.text}")
        elif isinstance(event, RunStarted):
            self._on_run_started(event)
        elif isinstance(event, RunFinished):
            self._finished = event

    def _on_run_started(self, event: RunStarted) -> None:
        with self._lock:
            # the recipe's name, as the summary says it; else its file's
            stem = clean(Path(event.recipe).stem) if event.recipe else ""
            self._name = clean(event.state.name) or stem
            for name in event.state.steps:
                if name not in self._views:
                    self._views[name] = StepView(name)
        logs = display_path(self.run_dir.logs)
        count = len(event.state.steps)
        self._event_line(
            event.ts,
            "run",
            None,
            f"run {event.run_id} of {event.recipe}: {counted(count, 'step')}, logs in {logs}",
        )
        if self._rich is not None:
            self._rich.start_live(self._render_live, self.refresh_per_second)

    def _on_started(self, event: StepStarted) -> None:
        view = self._views[event.step]
        with self._lock:
            view.spinner = None  # the live view starts a new one
        note = attempt_note(event.state)
        self._event_line(event.ts, Status.RUNNING, view, "started" + note)

    def _on_finished(self, event: StepFinished) -> None:
        view, state = self._views[event.step], event.state
        # its output before the line that says it ended, and no further: a retry's next
        # attempt may already be writing, and its lines must not come before that line
        self._show_output(view, final=True, upto=event.log_size)
        if event.log_lost:  # the echo reads the log: say where it stops short, not be silent
            self._echo.lost_notice(view, event.log_lost)
        with self._lock:
            view.spinner = None
            view.cpu = view.rss = None
        if event.will_restart:
            return  # the step_restart that follows says why and when
        took = format_duration(event.duration)
        why = cause(event.exit_code, event.signal)
        said = worth_saying(event.reason, event.status, event.exit_code, event.signal)
        reason = f" {self._printer.p('—')} {event.reason}" if said else ""
        if event.will_retry:
            nxt = event.attempt + 1
            text = f"{status_word(event.status)}, retrying (attempt {nxt} of {tries(state)})"
            detail = f"{why}, after {took}" if why else f"after {took}"
            dash = self._printer.p("—")
            self._event_line(event.ts, "retry", view, f"{text} {dash} {detail}{reason}")
            return
        if event.status == Status.SUCCEEDED:
            text = f"succeeded in {took}" + attempt_note(state)
        elif event.status == Status.TIMED_OUT:
            text = timed_out_words(state, took)
        elif event.status == Status.FAILED:
            text = f"failed{f' ({why})' if why else ''} in {took}"
        elif event.status == Status.STOPPED:
            text = f"stopped after {took}"
        else:
            text = f"{status_word(event.status)} after {took}"
        icon = "allowed" if state.allowed else event.status
        if state.allowed:
            text += " (continue_on_error)"
        self._event_line(event.ts, icon, view, text + reason)

    def _on_status(self, event: StepStatus, before: StepState | None) -> None:
        view, state = self._views[event.step], event.state
        if event.status != Status.RUNNING:
            with self._lock:
                view.spinner = None
        if event.status == Status.BLOCKED:
            if before is not None and before.status == Status.BLOCKED:
                return  # said already: only what blocks it grew (the summary names it all)
            if state.blocked_by:
                text = "blocked by " + _names(state.blocked_by)
            elif event.reason and event.reason.startswith("blocked"):
                text = event.reason
            else:
                text = "blocked" + (f" ({event.reason})" if event.reason else "")
        elif event.status == Status.PENDING:
            return  # waiting again (a retry or an un-blocked step): not worth a line
        elif event.status in ACTIVE:
            return  # StepStarted / StepReady say these
        elif (
            before is not None
            and before.status == event.status == Status.SKIPPED
            and (before.blocked_by != state.blocked_by)
        ):
            return  # a skipped step's roots changed (what holds up its dependents): no news
        else:
            text = word = status_word(event.status)
            if event.reason and event.reason.startswith(word):  # "skipped by user"
                text = event.reason
            elif event.reason:
                text = f"{word} ({event.reason})"
        self._event_line(event.ts, event.status, view, text)

    def _event_line(self, ts: float, key: str, view: StepView | None, text: str) -> None:
        who = (view.label, view.colour) if view is not None else None
        self._printer.event_line(ts, key, who, text)

    def _show_output(self, view: StepView, *, final: bool, upto: int | None = None) -> None:
        if self.echo_output:
            self._echo.echo(view, final=final, upto=upto)

    def _render_live(self) -> RenderableType:
        """What the live view's refresh thread draws (never an exception: it would end it)."""
        from rich.text import Text

        from tui.headless.live import LiveFigures, live_view

        assert self._rich is not None
        try:
            with self._lock:
                ended = self._finished.ts if self._finished is not None else None
                figures = LiveFigures(self._name, self._system, ended)
                return live_view(self._rich, self._run, self._views, figures)
        except Exception as exc:
            return Text(f"(live view error: {exc})", style="dim")

    # == the end =====================================================================================
    @property
    def output_error(self) -> OSError | None:
        """Why writing to the stream failed (its output stopped there), or None."""
        return self._out.error

    def close(self, *, patience: float | None = None) -> bool:
        """Stop the live view, print what output is left, then the summary of the run's state
        (once it is over: the final one), and wait for the terminal to take it: once it has
        taken nothing for ``patience`` seconds (default ``STDOUT_TIMEOUT``, or
        ``ORCH_STDOUT_TIMEOUT``), what is left is given up and False returned. The run's files
        are complete whatever the terminal does."""
        if self._closed:
            return True
        self._closed = True
        state = self.control.snapshot()
        with self._lock:
            self._run = state
            for name in state.steps:
                if name not in self._views:
                    self._views[name] = StepView(name)
                self._views[name].spinner = None
            self._name = clean(state.name) or self._name
        self._print_said()
        for view in list(self._views.values()):
            if self.echo_output and self._echo.left(view):
                self._show_output(view, final=True)
        if self._rich is not None:
            self._rich.stop_live()
        Summary(self._printer, self.run_dir, state, self._views, tty=self.tty).show(self._name)
        return self._out.drain(stdout_timeout() if patience is None else patience)


def _discards(stream: TextIO) -> bool:
    """Whether ``stream`` is /dev/null (``> /dev/null``): the same character device."""
    try:
        info = os.fstat(stream.fileno())
        null = os.stat(os.devnull)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return False
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == null.st_rdev


def _names(names: list[str]) -> str:
    """``a, b, c``; past BLOCKED_NAMED (as the summary), the first ones and how many more: a
    step blocked by a Ctrl-C in a 2,000-step run named every step cut short, 100 and more."""
    if len(names) <= BLOCKED_NAMED:
        return ", ".join(names)
    return f"{', '.join(names[:BLOCKED_NAMED])} and {len(names) - BLOCKED_NAMED} more"
