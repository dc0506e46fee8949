"""The tmux adapter against a real tmux (own `-L` socket per test, no mocks)."""

from __future__ import annotations

import os
import pty
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.sessions import SessionError, get_backend, list_sessions, run_session_step
from core.sessions.tmux import TmuxBackend, server_sockets

try:
    from sessions_fixtures import (
        TMUX,
        TRICKY_TEXTS,
        file_becomes,
        input_eating_home,
        needs_tmux,
        printf_command,
        read_bytes,
        tmux_socket,  # noqa: F401  (fixture)
        tmux_tmpdir,  # noqa: F401  (fixture)
        wait_for,
    )
except ImportError:  # tests/ became a package
    from tests.sessions_fixtures import (
        TMUX,
        TRICKY_TEXTS,
        file_becomes,
        input_eating_home,
        needs_tmux,
        printf_command,
        read_bytes,
        tmux_socket,  # noqa: F401  (fixture)
        tmux_tmpdir,  # noqa: F401  (fixture)
        wait_for,
    )

pytestmark = needs_tmux


@pytest.fixture
def tmux(tmux_socket: str) -> TmuxBackend:  # noqa: F811
    return TmuxBackend(socket=tmux_socket)


def test_no_server_means_no_sessions(tmux: TmuxBackend) -> None:
    assert tmux.list() == []
    assert not tmux.exists("anything")


@pytest.mark.parametrize("name", ["a b", "-x", "a.b", "a:b", "web\n", "x" * 65, ""])
def test_invalid_names_are_refused(tmux: TmuxBackend, name: str) -> None:
    for call in (
        lambda: tmux.create(name),
        lambda: tmux.send(name, "echo"),
        lambda: tmux.kill(name),
        lambda: tmux.exists(name),
        lambda: tmux.detach(name),
    ):
        with pytest.raises(SessionError, match="invalid session name"):
            call()
    assert tmux.list() == []


def test_invalid_socket_name_is_refused() -> None:
    for socket in ("../x", "a/b", "..", "", "x" * 65):
        with pytest.raises(SessionError, match="invalid tmux socket name"):
            TmuxBackend(socket=socket)


def test_list_shows_state_pid_created_and_run_id(tmux: TmuxBackend, tmux_socket: str) -> None:  # noqa: F811
    before = time.time()
    info = tmux.create("listed", env={"ORCH_RUN_ID": "run-20260101-abc"})
    tmux.create("unowned")
    sessions = {s.name: s for s in tmux.list()}
    assert set(sessions) == {"listed", "unowned"}
    listed = sessions["listed"]
    assert listed == info
    assert listed.backend == "tmux"
    assert listed.state == "detached"
    assert listed.run_id == "run-20260101-abc"
    assert listed.socket == tmux_socket
    assert isinstance(listed.pid, int) and listed.pid > 0
    assert listed.created is not None and before - 2 <= listed.created <= time.time() + 1
    assert sessions["unowned"].run_id is None


def test_prefix_colliding_names_are_targeted_exactly(tmux: TmuxBackend, tmp_path: Path) -> None:
    tmux.create("web")
    tmux.create("web-frontend")
    tmux.send("web", f"tmux display-message -p '#S' > {tmp_path}/name")
    file_becomes(tmp_path / "name", b"web\n")

    tmux.kill("web")
    assert not tmux.exists("web")
    assert tmux.exists("web-frontend")
    assert [s.name for s in tmux.list()] == ["web-frontend"]
    with pytest.raises(SessionError, match="^no tmux session named 'web'$"):
        tmux.send("web", "echo")
    with pytest.raises(SessionError, match="^no tmux session named 'web'$"):
        tmux.kill("web")
    tmux.create("api")
    assert not tmux.exists("ap")


def test_missing_session_raises(tmux: TmuxBackend) -> None:
    tmux.create("other")  # a running server, just not this session
    for call in (
        lambda: tmux.kill("ghost"),
        lambda: tmux.send("ghost", "echo hi"),
        lambda: tmux.detach("ghost"),
        lambda: tmux.attach_argv("ghost"),
    ):
        with pytest.raises(SessionError, match="^no tmux session named 'ghost'$"):
            call()


def test_missing_session_without_server_raises(tmux: TmuxBackend) -> None:
    with pytest.raises(SessionError, match="^no tmux session named 'ghost'$"):
        tmux.kill("ghost")


