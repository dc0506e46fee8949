"""What every session backend promises, against real GNU screen and real tmux (no mocks).

Each test runs once per multiplexer through the ``backend`` fixture: a ScreenBackend in a private
SCREENDIR, or a TmuxBackend on a private ``-L`` socket. What only one of them has (parsing
``screen -ls``, a screen that stops reading, tmux servers and sockets, each one's attach command)
is tested in test_sessions_screen.py and test_sessions_tmux.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from core.sessions import SessionBackend, SessionError, run_session_step
from core.sessions.base import validate_session_name
from core.sessions.screen import ScreenBackend
from core.sessions.tmux import TmuxBackend
from tests.conftest import (
    TRICKY_TEXTS,
    alive,
    attached_client,
    file_becomes,
    input_eating_home,
    printf_command,
    read_bytes,
    run_recipe,
    wait_for,
)

INVALID_NAMES = ["a b", "", "-x", "a.b", "a:b", "x" * 65, "web\n", "ä", "a/b", "$HOME"]

#: A command writing the name of the session it runs in, as the multiplexer knows it.
SESSION_NAME_COMMAND = {
    "screen": "echo ${STY#*.}",  # STY is PID.NAME
    "tmux": "tmux display-message -p '#S'",
}


@pytest.fixture(params=["screen", "tmux"])
def backend(request: pytest.FixtureRequest) -> SessionBackend:
    """The backend, on a server of this test's own (ended afterwards, pass or fail)."""
    if request.param == "screen":
        request.getfixturevalue("screendir")
        return ScreenBackend()
    return TmuxBackend(socket=request.getfixturevalue("tmux_socket"))


def _server_pid(backend: SessionBackend, name: str) -> int:
    """The pid of the multiplexer server holding session ``name``."""
    if isinstance(backend, TmuxBackend):
        return int(backend._check(name, "display-message", "-p", "-t", f"={name}:", "#{pid}")[0])
    info = backend.get(name)
    assert info is not None and info.pid is not None
    return info.pid


def _no_session(backend: SessionBackend, name: str) -> str:
    """The error a call about a missing session raises, as a pattern."""
    return f"^no {backend.name} session named '{re.escape(name)}'$"


# -- names (no multiplexer needed) ---------------------------------------------------------


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(SessionError, match=r"^invalid session name .*must match \^"):
        validate_session_name(name)


def test_valid_names_pass() -> None:
    for name in ["web", "web-frontend", "_x", "A1_b-2", "x" * 64]:
        assert validate_session_name(name) == name


@pytest.mark.parametrize("name", ["a b", "-x", "a.b", "a:b", "web\n", "x" * 65, ""])
def test_every_call_refuses_an_invalid_name(backend: SessionBackend, name: str) -> None:
    for call in (
        lambda: backend.create(name),
        lambda: backend.send(name, "echo"),
        lambda: backend.kill(name),
        lambda: backend.exists(name),
        lambda: backend.detach(name),
    ):
        with pytest.raises(SessionError, match="invalid session name"):
            call()
    assert backend.list() == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (ScreenBackend, "GNU screen is not installed (apt-get install screen)"),
        (
            lambda: TmuxBackend(socket="never-started"),
            "tmux is not installed (apt-get install tmux)",
        ),
    ],
    ids=["screen", "tmux"],
)
def test_missing_binary_raises_with_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make, message: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    backend = make()
    assert backend.available() is False
    with pytest.raises(SessionError, match=f"^{re.escape(message)}$"):
        backend.list()
    with pytest.raises(SessionError, match=f"^{re.escape(message)}$"):
        backend.create("x")


# -- lifecycle -------------------------------------------------------------------------------


def test_no_server_means_no_sessions(backend: SessionBackend) -> None:
    assert backend.list() == []
    assert not backend.exists("anything")


def test_list_shows_state_pid_created_and_run_id(backend: SessionBackend) -> None:
    before = time.time()
    info = backend.create("listed", env={"ORCH_RUN_ID": "run-20260101-abc"})
    other = backend.create("unowned")
    sessions = {s.name: s for s in backend.list()}
    assert set(sessions) == {"listed", "unowned"}
    listed = sessions["listed"]
    assert listed == info
    assert listed.backend == backend.name
    assert listed.state == "detached"
    assert listed.run_id == "run-20260101-abc"
    assert isinstance(listed.pid, int) and alive(listed.pid)
    assert listed.created is not None and before - 2 <= listed.created <= time.time() + 1
    assert sessions["unowned"].run_id is None and other.pid != listed.pid


def test_prefix_colliding_names_are_targeted_exactly(
    backend: SessionBackend, tmp_path: Path
) -> None:
    backend.create("web")
    backend.create("web-frontend")
    # text sent to "web" reaches "web", not "web-frontend"
    backend.send("web", f"{SESSION_NAME_COMMAND[backend.name]} > {tmp_path}/name")
    file_becomes(tmp_path / "name", b"web\n")

    backend.kill("web")
    assert not backend.exists("web")
    assert backend.exists("web-frontend")
    assert [s.name for s in backend.list()] == ["web-frontend"]
    # no prefix fallback: "web" is gone even though "web-frontend" starts with it
    with pytest.raises(SessionError, match=_no_session(backend, "web")):
        backend.send("web", "echo")
    with pytest.raises(SessionError, match=_no_session(backend, "web")):
        backend.kill("web")
    # and a longer name does not match a shorter one, nor a shorter a longer
    backend.create("api")
    assert not backend.exists("ap")
    assert not backend.exists("api-x")


