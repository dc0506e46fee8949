"""The headless reporter's way to its stream: a writer that never blocks, and a printer of
plain lines.

``Terminal`` queues text and writes it from a thread of its own, so a terminal or pipe that
stops reading never stops the run; ``Printer`` turns the reporter's lines (text in styled
pieces) into plain text, ANSI-coloured only when asked. On a terminal ``live.RichPrinter``
replaces the printer (Rich is imported there and only there: a CI log never loads it).
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections import deque
from typing import TextIO

from core.text import clean, clean_bytes
from tui.format import ALLOWED, ALLOWED_GLYPH, HEALTH_GLYPHS, RESTARTING_GLYPH, STATUS_GLYPHS, Glyph
from tui.headless.table import Table, render_plain

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
#: Pieces one ``writev`` takes at most (POSIX's minimum of IOV_MAX; Linux's is this too).
IOV_MAX = 1024

#: marks of lines that are not a step's status (tui.format has those), with their fallbacks
MARKS: dict[str, Glyph] = {
    "retry": RESTARTING_GLYPH,  # a retry is marked as a restart is
    ALLOWED: ALLOWED_GLYPH,
    "run": Glyph("»", ">", "bold"),
    "debug": Glyph("·", ".", "dim"),
    "info": Glyph("ℹ", "i", "blue"),
    "warning": Glyph("⚠", "!", "yellow"),
    "error": Glyph("✗", "x", "bold red"),
}
_PUNCT = {"…": "...", "—": "-", "·": "-", "→": "->"}
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

#: a piece of a line: its text, or its text and a Rich style string
Piece = str | tuple[str, str]
#: bytes queued for the stream (a memoryview: part of a bigger block, not copied out of it)
Buffer = bytes | memoryview


def stdout_timeout() -> float:
    """``STDOUT_TIMEOUT``, or the seconds ``ORCH_STDOUT_TIMEOUT`` says (if a number >= 0),
    at most the longest wait the thread library takes: ``inf`` (never give up) is that."""
    try:
        seconds = float(os.environ.get("ORCH_STDOUT_TIMEOUT", ""))
    except ValueError:
        return STDOUT_TIMEOUT
    return min(seconds, threading.TIMEOUT_MAX) if seconds >= 0 else STDOUT_TIMEOUT


class Terminal:
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
        self._queue: deque[Buffer] = deque()
        self._cond = threading.Condition()
        self.backlog = 0
        self.broken = False  # the stream went away (a closed pipe): nothing more is written
        self.error: OSError | None = None  # why it broke, when a write failed
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
            except OSError as exc:
                self.broken, self.error = True, exc
            except ValueError:  # a closed stream
                self.broken = True
            return len(text)
        self.write_bytes(text.encode(self.encoding, "replace"))
        return len(text)

    def write_bytes(self, *pieces: Buffer) -> None:
        """``pieces``, already in the stream's encoding, queued (one after the other) as
        ``write`` queues text; a memoryview is not copied (nor must its bytes change)."""
        if self.broken:
            return
        if self._fd is None:
            self.write(b"".join(pieces).decode(self.encoding, "replace"))
            return
        with self._cond:
            idle = not self._queue
            if idle:
                self._progress = time.monotonic()  # idle until now, not stuck
            self._queue.extend(pieces)
            self.backlog += sum(map(len, pieces))
            if idle:  # else the pump was told and takes these too: no wake-up a line
                self._cond.notify_all()

    def flush(self) -> None:
        """Nothing to do: the pump writes as soon as it can (``drain`` waits for it)."""

    def isatty(self) -> bool:
        try:
            return bool(self._stream.isatty())
        except (AttributeError, OSError, ValueError):
            return False

    def _pump(self) -> None:
        """Write what is queued, as it is queued: ``writev`` of the pieces, not a join of
        them (a copy of the whole backlog, made holding the GIL the echo needs)."""
        assert self._fd is not None
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                pieces = list(self._queue)
                self._queue.clear()
            while pieces:
                try:
                    written = os.writev(self._fd, pieces[:IOV_MAX])
                except BlockingIOError:  # someone made the descriptor non-blocking
                    select.select([], [self._fd], [])
                    continue
                except OSError as exc:  # a closed pipe or descriptor, a full disk
                    with self._cond:
                        self.broken, self.error = True, exc
                        self._queue.clear()
                        self.backlog = 0
                        self._cond.notify_all()
                    return
                _consume(pieces, written)
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


def lines_of(data: bytes, *, whole: bool) -> bytes:
    """The lines of a read of a log (``Printer.echo_block``'s) as one block without its last
    newline: up to the last newline, or with ``whole`` all of it."""
    if whole and not data.endswith(b"\n"):
        return data
    return data[: data.rfind(b"\n")]


def _consume(pieces: list[Buffer], written: int) -> None:
    """Take the first ``written`` bytes off ``pieces`` (what a ``writev`` of them wrote)."""
    done = 0
    while done < len(pieces) and written >= len(pieces[done]):
        written -= len(pieces[done])
        done += 1
    del pieces[:done]
    if written:
        pieces[0] = memoryview(pieces[0])[written:]


class Printer:
    """The reporter's lines as plain text (off a terminal: a CI log, a pipe, a file).

    A line comes in pieces, each its text or (text, style): the styles are dropped, except in
    the event lines and the echo's step names, which ``color`` paints with ANSI codes. Symbols
    the stream cannot encode get their ASCII stand-ins (``symbols`` False).
    """

    #: the summary's width: none off a terminal, where every cell stays whole (a CI log is
    #: read in a browser or grepped, where a row is never too long, and a cut loses words)
    width: int | None = None

    def __init__(self, out: Terminal, *, color: bool) -> None:
        self.out = out
        self.color = color
        self.encoding = out.encoding
        self.unicode = self.encoding.startswith("utf")
        #: ASCII bytes are this encoding's own (``echo_block`` passes them on unchanged)
        self.ascii_compatible = self.encoding in ("utf-8", "ascii")
        self._clock: tuple[int, str] = (-1, "")  # the event lines' second, as they show it
        glyphs = [*STATUS_GLYPHS.values(), *MARKS.values(), *HEALTH_GLYPHS.values()]
        try:
            ("".join(g.symbol for g in glyphs) + "".join(_PUNCT)).encode(self.encoding)
            self.symbols = True
        except UnicodeError:
            self.symbols = False

    def p(self, symbol: str) -> str:
        """A punctuation symbol (``…``, ``—``, ``·``, ``→``), or its ASCII stand-in."""
        return symbol if self.symbols else _PUNCT.get(symbol, symbol)

    def icon(self, key: str) -> tuple[str, str]:
        """A status's or a mark's symbol (or its ASCII stand-in) and its style."""
        glyph = (
            STATUS_GLYPHS.get(key)
            or MARKS.get(key)
            or HEALTH_GLYPHS.get(key)
            or Glyph("·", ".", "")
        )
        return (glyph.symbol if self.symbols else glyph.ascii), glyph.style

    def paint(self, text: str, style: str) -> str:
        """ANSI colour with ``color`` on; the text alone otherwise."""
        if not self.color or not style:
            return text
        codes = ";".join(_SGR[s] for s in style.split() if s in _SGR)
        return f"\x1b[{codes}m{text}\x1b[0m" if codes else text

    def write(self, text: str) -> None:
        if not self.unicode:
            text = text.encode(self.encoding, "replace").decode(self.encoding)
        self.out.write(text)

    def line(self, *pieces: Piece, style: str = "") -> None:
        """One line (or a few, for text holding newlines) made of pieces, on a terminal in
        ``style`` with each piece's own on top; off one the styles go."""
        if self.out.broken:
            return
        self.write("".join(p if isinstance(p, str) else p[0] for p in pieces) + "\n")

    def echo(self, label: str, colour: str, text: str, *, indent: str = "") -> None:
        """Lines a step wrote, each after ``label | `` (``clean`` took every escape code: there
        is no colour of the step's to keep off a terminal)."""
        if self.out.broken:
            return
        prefix = f"{indent}{self.paint(label, colour)} | "
        self.write(prefix + text.replace("\n", "\n" + prefix) + "\n")

    def echo_block(self, label: str, colour: str, data: bytes, *, whole: bool) -> None:
        """``echo`` of a read of a step's log: its lines up to its last newline, and with
        ``whole`` the rest too, as a line. ASCII output (the bulk of what steps print) stays
        bytes on its way to a UTF-8 or ASCII stream, prefixed in one ``bytes.replace`` of the
        whole read; what is left out, an unfinished line, is cut off by a memoryview, not a
        copy. Anything else goes through ``clean``'s text."""
        if self.out.broken:
            return
        data = clean_bytes(data)  # nothing it removes spans lines: the rest changes no line
        if not (self.ascii_compatible and data.isascii()):
            self.echo(label, colour, lines_of(data, whole=whole).decode("utf-8", "replace"))
            return
        prefix = f"{self.paint(label, colour)} | ".encode(self.encoding, "replace")
        prefixed = data.replace(b"\n", b"\n" + prefix)
        rest = len(data) - data.rfind(b"\n") - 1  # after the last newline
        if whole and rest:
            self.out.write_bytes(prefix, prefixed, b"\n")
        else:  # up to the last newline, the prefix after it left out
            self.out.write_bytes(prefix, memoryview(prefixed)[: len(prefixed) - rest - len(prefix)])

    def table(self, table: Table) -> None:
        """The summary's table, as Rich would draw it (``table.render_plain``)."""
        lines = render_plain(table, ascii_box=not self.unicode)
        self.write("".join(line + "\n" for line in lines))

    def event_line(self, ts: float, key: str, who: tuple[str, str] | None, text: str) -> None:
        """``12:00:02 ✓ build succeeded in 1.2s``: one line for an event that matters (its
        text may carry a step's words, a failure's reason: cleaned like the steps' output).
        ``who``: the step's label and colour."""
        text = clean(text)
        second = int(ts)
        if second != self._clock[0]:  # localtime and strftime: a third of a line's cost
            self._clock = (second, time.strftime("%H:%M:%S", time.localtime(second)))
        clock = self._clock[1]
        icon, style = self.icon(key)
        name = f"{self.paint(*who)} " if who is not None else ""
        self.write(f"{clock} {self.paint(icon, style)} {name}{text}\n")
