"""The headless reporter: what ``orch-tui RECIPE --no-ui`` prints.

It follows a run through its control (core.control: the run's state and events, nothing of
the runner's): the events (``handle``, called in order from one dispatcher thread) and, at the
end, the final state (``close``). It prints:

* off a terminal (CI logs, pipes): plain lines with no ANSI codes, one per event that matters
  (``12:00:02 ✓ build succeeded in 1.2s``), and every line each step wrote, prefixed by the
  step's name (``build | compiling...``);
* on a terminal: a Rich ``Live`` view with one line per step (status, duration, spinner,
  attempt, CPU/memory), the steps' output scrolling above it, capped per step so a step
  printing half a million lines a second does not drown the terminal.

Both end with a summary: a table of every step, the root failures with the tail of their logs,
what they blocked, and one final line (``run failed: 1 failed, 2 blocked, 3 succeeded in 4.2s``).

Output comes from the log files, not from the events: ``StepOutput`` carries only the newest
lines, so the reporter keeps a byte offset per step and reads ``logs/<step>.log`` from there,
in big chunks, with byte-level operations (no per-line Python work in plain mode).
"""

from __future__ import annotations

import codecs
import os
import select
import signal
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rich import box
from rich.ansi import AnsiDecoder
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from core.events import (
    Event,
    ResourcesSampled,
    RunFinished,
    RunMessage,
    RunStarted,
    StepFinished,
    StepOutput,
    StepReady,
    StepStarted,
    StepStatus,
)
from core.state import ACTIVE, FAILURES, RunState, RunStatus, Status, StepState
from core.text import clean

if TYPE_CHECKING:
    from core.control import RunControl

#: Bytes read from a log at a time; also bounds the memory one echo pass needs.
CHUNK = 4 * 1024 * 1024
#: An unterminated line longer than this is echoed in pieces rather than held forever.
MAX_PENDING = 1024 * 1024
#: On a terminal: at most this many output lines per step per refresh; the rest are counted.
TTY_LINES_PER_REFRESH = 200
#: On a terminal: an echoed line is cut to this many characters (the log keeps all of it).
TTY_MAX_LINE = 2000
#: Lines of a root failure's log shown in the summary.
TAIL_LINES = 10
#: Bytes waiting for the terminal past which the steps' output is skipped (and counted, and
#: said) instead of queued: a terminal that stopped reading must not grow the runner's memory.
#: A backlog past it first gets ``CATCH_UP_SECONDS`` to drain (a fast terminal is only ever a
#: block behind); once skipping, the echo resumes when half of it is left.
BACKLOG_LIMIT = 4 * 1024 * 1024
CATCH_UP_SECONDS = 0.5
#: At the end, how long a terminal may take nothing before what is left for it is given up
#: (seconds; ``ORCH_STDOUT_TIMEOUT`` overrides it): the run's files are complete by then, and
#: a reader that never reads must not keep orch-tui alive for ever.
STDOUT_TIMEOUT = 60.0

SUMMARY_ALL_UP_TO = 40  # steps listed one by one in the summary table
SUMMARY_SLOWEST = 10
SUMMARY_NAME_MIN, SUMMARY_NOTE_MIN = 20, 12  # a narrow screen cuts them no narrower
PLAIN_WIDTH = 100  # the summary's width off a terminal
_SUMMARY_COLUMNS = (
    ("step", "left"),
    ("status", "left"),
    ("duration", "right"),
    ("attempts", "right"),
    ("exit", "right"),
    ("peak cpu", "right"),
    ("peak rss", "right"),
    ("note", "left"),
)
_SUMMARY_OPTIONAL = ("peak cpu", "peak rss")  # left out when the screen is too narrow
_GAP = 2  # columns between two cells of the summary table
_QUIET = frozenset({Status.SUCCEEDED, Status.SKIPPED})  # what a large run's summary need not list
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
# failures first, then what they kept from running
_LOUD_ORDER = {
    Status.FAILED: 0,
    Status.TIMED_OUT: 0,
    "allowed": 1,
    Status.CANCELLED: 2,
    Status.BLOCKED: 3,
    Status.STOPPED: 4,
}

