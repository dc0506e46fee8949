"""Attaching to a session from the TUI, through a real pseudo-terminal.

``App.suspend`` is not available under the headless test driver, so these tests start the real
``orch-tui RECIPE`` on a pty (``pty.fork``: its own session, the pty as controlling terminal,
120x36, TERM=xterm-256color), read what it draws, and type at it like a user: ``a`` hands the
terminal to ``screen -r``, ``Ctrl-a d`` gives it back. Like a real one, the test's terminal
answers a device attributes request (orch-tui asks one before handing the terminal over).
Every session lives in a private SCREENDIR; everything started here is killed at the end, pass
or fail.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import (
    MULTIPLEXER_TIMEOUT,
    TMUX,
    alive,
    end_run,
    marked,
    needs_screen,
    needs_tmux,
    read_state,
    screen_sessions,
    write_recipe,
)
from tests.tui_helpers import TmuxApp
from tui.handover import ANSWER_TIMEOUT

ROWS, COLS = 36, 120
#: a Primary Device Attributes request, and a terminal's answer (a VT220 with colours)
DA1_REQUEST = re.compile(rb"\x1b\[0?c")
DA1_ANSWER = b"\x1b[?62;22c"
#: what the kernel holds of a pty's output for its reader; more waits in a buffer that tmux,
#: attaching, empties (``tcflush``) along with what is in it
PTY_READ_BUFFER = 4095


class Terminal:
    """``orch-tui`` running on a pty: what it wrote so far, and a keyboard."""

    def __init__(
        self, argv: list[str], cwd: Path, env: dict[str, str], run_dir: Path | None = None
    ) -> None:
        self.run_dir = run_dir  # the run's daemon and steps go with ``kill``
        pid, fd = pty.fork()
        if pid == 0:  # the child: size the terminal before anything reads it, then exec
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
                os.chdir(cwd)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        os.set_blocking(fd, False)
        self.output = bytearray()
        self._scanned = 0  # where the search for terminal requests goes on from
        self.returncode: int | None = None

    # -- reading ---------------------------------------------------------------------------------
    def read(self, timeout: float = 0.05) -> None:
        """Take whatever the program wrote (waiting up to ``timeout`` for something)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        while ready:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:  # EIO: the program has exited and the pty is closed
                break
            if not chunk:
                break
            self.output += chunk
            ready, _, _ = select.select([self.fd], [], [], 0)
        self._answer_requests()
        self.poll()

    def _answer_requests(self) -> None:
        """Answer the device attributes requests read so far, as a terminal does."""
        for request in DA1_REQUEST.finditer(self.output, self._scanned):
            self.type(DA1_ANSWER)
            self._scanned = request.end()
        # a request cut short by the end of what was read is answered once the rest is read
        self._scanned = max(self._scanned, len(self.output) - 3)

    def unread(self) -> int:
        """How much the program wrote that this terminal has not read (at most PTY_READ_BUFFER)."""
        return struct.unpack("i", fcntl.ioctl(self.fd, termios.FIONREAD, b"\0" * 4))[0]

    def text(self, since: int = 0) -> str:
        return self.output[since:].decode("utf-8", "replace")

    def wait_for(self, what, timeout: float = 20.0, since: int = 0, label: str = "") -> int:
        """Read until ``what`` (a string, or a callable on nothing) holds; keep the pty drained.

        Returns the output position just past the match for a string.
        """
        deadline = time.monotonic() + timeout
        while True:
            if isinstance(what, str):
                position = self.output.find(what.encode(), since)
                if position >= 0:
                    return position + len(what.encode())
            elif what():
                return len(self.output)
            if time.monotonic() > deadline:
                tail = _screen_text(self.text(max(since, len(self.output) - 3000)))
                pytest.fail(
                    f"timed out after {timeout:g}s waiting for {label or what!r}; "
                    f"exit status {self.returncode}; the terminal's last output:\n{tail}"
                )
            self.read()

    # -- writing ---------------------------------------------------------------------------------
    def type(self, data: bytes | str) -> None:
        os.write(self.fd, data.encode() if isinstance(data, str) else data)

    # -- the process -----------------------------------------------------------------------------
    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while self.poll() is None and time.monotonic() < deadline:
                self.read()
        try:
            os.close(self.fd)
        except OSError:
            pass
        if self.run_dir is not None:
            end_run(self.run_dir)


