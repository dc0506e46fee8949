"""The GNU screen adapter against a real screen (own SCREENDIR per test, no mocks)."""

from __future__ import annotations

import os
import pty
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from core.sessions import SessionError, get_backend, run_session_step
from core.sessions.base import validate_session_name
from core.sessions.screen import ScreenBackend, parse_screen_ls

try:
    from sessions_fixtures import (
        TRICKY_TEXTS,
        file_becomes,
        input_eating_home,
        needs_screen,
        printf_command,
        read_bytes,
        screendir,  # noqa: F401  (fixture)
        wait_for,
    )
except ImportError:  # tests/ became a package
    from tests.sessions_fixtures import (
        TRICKY_TEXTS,
        file_becomes,
        input_eating_home,
        needs_screen,
        printf_command,
        read_bytes,
        screendir,  # noqa: F401  (fixture)
        wait_for,
    )

INVALID_NAMES = ["a b", "", "-x", "a.b", "a:b", "x" * 65, "web\n", "ä", "a/b", "$HOME"]


def _pid_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def screen(screendir: str) -> ScreenBackend:  # noqa: F811
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


# -- names --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(SessionError, match=r"^invalid session name .*must match \^"):
        validate_session_name(name)


@needs_screen
@pytest.mark.parametrize("name", ["a b", "-x", "a.b", "web\n"])
def test_backend_refuses_invalid_names(screen: ScreenBackend, name: str) -> None:
    for call in (
        lambda: screen.create(name),
        lambda: screen.send(name, "echo"),
        lambda: screen.kill(name),
        lambda: screen.exists(name),
        lambda: screen.detach(name),
    ):
        with pytest.raises(SessionError, match="invalid session name"):
            call()
    assert screen.list() == []


def test_valid_names_pass() -> None:
    for name in ["web", "web-frontend", "_x", "A1_b-2", "x" * 64]:
        assert validate_session_name(name) == name


# -- lifecycle ----------------------------------------------------------------------------


@needs_screen
def test_list_shows_state_pid_created_and_run_id(screen: ScreenBackend) -> None:
    before = time.time()
    info = screen.create("listed", env={"ORCH_RUN_ID": "run-20260101-abc"})
    other = screen.create("unowned")
    sessions = {s.name: s for s in screen.list()}
    assert set(sessions) == {"listed", "unowned"}
    listed = sessions["listed"]
    assert listed == info
    assert listed.backend == "screen"
    assert listed.state == "detached"
    assert listed.run_id == "run-20260101-abc"
    assert isinstance(listed.pid, int) and psutil.pid_exists(listed.pid)
    assert listed.created is not None and before - 2 <= listed.created <= time.time() + 1
    assert listed.socket == os.path.join(os.environ["SCREENDIR"], f"{listed.pid}.listed")
    assert Path(listed.socket).exists()
    assert sessions["unowned"].run_id is None and other.pid != listed.pid


@needs_screen
def test_prefix_colliding_names_are_targeted_exactly(screen: ScreenBackend, tmp_path: Path) -> None:
    screen.create("web")
    screen.create("web-frontend")
    # text sent to "web" reaches "web", not "web-frontend"
    screen.send("web", f"echo $STY > {tmp_path}/sty")
    sty = wait_for(lambda: read_bytes(tmp_path / "sty"), 5, "the session's $STY")
    assert sty.decode().strip().endswith(".web")

    screen.kill("web")
    assert not screen.exists("web")
    assert screen.exists("web-frontend")
    assert [s.name for s in screen.list()] == ["web-frontend"]
    # no prefix fallback: "web" is gone even though "web-frontend" starts with it
    with pytest.raises(SessionError, match="no screen session named 'web'"):
        screen.send("web", "echo")
    with pytest.raises(SessionError, match="no screen session named 'web'"):
        screen.kill("web")
    # and a longer name does not match a shorter one
    screen.create("api")
    assert not screen.exists("ap")
    assert not screen.exists("api-x")