def test_create_existing_raises_and_recreate_replaces(tmux: TmuxBackend, tmp_path: Path) -> None:
    tmux.create("dup", command=f"echo one > {tmp_path}/one")
    file_becomes(tmp_path / "one", b"one\n")
    with pytest.raises(SessionError, match="already exists"):
        tmux.create("dup")
    tmux.recreate("dup", command=f"echo $$ > {tmp_path}/two")
    shell_pid = wait_for(lambda: read_bytes(tmp_path / "two"), 5, "the new shell's pid")
    assert [s.pid for s in tmux.list()] == [int(shell_pid)]


def test_text_arrives_byte_for_byte(tmux: TmuxBackend, tmp_path: Path) -> None:
    tmux.create("bytes")
    for index, text in enumerate(TRICKY_TEXTS):
        target = tmp_path / f"out{index}"
        tmux.send("bytes", printf_command(text, target))
        file_becomes(target, text.encode())


def test_long_text_is_sent_whole(tmux: TmuxBackend, tmp_path: Path) -> None:
    tmux.create("long")
    text = "x" * 1999 + "é😀" * 3000 + "y" * 9000
    tmux.send("long", printf_command(text, tmp_path / "long"))
    file_becomes(tmp_path / "long", text.encode())


def test_first_command_after_create_arrives_20_of_20(tmux: TmuxBackend, tmp_path: Path) -> None:
    home = input_eating_home(tmp_path)  # the shell drops what is typed before its prompt
    started = time.monotonic()

    def create_and_send(i: int) -> None:
        tmux.create(f"first-{i}", env={"HOME": str(home)})
        tmux.send(f"first-{i}", f"echo marker-{i} > {tmp_path}/m{i}")

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(create_and_send, range(20)))
    for i in range(20):
        file_becomes(tmp_path / f"m{i}", f"marker-{i}\n".encode(), timeout=10)
    assert time.monotonic() - started < 40


def test_log_gets_output_within_2_seconds(tmux: TmuxBackend, tmp_path: Path) -> None:
    # pipe-pane expands #-formats and strftime %-escapes, then runs `sh -c` on its argument:
    # the path must survive all of them (a trailing line break too)
    log = tmp_path / "it's #{session_name} 50% $HOME \\ %p" / "s.log\n"
    tmux.create("logged", log_path=log, cwd=tmp_path)
    tmux.send("logged", "echo log-marker-$((6*7))")
    started = time.monotonic()
    wait_for(lambda: b"log-marker-42" in (read_bytes(log) or b""), 2.0, "output in the log")
    assert time.monotonic() - started < 2.0
    assert log.stat().st_mode & 0o777 == 0o600
    assert log.parent.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["it's #{session_name} 50% $HOME \\ %p"]
    assert sorted(p.name for p in log.parent.iterdir()) == ["s.log\n"]


def test_create_with_command_cwd_and_env(tmux: TmuxBackend, tmp_path: Path) -> None:
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    tmux.create(
        "cmd",
        command="pwd > where; echo $ORCH_RUN_ID > rid",
        cwd=workdir,
        env={"ORCH_RUN_ID": "r9"},
    )
    file_becomes(workdir / "where", f"{workdir}\n".encode())
    file_becomes(workdir / "rid", b"r9\n")
    assert tmux.exists("cmd")


