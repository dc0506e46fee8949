"""A step's output: every byte to logs/<step>.log, the newest lines in a small ring for viewers.

The log file is the truth and gets everything, byte for byte, whatever its encoding or line
length. Viewers (the TUI, the reporter, events) only ever need the newest lines, so the ring
keeps a bounded number of them, each cut to a bounded length: a 10 MB line without a newline,
or two million lines, cost the same memory. Splitting works from the end of each chunk
(``rsplit`` with a limit), so a chunk of ten thousand lines is not turned into ten thousand
objects when only the last few hundred can be shown.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from core.diskspace import DiskSpace
from core.privatedir import PrivateDir
from core.text import clean

RING_LINES = 1000
PER_CHUNK = 250  # lines of one chunk kept for viewers and ready: {log}
MAX_LINE = 4096  # bytes of one line kept for display; the log file keeps all of it
#: What a StepOutput event carries of the output: its newest lines, each cut. The log file is
#: the record and every viewer reads it by offset; these are for a glance (``ctl events``), and
#: more made events.jsonl a second copy of a flooding step's output, megabytes a second.
EVENT_LINES = 20
EVENT_LINE_CHARS = 500


def clean_line(raw: bytes, *, keep_sgr: bool = False) -> str:
    """A log line as display text (``core.text.clean``: no escape sequences or controls, the
    last frame of a ``\\r`` progress bar; with ``keep_sgr`` its colour codes), tabs expanded
    for the log pane."""
    text = clean(raw, keep_sgr=keep_sgr)
    return text.expandtabs(8) if "\t" in text else text


class StepLog:
    """Sink for one step attempt's output. Thread-safe: a reader thread writes, viewers read."""

    def __init__(
        self,
        folder: PrivateDir,
        name: str,
        *,
        ring_lines: int = RING_LINES,
        lazy: bool = False,
        space: DiskSpace | None = None,
    ) -> None:
        """The log is file ``name`` in the run's held ``folder`` (logs/): opened through it,
        never by a path a planted link could redirect (``PrivateDir.append``).

        ``lazy``: create the file on the first write. A step that prints nothing then
        costs no file at all, which on a slow file system is most of what a no-op step
        costs (creating a file took from 6 µs to 300 µs on the same machine here; on ext4
        without a journal, right after deletions, up to 0.4 ms).

        ``space``: the run folder's (core.diskspace): once its disk is found full, by this log
        or by anything else of the run, nothing more is written to the log."""
        self.folder, self.name, self.space = folder, name, space
        self._fd: int | None = None
        self.size = 0
        if not lazy:
            self._open()
        self._lock = threading.Lock()
        self._ring: deque[bytes] = deque(maxlen=ring_lines)
        self._partial = b""
        self.lines_total = 0
        self._emitted_total = 0
        self._emitted_size = self.size
        self._watch: re.Pattern[str] | None = None
        self._on_match: Callable[[], None] | None = None
        self._closed = False
        #: the first failed write: the log ends there, nothing after it is written (a log
        #: with a hole where the disk was full would not say so), and ``lost`` counts the rest
        self.write_error: OSError | None = None
        self.lost = 0

    # -- writing ------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            if self._closed:
                return
            if self.write_error is None and self.space is not None and self.space.full:
                self.write_error = self.space.error  # what is left is for state.json
            if self.write_error is not None:
                self.lost += len(data)
                self._take_lines(data)
                return
            written = 0
            try:
                fd = self._fd if self._fd is not None else self._open()
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    written += n
                    view = view[n:]
            except OSError as exc:  # disk full, I/O error: the step goes on, its log is short
                self.write_error = exc
                self.lost += len(data) - written
                if self.space is not None:
                    self.space.trip(exc, f"logs/{self.name}")
            self.size += written
            self._take_lines(data)  # viewers and ready: {log} still see the lines

    def _open(self) -> int:
        fd = self._fd = self.folder.append(self.name)
        self.size = os.fstat(fd).st_size
        return fd

    @property
    def created(self) -> bool:
        """The log file exists (a lazy one only once something was written)."""
        return self._fd is not None

    def write_text(self, text: str) -> None:
        self.write(text.encode("utf-8", "surrogateescape"))

    def _take_lines(self, data: bytes) -> None:
        newlines = data.count(b"\n")
        if newlines == 0:
            if len(self._partial) < MAX_LINE:
                self._partial += data[: MAX_LINE - len(self._partial)]
            return
        self.lines_total += newlines
        # Only the newest lines of a chunk can ever be shown (viewers take at most a couple of
        # hundred per tick), so split no more than that: a 1 MB chunk of short lines costs a
        # few hundred objects, not a hundred thousand. It keeps a flooding step's reader off
        # the GIL, which is what keeps the TUI answering keys.
        keep = min(self._ring.maxlen or RING_LINES, PER_CHUNK)
        parts = data.rsplit(b"\n", min(newlines, keep))
        if newlines <= keep:
            first = self._partial + parts[0][:MAX_LINE]
            complete = [first, *parts[1:-1]]
        else:
            complete = parts[1:-1]
        if complete and max(map(len, complete)) > MAX_LINE:
            complete = [line[:MAX_LINE] for line in complete]
        self._ring.extend(complete)
        self._partial = parts[-1][:MAX_LINE]
        if self._watch is not None:
            self._check_watch(complete)

    # -- readiness by log line -----------------------------------------------------------------
    def watch(self, pattern: str, on_match: Callable[[], None]) -> None:
        """Call ``on_match`` once, when a line (from now on, or already in the ring) matches."""
        regex = re.compile(pattern)
        with self._lock:
            if any(regex.search(clean_line(line)) for line in self._ring):
                on_match()
                return
            self._watch, self._on_match = regex, on_match

    def _check_watch(self, lines: list[bytes]) -> None:
        assert self._watch is not None
        for line in lines:
            if self._watch.search(clean_line(line)):
                callback, self._watch, self._on_match = self._on_match, None, None
                if callback is not None:
                    callback()
                return

    # -- reading --------------------------------------------------------------------------------
    def take_new(self) -> tuple[int, list[str], int] | None:
        """(size, newest lines since the last call, lines_total), or None if nothing changed;
        at most ``EVENT_LINES`` lines, each cut to ``EVENT_LINE_CHARS``."""
        with self._lock:
            if self.size == self._emitted_size and self.lines_total == self._emitted_total:
                return None
            new = min(self.lines_total - self._emitted_total, EVENT_LINES, len(self._ring))
            newest = list(itertools.islice(reversed(self._ring), new))
            lines = [clean_line(b)[:EVENT_LINE_CHARS] for b in reversed(newest)]
            self._emitted_total, self._emitted_size = self.lines_total, self.size
            return self.size, lines, self.lines_total

    @property
    def closed(self) -> bool:
        """Closed: nothing more is written to it."""
        return self._closed

    @property
    def dirty(self) -> bool:
        return self.size != self._emitted_size or self.lines_total != self._emitted_total

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._partial:
                    self._ring.append(self._partial)
                    self.lines_total += 1
                    self._partial = b""
                if self._fd is not None:
                    os.close(self._fd)


def read_tail(
    path: Path, max_lines: int, max_bytes: int = 1 << 20, *, keep_sgr: bool = False
) -> tuple[list[str], int, bool]:
    """The last ``max_lines`` lines of a log file as display text (``clean_line``), reading
    at most ``max_bytes``: the one tail reader (the TUI's log pane, the headless summary's
    root failures).

    Returns (lines, file size, whether earlier content was left out). Viewers call this many
    times a second on a growing file, so it reads only the end, like ``tail``.
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            f.seek(start)
            data = f.read(size - start)
    except OSError:
        return [], 0, False
    parts = data.split(b"\n")
    truncated = start > 0
    if truncated and len(parts) > 1:
        parts = parts[1:]  # the first piece is probably the end of a longer line
    if parts and parts[-1] == b"":
        parts.pop()
    if len(parts) > max_lines:
        parts, truncated = parts[-max_lines:], True
    return [clean_line(p[:MAX_LINE], keep_sgr=keep_sgr) for p in parts], size, truncated
