"""The headless reporter on a terminal: Rich's console, its live view of the steps, colour.

Only a terminal gets this module (and Rich): ``RichPrinter`` prints the same lines as
``terminal.Printer`` with Rich's styles, the steps' own colours (their SGR codes, kept by
``core.text.clean(keep_sgr=True)``, read by Rich's ``AnsiDecoder``) and the summary table drawn
by Rich; ``live_view`` is what the ``Live`` view redraws: a header and one line per step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich import box
from rich.ansi import AnsiDecoder
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table as RichTable
from rich.text import Text

from core.state import ACTIVE, FAILURES, RunState, Status, StepState
from core.text import clean
from tui.format import cause, format_bytes, format_duration
from tui.headless.echo import StepView
from tui.headless.summary import counts, tries
from tui.headless.table import Table
from tui.headless.terminal import BACKLOG_LIMIT, Piece, Printer, Terminal

#: An echoed line is cut to this many characters (the log keeps all of it).
TTY_MAX_LINE = 2000
#: seconds the end of the live view waits for its refresh thread's last print (a terminal that
#: takes nothing does not hold the run's end longer: the out's backlog drops what is left)
STOP_PATIENCE = 5.0
#: the cells the live view's header keeps for the recipe's name, however narrow the terminal
MIN_NAME = 8
#: what the live view counts as done
_DONE = frozenset({Status.SUCCEEDED, Status.SKIPPED, Status.STOPPED, Status.READY})
#: which steps the live view keeps when it cannot show them all (lowest first)
_LIVE_RANK = {
    Status.RUNNING: 0,
    Status.READY: 0,
    Status.FAILED: 1,
    Status.TIMED_OUT: 1,
    Status.BLOCKED: 2,
    Status.CANCELLED: 2,
}


class RichPrinter(Printer):
    """The reporter's lines on a terminal, through a Rich console writing to ``out``; with
    ``start_live`` the live view stays below them."""

    def __init__(self, out: Terminal, *, color: bool, width: int | None) -> None:
        super().__init__(out, color=color)
        self.console = Console(
            file=out,  # type: ignore[arg-type]  # file-like: write, flush, isatty
            force_terminal=True,
            no_color=not color,
            width=width,
            highlight=False,
            markup=False,
            emoji=False,
            legacy_windows=False,
        )
        self._decoder = AnsiDecoder()
        self._live: Live | None = None
        self._refresher: threading.Event | None = None  # set: the live view's refresh ends
        #: what was printed while the live view is up, printed above it at its next redraw
        self._pending: list[RenderableType] = []
        self._pending_lock = threading.Lock()
        #: held from taking the pending lines to their print, and around a redraw: a batch
        #: the refresh thread is printing is never overtaken by a later line or the summary
        self._print_lock = threading.Lock()
        self._refresh_thread: threading.Thread | None = None

    @property
    def width(self) -> int:  # type: ignore[override]  # the terminal's: rows fit it
        return self.console.width

    def print(self, renderable: RenderableType) -> None:
        """Print above the live view, if it is up: at its next redraw, with what else came
        meanwhile. Each print under a live view draws the view again below it (Rich's render
        hook): a 2,000-step run, three lines a step, spent 30 s drawing it, 13 times as long
        as the same run into a pipe."""
        if self.out.broken:
            return
        if self._live is not None:
            with self._pending_lock:
                self._pending.append(renderable)
            return
        with self._print_lock:
            self.console.print(renderable, soft_wrap=False, crop=False)

    def _flush(self) -> None:
        """What was printed since the live view's last redraw, in one print."""
        with self._print_lock:
            with self._pending_lock:
                pending, self._pending = self._pending, []
            if pending and not self.out.broken:
                self.console.print(Group(*pending), soft_wrap=False, crop=False)

    def line(self, *pieces: Piece, style: str = "") -> None:
        self.print(Text.assemble(*pieces, style=style))

    def echo(self, label: str, colour: str, text: str, *, indent: str = "") -> None:
        """Lines a step wrote, in its own colours, each after ``label | `` and cut to
        ``TTY_MAX_LINE`` characters."""
        prefix = (f"{indent}{label} | ", colour)
        lines = []
        for raw in text.split("\n"):
            line = self._decoder.decode_line(raw)
            if len(line) > TTY_MAX_LINE:
                line.truncate(TTY_MAX_LINE)
                line.append(self.p("…"))
            lines.append(Text.assemble(prefix, line))
        self.print(Text("\n").join(lines))

    def event_line(self, ts: float, key: str, who: tuple[str, str] | None, text: str) -> None:
        clock = time.strftime("%H:%M:%S", time.localtime(ts))
        icon, style = self.icon(key)
        line = Text.assemble((clock, "dim"), " ", (icon, style), " ")
        if who is not None:
            label, colour = who
            line.append(label, style=f"bold {colour}")
            line.append(" ")
        line.append(clean(text))
        self.print(line)

    def table(self, table: Table) -> None:
        rich = RichTable(
            title=table.title,
            box=box.SIMPLE_HEAD,
            title_justify="left",
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,  # two columns between cells
        )
        for header, justify, limit in zip(table.headers, table.justify, table.limits, strict=True):
            rich.add_column(header, justify=justify, max_width=limit)  # type: ignore[arg-type]
        for row in table.rows:
            rich.add_row(
                *(Text(text, style=style, no_wrap=True, overflow="ellipsis") for text, style in row)
            )
        self.print(rich)

    # -- the live view -------------------------------------------------------------------------
    def start_live(self, render: Callable[[], RenderableType], refresh_per_second: float) -> None:
        """Keep ``render``'s view below the lines, redrawn ``refresh_per_second`` times a
        second (a terminal that cannot do live updates just gets the lines)."""
        if self._live is not None:
            return
        live = Live(
            console=self.console,
            get_renderable=render,
            transient=False,
            auto_refresh=False,  # _refresh does it, and skips a terminal that is behind
            redirect_stdout=False,  # the runner routes sys.stdout to the steps' logs
            redirect_stderr=False,
        )
        try:
            live.start()
        except Exception:
            return
        self._live, self._refresher = live, threading.Event()
        self._refresh_thread = threading.Thread(
            target=self._refresh,
            args=(live, self._refresher, refresh_per_second),
            name="orch-live",
            daemon=True,
        )
        self._refresh_thread.start()

    def _refresh(self, live: Live, stop: threading.Event, per_second: float) -> None:
        """Redraw the live view, but not while the terminal is behind: redraws queued for a
        terminal that takes nothing would pile up without bound, and the next one shows the
        same, newer."""
        while not stop.wait(1 / per_second):
            self._flush()  # the lines are kept, however far behind the terminal is
            if self.out.backlog < BACKLOG_LIMIT:
                with self._print_lock:
                    if not stop.is_set():  # not after the view stopped
                        live.refresh()

    def stop_live(self) -> None:
        if self._refresher is not None:
            self._refresher.set()
        if self._refresh_thread is not None:  # its batch printed before what follows
            self._refresh_thread.join(STOP_PATIENCE)
            self._refresh_thread = None
        if self._live is not None:
            self._flush()  # above the view's last frame
            try:
                self._live.stop()
            except Exception:
                pass
            self._live = None
            self._flush()  # printed as it stopped


