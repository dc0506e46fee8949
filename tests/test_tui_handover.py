"""``tui.handover`` on real pseudo-terminals: the app holds the pty's slave side, the test plays
the terminal on its master side (reads what the app wrote, answers or not)."""

from __future__ import annotations

import os
import pty
import select
import termios
import threading
import time

from tui.handover import DA1_REQUEST, wait_until_shown

ANSWER = b"\x1b[?62;22c"  # a VT220 with colours


def _read_until(fd: int, end: bytes, timeout: float = 10.0) -> bytes:
    """What the app wrote, up to and including ``end``."""
    data = b""
    deadline = time.monotonic() + timeout
    while end not in data:
        left = deadline - time.monotonic()
        assert left > 0 and select.select([fd], [], [], left)[0], f"no {end!r} in {data!r}"
        data += os.read(fd, 1024)
    return data


def test_the_terminal_has_read_everything_before_when_it_answers():
    master, slave = pty.openpty()
    modes = termios.tcgetattr(slave)
    seen: list[bytes] = []

    def terminal() -> None:
        seen.append(_read_until(master, DA1_REQUEST))
        os.write(master, ANSWER)

    thread = threading.Thread(target=terminal)
    try:
        os.write(slave, b"attaching to web")
        thread.start()
        assert wait_until_shown(slave, slave)
        thread.join()
        assert seen == [b"attaching to web" + DA1_REQUEST]
        # the answer is not echoed onto the screen, and the terminal's modes are back
        os.write(slave, b"end")
        assert _read_until(master, b"end") == b"end"
        assert termios.tcgetattr(slave) == modes
    finally:
        os.close(master)
        os.close(slave)


def test_a_terminal_that_does_not_answer_only_costs_the_timeout():
    master, slave = pty.openpty()
    modes = termios.tcgetattr(slave)
    try:
        assert not wait_until_shown(slave, slave, timeout=0.2)
        assert _read_until(master, DA1_REQUEST) == DA1_REQUEST
        assert termios.tcgetattr(slave) == modes
    finally:
        os.close(master)
        os.close(slave)


def test_no_terminal_no_request():
    read_end, write_end = os.pipe()
    try:
        assert not wait_until_shown(read_end, write_end)
        os.close(write_end)
        assert os.read(read_end, 100) == b""
    finally:
        os.close(read_end)
