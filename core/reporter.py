"""The headless reporter: what ``orch-tui RECIPE --no-ui`` prints.

It consumes the runner's events (``handle``, called in order from one dispatcher thread) and,
at the end, the final state (``close``), and prints:

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
from typing import Any, TextIO

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
from core.state import ACTIVE, FAILURES, RunStatus, Status
from core.text import clean

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


class _Step:
    """What the reporter knows of one step."""

    __slots__ = (
        "name",
        "type",
        "background",
        "depends_on",
        "log",
        "index",
        "max_attempts",
        "continue_on_error",
        "status",
        "attempt",
        "started",
        "ended",
        "duration",
        "exit_code",
        "signal",
        "reason",
        "allowed",
        "blocked_by",
        "peak_cpu",
        "peak_rss",
        "cpu",
        "rss",
        "offset",
        "pending",
        "colour",
        "spinner",
        "window",
        "window_used",
        "hidden",
        "label",
        "dropped",
        "resync",
    )

    def __init__(self, name: str, info: dict[str, Any], index: int) -> None:
        self.name = name
        self.index = index
        self.type = info.get("type", "")
        self.background = bool(info.get("background", False))
        self.depends_on = list(info.get("depends_on") or [])
        self.log = info.get("log") or f"logs/{name}.log"
        retries = info.get("retries")
        self.max_attempts: int | None = (
            int(retries) + 1 if isinstance(retries, int) else info.get("max_attempts")
        )
        self.continue_on_error = bool(info.get("continue_on_error", False))
        self.status = info.get("status") or Status.PENDING
        self.attempt = int(info.get("attempts") or 0)
        self.started: float | None = info.get("started")
        self.ended: float | None = info.get("ended")
        self.duration: float | None = info.get("duration")
        self.exit_code: int | None = info.get("exit_code")
        self.signal: int | None = info.get("signal")
        self.reason: str | None = info.get("reason")
        self.allowed = bool(info.get("allowed", False))
        self.blocked_by: list[str] = list(info.get("blocked_by") or [])
        self.peak_cpu: float | None = info.get("peak_cpu")
        self.peak_rss: int | None = info.get("peak_rss")
        self.cpu: float | None = None
        self.rss: int | None = None
        self.offset = 0
        self.pending = b""
        self.colour = _STEP_COLOURS[zlib.crc32(name.encode()) % len(_STEP_COLOURS)]
        self.spinner: Spinner | None = None
        self.window = -1  # refresh window of the tty echo budget
        self.window_used = 0
        self.hidden = 0  # tty: lines counted but not shown since the last notice
        self.label = clean(name)  # the name as shown
        self.dropped = 0  # bytes skipped while the terminal was behind, not said yet
        self.resync = False  # after a skip: the next read starts inside a line

    def update_from_state(self, info: dict[str, Any]) -> None:
        for key, attr in (
            ("status", "status"),
            ("exit_code", "exit_code"),
            ("signal", "signal"),
            ("reason", "reason"),
            ("started", "started"),
            ("ended", "ended"),
            ("duration", "duration"),
            ("peak_cpu", "peak_cpu"),
            ("peak_rss", "peak_rss"),
        ):
            if key in info:
                setattr(self, attr, info[key])
        if "attempts" in info:
            self.attempt = int(info["attempts"] or 0)
        if "allowed" in info:
            self.allowed = bool(info["allowed"])
        if "blocked_by" in info:
            self.blocked_by = list(info["blocked_by"] or [])
        if info.get("log"):
            self.log = info["log"]
        if "type" in info:
            self.type = info["type"]
        if "background" in info:
            self.background = bool(info["background"])

    def elapsed(self, now: float) -> float | None:
        if self.status in ACTIVE and self.started is not None:
            return now - self.started
        if self.duration is not None:
            return self.duration
        if self.started is not None and self.ended is not None:
            return self.ended - self.started
        return None


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

    ``tty`` (default: ``stream.isatty()``) picks the Rich live view or plain lines; ``color``
    (default: on a terminal unless ``NO_COLOR`` is set) whether ANSI colours are used at all;
    ``echo_output`` whether the steps' output is printed. ``width`` fixes the terminal width
    (tests); ``refresh_per_second`` is the live view's refresh rate.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        stream: TextIO = sys.stdout,
        tty: bool | None = None,
        color: bool | None = None,
        echo_output: bool = True,
        width: int | None = None,
        refresh_per_second: float = 8.0,
    ) -> None:
        self.run_dir = Path(run_dir)
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
        self._steps: dict[str, _Step] = {}
        self._lock = threading.Lock()  # guards _steps against the live view's refresh thread
        self._run_id = ""
        self._name = ""
        self._started: float | None = None
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
        if isinstance(event, StepOutput):
            step = self._step(event.step)
            self._echo(step, final=False, upto=event.size)
        elif isinstance(event, StepStarted):
            self._on_started(event)
        elif isinstance(event, StepFinished):
            self._on_finished(event)
        elif isinstance(event, StepStatus):
            self._on_status(event)
        elif isinstance(event, StepReady):
            step = self._step(event.step)
            with self._lock:
                step.status = Status.READY
            self._event_line(event.ts, Status.READY, step, "ready")
        elif isinstance(event, ResourcesSampled):
            with self._lock:
                self._system = (event.cpu_percent, event.mem_percent)
                for name, figures in event.steps.items():
                    step = self._steps.get(name)
                    if step is not None:
                        step.cpu = figures.get("cpu")  # type: ignore[assignment]
                        step.rss = figures.get("rss")  # type: ignore[assignment]
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
            self._run_id = event.run_id
            self._name = clean(Path(event.recipe).stem) if event.recipe else ""
            self._started = event.ts
            for info in event.steps:
                name = str(info.get("name"))
                if name not in self._steps:
                    self._steps[name] = _Step(name, info, len(self._steps))
        logs = _display_path(self.run_dir / "logs")
        self._event_line(
            event.ts,
            "run",
            None,
            f"run {event.run_id} of {event.recipe}: {len(event.steps)} steps, logs in {logs}",
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
        step = self._step(event.step)
        with self._lock:
            step.status = Status.RUNNING
            step.attempt = event.attempt
            step.started = event.ts
            step.ended = step.duration = None
            step.exit_code = step.signal = None
            step.reason = None
            step.spinner = Spinner("dots", style=step.colour)
        self._event_line(event.ts, Status.RUNNING, step, "started" + self._attempt_note(step))

    def _on_finished(self, event: StepFinished) -> None:
        step = self._step(event.step)
        # its output before the line that says it ended, and no further: a retry's next
        # attempt may already be writing, and its lines must not come before that line
        self._echo(step, final=True, upto=event.log_size)
        with self._lock:
            step.status = Status.PENDING if event.will_retry else event.status
            step.attempt = max(step.attempt, event.attempt)
            step.exit_code, step.signal = event.exit_code, event.signal
            step.reason, step.duration = event.reason, event.duration
            step.ended = event.ts
            step.spinner = None
            step.cpu = step.rss = None
            if event.status in FAILURES and step.continue_on_error:
                step.allowed = True
        took = format_duration(event.duration)
        cause = self._cause(event.exit_code, event.signal)
        said = self._worth_saying(event.reason, event.status, event.exit_code, event.signal)
        reason = f" {self._p('—')} {event.reason}" if said else ""
        if event.will_retry:
            nxt = event.attempt + 1
            of = f" of {step.max_attempts}" if step.max_attempts else ""
            text = f"{self._status_word(event.status)}, retrying (attempt {nxt}{of})"
            detail = f"{cause}, after {took}" if cause else f"after {took}"
            self._event_line(event.ts, "retry", step, f"{text} {self._p('—')} {detail}{reason}")
            return
        if event.status == Status.SUCCEEDED:
            text = f"succeeded in {took}" + self._attempt_note(step)
        elif event.status == Status.TIMED_OUT:
            text = f"timed out after {took}"
        elif event.status == Status.FAILED:
            text = f"failed{f' ({cause})' if cause else ''} in {took}"
        elif event.status == Status.STOPPED:
            text = f"stopped after {took}"
        else:
            text = f"{self._status_word(event.status)} after {took}"
        icon = "allowed" if step.allowed else event.status
        if step.allowed:
            text += " (continue_on_error)"
        self._event_line(event.ts, icon, step, text + reason)

    def _on_status(self, event: StepStatus) -> None:
        step = self._step(event.step)
        with self._lock:
            step.status = event.status
            if event.status != Status.RUNNING:
                step.spinner = None
            if event.reason is not None:
                step.reason = event.reason
            if event.status == Status.BLOCKED:
                step.blocked_by = self._roots(step)
        if event.status == Status.BLOCKED:
            if event.reason and event.reason.startswith("blocked"):
                text = event.reason
            elif step.blocked_by:
                text = "blocked by " + ", ".join(step.blocked_by)
            else:
                text = "blocked" + (f" ({event.reason})" if event.reason else "")
        elif event.status == Status.PENDING:
            return  # waiting again (a retry or an un-blocked step): not worth a line
        elif event.status in ACTIVE:
            return  # StepStarted / StepReady say these
        else:
            text = word = self._status_word(event.status)
            if event.reason and event.reason.startswith(word):  # "skipped by user"
                text = event.reason
            elif event.reason:
                text = f"{word} ({event.reason})"
        self._event_line(event.ts, event.status, step, text)

    def _roots(self, step: _Step) -> list[str]:
        """The failed steps upstream of a blocked one (when the event does not say)."""
        roots: list[str] = []
        seen: set[str] = set()
        stack = list(reversed(step.depends_on))
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            dep = self._steps.get(name)
            if dep is None:
                continue
            if dep.status == Status.BLOCKED:
                stack.extend(reversed(dep.depends_on))
            elif (
                dep.status in (Status.FAILED, Status.TIMED_OUT, Status.CANCELLED, Status.STOPPED)
                and not dep.allowed
            ):
                roots.append(name)
        return roots

    def _step(self, name: str) -> _Step:
        step = self._steps.get(name)
        if step is None:  # an event for a step RunStarted did not list: still report it
            with self._lock:
                step = self._steps[name] = _Step(name, {}, len(self._steps))
        return step

    # == output echo ================================================================================
    def _blocks(self, step: _Step, *, final: bool, upto: int | None = None) -> Iterator[bytes]:
        """New complete lines of the step's log, a chunk at a time, each joined by ``\\n`` with
        no trailing newline; with ``final`` the incomplete last line too. ``upto``: the log
        size the event announced, not read past."""
        path = self.run_dir / step.log
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below, while we yield
        except OSError:
            fh = None
        if fh is not None:
            with fh:
                try:
                    if os.fstat(fh.fileno()).st_size < step.offset:  # replaced: start over
                        step.offset, step.pending = 0, b""
                    fh.seek(step.offset)
                except OSError:
                    return
                while True:
                    want = CHUNK if upto is None else min(CHUNK, upto - step.offset)
                    try:
                        data = fh.read(want) if want > 0 else b""
                    except OSError:
                        break
                    if not data:
                        break
                    step.offset += len(data)
                    if step.pending:
                        data, step.pending = step.pending + data, b""
                    if step.resync:  # after a skip: from the start of the next line
                        cut = data.find(b"\n")
                        skipped = len(data) if cut < 0 else cut + 1
                        step.dropped += skipped
                        step.resync = cut < 0
                        data = data[skipped:]
                    cut = data.rfind(b"\n")
                    if cut < 0:
                        if len(data) > MAX_PENDING:
                            yield data  # a huge unterminated line: show it in pieces
                        else:
                            step.pending = data
                        continue
                    step.pending = data[cut + 1 :]
                    yield data[:cut]
        if final and step.pending:
            block, step.pending = step.pending, b""
            yield block

    def _keeps_up(self) -> bool:
        """Whether the steps' output is echoed (the terminal keeps up) or skipped (it is
        behind: see ``BACKLOG_LIMIT``). Sets ``_behind``."""
        if self._behind:
            self._behind = self._out.backlog > BACKLOG_LIMIT // 2
        else:
            self._behind = not self._out.wait_below(BACKLOG_LIMIT, CATCH_UP_SECONDS)
        return not self._behind

    def _echo(self, step: _Step, *, final: bool, upto: int | None = None) -> None:
        """Print everything new in the step's log; while the terminal is behind, skip it."""
        if not self.echo_output:
            return
        if self._keeps_up():
            if step.dropped:
                self._dropped_notice(step)
            with closing(self._blocks(step, final=final, upto=upto)) as blocks:
                if self.tty:
                    self._echo_tail(step, blocks)
                else:
                    for block in blocks:
                        self._echo_plain(step, block)
                        if not self._keeps_up():
                            break
        if self._behind:
            self._skip(step, final=final, upto=upto)
        if final and step.dropped:
            self._dropped_notice(step)  # a status line: queued even while behind
        if final and step.hidden:
            self._hidden_notice(step)

    def _echo_tail(self, step: _Step, blocks: Iterator[bytes]) -> None:
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
            self._echo_tty(step, tail, total)

    def _skip(self, step: _Step, *, final: bool, upto: int | None) -> None:
        """Pass over the step's new output without reading it (the log keeps all of it),
        counting it for ``_dropped_notice``: a terminal that takes nothing must cost neither
        memory nor the time to read what it will never show."""
        end = upto
        if end is None:
            try:
                end = os.stat(self.run_dir / step.log).st_size
            except OSError:
                end = step.offset
        step.dropped += max(0, end - step.offset) + len(step.pending)
        step.offset, step.pending = max(end, step.offset), b""
        step.resync = not final  # the next read starts inside a line: shown from the next one

    def _echo_plain(self, step: _Step, block: bytes) -> None:
        text = clean(block)
        prefix = self._paint(step.label, step.colour) + " | "
        self._write(prefix + text.replace("\n", "\n" + prefix) + "\n")

    def _echo_tty(self, step: _Step, tail: bytes, total: int) -> None:
        """Show up to the refresh window's budget of ``tail``; count the other ``total`` lines."""
        window = int(time.monotonic() * self.refresh_per_second)
        if window != step.window:
            step.window, step.window_used = window, 0
        budget = TTY_LINES_PER_REFRESH - step.window_used
        count = tail.count(b"\n") + 1
        if budget <= 0:
            step.hidden += total
            return
        if count > budget:
            tail = b"\n".join(tail.rsplit(b"\n", budget)[1:])
            count = budget
        step.window_used += count
        step.hidden += total - count
        if step.hidden:
            self._hidden_notice(step)
        text = clean(tail, keep_sgr=True)
        prefix = (f"{step.label} | ", step.colour)
        lines = []
        for raw in text.split("\n"):
            line = self._decoder.decode_line(raw)
            if len(line) > TTY_MAX_LINE:
                line.truncate(TTY_MAX_LINE)
                line.append(self._p("…"))
            lines.append(Text.assemble(prefix, line))
        self._print(Text("\n").join(lines))

    def _dropped_notice(self, step: _Step) -> None:
        log = _display_path(self.run_dir / step.log)
        notice = (
            f"{step.label} | {self._p('…')} {step.dropped:,} bytes of output not shown "
            f"(terminal too slow; complete in {log})"
        )
        step.dropped = 0
        self._print(Text(notice, style="dim"))

    def _hidden_notice(self, step: _Step) -> None:
        log = _display_path(self.run_dir / step.log)
        notice = f"{step.label} | {self._p('…')} {step.hidden} more lines in {log}"
        step.hidden = 0
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

    def _event_line(self, ts: float, icon_key: str, step: _Step | None, text: str) -> None:
        """``12:00:02 ✓ build succeeded in 1.2s``: one line for an event that matters (its
        text may carry a step's words, a failure's reason: cleaned like the steps' output)."""
        text = clean(text)
        clock = time.strftime("%H:%M:%S", time.localtime(ts))
        icon, style = self._icon(icon_key)
        if self.tty:
            line = Text.assemble((clock, "dim"), " ", (icon, style), " ")
            if step is not None:
                line.append(step.label, style=f"bold {step.colour}")
                line.append(" ")
            line.append(text)
            self._print(line)
            return
        name = f"{self._paint(step.label, step.colour)} " if step is not None else ""
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
    def _attempt_note(step: _Step) -> str:
        if step.attempt <= 1:
            return ""
        of = f" of {step.max_attempts}" if step.max_attempts else ""
        return f" (attempt {step.attempt}{of})"

    # == live view ==================================================================================
    def _render_live(self) -> RenderableType:
        try:
            with self._lock:
                return self._render_live_locked()
        except Exception as exc:  # never kill the refresh thread
            return Text(f"(live view error: {exc})", style="dim")

    def _render_live_locked(self) -> RenderableType:
        now = time.time()
        steps = list(self._steps.values())
        done = sum(
            1
            for s in steps
            if s.status in (Status.SUCCEEDED, Status.SKIPPED, Status.STOPPED, Status.READY)
        )
        failed = sum(1 for s in steps if s.status in FAILURES and not s.allowed)
        header = Text.assemble(
            (self._name or "run", "bold"),
            f" {self._p('·')} {self._run_id} {self._p('·')} ",
            f"{done}/{len(steps)} done",
        )
        if failed:
            header.append(f" {self._p('·')} ")
            header.append(f"{failed} failed", style="bold red")
        if self._started is not None:
            end = self._finished.ts if self._finished is not None else now
            header.append(f" {self._p('·')} {format_duration(end - self._started)}")
        if self._system is not None:
            cpu, mem = self._system
            header.append(f" {self._p('·')} cpu {cpu:.0f}% mem {mem:.0f}%", style="dim")

        assert self._console is not None
        limit = max(3, self._console.size.height - 3)
        shown = steps
        rest: list[_Step] = []
        if len(steps) > limit:
            rank = {
                Status.RUNNING: 0,
                Status.READY: 0,
                Status.FAILED: 1,
                Status.TIMED_OUT: 1,
                Status.BLOCKED: 2,
                Status.CANCELLED: 2,
            }
            keep = sorted(steps, key=lambda s: (rank.get(s.status, 3), s.index))[: limit - 1]
            keep_names = {s.name for s in keep}
            shown = [s for s in steps if s.name in keep_names]
            rest = [s for s in steps if s.name not in keep_names]

        table = Table.grid(padding=(0, 1))
        table.add_column(width=1)  # icon
        table.add_column(no_wrap=True, max_width=40)  # name
        table.add_column(width=1)  # spinner
        table.add_column(justify="right", no_wrap=True)  # duration
        table.add_column(no_wrap=True, overflow="ellipsis")  # notes
        for step in shown:
            icon, style = self._icon(step.status)
            if step.allowed:
                icon, style = self._icon("allowed")
            spinner: RenderableType = (
                step.spinner if step.spinner is not None and step.status == Status.RUNNING else ""
            )
            notes = Text(style="dim")
            if step.background:
                notes.append("ready " if step.status == Status.READY else "bg ")
            if step.attempt > 1:
                of = f"/{step.max_attempts}" if step.max_attempts else ""
                notes.append(f"attempt {step.attempt}{of} ")
            if step.status in ACTIVE and step.cpu is not None:
                notes.append(f"cpu {step.cpu:.0f}% ")
                if step.rss is not None:
                    notes.append(f"{format_bytes(step.rss)} ")
            if step.status == Status.BLOCKED and step.blocked_by:
                notes.append(clean("blocked by " + ", ".join(step.blocked_by)))
            elif step.status in FAILURES:
                notes.append(self._cause(step.exit_code, step.signal))
            table.add_row(
                Text(icon, style=style),
                Text(step.label, style=step.colour if step.status == Status.RUNNING else ""),
                spinner,
                Text(format_duration(step.elapsed(now)) if step.started else "", style="dim"),
                notes,
            )
        parts: list[RenderableType] = [header, table]
        if rest:
            counts = self._counts({s.name: s for s in rest})
            parts.append(Text(f"{self._p('…')} and {len(rest)} more: {counts}", style="dim"))
        return Group(*parts)

    # == summary ====================================================================================
    def close(self, state: dict[str, Any], *, patience: float | None = None) -> bool:
        """Stop the live view, print what output is left, then the summary of ``state``, and
        wait for the terminal to take it: once it has taken nothing for ``patience`` seconds
        (default ``STDOUT_TIMEOUT``, or ``ORCH_STDOUT_TIMEOUT``), what is left is given up and
        False returned. The run's files are complete whatever the terminal does."""
        if self._closed:
            return True
        self._closed = True
        with self._lock:
            for name, info in (state.get("steps") or {}).items():
                step = self._steps.get(name)
                if step is None:
                    self._steps[name] = _Step(name, info, len(self._steps))
                else:
                    step.update_from_state(info)
                    step.spinner = None
            self._run_id = state.get("run_id") or self._run_id
            self._name = clean(state.get("name") or "") or self._name
        for step in list(self._steps.values()):
            self._echo(step, final=True)
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

    def _summary(self, state: dict[str, Any]) -> None:
        steps = self._steps
        now = time.time()
        shown, hidden = self._summary_rows(steps, now)
        rows = [self._summary_row(step, now) for step in shown]
        table = self._summary_table(rows)
        self._print_block(table)
        if hidden:
            self._print(Text(self._hidden_line(hidden), style="dim"))

        roots = [s for s in steps.values() if s.status in FAILURES and not s.allowed]
        for step in roots:
            cause = self._cause(step.exit_code, step.signal)
            if step.status == Status.TIMED_OUT:
                cause = f"timed out after {format_duration(step.elapsed(now))}"
            said = self._worth_saying(step.reason, step.status, step.exit_code, step.signal)
            detail = clean(", ".join(x for x in (cause, step.reason if said else None) if x))
            log = _display_path(self.run_dir / step.log)
            line = Text("root failure: ", style="bold red")
            line.append(step.label, style=f"bold {step.colour}")
            line.append(f"{f' ({detail})' if detail else ''} {self._p('—')} see {log}")
            self._print(line)
            for tail in self._tail(step):
                self._print(Text.assemble((f"  {step.label} | ", step.colour), tail))
        blocked = [s for s in steps.values() if s.status == Status.BLOCKED]
        by_root: dict[str, list[str]] = {}
        orphans: list[str] = []
        for step in blocked:
            if not step.blocked_by:
                orphans.append(step.label)
            for root in step.blocked_by:
                by_root.setdefault(clean(root), []).append(step.label)
        for root, names in by_root.items():
            self._print(Text(f"blocked by {root}: {', '.join(names)}", style="yellow"))
        if orphans:
            self._print(Text(f"blocked: {', '.join(orphans)}", style="yellow"))
        for step in steps.values():
            if step.allowed:
                cause = self._cause(step.exit_code, step.signal)
                log = _display_path(self.run_dir / step.log)
                self._print(
                    Text(
                        f"allowed failure: {step.label}{f' ({cause})' if cause else ''} "
                        f"{self._p('—')} see {log}",
                        style="yellow",
                    )
                )

        status = state.get("status") or (self._finished.status if self._finished else "")
        word = {
            RunStatus.SUCCEEDED: "run succeeded",
            RunStatus.FAILED: "run failed",
            RunStatus.INTERRUPTED: "run interrupted",
        }.get(status, f"run {status or 'ended'}")
        started = state.get("started") or self._started
        ended = state.get("ended") or now
        took = f" in {format_duration(ended - started)}" if started else ""
        style = {RunStatus.SUCCEEDED: "bold green", RunStatus.FAILED: "bold red"}.get(
            status, "bold yellow"
        )
        self._print(Text(f"{word}: {self._counts(steps)}{took}", style=style))

    def _summary_row(self, step: _Step, now: float) -> list[Text]:
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
        cells = [
            (step.label, step.colour),
            (f"{icon} {status}", style),
            (format_duration(step.elapsed(now)), ""),
            (str(step.attempt), ""),
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
            title=f"{self._name or 'run'} {self._p('—')} run {self._run_id}",
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

    def _summary_rows(self, steps: dict[str, _Step], now: float) -> tuple[list[_Step], list[_Step]]:
        """Every step of a small run, in recipe order; of a large one, what needs reading
        (failures first), then the slowest (slowest first); also the steps left out.

        A table of a thousand steps is unreadable and costs seconds to lay out; the
        failures, the blocked, the cancelled and the slowest steps are what a summary is for.
        """
        everything = list(steps.values())
        if len(everything) <= SUMMARY_ALL_UP_TO:
            return everything, []
        loud = [s for s in everything if s.status not in _QUIET or s.allowed]
        loud.sort(key=lambda s: _LOUD_ORDER.get("allowed" if s.allowed else s.status, 99))
        timed = [s for s in everything if s.status in _QUIET and not s.allowed and s.elapsed(now)]
        timed.sort(key=lambda s: s.elapsed(now) or 0.0, reverse=True)
        shown = loud[:SUMMARY_ALL_UP_TO] + timed[:SUMMARY_SLOWEST]
        kept = {id(s) for s in shown}
        return shown, [s for s in everything if id(s) not in kept]

    def _hidden_line(self, hidden: list[_Step]) -> str:
        where = _display_path(self.run_dir / "state.json")
        if all(s.status in _QUIET and not s.allowed for s in hidden):
            what = "that succeeded or were skipped, none slower than those listed"
        else:
            what = f"({self._counts({s.name: s for s in hidden})})"
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
    def _counts(steps: dict[str, _Step]) -> str:
        counts: dict[str, int] = {}
        for step in steps.values():
            key = "allowed" if step.allowed else step.status
            counts[key] = counts.get(key, 0) + 1
        known = {key for key, _ in _COUNT_ORDER}
        parts = [f"{counts[key]} {label}" for key, label in _COUNT_ORDER if counts.get(key)]
        parts += [f"{n} {key}" for key, n in counts.items() if key not in known]
        return ", ".join(parts) or "no steps"

    def _tail(self, step: _Step, lines: int = TAIL_LINES) -> Iterable[Text]:
        """The last ``lines`` lines of a step's log, for the summary."""
        path = self.run_dir / step.log
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