@pytest.mark.parametrize("others", [[], ["other"]], ids=["no server", "another session"])
def test_missing_session_raises(backend: SessionBackend, others: list[str]) -> None:
    for name in others:
        backend.create(name)
    for call in (
        lambda: backend.kill("ghost"),
        lambda: backend.send("ghost", "echo hi"),
        lambda: backend.detach("ghost"),
        lambda: backend.attach_argv("ghost"),
        lambda: backend.capture("ghost"),
    ):
        with pytest.raises(SessionError, match=_no_session(backend, "ghost")):
            call()
    assert not backend.exists("ghost")


def test_create_existing_raises_and_leaves_it_alone(backend: SessionBackend) -> None:
    first = backend.create("dup")
    with pytest.raises(SessionError, match=f"^{backend.name} session 'dup' already exists$"):
        backend.create("dup")
    assert [s.pid for s in backend.list()] == [first.pid]
    assert first.pid is not None and alive(first.pid)


def test_create_with_command_cwd_and_env(backend: SessionBackend, tmp_path: Path) -> None:
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    backend.create(
        "cmd",
        command="pwd > where; echo $ORCH_RUN_ID > rid",
        cwd=workdir,
        env={"ORCH_RUN_ID": "r9"},
    )
    file_becomes(workdir / "where", f"{workdir}\n".encode())
    file_becomes(workdir / "rid", b"r9\n")
    assert backend.exists("cmd")  # the session outlives its command


def test_first_command_after_create_arrives_20_of_20(
    backend: SessionBackend, tmp_path: Path
) -> None:
    # the shell drops what is typed before its prompt: create must wait for it
    home = input_eating_home(tmp_path)
    started = time.monotonic()

    def create_and_send(i: int) -> None:
        backend.create(f"first-{i}", env={"HOME": str(home)})
        backend.send(f"first-{i}", f"echo marker-{i} > {tmp_path}/m{i}")

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(create_and_send, range(20)))
    for i in range(20):
        file_becomes(tmp_path / f"m{i}", f"marker-{i}\n".encode(), timeout=10)
    assert time.monotonic() - started < 40


# -- text ------------------------------------------------------------------------------------


def test_text_arrives_byte_for_byte(backend: SessionBackend, tmp_path: Path) -> None:
    backend.create("bytes")
    for index, text in enumerate(TRICKY_TEXTS):
        target = tmp_path / f"out{index}"
        backend.send("bytes", printf_command(text, target))
        file_becomes(target, text.encode())


def test_long_text_is_sent_whole(backend: SessionBackend, tmp_path: Path) -> None:
    backend.create("long")
    # tmux sends 2,000 characters at a time (the 2,001st is an emoji here); byte 2,048 falls
    # inside an "é" (screen's old 2 KiB pieces). bash redraws the whole line for each
    # character it reads: it takes 30 KB slowly
    text = "x" * 1999 + "é😀" * 3000 + "y" * 9000
    backend.send("long", printf_command(text, tmp_path / "long"))
    file_becomes(tmp_path / "long", text.encode())


def test_send_without_enter_then_enter(backend: SessionBackend, tmp_path: Path) -> None:
    backend.create("parts")
    backend.send("parts", f"echo -n first-half > {tmp_path}/x", enter=False)
    backend.send("parts", "", enter=True)
    file_becomes(tmp_path / "x", b"first-half")


def test_log_gets_output_within_2_seconds(backend: SessionBackend, tmp_path: Path) -> None:
    # screen expands %-escapes in a log's name; tmux's pipe-pane expands #-formats and strftime
    # %-escapes, then runs `sh -c` on it: the path must survive all of them
    folder = "logs with%percent it's #{session_name} 50% $HOME \\ %p"
    log = tmp_path / folder / "nested" / "s.log\n"
    backend.create("logged", log_path=log, cwd=tmp_path)
    backend.send("logged", "echo log-marker-$((6*7))")
    wait_for(lambda: b"log-marker-42" in (read_bytes(log) or b""), 2.0, "output in the log")
    assert log.stat().st_mode & 0o777 == 0o600
    assert log.parent.stat().st_mode & 0o777 == 0o700
    assert log.parent.parent.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder]
    assert sorted(p.name for p in log.parent.iterdir()) == ["s.log\n"]


# -- the window now -------------------------------------------------------------------------


