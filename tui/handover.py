"""Handing the terminal to a multiplexer only once the terminal has shown what came before.

tmux, attaching, discards the output its terminal has not read yet (``tcflush(TCOFLUSH)`` in
``tty_start_tty``). A terminal that was slow to read (a busy machine) lost the attach message
and the escape sequences that end the app's full-screen mode. The pty says nothing about what
its reader took (``tcdrain`` returns at once, ``TIOCOUTQ`` is 0), but a terminal answers a
Primary Device Attributes request (``ESC [ c``) in order, after everything written before it.
"""

from __future__ import annotations

import os
import re
import select
import sys
import termios
import time

DA1_REQUEST = b"\x1b[c"
#: e.g. ``ESC [ ? 62 ; 22 c`` (VT220 with colours); every terminal sends some such answer
_DA1_ANSWER = re.compile(rb"\x1b\[\?[0-9;]*c")
#: a terminal that never answers costs this much at each attach; one that answers later than
#: this hands its answer to the multiplexer (tmux drops it, screen types it into the session)
ANSWER_TIMEOUT = 2.0


def wait_until_shown(tty_in: int, tty_out: int, timeout: float = ANSWER_TIMEOUT) -> bool:
    """Ask the terminal on ``tty_out`` for its device attributes and read its answer from
    ``tty_in``: True once it answered (it has read all that was written before), False if it
    did not in ``timeout`` seconds or these are not terminals. Keys typed meanwhile are
    dropped, as Textual's own suspend drops them."""
    if not (os.isatty(tty_in) and os.isatty(tty_out)):
        return False
    saved = termios.tcgetattr(tty_in)
    quiet = termios.tcgetattr(tty_in)
    quiet[3] &= ~(termios.ICANON | termios.ECHO)  # the answer is neither a line nor shown
    quiet[6][termios.VMIN], quiet[6][termios.VTIME] = 1, 0
    termios.tcsetattr(tty_in, termios.TCSANOW, quiet)
    try:
        os.write(tty_out, DA1_REQUEST)
        return _read_answer(tty_in, time.monotonic() + timeout)
    finally:
        termios.tcsetattr(tty_in, termios.TCSANOW, saved)


def _read_answer(tty_in: int, deadline: float) -> bool:
    """Read until an answer has come (it may arrive in pieces, after keys typed meanwhile)."""
    received = b""
    while not _DA1_ANSWER.search(received):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([tty_in], [], [], remaining)[0]:
            return False
        try:
            chunk = os.read(tty_in, 1024)
        except OSError:  # the terminal hung up
            return False
        if not chunk:
            return False
        received += chunk
    return True


def import_libtmux() -> None:
    """Import libtmux (core.sessions.tmux uses it) with the real stdout in place, on the app's
    thread: libtmux reads ``sys.stdout.encoding`` as it is imported, and the stand-in Textual
    puts in ``sys.stdout`` while the app runs has none. (Once a run's python steps were in the
    app's process, their output router, which has one, hid this.)"""
    if "libtmux" in sys.modules:
        return
    captured, sys.stdout = sys.stdout, sys.__stdout__
    try:
        import libtmux  # noqa: F401
    finally:
        sys.stdout = captured