def test_attach_argv(tmux: TmuxBackend, tmux_socket: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    tmux.create("att")
    assert tmux.detach_keys == "Ctrl-b d"
    argv = tmux.attach_argv("att")
    assert argv[1:] == ["-L", tmux_socket, "attach-session", "-t", "=att"]
    assert tmux.attach_argv("att", steal=True)[1:] == [
        "-L",
        tmux_socket,
        "attach-session",
        "-d",
        "-t",
        "=att",
    ]
    # inside a client of the same server: switch that client over
    socket_path = Path(os.environ.get("TMUX_TMPDIR") or "/tmp", f"tmux-{os.getuid()}", tmux_socket)
    monkeypatch.setenv("TMUX", f"{socket_path},12345,0")
    assert tmux.attach_argv("att")[1:] == ["-L", tmux_socket, "switch-client", "-t", "=att"]
    # inside another tmux server: attach, with $TMUX unset so tmux agrees to nest
    monkeypatch.setenv("TMUX", "/tmp/elsewhere/default,1,0")
    assert tmux.attach_argv("att")[:3] == ["env", "-u", "TMUX"]
    assert tmux.attach_argv("att")[4:] == ["-L", tmux_socket, "attach-session", "-t", "=att"]


def test_attach_state_and_detach(tmux: TmuxBackend) -> None:
    tmux.create("att")
    tmux.detach("att")  # not attached: nothing to do
    master, slave = pty.openpty()
    client = subprocess.Popen(
        tmux.attach_argv("att"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "TERM": "xterm"},
        start_new_session=True,
    )
    os.close(slave)
    try:
        wait_for(lambda: tmux.get("att").state == "attached", 5, "the session to be attached")
        tmux.detach("att")
        assert tmux.get("att").state == "detached"
        assert client.wait(timeout=5) == 0
        assert tmux.exists("att")
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        os.close(master)


def test_get_backend(tmux_socket: str) -> None:  # noqa: F811
    backend = get_backend("tmux", socket=tmux_socket)
    assert isinstance(backend, TmuxBackend) and backend.socket == tmux_socket
    assert get_backend("tmux").socket is None


def test_missing_binary_raises_with_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    backend = TmuxBackend(socket="never-started")
    assert backend.available() is False
    with pytest.raises(SessionError, match=r"^tmux is not installed \(apt-get install tmux\)$"):
        backend.list()


def test_run_session_step_actions(tmux: TmuxBackend, tmux_socket: str, tmp_path: Path) -> None:  # noqa: F811
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lines: list[str] = []

    def step(action: str, command: str | None = None, log: bool | str | None = None) -> None:
        run_session_step(
            backend="tmux",
            action=action,
            session="stepped",
            command=command,
            log=log,
            socket=tmux_socket,
            run_dir=run_dir,
            step_name=f"s-{action}",
            write=lines.append,
            env={"ORCH_RUN_ID": "run-step"},
        )

    step("create", command=f"echo first > {tmp_path}/first", log=True)
    log = run_dir / "sessions" / "stepped.log"
    file_becomes(tmp_path / "first", b"first\n")
    assert lines[0].startswith("created tmux session 'stepped' (pid ")
    assert lines[0].endswith(f", logging to {log}")
    assert tmux.get("stepped").run_id == "run-step"
    with pytest.raises(SessionError, match="^session 'stepped' exists; use action: recreate$"):
        step("create")
    step("send", command="echo via-step-$((1+1))")
    wait_for(lambda: b"via-step-2" in (read_bytes(log) or b""), 2.0, "output in the step's log")
    step("detach")
    step("recreate")  # logs by default, like screen_script.sh -r
    assert lines[-2] == "killed tmux session 'stepped'"
    assert lines[-1].endswith(f", logging to {log}")
    step("kill")
    assert not tmux.exists("stepped")
    with pytest.raises(SessionError, match="^no tmux session named 'stepped'$"):
        step("kill")


def test_tmux_binary_is_what_attach_uses(tmux: TmuxBackend) -> None:
    tmux.create("which")
    assert tmux.attach_argv("which")[0] == TMUX


def test_sessions_of_every_tmux_server_are_listed_with_their_socket(
    tmux_tmpdir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    TmuxBackend().create("on-default")
    TmuxBackend(socket="work").create("on-work")
    TmuxBackend(socket="lab.2").create("on-lab")
    TmuxBackend(socket="ended").create("gone")
    TmuxBackend(socket="ended").kill("gone")  # its server exits; the socket file may stay
    (tmux_tmpdir / f"tmux-{os.getuid()}" / "not-a-socket").write_text("")
    assert server_sockets()[0] == "default" and {"work", "lab.2"} <= set(server_sockets())

    sessions, problems = list_sessions(["tmux"])
    assert problems == []
    assert {(s.socket, s.name) for s in sessions} == {
        ("default", "on-default"),
        ("work", "on-work"),
        ("lab.2", "on-lab"),
    }
    only, _ = list_sessions(["tmux"], socket="work")
    assert [(s.socket, s.name) for s in only] == [("work", "on-work")]
    # from inside a client of the work server: tmux without -L would mean that server
    monkeypatch.setenv("TMUX", f"{tmux_tmpdir}/tmux-{os.getuid()}/work,1,0")
    inside, _ = list_sessions(["tmux"])
    assert sorted(s.name for s in inside) == ["on-default", "on-lab", "on-work"]


def test_orch_tui_sessions_shows_every_tmux_server(tmux_tmpdir: Path, tmp_path: Path) -> None:  # noqa: F811
    from tests.conftest import run_cli

    TmuxBackend().create("on-default")
    TmuxBackend(socket="work").create("on-work")
    result = run_cli("sessions", "--backend", "tmux", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["BACKEND", "SOCKET", "NAME", "STATE", "PID", "CREATED", "RUN"]
    rows = sorted(line.split()[:4] for line in lines[1:])
    assert rows == [
        ["tmux", "default", "on-default", "detached"],
        ["tmux", "work", "on-work", "detached"],
    ]
    result = run_cli("sessions", "--backend", "tmux", "--socket", "work", cwd=tmp_path)
    assert [line.split()[2] for line in result.stdout.splitlines()[1:]] == ["on-work"]
