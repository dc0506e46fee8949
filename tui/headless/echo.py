"""The echo of the steps' output: every line each step wrote, prefixed by the step's name.

Output comes from the log files, not from the events: ``StepOutput`` carries only the newest
lines, so the echo keeps a byte offset per step and reads ``logs/<step>.log`` from there, in
big chunks, with byte-level operations (no per-line Python work off a terminal). The offset
stays at the start of an unfinished line, which the next read takes again: nothing is held
back between reads, and a read goes to the printer whole (no copy of its complete lines). On a terminal
only the newest lines can be shown: at most ``TTY_LINES_PER_REFRESH`` a step per refresh, the
rest counted and pointed to. A terminal that stops reading gets the output skipped (counted,
and said), never queued without bound.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Iterator
from contextlib import closing
from typing import TYPE_CHECKING, Any

from core.text import clean
from tui.format import display_path
from tui.headless.terminal import BACKLOG_LIMIT, CATCH_UP_SECONDS, Printer, lines_of

if TYPE_CHECKING:
    from core.rundir import RunDir

#: Bytes read from a log at a time; also bounds the memory one echo pass needs, and a line
#: longer than this is echoed in pieces of it rather than waited for. A read, its cleaned and
#: its prefixed copies then stay in the processor's cache (4 MiB reads took 10% longer).
CHUNK = 1024 * 1024
#: On a terminal: at most this many output lines per step per refresh; the rest are counted.
TTY_LINES_PER_REFRESH = 200
#: Of a step's unfinished line (a progress bar), the live view keeps the start of its last
#: frame, this many bytes at most: wider than any terminal's line of it.
PARTIAL_BYTES = 4096
STEP_COLOURS = (
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


class StepView:
    """How the reporter shows one step (the step's state is the mirror's): its label and
    colour, its live figures and spinner, and where the echo of its log is."""

    __slots__ = (
        "name",
        "label",
        "colour",
        "cpu",
        "rss",
        "offset",
        "spinner",
        "window",
        "window_used",
        "hidden",
        "dropped",
        "resync",
        "log_path",
        "partial",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.label = clean(name)  # the name as shown
        self.colour = STEP_COLOURS[zlib.crc32(name.encode()) % len(STEP_COLOURS)]
        self.cpu: float | None = None
        self.rss: int | None = None
        self.offset = 0  # where the echo is in the log: after the last line it showed
        self.spinner: Any = None  # the live view's, while the step runs (live.py)
        self.window = -1  # refresh window of the tty echo budget
        self.window_used = 0
        self.hidden = 0  # tty: lines counted but not shown since the last notice
        self.dropped = 0  # bytes skipped while the terminal was behind, not said yet
        self.resync = False  # after a skip: the next read starts inside a line
        self.log_path: str | None = None  # logs/<step>.log, once looked up (Echo.log_path)
        self.partial = ""  # the unfinished last line so far, its last frame (a progress bar)


class Echo:
    """Prints what is new in a step's log (``echo``), or passes over it while the terminal is
    behind. ``tty``: keep the colour codes and cap the lines per refresh."""

    def __init__(
        self,
        run_dir: RunDir,
        printer: Printer,
        *,
        tty: bool,
        refresh_per_second: float,
    ) -> None:
        self.run_dir = run_dir
        self.printer = printer
        self.out = printer.out
        self.tty = tty
        self.refresh_per_second = refresh_per_second
        self._behind = False  # the terminal is not keeping up: the steps' output is skipped
        self._logs = os.fspath(run_dir.logs)

    def echo(self, view: StepView, *, final: bool, upto: int | None = None) -> None:
        """Print everything new in the step's log (``upto``: the size an event announced, not
        read past); with ``final`` its last, unterminated line too. While the terminal is
        behind, skip it."""
        if self._keeps_up():
            if view.dropped:
                self._dropped_notice(view)
            with closing(self._reads(view, final=final, upto=upto)) as reads:
                if self.tty:
                    self._echo_tail(view, reads)
                else:
                    for data, whole in reads:
                        self.printer.echo_block(view.label, view.colour, data, whole=whole)
                        if not self._keeps_up():
                            break
        if self._behind:
            self._skip(view, final=final, upto=upto)
        if final and view.dropped:
            self._dropped_notice(view)  # a status line: queued even while behind
        if final and view.hidden:
            self._hidden_notice(view)

    def left(self, view: StepView) -> bool:
        """Whether a final ``echo`` of the step has anything to do: a notice held back, or a
        log whose size is not where the echo is (one stat, no open: the end of a run looks at
        every step, most of which said all they wrote long ago)."""
        if view.dropped or view.hidden:
            return True
        try:
            return os.stat(self.log_path(view)).st_size != view.offset
        except OSError:
            return False  # no log: nothing written

    def log_path(self, view: StepView) -> str:
        """The step's log as a string, made once (a pathlib path built at each look cost more
        than the look)."""
        if view.log_path is None:
            view.log_path = f"{self._logs}/{self.run_dir.log_file(view.name)}"
        return view.log_path

    def _reads(
        self, view: StepView, *, final: bool, upto: int | None = None
    ) -> Iterator[tuple[bytes, bool]]:
        """What is new in the step's log, a read at a time, as ``(data, whole)``: the lines
        up to ``data``'s last newline are to be shown, and with ``whole`` the rest too (the
        unterminated last line at the end, ``final``; a piece of a line longer than a read).
        Otherwise the rest, an unfinished line, is read again next time."""
        if upto == view.offset:
            return  # nothing new (most steps' end: a step that printed nothing), no open
        try:
            fd = os.open(self.log_path(view), os.O_RDONLY)
        except OSError:
            return
        try:
            if os.fstat(fd).st_size < view.offset:  # replaced: start over
                view.offset = 0
            while True:
                want = CHUNK if upto is None else min(CHUNK, upto - view.offset)
                data = os.pread(fd, want, view.offset) if want > 0 else b""
                if not data:
                    return
                at_end = len(data) < want or view.offset + len(data) == upto
                piece = len(data) == CHUNK and b"\n" not in data  # of a line longer than a read
                if view.resync:
                    data = _resync(view, data)
                end = len(data) if piece or (final and at_end) else data.rfind(b"\n") + 1
                view.partial = _last_frame(data[end:])  # never echoed: read again, whole, later
                if end:
                    view.offset += end
                    yield data, end == len(data)
                if at_end or not end and not view.resync:
                    return
        except OSError:
            return
        finally:
            os.close(fd)

    def _keeps_up(self) -> bool:
        """Whether the steps' output is echoed (the terminal keeps up) or skipped (it is
        behind: see ``BACKLOG_LIMIT``). Sets ``_behind``."""
        if self._behind:
            self._behind = self.out.backlog > BACKLOG_LIMIT // 2
        else:
            self._behind = not self.out.wait_below(BACKLOG_LIMIT, CATCH_UP_SECONDS)
        return not self._behind

    def _echo_tail(self, view: StepView, reads: Iterator[tuple[bytes, bool]]) -> None:
        """On a terminal only the newest lines can be shown: keep a bounded tail, count the
        rest."""
        tail: bytes | None = None
        total = 0
        for data, whole in reads:
            block = lines_of(data, whole=whole)
            total += block.count(b"\n") + 1
            tail = block if tail is None else tail + b"\n" + block
            if tail.count(b"\n") >= TTY_LINES_PER_REFRESH:
                tail = b"\n".join(tail.rsplit(b"\n", TTY_LINES_PER_REFRESH)[1:])
        if tail is not None:
            self._echo_tty(view, tail, total)

    def _skip(self, view: StepView, *, final: bool, upto: int | None) -> None:
        """Pass over the step's new output without reading it (the log keeps all of it),
        counting it for ``_dropped_notice``: a terminal that takes nothing must cost neither
        memory nor the time to read what it will never show."""
        end = upto
        if end is None:
            try:
                end = os.stat(self.log_path(view)).st_size
            except OSError:
                end = view.offset
        view.dropped += max(0, end - view.offset)
        view.offset = max(end, view.offset)
        view.resync = not final  # the next read starts inside a line: shown from the next one
        view.partial = ""

    def _echo_tty(self, view: StepView, tail: bytes, total: int) -> None:
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
        self.printer.echo(view.label, view.colour, clean(tail, keep_sgr=True))

    def _dropped_notice(self, view: StepView) -> None:
        log = display_path(self.run_dir.log(view.name))
        notice = (
            f"{view.label} | {self.printer.p('…')} {view.dropped:,} bytes of output not shown "
            f"(terminal too slow; complete in {log})"
        )
        view.dropped = 0
        self.printer.line((notice, "dim"))

    def lost_notice(self, view: StepView, lost: int) -> None:
        """The step wrote ``lost`` bytes more than its log holds (it could not be written: a
        full disk), so the echo, which reads the log, ends short of them: said where it does."""
        log = display_path(self.run_dir.log(view.name))
        notice = (
            f"{view.label} | {self.printer.p('…')} {lost:,} more bytes of output lost "
            f"(they could not be written to {log})"
        )
        self.printer.line((notice, "dim"))

    def _hidden_notice(self, view: StepView) -> None:
        log = display_path(self.run_dir.log(view.name))
        notice = f"{view.label} | {self.printer.p('…')} {view.hidden} more lines in {log}"
        view.hidden = 0
        self.printer.line((notice, "dim"))


def _last_frame(line: bytes) -> str:
    """What a terminal shows of an unfinished line: after its last ``\r`` (a progress bar
    redraws itself so; one ending in ``\r`` shows the frame before it), cleaned."""
    line = line.rstrip(b"\r")
    return clean(line[line.rfind(b"\r") + 1 :][:PARTIAL_BYTES])


def _resync(view: StepView, data: bytes) -> bytes:
    """After a skip the echo's offset is inside a line: ``data`` from the start of the next
    one, what comes before counted as not shown."""
    cut = data.find(b"\n")
    skipped = len(data) if cut < 0 else cut + 1
    view.dropped += skipped
    view.offset += skipped
    view.resync = cut < 0
    return data[skipped:]
