"""What only the GNU screen backend has, against a real screen (own SCREENDIR per test).

The behaviour both backends share is in test_sessions_contract.py.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from core.sessions import SessionError, get_backend
from core.sessions.screen import ScreenBackend, parse_screen_ls
from tests.conftest import alive, attached_client, needs_screen, read_bytes, wait_for


@pytest.fixture
def screen(screendir: str) -> ScreenBackend:
    return ScreenBackend()


# -- parsing `screen -ls` (no screen needed) -------------------------------------------------


def test_parse_screen_ls_49_with_crlf_and_dead_sessions() -> None:
    output = (
        "There are screens on:\r\n"
        "\t4500.web\t(11/25/26 08:12:38)\t(Detached)\n"
        "\t4502.web-frontend\t(11/25/26 08:12:38)\t(Attached)\r\n"
        "\t4503.multi\t(11/25/26 08:12:38)\t(Multi, attached)\n"
        "\t4504.gone\t(11/25/26 08:12:38)\t(Dead ???)\n"
        "Remove dead screens with 'screen -wipe'.\n"
        "4 Sockets in /run/screen/S-me.\r\n"
    )
    entries, socket_dir = parse_screen_ls(output)
    assert socket_dir == "/run/screen/S-me"
    assert [(e.pid, e.name, e.status, e.dead) for e in entries] == [
        (4500, "web", "Detached", False),
        (4502, "web-frontend", "Attached", False),
        (4503, "multi", "Multi, attached", False),
        (4504, "gone", "Dead ???", True),
    ]


def test_parse_screen_ls_5x_without_date_column() -> None:
    output = "There is a screen on:\n\t77.api\t(Detached)\n1 Socket in /tmp/s.\n"
    entries, socket_dir = parse_screen_ls(output)
    assert [(e.pid, e.name, e.status) for e in entries] == [(77, "api", "Detached")]
    assert socket_dir == "/tmp/s"
    assert parse_screen_ls("No Sockets found in /tmp/empty.\n") == ([], "/tmp/empty")


# -- a session's server ---------------------------------------------------------------------


@needs_screen
def test_list_gives_the_server_pid_and_its_socket_file(screen: ScreenBackend) -> None:
    info = screen.create("listed")
    assert psutil.Process(info.pid).name() == "screen"
    assert info.socket == os.path.join(os.environ["SCREENDIR"], f"{info.pid}.listed")
    assert Path(info.socket).exists()


@needs_screen
def test_sessions_are_listed_by_name(screen: ScreenBackend) -> None:
    """screen lists its sessions in an order of its own (by its sockets: pid first), so the
    S screen and ``orch-tui sessions`` showed them in the order they were made; by name now."""
    from core.sessions import list_sessions

    for name in ("zeta", "mid", "alpha"):
        screen.create(name)
    assert [s.name for s in list_sessions(["screen"])[0]] == ["alpha", "mid", "zeta"]


def test_dead_session_is_wiped(screen: ScreenBackend) -> None:
    info = screen.create("doomed")
    assert info.pid is not None
    server = psutil.Process(info.pid)
    children = server.children(recursive=True)
    socket = Path(info.socket or "")
    try:
        server.send_signal(signal.SIGKILL)
        wait_for(lambda: not alive(server.pid), 5, "the screen server to die")
        assert socket.exists()  # screen -ls now reports it "(Dead ???)"
        assert screen.list() == []
        assert not socket.exists()
        assert not screen.exists("doomed")
        assert screen.create("doomed").pid != info.pid
    finally:
        for child in children:
            try:
                child.kill()
            except psutil.Error:
                pass


# -- a program that does not read its input ----------------------------------------------------

#: A program that puts its terminal in raw mode, writes `ready`, reads nothing for `stall`
#: seconds (busy), then reads until Enter and writes what it read to `out`.
SLOW_READER = """\
import os, sys, time, tty
ready, out, stall = sys.argv[1:]
tty.setraw(0)
open(ready, "w").close()
time.sleep(float(stall))
data = b""
while not data.endswith(b"\\r"):
    data += os.read(0, 65536)