# status -> (symbol, ASCII fallback, style)
_ICONS: dict[str, tuple[str, str, str]] = {
    Status.PENDING: ("·", ".", "dim"),
    Status.BLOCKED: ("⊘", "-", "yellow"),
    Status.RUNNING: ("▶", ">", "cyan"),
    Status.READY: ("●", "*", "green"),
    Status.SUCCEEDED: ("✓", "+", "green"),
    Status.FAILED: ("✗", "x", "bold red"),
    Status.TIMED_OUT: ("⏱", "T", "bold red"),
    Status.SKIPPED: ("↷", "~", "dim"),
    Status.CANCELLED: ("⊗", "!", "yellow"),
    Status.STOPPED: ("■", "#", "dim"),
    "retry": ("↻", "R", "yellow"),
    "allowed": ("✗", "x", "yellow"),
    "run": ("»", ">", "bold"),
    "debug": ("·", ".", "dim"),
    "info": ("ℹ", "i", "blue"),
    "warning": ("⚠", "!", "yellow"),
    "error": ("✗", "x", "bold red"),
}
_PUNCT = {"…": "...", "—": "-", "·": "-", "→": "->"}
_STEP_COLOURS = (
    "cyan",
    "magenta",
    "blue",
    "green",
    "yellow",
    "bright_cyan",
    "bright_magenta",
    "bright_blue",
    "bright_green",
    "bright_yellow",
)
_SGR = {
    "dim": "2",
    "bold": "1",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
    "bright_green": "92",
    "bright_yellow": "93",
    "bright_blue": "94",
    "bright_magenta": "95",
    "bright_cyan": "96",
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


# -- small formatting helpers ---------------------------------------------------------------------
def format_duration(seconds: float | None) -> str:
    """``0.3s``, ``5s``, ``2m05s``, ``1h02m``; ``-`` for None."""
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 59.95:
        return f"{seconds:.1f}".rstrip("0").rstrip(".") + "s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_bytes(size: int | float | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _tries(state: StepState) -> int:
    """How many attempts the step may make (its retries, plus one)."""
    return state.retries + 1


def _stdout_timeout() -> float:
    """``STDOUT_TIMEOUT``, or the seconds ``ORCH_STDOUT_TIMEOUT`` says (if a number >= 0)."""
    try:
        seconds = float(os.environ.get("ORCH_STDOUT_TIMEOUT", ""))
    except ValueError:
        return STDOUT_TIMEOUT
    return seconds if seconds >= 0 else STDOUT_TIMEOUT


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


class _View:
    """How the reporter shows one step (the step's state is the mirror's): its colour and
    spinner, its live figures, and where the echo of its log is."""

    __slots__ = (
        "name",
        "label",
        "colour",
        "cpu",
        "rss",
        "offset",
        "pending",
        "spinner",
        "window",
        "window_used",
        "hidden",
        "dropped",
        "resync",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.label = clean(name)  # the name as shown
        self.colour = _STEP_COLOURS[zlib.crc32(name.encode()) % len(_STEP_COLOURS)]
        self.cpu: float | None = None
        self.rss: int | None = None
        self.offset = 0
        self.pending = b""
        self.spinner: Spinner | None = None
        self.window = -1  # refresh window of the tty echo budget
        self.window_used = 0
        self.hidden = 0  # tty: lines counted but not shown since the last notice
        self.dropped = 0  # bytes skipped while the terminal was behind, not said yet
        self.resync = False  # after a skip: the next read starts inside a line


class _Terminal:
    """The reporter's way to its stream, file-like (Rich's console writes here too): a write
    never blocks.

    Text is queued and written by a thread of its own, straight to the stream's file
    descriptor: not through ``sys.stdout``'s buffer, whose lock a blocked write would hold when
    the interpreter flushes it at exit. A stream without a descriptor (``io.StringIO``) cannot
    block and is written at once. ``backlog`` is what waits for the terminal; the reporter
    stops queueing the steps' output when it stays past ``BACKLOG_LIMIT``.
    """

    def __init__(self, stream: TextIO, encoding: str) -> None:
        self.encoding = encoding
        self._stream = stream
        self._queue: deque[bytes] = deque()
        self._cond = threading.Condition()
        self.backlog = 0
        self.broken = False  # the stream went away (a closed pipe): nothing more is written
        self._progress = time.monotonic()  # when the terminal last took something
        try:
            self._fd: int | None = stream.fileno()
            stream.flush()  # what was printed before goes first
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
            self._fd = None
        if self._fd is not None:
            threading.Thread(target=self._pump, name="orch-terminal", daemon=True).start()

    def write(self, text: str) -> int:
        if self.broken:
            return len(text)
        if self._fd is None:
            try:
                self._stream.write(text)
                self._stream.flush()
            except (OSError, ValueError):
                self.broken = True
            return len(text)
        data = text.encode(self.encoding, "replace")
        with self._cond:
            if not self._queue:
                self._progress = time.monotonic()  # idle until now, not stuck
            self._queue.append(data)
            self.backlog += len(data)
            self._cond.notify_all()
        return len(text)

    def flush(self) -> None:
        """Nothing to do: the pump writes as soon as it can (``drain`` waits for it)."""

    def isatty(self) -> bool:
        try:
            return bool(self._stream.isatty())
        except (AttributeError, OSError, ValueError):
            return False

    def _pump(self) -> None:
        assert self._fd is not None
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                data = b"".join(self._queue)
                self._queue.clear()
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self._fd, view)
                except BlockingIOError:  # someone made the descriptor non-blocking
                    select.select([], [self._fd], [])
                    continue
                except OSError:  # a closed pipe, a closed descriptor: nobody reads any more
                    with self._cond:
                        self.broken = True
                        self._queue.clear()
                        self.backlog = 0
                        self._cond.notify_all()
                    return
                view = view[written:]
                with self._cond:
                    self.backlog -= written
                    self._progress = time.monotonic()
                    self._cond.notify_all()

    def wait_below(self, size: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the backlog to shrink to ``size``; whether it did
        (or the stream went away: nothing is queued for it any more)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.backlog > size and not self.broken:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def drain(self, patience: float) -> bool:
        """Wait until everything queued is written (or the stream went away); give up once the
        terminal has taken nothing for ``patience`` seconds: False if it was given up."""
        with self._cond:
            while self.backlog and not self.broken:
                idle = time.monotonic() - self._progress
                if idle >= patience:
                    return False
                self._cond.wait(patience - idle)
        return True


class HeadlessReporter:
    """Prints a run's progress, its steps' output and a final summary to ``stream``.

    It subscribes to ``control``'s events itself, from the snapshot it takes as it does.

    ``tty`` (default: ``stream.isatty()``) picks the Rich live view or plain lines; ``color``
    (default: on a terminal unless ``NO_COLOR`` is set) whether ANSI colours are used at all;
    ``echo_output`` whether the steps' output is printed. ``width`` fixes the terminal width
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
        self.echo_output = echo_output
        self.refresh_per_second = refresh_per_second
        encoding = getattr(stream, "encoding", None) or "utf-8"
        try:
            encoding = codecs.lookup(encoding).name
        except LookupError:
            encoding = "ascii"
        self._encoding = encoding
        self._unicode = encoding.startswith("utf")
        symbols = "".join(icon for icon, _, _ in _ICONS.values()) + "".join(_PUNCT)
        try:
            symbols.encode(encoding)
            self._symbols = True
        except UnicodeError:
            self._symbols = False
        # the run as the events tell it (a mirror: core.state), and how each step is shown;
        # the lock guards them against the live view's refresh thread, and the first events
        # against the snapshot taken after subscribing
        self._views: dict[str, _View] = {}
        self._lock = threading.Lock()
        with self._lock:
            control.subscribe(self.handle)
            self._run = control.snapshot()
            for name in self._run.steps:
                self._views[name] = _View(name)
        self._name = ""
        self._system: tuple[float, float] | None = None  # cpu %, mem %
        self._finished: RunFinished | None = None
        self._closed = False
        self._out = _Terminal(stream, encoding)
        self._behind = False  # the terminal is not keeping up: the steps' output is skipped
        self._decoder = AnsiDecoder()
        self._console: Console | None = None
        self._live: Live | None = None
        self._refresher: threading.Event | None = None  # set: the live view's refresh ends
        if tty:
            self._console = Console(
                file=self._out,  # type: ignore[arg-type]  # file-like: write, flush, isatty
                force_terminal=True,
                no_color=not color,
                width=width,
                highlight=False,
                markup=False,
                emoji=False,
                legacy_windows=False,
            )

    # == events ======================================================================================
    def handle(self, event: Event) -> None:
        """Consume one event (from the single dispatcher thread, in order)."""
        if self._closed:
            return
        with self._lock:
            if event.seq <= self._run.seq:
                return  # in the snapshot the reporter started from
            before = self._run.steps.get(event.step) if isinstance(event, StepStatus) else None
            self._run.apply(event)
            step = getattr(event, "step", None)
            if step is not None and step not in self._views:
                self._views[step] = _View(step)
        if isinstance(event, StepOutput):
            self._echo(self._views[event.step], final=False, upto=event.size)
        elif isinstance(event, StepStarted):
            self._on_started(event)
        elif isinstance(event, StepFinished):
            self._on_finished(event)
        elif isinstance(event, StepStatus):
            self._on_status(event, before)
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
            icon = event.level if event.level in _ICONS else "info"
            where = f"{event.step}: " if event.step else ""
            self._event_line(event.ts, icon, None, f"{event.level}: {where}{event.text}")
        elif isinstance(event, RunStarted):
            self._on_run_started(event)
        elif isinstance(event, RunFinished):
            self._finished = event

    def _on_run_started(self, event: RunStarted) -> None:
        with self._lock:
            self._name = clean(Path(event.recipe).stem) if event.recipe else ""
            for name in event.state.steps:
                if name not in self._views:
                    self._views[name] = _View(name)
        logs = _display_path(self.run_dir.logs)
        count = len(event.state.steps)
        self._event_line(
            event.ts,
            "run",
            None,
            f"run {event.run_id} of {event.recipe}: {count} steps, logs in {logs}",
        )
        if self._console is not None and self._live is None:
            self._live = Live(
                console=self._console,
                get_renderable=self._render_live,
                transient=False,
                auto_refresh=False,  # _refresh_live does it, and skips a terminal that is behind
                redirect_stdout=False,  # the runner routes sys.stdout to the steps' logs
                redirect_stderr=False,
            )
            try:
                self._live.start()
            except Exception:  # a terminal that cannot do live updates: plain lines above
                self._live = None
                return
            self._refresher = threading.Event()
            threading.Thread(
                target=self._refresh_live,
                args=(self._live, self._refresher),
                name="orch-live",
                daemon=True,
            ).start()

    def _refresh_live(self, live: Live, stop: threading.Event) -> None:
        """Redraw the live view ``refresh_per_second`` times a second, but not while the
        terminal is behind: redraws queued for a terminal that takes nothing would pile up
        without bound, and the next one shows the same, newer."""
        while not stop.wait(1 / self.refresh_per_second):
            if self._out.backlog < BACKLOG_LIMIT:
                live.refresh()

    def _on_started(self, event: StepStarted) -> None:
        view = self._views[event.step]
        with self._lock:
            view.spinner = Spinner("dots", style=view.colour)
        note = self._attempt_note(event.state)
        self._event_line(event.ts, Status.RUNNING, view, "started" + note)

    def _on_finished(self, event: StepFinished) -> None:
        view, state = self._views[event.step], event.state
        # its output before the line that says it ended, and no further: a retry's next
        # attempt may already be writing, and its lines must not come before that line
        self._echo(view, final=True, upto=event.log_size)
        with self._lock:
            view.spinner = None
            view.cpu = view.rss = None
        took = format_duration(event.duration)
        cause = self._cause(event.exit_code, event.signal)
        said = self._worth_saying(event.reason, event.status, event.exit_code, event.signal)
        reason = f" {self._p('—')} {event.reason}" if said else ""
        if event.will_retry:
            nxt = event.attempt + 1
            text = f"{self._status_word(event.status)}, retrying (attempt {nxt} of {_tries(state)})"
            detail = f"{cause}, after {took}" if cause else f"after {took}"
            self._event_line(event.ts, "retry", view, f"{text} {self._p('—')} {detail}{reason}")
            return
        if event.status == Status.SUCCEEDED:
            text = f"succeeded in {took}" + self._attempt_note(state)
        elif event.status == Status.TIMED_OUT:
            text = f"timed out after {took}"
        elif event.status == Status.FAILED:
            text = f"failed{f' ({cause})' if cause else ''} in {took}"
        elif event.status == Status.STOPPED:
            text = f"stopped after {took}"
        else:
            text = f"{self._status_word(event.status)} after {took}"
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
            if event.reason and event.reason.startswith("blocked"):
                text = event.reason
            elif state.blocked_by:
                text = "blocked by " + ", ".join(state.blocked_by)
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
            text = word = self._status_word(event.status)
            if event.reason and event.reason.startswith(word):  # "skipped by user"
                text = event.reason
            elif event.reason:
                text = f"{word} ({event.reason})"
        self._event_line(event.ts, event.status, view, text)

    def _log_path(self, name: str) -> Path:
        return self.run_dir.log(name)

    # == output echo ================================================================================
    def _blocks(self, view: _View, *, final: bool, upto: int | None = None) -> Iterator[bytes]:
        """New complete lines of the step's log, a chunk at a time, each joined by ``\\n`` with
        no trailing newline; with ``final`` the incomplete last line too. ``upto``: the log
        size the event announced, not read past."""
        path = self._log_path(view.name)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below, while we yield
        except OSError:
            fh = None
        if fh is not None:
            with fh:
                try:
                    if os.fstat(fh.fileno()).st_size < view.offset:  # replaced: start over
                        view.offset, view.pending = 0, b""
                    fh.seek(view.offset)
                except OSError:
                    return
                while True:
                    want = CHUNK if upto is None else min(CHUNK, upto - view.offset)
                    try:
                        data = fh.read(want) if want > 0 else b""
                    except OSError:
                        break
                    if not data:
                        break
                    view.offset += len(data)
                    if view.pending:
                        data, view.pending = view.pending + data, b""
                    if view.resync:  # after a skip: from the start of the next line
                        cut = data.find(b"\n")
                        skipped = len(data) if cut < 0 else cut + 1
                        view.dropped += skipped
                        view.resync = cut < 0
                        data = data[skipped:]
                    cut = data.rfind(b"\n")
                    if cut < 0:
                        if len(data) > MAX_PENDING:
                            yield data  # a huge unterminated line: show it in pieces
                        else:
                            view.pending = data
                        continue
                    view.pending = data[cut + 1 :]
                    yield data[:cut]
        if final and view.pending:
            block, view.pending = view.pending, b""
            yield block

    def _keeps_up(self) -> bool:
        """Whether the steps' output is echoed (the terminal keeps up) or skipped (it is
        behind: see ``BACKLOG_LIMIT``). Sets ``_behind``."""
        if self._behind:
            self._behind = self._out.backlog > BACKLOG_LIMIT // 2
        else:
            self._behind = not self._out.wait_below(BACKLOG_LIMIT, CATCH_UP_SECONDS)
        return not self._behind

    def _echo(self, view: _View, *, final: bool, upto: int | None = None) -> None:
        """Print everything new in the step's log; while the terminal is behind, skip it."""
        if not self.echo_output:
            return
        if self._keeps_up():
            if view.dropped:
                self._dropped_notice(view)
            with closing(self._blocks(view, final=final, upto=upto)) as blocks:
                if self.tty:
                    self._echo_tail(view, blocks)
                else:
                    for block in blocks:
                        self._echo_plain(view, block)
                        if not self._keeps_up():
                            break
        if self._behind:
            self._skip(view, final=final, upto=upto)
        if final and view.dropped:
            self._dropped_notice(view)  # a status line: queued even while behind
        if final and view.hidden:
            self._hidden_notice(view)

    def _echo_tail(self, view: _View, blocks: Iterator[bytes]) -> None:
        """On a terminal only the newest lines can be shown: keep a bounded tail, count the
        rest."""
        tail: bytes | None = None
        total = 0
        for block in blocks:
            total += block.count(b"\n") + 1
            tail = block if tail is None else tail + b"\n" + block
            if tail.count(b"\n") >= TTY_LINES_PER_REFRESH:
                tail = b"\n".join(tail.rsplit(b"\n", TTY_LINES_PER_REFRESH)[1:])
        if tail is not None:
            self._echo_tty(view, tail, total)

    def _skip(self, view: _View, *, final: bool, upto: int | None) -> None:
        """Pass over the step's new output without reading it (the log keeps all of it),
        counting it for ``_dropped_notice``: a terminal that takes nothing must cost neither
        memory nor the time to read what it will never show."""
        end = upto
        if end is None:
            try:
                end = os.stat(self._log_path(view.name)).st_size
            except OSError:
                end = view.offset
        view.dropped += max(0, end - view.offset) + len(view.pending)
        view.offset, view.pending = max(end, view.offset), b""
        view.resync = not final  # the next read starts inside a line: shown from the next one

    def _echo_plain(self, view: _View, block: bytes) -> None:
        text = clean(block)
        prefix = self._paint(view.label, view.colour) + " | "
        self._write(prefix + text.replace("\n", "\n" + prefix) + "\n")

    def _echo_tty(self, view: _View, tail: bytes, total: int) -> None:
        """Show up to the refresh window's budget of ``tail``; count the other ``total`` lines."""
        window = int(time.monotonic() * self.refresh_per_second)
        if window != view.window:
            view.window, view.window_used = window, 0
        budget = TTY_LINES_PER_REFRESH - view.window_used
        count = tail.count(b"\n") + 1
        if budget <= 0:
            view.hidden += total
            return
        if count > budget:
            tail = b"\n".join(tail.rsplit(b"\n", budget)[1:])
            count = budget
        view.window_used += count
        view.hidden += total - count
        if view.hidden:
            self._hidden_notice(view)
        text = clean(tail, keep_sgr=True)
        prefix = (f"{view.label} | ", view.colour)
        lines = []
        for raw in text.split("\n"):
            line = self._decoder.decode_line(raw)
            if len(line) > TTY_MAX_LINE:
                line.truncate(TTY_MAX_LINE)
                line.append(self._p("…"))
            lines.append(Text.assemble(prefix, line))
        self._print(Text("\n").join(lines))

    def _dropped_notice(self, view: _View) -> None:
        log = _display_path(self._log_path(view.name))
        notice = (
            f"{view.label} | {self._p('…')} {view.dropped:,} bytes of output not shown "
            f"(terminal too slow; complete in {log})"
        )
        view.dropped = 0
        self._print(Text(notice, style="dim"))

    def _hidden_notice(self, view: _View) -> None:
        log = _display_path(self._log_path(view.name))
        notice = f"{view.label} | {self._p('…')} {view.hidden} more lines in {log}"
        view.hidden = 0
        self._print(Text(notice, style="dim"))

    # == output primitives ============================================================================
    def _p(self, symbol: str) -> str:
        return symbol if self._symbols else _PUNCT.get(symbol, symbol)

    def _icon(self, key: str) -> tuple[str, str]:
        symbol, fallback, style = _ICONS.get(key, ("·", ".", ""))
        return (symbol if self._symbols else fallback), style

    def _paint(self, text: str, style: str) -> str:
        """ANSI colour for plain mode with ``color`` on; the text alone otherwise."""
        if not self.color or not style:
            return text
        codes = ";".join(_SGR[s] for s in style.split() if s in _SGR)
        return f"\x1b[{codes}m{text}\x1b[0m" if codes else text

    def _write(self, text: str) -> None:
        if not self._unicode:
            text = text.encode(self._encoding, "replace").decode(self._encoding)
        self._out.write(text)

    def _print(self, renderable: RenderableType) -> None:
        if self._out.broken:
            return
        if self._console is None:
            text = renderable.plain if isinstance(renderable, Text) else str(renderable)
            self._write(text + "\n")
            return
        self._console.print(renderable, soft_wrap=False, crop=False)

    def _event_line(self, ts: float, icon_key: str, view: _View | None, text: str) -> None:
        """``12:00:02 ✓ build succeeded in 1.2s``: one line for an event that matters (its
        text may carry a step's words, a failure's reason: cleaned like the steps' output)."""
        text = clean(text)
        clock = time.strftime("%H:%M:%S", time.localtime(ts))
        icon, style = self._icon(icon_key)
        if self.tty:
            line = Text.assemble((clock, "dim"), " ", (icon, style), " ")
            if view is not None:
                line.append(view.label, style=f"bold {view.colour}")
                line.append(" ")
            line.append(text)
            self._print(line)
            return
        name = f"{self._paint(view.label, view.colour)} " if view is not None else ""
        self._write(f"{clock} {self._paint(icon, style)} {name}{text}\n")

    # == words ======================================================================================
    @staticmethod
    def _status_word(status: str) -> str:
        return {Status.TIMED_OUT: "timed out"}.get(status, status)

    @staticmethod
    def _cause(exit_code: int | None, sig: int | None) -> str:
        if sig is not None:
            return _signal_name(sig)
        if exit_code is not None:
            return f"exit {exit_code}"
        return ""

    @classmethod
    def _worth_saying(
        cls, reason: str | None, status: str, exit_code: int | None, sig: int | None
    ) -> bool:
        """Whether a reason adds to what the line says already ("exit code 1" does not)."""
        if not reason:
            return False
        lowered = reason.lower()
        if lowered.startswith(cls._status_word(status)):
            return False
        if exit_code is not None and lowered in (f"exit code {exit_code}", f"exit {exit_code}"):
            return False
        return not (sig is not None and lowered in (f"signal {sig}", _signal_name(sig).lower()))

    @staticmethod
    def _attempt_note(state: StepState) -> str:
        if state.attempts <= 1:
            return ""
        return f" (attempt {state.attempts} of {_tries(state)})"

    # == live view ==================================================================================
    def _render_live(self) -> RenderableType:
        try:
            with self._lock:
                return self._render_live_locked()
        except Exception as exc:  # never kill the refresh thread
            return Text(f"(live view error: {exc})", style="dim")

    def _render_live_locked(self) -> RenderableType:
        now = time.time()
        steps = list(self._run.steps.values())
        done = sum(1 for s in steps if s.status in _DONE)
        failed = sum(1 for s in steps if s.status in FAILURES and not s.allowed)
        header = Text.assemble(
            (self._name or "run", "bold"),
            f" {self._p('·')} {self._run.run_id} {self._p('·')} ",
            f"{done}/{len(steps)} done",
        )
        if failed:
            header.append(f" {self._p('·')} ")
            header.append(f"{failed} failed", style="bold red")
        if self._run.started is not None:
            end = self._finished.ts if self._finished is not None else now
            header.append(f" {self._p('·')} {format_duration(end - self._run.started)}")
        if self._system is not None:
            cpu, mem = self._system
            header.append(f" {self._p('·')} cpu {cpu:.0f}% mem {mem:.0f}%", style="dim")

        assert self._console is not None
        limit = max(3, self._console.size.height - 3)
        shown = steps
        rest: list[StepState] = []
        if len(steps) > limit:
            keep = sorted(steps, key=lambda s: (_LIVE_RANK.get(s.status, 3), s.index))
            keep_names = {s.name for s in keep[: limit - 1]}
            shown = [s for s in steps if s.name in keep_names]
            rest = [s for s in steps if s.name not in keep_names]

        table = Table.grid(padding=(0, 1))
        table.add_column(width=1)  # icon
        table.add_column(no_wrap=True, max_width=40)  # name
        table.add_column(width=1)  # spinner
        table.add_column(justify="right", no_wrap=True)  # duration
        table.add_column(no_wrap=True, overflow="ellipsis")  # notes
        for step in shown:
            view = self._views[step.name]
            icon, style = self._icon("allowed" if step.allowed else step.status)
            spinner: RenderableType = (
                view.spinner if view.spinner is not None and step.status == Status.RUNNING else ""
            )
            notes = Text(style="dim")
            if step.background:
                notes.append("ready " if step.status == Status.READY else "bg ")
            if step.attempts > 1:
                notes.append(f"attempt {step.attempts}/{_tries(step)} ")
            if step.status in ACTIVE and view.cpu is not None:
                notes.append(f"cpu {view.cpu:.0f}% ")
                if view.rss is not None:
                    notes.append(f"{format_bytes(view.rss)} ")
            if step.status == Status.BLOCKED and step.blocked_by:
                notes.append(clean("blocked by " + ", ".join(step.blocked_by)))
            elif step.status in FAILURES:
                notes.append(self._cause(step.exit_code, step.signal))
            table.add_row(
                Text(icon, style=style),
                Text(view.label, style=view.colour if step.status == Status.RUNNING else ""),
                spinner,
                Text(format_duration(step.elapsed(now)) if step.started else "", style="dim"),
                notes,
            )
        parts: list[RenderableType] = [header, table]
        if rest:
            counts = self._counts(rest)
            parts.append(Text(f"{self._p('…')} and {len(rest)} more: {counts}", style="dim"))
        return Group(*parts)

    # == summary ====================================================================================
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
                    self._views[name] = _View(name)
                self._views[name].spinner = None
            self._name = clean(state.name) or self._name
        for view in list(self._views.values()):
            self._echo(view, final=True)
        if self._refresher is not None:
            self._refresher.set()
        if self._live is not None:
            try:
                self._live.stop()
            except Exception:
                pass
            self._live = None
        self._summary(state)
        return self._out.drain(_stdout_timeout() if patience is None else patience)

    def _summary(self, state: RunState) -> None:
        steps = list(state.steps.values())
        now = time.time()
        shown, hidden = self._summary_rows(steps, now)
        rows = [self._summary_row(step, now) for step in shown]
        table = self._summary_table(rows)
        self._print_block(table)
        if hidden:
            self._print(Text(self._hidden_line(hidden), style="dim"))

        for step in steps:
            if step.status in FAILURES and not step.allowed:
                self._root_failure(step, now)
        by_root: dict[str, list[str]] = {}
        orphans: list[str] = []
        for step in steps:
            if step.status != Status.BLOCKED:
                continue
            label = self._views[step.name].label
            if not step.blocked_by:
                orphans.append(label)
            for root in step.blocked_by:
                by_root.setdefault(clean(root), []).append(label)
        for root, names in by_root.items():
            self._print(Text(f"blocked by {root}: {', '.join(names)}", style="yellow"))
        if orphans:
            self._print(Text(f"blocked: {', '.join(orphans)}", style="yellow"))
        for step in steps:
            if step.allowed:
                cause = self._cause(step.exit_code, step.signal)
                log = _display_path(self._log_path(step.name))
                self._print(
                    Text(
                        f"allowed failure: {self._views[step.name].label}"
                        f"{f' ({cause})' if cause else ''} {self._p('—')} see {log}",
                        style="yellow",
                    )
                )

        status = state.status
        word = {
            RunStatus.SUCCEEDED: "run succeeded",
            RunStatus.FAILED: "run failed",
            RunStatus.INTERRUPTED: "run interrupted",
        }.get(status, f"run {status or 'ended'}")
        ended = state.ended or now
        took = f" in {format_duration(ended - state.started)}" if state.started else ""
        style = {RunStatus.SUCCEEDED: "bold green", RunStatus.FAILED: "bold red"}.get(
            status, "bold yellow"
        )
        self._print(Text(f"{word}: {self._counts(steps)}{took}", style=style))

    def _root_failure(self, step: StepState, now: float) -> None:
        """A step that failed on its own: why, where its log is, and the log's last lines."""
        view = self._views[step.name]
        cause = self._cause(step.exit_code, step.signal)
        if step.status == Status.TIMED_OUT:
            cause = f"timed out after {format_duration(step.elapsed(now))}"
        said = self._worth_saying(step.reason, step.status, step.exit_code, step.signal)
        detail = clean(", ".join(x for x in (cause, step.reason if said else None) if x))
        log = _display_path(self._log_path(step.name))
        line = Text("root failure: ", style="bold red")
        line.append(view.label, style=f"bold {view.colour}")
        line.append(f"{f' ({detail})' if detail else ''} {self._p('—')} see {log}")
        self._print(line)
        for tail in self._tail(step.name):
            self._print(Text.assemble((f"  {view.label} | ", view.colour), tail))

    def _summary_row(self, step: StepState, now: float) -> list[Text]:
        """One row of the summary table, a cell per ``_SUMMARY_COLUMNS``."""
        icon, style = self._icon("allowed" if step.allowed else step.status)
        status = self._status_word(step.status) + (" (allowed)" if step.allowed else "")
        exit_text = (
            str(step.exit_code)
            if step.exit_code is not None
            else _signal_name(step.signal)
            if step.signal is not None
            else "-"
        )
        if step.status == Status.BLOCKED:
            note = "by " + ", ".join(step.blocked_by) if step.blocked_by else ""
        elif self._worth_saying(step.reason, step.status, step.exit_code, step.signal):
            note = step.reason or ""
        else:
            note = ""
        if step.background:
            note = ("bg; " + note) if note else "bg"
        view = self._views[step.name]
        cells = [
            (view.label, view.colour),
            (f"{icon} {status}", style),
            (format_duration(step.elapsed(now)), ""),
            (str(step.attempts), ""),
            (exit_text, ""),
            (f"{step.peak_cpu:.0f}%" if step.peak_cpu is not None else "-", ""),
            (format_bytes(step.peak_rss), ""),
            (" ".join(clean(note).split()), ""),  # newlines and tabs would break the row
        ]
        return [Text(text, style=style, no_wrap=True, overflow="ellipsis") for text, style in cells]

    def _summary_table(self, rows: list[list[Text]]) -> Table:
        """The table, each row one line wide as the screen: the note is cut first (with an
        ellipsis: the whole of it is in state.json), then a long step name down to
        ``SUMMARY_NAME_MIN``; on a narrow screen the peak cpu and rss columns go."""
        width = self._console.width if self._console is not None else PLAIN_WIDTH
        natural = [
            max(len(header), *(row[i].cell_len for row in rows))
            for i, (header, _) in enumerate(_SUMMARY_COLUMNS)
        ]
        for drop in ((), _SUMMARY_OPTIONAL):
            keep = [i for i, (header, _) in enumerate(_SUMMARY_COLUMNS) if header not in drop]
            room = width - sum(natural[i] for i in keep[1:-1]) - _GAP * (len(keep) - 1)
            name = min(natural[0], max(SUMMARY_NAME_MIN, room - SUMMARY_NOTE_MIN))
            if room - name >= SUMMARY_NOTE_MIN:
                break
        table = Table(
            title=f"{self._name or 'run'} {self._p('—')} run {self._run.run_id}",
            box=box.SIMPLE_HEAD,
            title_justify="left",
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,  # _GAP columns between cells
        )
        for i in keep:
            header, justify = _SUMMARY_COLUMNS[i]
            limit = {0: name, len(natural) - 1: max(room - name, 1)}.get(i)
            table.add_column(header, justify=justify, max_width=limit)  # type: ignore[arg-type]
        for row in rows:
            table.add_row(*(row[i] for i in keep))
        return table

    def _summary_rows(
        self, everything: list[StepState], now: float
    ) -> tuple[list[StepState], list[StepState]]:
        """Every step of a small run, in recipe order; of a large one, what needs reading
        (failures first), then the slowest (slowest first); also the steps left out.

        A table of a thousand steps is unreadable and costs seconds to lay out; the
        failures, the blocked, the cancelled and the slowest steps are what a summary is for.
        """
        if len(everything) <= SUMMARY_ALL_UP_TO:
            return everything, []
        loud = [s for s in everything if s.status not in _QUIET or s.allowed]
        loud.sort(key=lambda s: _LOUD_ORDER.get("allowed" if s.allowed else s.status, 99))
        timed = [s for s in everything if s.status in _QUIET and not s.allowed and s.elapsed(now)]
        timed.sort(key=lambda s: s.elapsed(now) or 0.0, reverse=True)
        shown = loud[:SUMMARY_ALL_UP_TO] + timed[:SUMMARY_SLOWEST]
        kept = {id(s) for s in shown}
        return shown, [s for s in everything if id(s) not in kept]

    def _hidden_line(self, hidden: list[StepState]) -> str:
        where = _display_path(self.run_dir.state)
        if all(s.status in _QUIET and not s.allowed for s in hidden):
            what = "that succeeded or were skipped, none slower than those listed"
        else:
            what = f"({self._counts(hidden)})"
        return f"{self._p('…')} and {len(hidden)} more steps {what} (every step is in {where})"

    def _print_block(self, renderable: RenderableType) -> None:
        """A table: through the live console on a terminal, as plain text without ANSI off it."""
        if self._console is not None:
            self._print(renderable)
            return
        plain = Console(
            file=_Sink(self._encoding),  # its encoding decides the box characters
            force_terminal=False,
            no_color=True,
            color_system=None,
            width=PLAIN_WIDTH,
            highlight=False,
            markup=False,
            emoji=False,
            legacy_windows=False,
        )
        with plain.capture() as capture:
            plain.print(renderable)
        self._write("".join(line.rstrip() + "\n" for line in capture.get().splitlines()))

    @staticmethod
    def _counts(steps: Iterable[StepState]) -> str:
        counts: dict[str, int] = {}
        for step in steps:
            key = "allowed" if step.allowed else step.status
            counts[key] = counts.get(key, 0) + 1
        known = {key for key, _ in _COUNT_ORDER}
        parts = [f"{counts[key]} {label}" for key, label in _COUNT_ORDER if counts.get(key)]
        parts += [f"{n} {key}" for key, n in counts.items() if key not in known]
        return ", ".join(parts) or "no steps"

    def _tail(self, name: str, lines: int = TAIL_LINES) -> Iterable[Text]:
        """The last ``lines`` lines of a step's log, for the summary."""
        path = self._log_path(name)
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                start = max(0, size - 64 * 1024)
                fh.seek(start)
                data = fh.read()
        except OSError:
            return []
        if data.endswith(b"\n"):
            data = data[:-1]
        parts = data.split(b"\n")
        if start > 0 and len(parts) > 1:
            parts = parts[1:]  # the first piece is probably the end of a longer line
        block = b"\n".join(parts[-lines:])
        if not block:
            return []
        if self.tty:
            return list(self._decoder.decode(clean(block, keep_sgr=True)))
        text = clean(block)
        return [Text(line) for line in text.split("\n")]


class _Sink:
    """A file-like object for the plain summary console (rendered via ``capture``)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False
