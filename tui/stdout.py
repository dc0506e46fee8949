"""stdout and stderr that a reader may close or stop reading: a command ends quietly then.

``orch-tui graph R | head`` closes the pipe after ten lines; a CI log may stop reading. Neither
is worth a traceback, and neither may hang orch-tui on its way out.
"""

from __future__ import annotations

import os
import sys


def closed() -> bool:
    """Whether nobody reads stdout any more (a pipe whose reader has closed it)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):  # no stdout at all, or not a file descriptor
        return False


def gone() -> None:
    """Send what is left for stdout to /dev/null: the reader closed the pipe, which ends a
    command quietly, not with a traceback (the "Note on SIGPIPE" in Python's signal docs)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def say(text: str) -> None:
    """Print a line of a listing; a closed stdout stops the listing, not the work."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        gone()


def tell_stderr(text: str) -> None:
    """A short note on stderr if it can take it now: stderr may be the same blocked pipe."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stderr.fileno(), select.POLLOUT)
        if poller.poll(0):
            os.write(sys.stderr.fileno(), text.encode(errors="replace"))
    except (OSError, ValueError):
        pass


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Aligned columns, two spaces apart, the header first (``sessions``, ``runs``, ``ctl
    status``): what a reader's eye and ``awk`` both take."""
    from tui.cells import cell_len  # the columns a terminal draws (CJK: two a char)

    table = [header, *rows]
    widths = [max(cell_len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        cells = (cell + " " * (w - cell_len(cell)) for cell, w in zip(row, widths, strict=True))
        say("  ".join(cells).rstrip())


def terminal_width() -> int | None:
    """The terminal's width when stdout is one: a listing is then fitted to it, as a wrapped
    row is unreadable; to a pipe (awk, grep) every cell is whole (None)."""
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError):
        return None