open(out, "wb").write(data)
"""


def _start_slow_reader(screen: ScreenBackend, name: str, tmp_path: Path, stall: float) -> Path:
    """Run SLOW_READER in session `name`; return the file it will write."""
    script, ready, out = tmp_path / "reader.py", tmp_path / "ready", tmp_path / "out"
    script.write_text(SLOW_READER)
    command = [sys.executable, str(script), str(ready), str(out), str(stall)]
    screen.send(name, " ".join(shlex.quote(arg) for arg in command))
    wait_for(ready.exists, 10, "the reader to start")
    return out


@needs_screen
def test_texts_sent_while_the_program_is_busy_arrive_whole(
    screen: ScreenBackend, tmp_path: Path
) -> None:
    # 50 KB while the program reads nothing: more than the tty and screen's input buffer hold.
    # screen used to spin at 100% CPU for ever on the Enter (`stuff` waits for room in a full
    # buffer inside its only thread), and a second text cut off the rest of the first
    screen.create("busy")
    out = _start_slow_reader(screen, "busy", tmp_path, stall=1.5)
    first = "a" * 20000 + "é😀" * 3000 + "b" * 10000
    second = "tail-é😀" * 100
    screen.send("busy", first, enter=False)
    screen.send("busy", second)
    got = wait_for(lambda: read_bytes(out), 30, "the reader's output")
    expected = (first + second + "\r").encode()
    assert (len(got), got) == (len(expected), expected)
    assert screen.wait_ready("busy", 5), "the session no longer answers"


@needs_screen
def test_a_program_that_never_reads_fails_the_send_and_screen_keeps_answering(
    screendir: str, tmp_path: Path
) -> None:
    screen = ScreenBackend(ready_timeout=1.0)
    screen.create("deaf")
    _start_slow_reader(screen, "deaf", tmp_path, stall=3600)
    screen.send("deaf", "x" * 40000, enter=False)  # taken: screen feeds it as the tty drains
    with pytest.raises(SessionError, match="^screen session 'deaf' is not reading its input"):
        screen.send("deaf", "more")
    assert screen.wait_ready("deaf", 5), "the session no longer answers"
    screen.kill("deaf")
    assert not screen.exists("deaf")


# -- the window now ---------------------------------------------------------------------------


@pytest.mark.parametrize("planted", ["screen", "done"])
def test_a_copy_of_the_window_never_goes_through_a_symlink(
    screen: ScreenBackend, tmp_path: Path, planted: str
) -> None:
    # screen's hardcopy opens its file with fopen(path, "w"), following a symlink: a link
    # planted where a copy goes would have the server overwrite whatever it points to
    info = screen.create("copied")
    folder = tmp_path / "copies"
    folder.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("not screen's to overwrite\n")
    (folder / planted).symlink_to(victim)
    with pytest.raises(SessionError, match="File exists"):
        screen._hardcopy(f"{info.pid}.copied", folder, wait=2.0)
    wait_for(lambda: screen.capture("copied"), 5.0, "a copy of the window (the server is done)")
    assert victim.read_text() == "not screen's to overwrite\n"


def test_capture_leaves_no_file_behind(
    screen: ScreenBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    screen.create("copied")
    assert screen.capture("copied")
    assert not list(tmp_path.iterdir())


# -- attaching --------------------------------------------------------------------------------


@needs_screen
def test_attach_argv_resumes_steals_or_shares(screen: ScreenBackend) -> None:
    info = screen.create("att")
    target = f"{info.pid}.att"
    assert screen.detach_keys == "Ctrl-a d"
    assert screen.attach_argv("att")[1:] == ["-r", target]
    assert screen.attach_argv("att", steal=True)[1:] == ["-d", "-r", target]
    with attached_client(screen, "att"):
        assert screen.attach_argv("att")[1:] == ["-x", target]  # shared, not stolen


def test_get_backend() -> None:
    assert isinstance(get_backend("screen"), ScreenBackend)
    with pytest.raises(SessionError, match="unknown session backend"):
        get_backend("zellij")
    with pytest.raises(SessionError, match="tmux option"):
        get_backend("screen", socket="x")