@dataclass
class LiveFigures:
    """What the live view shows of the run besides its state: the run's name, the machine's
    cpu and memory use, when the run finished."""

    name: str
    system: tuple[float, float] | None  # cpu %, mem %
    finished: float | None


def live_view(
    printer: RichPrinter, run: RunState, views: dict[str, StepView], figures: LiveFigures
) -> RenderableType:
    """A header line (the run, how many steps are done or failed, for how long), then a line
    per step (status, name, spinner, duration, notes): no taller than the screen, keeping the
    running and failed steps when it cannot show them all."""
    p = printer.p
    now = time.time()
    steps = list(run.steps.values())
    header = _header(p, run, steps, figures, now, printer.console.size.width)
    limit = max(3, printer.console.size.height - 3)
    shown, rest = steps, []
    if len(steps) > limit:
        keep = sorted(steps, key=lambda s: (_LIVE_RANK.get(s.status, 3), s.index))
        keep_names = {s.name for s in keep[: limit - 1]}
        shown = [s for s in steps if s.name in keep_names]
        rest = [s for s in steps if s.name not in keep_names]

    table = RichTable.grid(padding=(0, 1))
    table.add_column(width=1)  # icon
    table.add_column(no_wrap=True, max_width=40)  # name
    table.add_column(width=1)  # spinner
    table.add_column(justify="right", no_wrap=True)  # duration
    table.add_column(no_wrap=True, overflow="ellipsis")  # notes
    for step in shown:
        view = views[step.name]
        icon, style = printer.icon("allowed" if step.allowed else step.status)
        running = step.status == Status.RUNNING
        if running and view.spinner is None:
            view.spinner = Spinner("dots", style=view.colour)
        table.add_row(
            Text(icon, style=style),
            Text(view.label, style=view.colour if running else ""),
            view.spinner if running else "",
            Text(format_duration(step.elapsed(now)) if step.started else "", style="dim"),
            _notes(step, view),
        )
    parts: list[RenderableType] = [header, table]
    if rest:
        parts.append(Text(f"{p('…')} and {len(rest)} more: {counts(rest)}", style="dim"))
    return Group(*parts)


