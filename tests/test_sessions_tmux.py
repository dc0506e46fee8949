"""What only the tmux backend has, against a real tmux (own `-L` socket or TMUX_TMPDIR per test).

The behaviour both backends share is in test_sessions_contract.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from core.sessions import SessionError, get_backend, list_sessions
from core.sessions.tmux import TmuxBackend, server_sockets
from tests.conftest import TMUX, file_becomes, needs_tmux, run_cli, wait_for

pytestmark = needs_tmux


@pytest.fixture
def tmux(tmux_socket: str) -> TmuxBackend:
    return TmuxBackend(socket=tmux_socket)


def test_invalid_socket_name_is_refused() -> None:
    for socket in ("../x", "a/b", "..", "", "x" * 65):
        with pytest.raises(SessionError, match="invalid tmux socket name"):
            TmuxBackend(socket=socket)


def test_list_gives_the_pane_shell_pid_and_the_socket_name(
    tmux: TmuxBackend, tmux_socket: str, tmp_path: Path
) -> None:
    info = tmux.create("listed", command=f"echo $$ > {tmp_path}/shell")
    file_becomes(tmp_path / "shell", f"{info.pid}\n".encode())
    assert [s.pid for s in tmux.list()] == [info.pid]
    assert info.socket == tmux_socket


def test_capture_keeps_the_colours(tmux: TmuxBackend) -> None:
    tmux.create("colours")
    tmux.send("colours", "printf '\\033[31m%s\\033[0m plain\\n' RED-$((6 * 7))")

    def output_row() -> str | None:
        return next((r for r in tmux.capture("colours").splitlines() if "RED-42" in r), None)

    assert wait_for(output_row, 5.0, "the red output").startswith("\x1b[31mRED-42\x1b[39m plain")


def test_attach_argv(tmux: TmuxBackend, tmux_socket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tmux.create("att")
    assert tmux.detach_keys == "Ctrl-b d"
    argv = tmux.attach_argv("att")
    assert argv[0] == TMUX
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
    # in a pane of that session: there already, nothing to attach to
    pane = subprocess.run(
        [TMUX, "-L", tmux_socket, "display-message", "-p", "-t", "=att:", "#{pane_id}"],
        capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
    ).stdout.strip()  # fmt: skip
    monkeypatch.setenv("TMUX_PANE", pane)
    with pytest.raises(SessionError, match="runs in tmux session 'att': you are in it already"):
        tmux.attach_argv("att")
    tmux.create("other")
    assert tmux.attach_argv("other")[1:] == ["-L", tmux_socket, "switch-client", "-t", "=other"]
    # inside another tmux server: attach, with $TMUX unset so tmux agrees to nest
    monkeypatch.setenv("TMUX", "/tmp/elsewhere/default,1,0")
    assert tmux.attach_argv("att")[:3] == ["env", "-u", "TMUX"]
    assert tmux.attach_argv("att")[4:] == ["-L", tmux_socket, "attach-session", "-t", "=att"]


def test_get_backend(tmux_socket: str) -> None:
    backend = get_backend("tmux", socket=tmux_socket)
    assert isinstance(backend, TmuxBackend) and backend.socket == tmux_socket
    assert get_backend("tmux").socket is None


def test_sessions_of_every_tmux_server_are_listed_with_their_socket(
    tmux_tmpdir: Path, monkeypatch: pytest.MonkeyPatch
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


def test_orch_tui_sessions_shows_every_tmux_server(tmux_tmpdir: Path, tmp_path: Path) -> None:
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


def test_orch_tui_sessions_on_an_80_column_terminal_fits_a_row_a_line(
    tmux_tmpdir: Path, tmp_path: Path
) -> None:
    """A 64-character session name padded every row to 64 columns, so on an 80-column terminal
    each row took two lines. On a terminal the rows fit, the long name cut with an ellipsis; the
    rows come by server, each one's by name (they came in its own order); to a pipe every cell
    is whole."""
    import fcntl
    import pty
    import struct
    import termios

    from tests.conftest import ORCH
    from tui.cells import cell_len

    long = "n" * 30 + "-" + "m" * 33  # the longest name there may be (64)
    TmuxBackend(socket="work").create(long)
    TmuxBackend().create("zeta")
    TmuxBackend().create("alpha")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        [*ORCH, "sessions", "--backend", "tmux"], stdout=slave, stderr=subprocess.PIPE, cwd=tmp_path
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's last writer has exited
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    lines = [line for line in shown.decode().splitlines() if line.strip()]
    assert all(cell_len(line) <= 80 for line in lines), lines
    assert [line.split()[:3] for line in lines[1:]][:2] == [
        ["tmux", "default", "alpha"],
        ["tmux", "default", "zeta"],
    ]
    cut = lines[3].split()[2]
    assert cut.endswith("…") and long.startswith(cut[:-1]), lines
    piped = run_cli("sessions", "--backend", "tmux", cwd=tmp_path).stdout
    assert long in piped