@needs_screen
def test_missing_session_raises(screen: ScreenBackend) -> None:
    with pytest.raises(SessionError, match="^no screen session named 'ghost'$"):
        screen.kill("ghost")
    with pytest.raises(SessionError, match="^no screen session named 'ghost'$"):
        screen.send("ghost", "echo hi")
    with pytest.raises(SessionError, match="^no screen session named 'ghost'$"):
        screen.detach("ghost")
    with pytest.raises(SessionError, match="^no screen session named 'ghost'$"):
        screen.attach_argv("ghost")
    assert not screen.exists("ghost")


@needs_screen
def test_create_existing_raises_and_recreate_replaces(screen: ScreenBackend) -> None:
    first = screen.create("dup")
    with pytest.raises(SessionError, match="already exists"):
        screen.create("dup")
    second = screen.recreate("dup")
    assert second.pid != first.pid
    assert [s.pid for s in screen.list()] == [second.pid]
    wait_for(lambda: not _pid_running(first.pid), 5, "the old screen server to end")


@needs_screen
def test_text_arrives_byte_for_byte(screen: ScreenBackend, tmp_path: Path) -> None:
    screen.create("bytes")
    for index, text in enumerate(TRICKY_TEXTS):
        target = tmp_path / f"out{index}"
        screen.send("bytes", printf_command(text, target))
        file_becomes(target, text.encode())


@needs_screen
def test_long_text_is_sent_whole(screen: ScreenBackend, tmp_path: Path) -> None:
    screen.create("long")
    # bash redraws the whole line for each character it reads: it takes 30 KB slowly
    text = "x" * 2047 + "é😀" * 3000 + "y" * 9000
    screen.send("long", printf_command(text, tmp_path / "long"))
    file_becomes(tmp_path / "long", text.encode())


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
    screendir: str,  # noqa: F811
    tmp_path: Path,
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


@needs_screen
def test_send_without_enter_then_enter(screen: ScreenBackend, tmp_path: Path) -> None:
    screen.create("parts")
    screen.send("parts", f"echo -n first-half > {tmp_path}/x", enter=False)
    screen.send("parts", "", enter=True)
    file_becomes(tmp_path / "x", b"first-half")


@needs_screen
def test_first_command_after_create_arrives_20_of_20(screen: ScreenBackend, tmp_path: Path) -> None:
    # the shell drops what is typed before its prompt: create must wait for it
    home = input_eating_home(tmp_path)
    started = time.monotonic()

    def create_and_send(i: int) -> None:
        screen.create(f"first-{i}", env={"HOME": str(home)})
        screen.send(f"first-{i}", f"echo marker-{i} > {tmp_path}/m{i}")

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(create_and_send, range(20)))
    for i in range(20):
        file_becomes(tmp_path / f"m{i}", f"marker-{i}\n".encode(), timeout=10)
    assert time.monotonic() - started < 40


@needs_screen
def test_create_with_command_and_cwd(screen: ScreenBackend, tmp_path: Path) -> None:
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    screen.create(
        "cmd",
        command="pwd > where; echo $ORCH_RUN_ID > rid",
        cwd=workdir,
        env={"ORCH_RUN_ID": "r9"},
    )
    file_becomes(workdir / "where", f"{workdir}\n".encode())
    file_becomes(workdir / "rid", b"r9\n")
    assert screen.exists("cmd")  # the session outlives its command


@needs_screen
def test_log_gets_output_within_2_seconds(screen: ScreenBackend, tmp_path: Path) -> None:
    log = tmp_path / "logs with%percent" / "nested" / "s.log"
    screen.create("logged", log_path=log)
    screen.send("logged", "echo log-marker-$((6*7))")
    started = time.monotonic()
    wait_for(lambda: b"log-marker-42" in (read_bytes(log) or b""), 2.0, "output in the log")
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert log.stat().st_mode & 0o777 == 0o600
    assert log.parent.stat().st_mode & 0o777 == 0o700
    assert log.parent.parent.stat().st_mode & 0o777 == 0o700
    assert not list(tmp_path.glob("logs with*/nested/*.log.*"))  # no screen %-expansion