def test_capture_shows_the_window_now(backend: SessionBackend, tmp_path: Path) -> None:
    backend.create("cap", cwd=tmp_path)
    backend.send("cap", "echo captured-$((6 * 7)); echo second-row")

    def rows() -> list[str] | None:
        found = backend.capture("cap").splitlines()
        return found if "second-row" in found else None

    shown = wait_for(rows, 5.0, "the output in the capture")
    assert shown[shown.index("second-row") - 1] == "captured-42"
    assert shown[-1].strip(), "blank rows under the text are left out"
    assert not list(tmp_path.iterdir()), "nothing is written in the session's folder"


def test_capture_of_a_hung_server_gives_up_at_its_timeout(backend: SessionBackend) -> None:
    backend.create("hung")
    server = _server_pid(backend, "hung")
    mine = psutil.Process()
    os.kill(server, signal.SIGSTOP)
    try:
        with pytest.raises(SessionError, match="did not"):
            backend.capture("hung", timeout=0.5)
        # the client that asked was killed, not left waiting for the stopped server
        assert not [c.pid for c in mine.children(recursive=True) if backend.binary in c.name()]
    finally:
        os.kill(server, signal.SIGCONT)
    wait_for(lambda: backend.capture("hung"), 5.0, "the prompt in a capture once it goes on")


# -- attaching -------------------------------------------------------------------------------


def test_attach_state_and_detach(backend: SessionBackend) -> None:
    backend.create("att")
    backend.detach("att")  # not attached: nothing to do
    with attached_client(backend, "att") as client:
        backend.detach("att")
        assert backend.get("att").state == "detached"
        assert client.wait(timeout=5) == 0
    assert backend.exists("att")


# -- the step --------------------------------------------------------------------------------


def test_a_session_step_starts_its_shell_in_its_cwd_with_its_env(
    backend: SessionBackend, tmp_path: Path
) -> None:
    """``cwd`` and ``env`` of a create/recreate step are the session shell's (tmuxp's
    start_directory and environment): both were accepted and did nothing, the shell started in
    the folder the run was started in, without the variables. The recipe's ``env`` comes under
    the step's, as for a shell step (it was left out, r16-review)."""
    lab = tmp_path / "lab dir"
    lab.mkdir()
    socket = getattr(backend, "socket", None)
    result = run_recipe(
        tmp_path,
        f"""
        env: {{FROM_RECIPE: recipe, LAB_MODE: overridden}}
        steps:
          - name: lab
            type: session
            backend: {backend.name}
            {f"socket: {socket}" if socket else ""}
            action: recreate
            session: lab_env
            cwd: {json.dumps(str(lab))}
            env: {{LAB_MODE: "fast and 'safe'"}}
            command: printf '%s|%s|%s\\n' "$PWD" "$LAB_MODE" "$FROM_RECIPE" > {shlex.quote(str(lab / "seen"))}
        """,
    )
    assert result.code == 0, result.runner.state()
    file_becomes(lab / "seen", f"{lab}|fast and 'safe'|recipe\n".encode())


def test_run_session_step_actions(backend: SessionBackend, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lines: list[str] = []
    kind = f"{backend.name} session 'stepped'"

    def step(
        action: str, command: str | None = None, log: bool | str | None = None, session="stepped"
    ) -> None:
        run_session_step(
            backend=backend.name,
            action=action,
            session=session,
            command=command,
            log=log,
            socket=getattr(backend, "socket", None),  # tmux's -L name; screen has none
            run_dir=run_dir,
            step_name=f"s-{action}",
            write=lines.append,
            env={"ORCH_RUN_ID": "run-step"},
        )

    step("create", command=f"echo first > {tmp_path}/first", log=True)
    log = run_dir / "sessions" / "stepped.log"
    assert (run_dir / "sessions").stat().st_mode & 0o777 == 0o700
    file_becomes(tmp_path / "first", b"first\n")
    pid = backend.get("stepped").pid
    assert lines[0] == f"created {kind} (pid {pid}), logging to {log}"
    assert backend.get("stepped").run_id == "run-step"

    with pytest.raises(SessionError, match="^session 'stepped' exists; use action: recreate$"):
        step("create")

    command = "echo via-step-$((1+1))"
    step("send", command=command)
    assert lines[-1] == f"sent {len(command)} bytes to 'stepped'"
    wait_for(lambda: b"via-step-2" in (read_bytes(log) or b""), 2.0, "output in the step's log")

    step("detach")
    assert lines[-1].startswith(f"detached {kind}")

    step("recreate")  # logs by default, like screen_script.sh -r
    assert lines[-2] == f"killed {kind}"
    assert lines[-1].endswith(f", logging to {log}")
    recreated = backend.get("stepped").pid
    assert recreated != pid
    wait_for(lambda: not alive(pid), 5, "the old session's process to end")

    step("recreate", log="custom/recreated.log")
    assert backend.get("stepped").pid != recreated
    assert (run_dir / "custom" / "recreated.log").exists()
    assert lines[-2] == f"killed {kind}"

    step("kill")
    assert lines[-1] == f"killed {kind}"
    assert not backend.exists("stepped")
    with pytest.raises(SessionError, match=_no_session(backend, "stepped")):
        step("kill")
    with pytest.raises(SessionError, match="needs a command"):
        step("send")
    with pytest.raises(SessionError, match="invalid session name"):
        step("create", session="bad name")