_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def _screen_text(raw: str) -> str:
    """Terminal output with the escape sequences taken out (for failure messages)."""
    return _ESCAPES.sub("", raw).replace("\r", "")


def _session_state(name: str) -> str | None:
    """'Attached' / 'Detached' as ``screen -ls`` says for the session named exactly ``name``."""
    return next((state for _, found, state in screen_sessions() if found == name), None)


def _start(
    tmp_path: Path,
    session: str,
    options: str = "",
    cli: tuple[str, ...] = (),
    inside: dict[str, str] | None = None,
) -> tuple[Terminal, Path]:
    """orch-tui (with ``cli`` options) on a recipe that creates ``session`` (screen, or what
    ``options`` add to the step, e.g. ``backend: tmux, socket: x``), then runs ``sleeper``;
    ``inside``: the variables a multiplexer's window sets ($TMUX, $STY), else none."""
    options = f", {options}" if options else ""
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: sess, type: session, action: create, session: {session}{options}}}
          - {{name: sleeper, type: shell, cmd: sleep, args: ["100"]}}
        """,
    )
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "PYTEST_"))}
    env.update(TERM="xterm-256color", COLUMNS=str(COLS), LINES=str(ROWS))
    for name in ("FORCE_COLOR", "NO_COLOR", "TEXTUAL", "STY", "TMUX"):
        env.pop(name, None)
    env.update(inside or {})
    argv = [sys.executable, "-m", "tui.cli", str(recipe), "--run-dir", str(run_dir), *cli]
    term = Terminal(argv, tmp_path, env, run_dir)
    return term, run_dir


def _wait_running(term: Terminal, run_dir: Path) -> None:
    """The TUI has drawn its tree, the session exists and ``sleeper`` runs."""
    term.wait_for("sleeper", label="the step tree")

    def steps_up() -> bool:
        try:
            steps = read_state(run_dir)["steps"]
        except (OSError, ValueError):
            return False
        return steps["sess"]["status"] == "succeeded" and steps["sleeper"]["status"] == "running"

    term.wait_for(steps_up, 30, label="sess succeeded and sleeper running (state.json)")


def _quit(term: Terminal, run_dir: Path) -> None:
    """q, y: the TUI stops the running step and exits (130: closed before the steps ended)."""
    mark = len(term.output)
    term.type("q")
    term.wait_for("Quit orch-tui?", since=mark, label="the quit question")
    started = time.monotonic()
    term.type("y")
    term.wait_for(lambda: term.poll() is not None, 10, label="orch-tui to exit")
    took = time.monotonic() - started
    term.read()
    print(f"\norch-tui exited {term.returncode} {took:.2f}s after y")
    assert term.returncode == 130, _screen_text(term.text(mark))
    assert "interrupted" in term.text(mark)
    state = read_state(run_dir)
    assert state["steps"]["sleeper"]["status"] == "cancelled"
    assert not marked(run_dir), "a step process outlived orch-tui"


@needs_screen
def test_attach_hands_the_terminal_to_screen_and_detach_comes_back(tmp_path, screendir):
    session = f"orchtui-a-{uuid.uuid4().hex[:8]}"
    term, run_dir = _start(tmp_path, session)
    try:
        _wait_running(term, run_dir)
        assert _session_state(session) == "Detached"

        mark = len(term.output)
        term.type("a")  # the first step (the session's) is selected
        term.wait_for(f"attaching to {session}", since=mark, label="the attach message")
        term.wait_for(lambda: _session_state(session) == "Attached", 15, label="screen attached")

        mark = len(term.output)
        term.type("echo attached-marker-$((100 + 23))\r")
        term.wait_for("attached-marker-123", since=mark, label="the session's shell output")

        mark = len(term.output)
        term.type(b"\x01d")  # Ctrl-a d
        term.wait_for(lambda: _session_state(session) == "Detached", 15, label="screen detached")
        after = term.wait_for("[detached from", since=mark, label="screen's detach message")
        term.wait_for("sleeper", since=after, label="the TUI drawn again after the detach")
        term.wait_for("sess", since=after, label="the TUI drawn again after the detach")
        # the footer changes for nothing: drawn again only by a repaint of the whole screen
        term.wait_for("Detach", since=after, label="the footer drawn again after the detach")
        assert term.poll() is None, "orch-tui exited on the detach"

        _quit(term, run_dir)
        assert _session_state(session) == "Detached", "quitting killed the session"
    finally:
        term.kill()
        for pid in marked(run_dir):
            os.kill(pid, signal.SIGKILL)


def _attach_from_the_sessions_screen(term: Terminal, session: str, attached, detach) -> None:
    """S, the session's row (the first: the only one), a: the multiplexer takes the terminal;
    ``detach()`` gives it back to the Sessions screen."""
    mark = len(term.output)
    term.type("S")
    # the test's private SCREENDIR and TMUX_TMPDIR hold this one session
    term.wait_for("1 session", since=mark, label=f"{session} listed in the Sessions screen")
    mark = len(term.output)
    term.type("a")
    term.wait_for(f"attaching to {session}", since=mark, label="the attach message")
    term.wait_for(attached, 15, label="the session attached")
    mark = len(term.output)
    term.type("echo attached-marker-$((100 + 23))\r")
    term.wait_for("attached-marker-123", since=mark, label="the session's shell output")
    mark = len(term.output)
    detach()
    term.wait_for(lambda: not attached(), 15, label="the session detached")
    term.wait_for("Sessions", since=mark, label="the Sessions screen drawn again")
    assert term.poll() is None, "orch-tui exited on the detach"
    _back_to_the_steps(term)


def _back_to_the_steps(term: Terminal) -> None:
    mark = len(term.output)
    term.type("\x1b")  # Escape
    term.wait_for("sleeper", since=mark, label="the step tree again")


@needs_screen
def test_a_in_the_sessions_screen_attaches_to_a_screen_session(tmp_path, screendir, tmux_tmpdir):
    session = f"orchtui-S-{uuid.uuid4().hex[:8]}"
    term, run_dir = _start(tmp_path, session)
    try:
        _wait_running(term, run_dir)
        _attach_from_the_sessions_screen(
            term,
            session,
            lambda: _session_state(session) == "Attached",
            lambda: term.type(b"\x01d"),  # Ctrl-a d
        )
        _quit(term, run_dir)
    finally:
        term.kill()
        for pid in marked(run_dir):
            os.kill(pid, signal.SIGKILL)


@needs_screen
@needs_tmux
def test_a_in_the_sessions_screen_attaches_to_a_tmux_session_on_its_server(
    tmp_path, screendir, tmux_tmpdir
):
    from core.sessions.tmux import TmuxBackend

    session, server = f"orchtui-T-{uuid.uuid4().hex[:8]}", "orch-side"
    term, run_dir = _start(tmp_path, session, f"backend: tmux, socket: {server}")
    tmux = TmuxBackend(socket=server)

    def attached() -> bool:
        info = tmux.get(session)
        return info is not None and info.state == "attached"

    try:
        _wait_running(term, run_dir)
        mark = len(term.output)
        term.type("S")
        term.wait_for(server, since=mark, label="the tmux server's name in the Sessions screen")
        _back_to_the_steps(term)
        _attach_from_the_sessions_screen(
            term, session, attached, lambda: _type_tmux_keys(term, server, session, b"\x02d")
        )
        _quit(term, run_dir)
    finally:
        term.kill()
        for pid in marked(run_dir):
            os.kill(pid, signal.SIGKILL)


@needs_screen
def test_attach_to_a_session_that_is_gone_shows_an_error_and_keeps_running(tmp_path, screendir):
    from core.sessions import get_backend

    session = f"orchtui-g-{uuid.uuid4().hex[:8]}"
    term, run_dir = _start(tmp_path, session)
    try:
        _wait_running(term, run_dir)
        get_backend("screen").kill(session)
        assert _session_state(session) is None

        mark = len(term.output)
        term.type("a")
        term.wait_for(
            lambda: "cannot attach" in term.text(mark) or "no screen session" in term.text(mark),
            label="an error notification",
        )
        assert "attaching to" not in term.text(mark)
        assert term.poll() is None, "orch-tui exited"

        _quit(term, run_dir)  # still answering keys
    finally:
        term.kill()
        for pid in marked(run_dir):
            os.kill(pid, signal.SIGKILL)


@needs_screen
def test_a_hung_up_terminal_detaches_and_the_run_goes_on(tmp_path, screendir):
    """Closing the terminal (SIGHUP) leaves the run to its daemon: the step goes on running, a
    new client sees the same run, and orch-tui does not spin on the dead tty."""
    from core.client import connect

    session = f"orchtui-h-{uuid.uuid4().hex[:8]}"
    term, run_dir = _start(tmp_path, session)
    try:
        _wait_running(term, run_dir)
        steps = marked(run_dir)
        os.close(term.fd)  # the terminal goes away: the kernel hangs up its session
        deadline = time.monotonic() + 15
        while term.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a process exit; there is no fd left to wait on
        assert term.returncode == 0
        assert all(alive(pid) for pid in steps), "a step died with the terminal"
        with connect(run_dir, client="test") as control:
            assert control.snapshot().steps["sleeper"].status == "running"
            assert control.command("stop_run").ok
            assert control.wait(30) == 130
        assert _session_state(session) == "Detached"  # sessions stay
    finally:
        term.kill()  # the session ends with the test's SCREENDIR


def _tmux_format(socket: str, name: str, format_: str) -> str | None:
    """``format_`` expanded by tmux for the session ``name`` (None: no such session)."""
    result = subprocess.run(
        [TMUX or "tmux", "-L", socket, "display-message", "-p", "-t", f"={name}:", format_],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=MULTIPLEXER_TIMEOUT,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def _tmux_attached(socket: str, name: str) -> int | None:
    """How many clients are attached to the tmux session ``name`` (None: no such session)."""
    attached = _tmux_format(socket, name, "#{session_attached}")
    return None if attached is None else int(attached)


def _type_tmux_keys(term: Terminal, socket: str, name: str, keys: bytes) -> None:
    """Type tmux keys (Ctrl-b d) as a person does after reading the screen: not within tmux's
    ``assume-paste-time`` of the key before.

    tmux takes a key that comes less than assume-paste-time (1 ms) after the one before, while
    keys keep coming that fast, for pasted text, and gives it to the pane, prefix included:
    typed within a millisecond of the echo line's output, Ctrl-b d reached the shell (^Bd).
    That output came after tmux had taken the line's last key, so typing no sooner than
    assume-paste-time after it was read is enough. No person types faster.
    """
    paste_time = int(_tmux_format(socket, name, "#{assume-paste-time}") or 0) / 1000
    deadline = time.monotonic() + paste_time
    while (left := deadline - time.monotonic()) > 0:
        term.read(left)  # the pty stays drained meanwhile
    term.type(keys)


def _detach_from_tmux(term: Terminal, socket: str, name: str) -> None:
    """Ctrl-b d: tmux detaches, says so, and the TUI is drawn again."""
    mark = len(term.output)
    _type_tmux_keys(term, socket, name, b"\x02d")
    term.wait_for(lambda: _tmux_attached(socket, name) == 0, 15, label="detached")
    after = term.wait_for("[detached", since=mark, label="tmux's detach message")
    term.wait_for("sleeper", since=after, label="the TUI drawn again after the detach")
    assert term.poll() is None, "orch-tui exited on the detach"


@needs_tmux
def test_attach_hands_the_terminal_to_tmux_and_ctrl_b_d_comes_back(tmp_path, tmux_socket):
    session = f"orchtui-t-{uuid.uuid4().hex[:8]}"
    term, run_dir = _start(tmp_path, session, f"backend: tmux, socket: {tmux_socket}")
    try:
        _wait_running(term, run_dir)
        assert _tmux_attached(tmux_socket, session) == 0

        mark = len(term.output)
        term.type("a")  # the first step (the session's) is selected
        term.wait_for(f"attaching to {session}", since=mark, label="the attach message")
        term.wait_for(lambda: _tmux_attached(tmux_socket, session) == 1, 15, label="attached")

        mark = len(term.output)
        term.type("echo attached-marker-$((100 + 23))\r")
        term.wait_for("attached-marker-123", since=mark, label="the session's shell output")
        _detach_from_tmux(term, tmux_socket, session)

        _quit(term, run_dir)
        assert _tmux_attached(tmux_socket, session) == 0, "quitting killed the session"
    finally:
        term.kill()
        for pid in marked(run_dir):
            os.kill(pid, signal.SIGKILL)


@needs_tmux
def test_attach_from_inside_tmux_says_the_nested_detach_keys(tmp_path, tmux_socket):
    """orch-tui in a window of the user's own tmux, attaching to a session of another tmux
    server: the client is nested, and the user's tmux takes the first Ctrl-b. The line shown
    first said Ctrl-b d, which detaches the user's own tmux instead of coming back; it says
    to press the prefix twice. (The user's tmux passes Ctrl-b Ctrl-b d on as Ctrl-b d.)"""
    session = f"orchtui-n-{uuid.uuid4().hex[:8]}"
    outer = {"TMUX": f"/tmp/tmux-{os.getuid()}/users-own,1,0", "TMUX_PANE": "%0"}
    term, run_dir = _start(tmp_path, session, f"backend: tmux, socket: {tmux_socket}", (), outer)
    try:
        _wait_running(term, run_dir)
        mark = len(term.output)
        term.type("a")  # the first step (the session's) is selected
        term.wait_for(
            f"attaching to {session}; detach with Ctrl-b Ctrl-b d (nested in your tmux",
            since=mark,
            label="the nested detach keys",
        )
        term.wait_for(lambda: _tmux_attached(tmux_socket, session) == 1, 15, label="attached")
        _detach_from_tmux(term, tmux_socket, session)
        _quit(term, run_dir)
    finally:
        term.kill()
        for pid in marked(run_dir):
            os.kill(pid, signal.SIGKILL)


@needs_tmux
def test_the_attach_message_reaches_a_terminal_that_reads_late(tmp_path, tmux_socket):
    """tmux, attaching, throws away the output its terminal has not read yet: orch-tui hands
    the terminal over only once the terminal has read the attach message."""
    session = f"orchtui-l-{uuid.uuid4().hex[:8]}"
    term, run_dir = _start(tmp_path, session, f"backend: tmux, socket: {tmux_socket}")
    try:
        _wait_running(term, run_dir)
        term.read()
        mark = len(term.output)
        # the terminal falls behind (a busy machine): the app's clock ticks fill what the kernel
        # holds for it, so what comes next waits where tmux's attach empties it
        deadline = time.monotonic() + 30
        while term.unread() < PTY_READ_BUFFER and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a kernel count; the terminal must not read meanwhile
        assert term.unread() >= PTY_READ_BUFFER, "the app stopped drawing"

        term.type("a")  # the first step (the session's) is selected
        deadline = time.monotonic() + ANSWER_TIMEOUT / 2  # well inside orch-tui's wait
        while _tmux_attached(tmux_socket, session) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # the terminal is still busy: it reads nothing yet
        term.wait_for(f"attaching to {session}", since=mark, label="the attach message")
        term.wait_for(lambda: _tmux_attached(tmux_socket, session) == 1, 15, label="attached")
        _detach_from_tmux(term, tmux_socket, session)
        _quit(term, run_dir)
    finally:
        term.kill()
        for pid in marked(run_dir):
            os.kill(pid, signal.SIGKILL)


@needs_screen
def test_debug_logs_to_the_run_directory_not_over_the_tui(tmp_path, screendir):
    """The app draws on the terminal: --debug's lines go to <run-dir>/debug.log instead."""
    session = f"orchtui-d-{uuid.uuid4().hex[:8]}"
    term, run_dir = _start(tmp_path, session, cli=("--debug",))
    try:
        _wait_running(term, run_dir)
        log = run_dir / "debug.log"
        started = "orch-tui DEBUG orch.runner: step_started {'step': 'sleeper'"
        term.wait_for(lambda: log.exists() and started in log.read_text(), label="debug.log")
        _quit(term, run_dir)
        assert "DEBUG" not in term.text(), "a log line was written over the app"
        assert "step_finished {'step': 'sleeper', 'status': 'cancelled'" in log.read_text()
    finally:
        term.kill()  # the session ends with the test's SCREENDIR


@needs_tmux
def test_a_on_the_tmux_session_the_app_runs_in_says_so(tmp_path, screendir, tmux_tmpdir):
    """The app runs in tmux session 'app' (no client attached to it): S, then a on that
    session's row says the app is in it already, not tmux's "switch-client -t =app exited
    with 1"; the app goes on, the terminal never handed over."""
    recipe = write_recipe(
        tmp_path, "steps:\n  - {name: sleeper, type: shell, cmd: sleep, args: ['100']}\n"
    )
    run_dir = tmp_path / "run"
    app = TmuxApp("own", [str(recipe), "--run-dir", str(run_dir)], tmp_path)
    try:
        app.shows("sleeper")
        app.keys("S")
        app.shows("1 session", " app ")  # the private TMUX_TMPDIR holds the app's session only
        app.keys("a")
        screen = app.shows("orch-tui runs in tmux")
        assert "you are in it" in screen and "exited with" not in screen
        assert "attaching to" not in app.printed()
        app.keys("Escape")
        app.shows("sleeper")
        assert app.running()
    finally:
        end_run(run_dir)