@needs_screen
def test_dead_session_is_wiped(screen: ScreenBackend) -> None:
    info = screen.create("doomed")
    assert info.pid is not None
    server = psutil.Process(info.pid)
    children = server.children(recursive=True)
    socket = Path(info.socket or "")
    try:
        server.send_signal(signal.SIGKILL)
        wait_for(lambda: not _pid_running(server.pid), 5, "the screen server to die")
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


@needs_screen
def test_attach_argv_state_and_detach(screen: ScreenBackend) -> None:
    info = screen.create("att")
    target = f"{info.pid}.att"
    assert screen.detach_keys == "Ctrl-a d"
    argv = screen.attach_argv("att")
    assert argv[1:] == ["-r", target]
    assert screen.attach_argv("att", steal=True)[1:] == ["-d", "-r", target]
    screen.detach("att")  # not attached: nothing to do

    master, slave = pty.openpty()
    client = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "TERM": "xterm"},
        start_new_session=True,
    )
    os.close(slave)
    try:
        wait_for(lambda: screen.get("att").state == "attached", 5, "the session to be attached")
        assert screen.attach_argv("att")[1:] == ["-x", target]  # shared, not stolen
        screen.detach("att")
        assert screen.get("att").state == "detached"
        assert client.wait(timeout=5) == 0
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        os.close(master)


@needs_screen
def test_get_backend() -> None:
    assert isinstance(get_backend("screen"), ScreenBackend)
    with pytest.raises(SessionError, match="unknown session backend"):
        get_backend("zellij")
    with pytest.raises(SessionError, match="tmux option"):
        get_backend("screen", socket="x")


def test_missing_binary_raises_with_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    backend = ScreenBackend()
    assert backend.available() is False
    with pytest.raises(
        SessionError, match=r"^GNU screen is not installed \(apt-get install screen\)$"
    ):
        backend.list()
    with pytest.raises(SessionError, match="GNU screen is not installed"):
        backend.create("x")


# -- the step ---------------------------------------------------------------------------------


@needs_screen
def test_run_session_step_actions(screen: ScreenBackend, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lines: list[str] = []

    def step(action: str, command: str | None = None, log: bool | str | None = None) -> None:
        run_session_step(
            backend="screen",
            action=action,
            session="stepped",
            command=command,
            log=log,
            socket=None,
            run_dir=run_dir,
            step_name=f"s-{action}",
            write=lines.append,
            env={"ORCH_RUN_ID": "run-step"},
        )

    step("create", command=f"echo first > {tmp_path}/first", log=True)
    log = run_dir / "sessions" / "stepped.log"
    assert (run_dir / "sessions").stat().st_mode & 0o777 == 0o700
    file_becomes(tmp_path / "first", b"first\n")
    pid = screen.get("stepped").pid
    assert lines[0] == f"created screen session 'stepped' (pid {pid}), logging to {log}"
    assert screen.get("stepped").run_id == "run-step"

    with pytest.raises(SessionError, match="^session 'stepped' exists; use action: recreate$"):
        step("create")

    command = "echo via-step-$((1+1))"
    step("send", command=command)
    assert lines[-1] == f"sent {len(command)} bytes to 'stepped'"
    wait_for(lambda: b"via-step-2" in (read_bytes(log) or b""), 2.0, "output in the step's log")

    step("detach")
    assert lines[-1].startswith("detached screen session 'stepped'")

    step("recreate", log="custom/recreated.log")
    assert screen.get("stepped").pid != pid
    assert (run_dir / "custom" / "recreated.log").exists()
    assert lines[-2:][0] == "killed screen session 'stepped'"

    step("kill")
    assert lines[-1] == "killed screen session 'stepped'"
    assert not screen.exists("stepped")
    with pytest.raises(SessionError, match="^no screen session named 'stepped'$"):
        step("kill")
    with pytest.raises(SessionError, match="needs a command"):
        step("send")
    with pytest.raises(SessionError, match="invalid session name"):
        run_session_step(
            backend="screen",
            action="create",
            session="bad name",
            command=None,
            log=False,
            socket=None,
            run_dir=run_dir,
            step_name="bad",
            write=lines.append,
            env={},
        )