def _header(
    p: Callable[[str], str],
    run: RunState,
    steps: list[StepState],
    figures: LiveFigures,
    now: float,
    width: int,
) -> Text:
    """``demo · <run id> · 3/5 done · 1 failed · 12s · cpu 20% mem 40%``, one row of ``width``:
    a long name is cut first (the last frame stays on the terminal: a wrapped one, two rows)."""
    done = sum(1 for s in steps if s.status in _DONE)
    failed = sum(1 for s in steps if s.status in FAILURES and not s.allowed)
    header = Text.assemble(f" {p('·')} {run.run_id} {p('·')} ", f"{done}/{len(steps)} done")
    if failed:
        header.append(f" {p('·')} ")
        header.append(f"{failed} failed", style="bold red")
    if run.started is not None:
        end = figures.finished if figures.finished is not None else now
        header.append(f" {p('·')} {format_duration(end - run.started)}")
    if figures.system is not None:
        cpu, mem = figures.system
        header.append(f" {p('·')} cpu {cpu:.0f}% mem {mem:.0f}%", style="dim")
    name = Text(figures.name or "run", style="bold")
    name.truncate(max(MIN_NAME, width - header.cell_len), overflow="ellipsis")
    return Text.assemble(name, header, no_wrap=True, overflow="ellipsis")


def _notes(step: StepState, view: StepView) -> Text:
    """``bg``, the attempt, live cpu and memory, what blocks it or why it failed; a running
    step's unfinished line (a progress bar: the echo above shows whole lines only)."""
    notes = Text(style="dim")
    if step.background:
        notes.append("ready " if step.status == Status.READY else "bg ")
    if step.attempts > 1:
        notes.append(f"attempt {step.attempts}/{tries(step)} ")
    if step.status in ACTIVE and view.cpu is not None:
        notes.append(f"cpu {view.cpu:.0f}% ")
        if view.rss is not None:
            notes.append(f"{format_bytes(view.rss)} ")
    if step.status == Status.BLOCKED and step.blocked_by:
        notes.append(clean("blocked by " + ", ".join(step.blocked_by)))
    elif step.status in FAILURES:
        notes.append(cause(step.exit_code, step.signal))
    if step.status == Status.RUNNING and view.partial:
        notes.append(view.partial, style="not dim")
    return notes
