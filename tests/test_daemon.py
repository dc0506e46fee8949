"""The run daemon as a user meets it: ``orch-tui RECIPE --detach`` starts the run in a process of
its own, clients (core.client) attach to its socket, it ends with the run, and nothing of the run
outlives it, even when it is SIGKILLed. Real processes throughout."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import stat
import threading

import psutil
import pytest

from core.client import DaemonGone, connect
from core.rundir import RunDir
from tests.conftest import (
    alive,
    assert_gone,
    marked,
    read_pid,
    read_state,
    run_cli,
    start_cli,
    start_detached,
    wait_for,
    write_recipe,
)

SLEEPER = """
steps:
  - name: hello
    type: shell
    run: echo hello
  - name: sleeper
    type: shell
    depends_on: [hello]
    run: echo $$ > sleeper.pid; exec sleep 300
  - name: after
    type: shell
    depends_on: [sleeper]
    run: echo after
"""


def _echo_steps(n: int) -> list[str]:
    return [f"  - {{name: e{i}, type: shell, run: echo {i}}}\n" for i in range(n)]


def _recipe(tmp_path, text=SLEEPER):
    return write_recipe(tmp_path, text)


def test_detach_starts_the_run_in_its_own_session_and_returns(tmp_path, daemons):
    daemons.append(daemon := start_detached(_recipe(tmp_path), cwd=tmp_path))
    sleeper = read_pid(tmp_path / "sleeper.pid")
    assert os.getsid(daemon.pid) == daemon.pid  # a session of its own: no terminal to lose
    wait_for(lambda: read_state(daemon.run_dir)["pid"] == daemon.pid, 10, "state.json")
    with connect(daemon.run_dir, client="test") as control:
        assert control.run_id == daemon.run_id and control.pid == daemon.pid
        assert control.snapshot().steps["sleeper"].status == "running"
        assert control.log("hello") == (b"hello\n", 6)
    assert alive(sleeper)  # a client leaving changes nothing


def _daemons_of(recipe) -> list[psutil.Process]:
    """The run daemons started on ``recipe`` that are still there."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "core.daemon" in cmdline and any(str(recipe) in arg for arg in cmdline):
            found.append(proc)
    return found


def test_detach_with_a_bad_recipe_exits_2_and_starts_nothing(tmp_path):
    bad = write_recipe(tmp_path, "steps:\n  - name: a\n    type: shell\n")
    result = run_cli(bad, "--detach", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "problem in the recipe" in result.stderr
    assert not (tmp_path / ".orch").exists()
    assert _daemons_of(bad) == []  # the daemon, started as the recipe was read, is gone
    many = write_recipe(tmp_path, SLEEPER + "".join(_echo_steps(2000)), "many.yaml")
    result = run_cli(many, "--detach", "--only", "nosuch", cwd=tmp_path)
    assert result.returncode == 2 and "no step named 'nosuch'" in result.stderr
    assert not (tmp_path / ".orch").exists() and _daemons_of(many) == []
    result = run_cli(_recipe(tmp_path), "--detach", "--no-ui", cwd=tmp_path)
    assert result.returncode == 2 and "choose one" in result.stderr


def test_detach_whose_run_id_cannot_be_printed_stops_the_run(tmp_path):
    """`--detach` with stdout a full disk (`/dev/full`): it said "internal error: OSError",
    exit 1, and left the run going with nobody told its id (without --exit-when-done, a daemon
    up until someone closes it). Now the run is stopped and the reason is one line."""
    recipe = _recipe(tmp_path)
    with open("/dev/full", "wb") as full:
        proc = start_cli(recipe, "--detach", cwd=tmp_path, stdout=full)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    [line] = err.decode().splitlines()
    assert line.startswith("orch-tui: cannot print the run's id (No space left on device): run ")
    assert line.endswith(" stopped (nobody would know of it)")
    [run_dir] = (tmp_path / ".orch" / "runs").iterdir()
    assert read_state(run_dir)["status"] == "interrupted"
    assert _daemons_of(recipe) == []
    if (tmp_path / "sleeper.pid").exists():
        assert_gone([read_pid(tmp_path / "sleeper.pid")])


def test_a_run_folder_the_daemon_cannot_make_is_a_one_line_error(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    result = run_cli(_recipe(tmp_path), "--detach", "--run-dir", "ro/run", cwd=tmp_path)
    assert result.returncode == 2 and "cannot make the run's folder" in result.stderr


def test_socket_and_folder_are_private_under_umask_0(tmp_path, daemons):
    daemons.append(daemon := start_detached(_recipe(tmp_path), cwd=tmp_path, umask=0))
    wait_for(lambda: daemon.run_dir.joinpath("daemon.sock").exists(), 10, "the socket")
    for path, mode in (
        (daemon.run_dir, 0o700),
        (daemon.run_dir / "daemon.sock", 0o600),
        (daemon.run_dir / "daemon.log", 0o600),
    ):
        assert stat.S_IMODE(os.stat(path).st_mode) == mode, path


def test_a_run_folder_past_the_socket_path_limit_still_serves(tmp_path, daemons):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(str(deep / "daemon.sock")) > 107
    daemons.append(daemon := start_detached(_recipe(tmp_path), "--run-dir", deep, cwd=tmp_path))
    with connect(daemon.run_dir) as control:
        assert control.run_id == daemon.run_id


def test_exit_when_done_ends_the_daemon_with_the_run(tmp_path, daemons):
    recipe = """
steps:
  - {name: ok, type: shell, run: "true"}
  - {name: bad, type: shell, depends_on: [ok], run: exit 4}
  - {name: after, type: shell, depends_on: [bad], run: "true"}
"""
    daemon = start_detached(_recipe(tmp_path, recipe), "--exit-when-done", cwd=tmp_path)
    daemons.append(daemon)
    assert_gone([daemon.pid], 30)
    state = read_state(daemon.run_dir)
    assert (state["status"], state["exit_code"]) == ("failed", 1)
    assert state["steps"]["after"]["status"] == "blocked"
    assert not (daemon.run_dir / "daemon.sock").exists()


def test_options_longer_than_a_pipe_holds_reach_the_daemon_whole(tmp_path, daemons):
    # 600 names of 120 characters: --skip is ~73 KB, more than a pipe's 64 KB buffer
    names = [f"{i:03d}".ljust(120, "x") for i in range(600)]
    steps = "".join(f"  - {{name: {n}, type: shell, run: 'true', depends_on: []}}\n" for n in names)
    recipe = _recipe(tmp_path, "steps:\n" + steps)
    skip = ",".join(names[1:])
    daemon = start_detached(recipe, "--exit-when-done", "--skip", skip, cwd=tmp_path)
    daemons.append(daemon)
    assert_gone([daemon.pid], 60)
    statuses = {name: s["status"] for name, s in read_state(daemon.run_dir)["steps"].items()}
    assert statuses[names[0]] == "succeeded"
    assert {statuses[name] for name in names[1:]} == {"skipped"}


@pytest.mark.parametrize(
    ("by", "note"),
    [(None, "run stopped (stop-run)"), (signal.SIGTERM, "run interrupted (SIGTERM)")],
)
def test_stop_run_from_a_client_ends_the_daemon_and_its_steps(tmp_path, daemons, by, note):
    """``by``: the signal that made the client stop the run (an attached app's SIGTERM), which
    its steps' note names; a plain stop-run names itself."""
    daemons.append(daemon := start_detached(_recipe(tmp_path), cwd=tmp_path))
    sleeper = read_pid(tmp_path / "sleeper.pid")
    with connect(daemon.run_dir) as control:
        assert control.command("stop_run", signal=by).ok
        assert control.wait(30) == 130
        assert control.wait_gone(30)
    assert_gone([daemon.pid, sleeper], 10)
    state = read_state(daemon.run_dir)
    assert (state["status"], state["steps"]["sleeper"]["reason"]) == ("interrupted", note)
    assert not (daemon.run_dir / "daemon.sock").exists()


def test_a_stop_run_naming_a_signal_it_cannot_be_is_refused(tmp_path, daemons):
    daemons.append(daemon := start_detached(_recipe(tmp_path), cwd=tmp_path))
    with connect(daemon.run_dir) as control:
        refused = control.command("stop_run", signal=signal.SIGKILL)
        assert (refused.ok, "'signal' is one of" in refused.message) == (False, True)
        assert control.command("skip", "after").ok  # the connection is still good


def test_sighup_is_ignored_and_sigterm_stops_the_run(tmp_path, daemons):
    daemons.append(daemon := start_detached(_recipe(tmp_path), cwd=tmp_path))
    sleeper = read_pid(tmp_path / "sleeper.pid")
    with connect(daemon.run_dir) as control:
        os.kill(daemon.pid, signal.SIGHUP)
        assert control.command("skip", "after").ok  # it answers after the hang-up
        assert alive(daemon.pid) and alive(sleeper)
        os.kill(daemon.pid, signal.SIGTERM)
        assert control.wait(30) == 130
    assert_gone([daemon.pid, sleeper], 10)
    assert read_state(daemon.run_dir)["steps"]["sleeper"]["status"] == "cancelled"


def test_sigterm_once_the_work_is_done_stops_the_services_and_keeps_the_works_outcome(
    tmp_path, daemons
):
    """A daemon whose steps all succeeded, its service still up (as it stays for the app),
    SIGTERMed (a shutdown, ``kill``): the run ends as ``close`` ends it, as a headless
    ``--keep-alive`` run ends on Ctrl-C: succeeded, exit 0, the service ``stopped``. It said
    ``interrupted``, exit 130, the service ``cancelled``, as if the work had been cut short."""
    recipe = """
    steps:
      - name: svc
        type: shell
        background: true
        run: echo $$ > svc.pid; exec sleep 300
      - name: work
        type: shell
        run: echo done
    """
    daemons.append(daemon := start_detached(_recipe(tmp_path, recipe), cwd=tmp_path))
    svc = read_pid(tmp_path / "svc.pid")
    with connect(daemon.run_dir) as control:
        wait_for(lambda: control.snapshot().steps["work"].status == "succeeded")
        os.kill(daemon.pid, signal.SIGTERM)
        assert control.wait(30) == 0
    assert_gone([daemon.pid, svc], 10)
    state = read_state(daemon.run_dir)
    assert (state["status"], state["steps"]["svc"]["status"]) == ("succeeded", "stopped")


def test_a_second_sigterm_once_the_work_is_done_kills_a_service_that_ignores_the_first(
    tmp_path, daemons
):
    """The first SIGTERM ends a run whose work is done as ``close`` does, its services given
    their ``grace`` (60 s here); a second kills at once, as it does any run: it closed again,
    and the daemon waited out the grace of a service that ignores SIGTERM."""
    recipe = """
    steps:
      - name: svc
        type: shell
        background: true
        grace: 60
        run: trap '' TERM; echo $$ > svc.pid; while :; do sleep 0.1; done
      - name: work
        type: shell
        run: echo done
    """
    daemons.append(daemon := start_detached(_recipe(tmp_path, recipe), cwd=tmp_path))
    svc = read_pid(tmp_path / "svc.pid")
    with connect(daemon.run_dir) as control:
        wait_for(lambda: control.snapshot().steps["work"].status == "succeeded")
        os.kill(daemon.pid, signal.SIGTERM)
        wait_for(lambda: control.snapshot().closing, message="the run closing")
        os.kill(daemon.pid, signal.SIGTERM)
        assert control.wait(30) == 0  # the work succeeded
    assert_gone([daemon.pid, svc], 10)
    assert read_state(daemon.run_dir)["steps"]["svc"]["status"] == "stopped"


def test_sigkill_of_the_daemon_leaves_no_step_process(tmp_path, daemons):
    recipe = SLEEPER.replace(
        "run: echo $$ > sleeper.pid; exec sleep 300",
        "run: setsid sleep 301 & echo $$ > sleeper.pid; exec sleep 300",
    )
    daemons.append(daemon := start_detached(_recipe(tmp_path, recipe), cwd=tmp_path))
    read_pid(tmp_path / "sleeper.pid")
    wait_for(lambda: len(marked(daemon.run_dir)) >= 2, 10, "the step and its setsid child")
    left = marked(daemon.run_dir)
    os.kill(daemon.pid, signal.SIGKILL)
    assert_gone([daemon.pid, *left], 15)
    assert not marked(daemon.run_dir)
    with pytest.raises(DaemonGone, match="refuses"):  # the socket file it could not remove
        connect(daemon.run_dir)


def test_a_run_whose_folder_is_deleted_is_stopped_with_its_steps(tmp_path, daemons):
    """``rm -r`` of a live run's folder: no client could reach the run again (its socket was
    in it), nor ``runs`` list it, so its daemon stops it and goes, and its steps with it."""
    daemons.append(daemon := start_detached(_recipe(tmp_path), cwd=tmp_path))
    sleeper = read_pid(tmp_path / "sleeper.pid")
    shutil.rmtree(daemon.run_dir)
    assert_gone([daemon.pid, sleeper], 30)
    assert not marked(daemon.run_dir)


def test_two_clients_see_each_others_commands(tmp_path, daemons):
    daemons.append(daemon := start_detached(_recipe(tmp_path), cwd=tmp_path))
    read_pid(tmp_path / "sleeper.pid")
    with connect(daemon.run_dir, client="one") as one, connect(daemon.run_dir) as two:
        seen: list = []
        two.subscribe(seen.append)
        assert one.command("stop", "sleeper").ok
        wait_for(lambda: two.snapshot().steps["sleeper"].status == "cancelled", 15, "the stop")
        assert any(e.kind == "step_finished" and e.step == "sleeper" for e in seen)
        assert two.command("retry", "sleeper").ok
        wait_for(lambda: one.snapshot().steps["sleeper"].attempts == 2, 15, "the retry")
        assert one.snapshot().steps["sleeper"].status == "running"


def _chain(n: int) -> str:
    steps = "".join(
        f"  - {{name: s{i}, type: shell, run: 'true', depends_on: []}}\n" for i in range(n)
    )
    return "jobs: 8\nsteps:\n" + steps


def test_clients_attached_at_random_moments_end_with_state_json(tmp_path, daemons):
    """K clients attach while a 2,000-step run goes on, at moments picked at random (when the
    first client's mirror passes a random event number): each mirror ends equal to state.json."""
    n, k = 2000, 4
    daemon = start_detached(_recipe(tmp_path, _chain(n)), "--exit-when-done", cwd=tmp_path)
    daemons.append(daemon)
    held = RunDir.open(daemon.run_dir)
    first = connect(held, client="first")
    clients = [first]
    final: dict[int, dict] = {}
    try:
        marks = sorted(random.Random(13).sample(range(1, 3 * n), k - 1))
        for mark in marks:
            try:
                wait_for(lambda m=mark: first.snapshot().seq >= m or first.gone, 120, "events")
                clients.append(connect(held, client="late"))
            except DaemonGone:
                break  # the run was over sooner: the others have attached
        for i, client in enumerate(clients):
            assert client.wait(120) == 0
            assert client.wait_gone(30)
            final[i] = client.snapshot().to_dict()
    finally:
        for client in clients:
            client.close()
        held.close()
    state = read_state(daemon.run_dir)
    assert len(final) >= 2
    for mirror in final.values():
        assert mirror == state


def _raw(run_dir):
    held = RunDir.open(run_dir)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(held.socket_address())
    held.close()
    sock.settimeout(15)
    return sock


def _answer(sock) -> bytes:
    """Everything the daemon says until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_protocol_abuse_is_refused_without_harm(tmp_path, daemons):
    daemons.append(daemon := start_detached(_recipe(tmp_path), cwd=tmp_path))
    read_pid(tmp_path / "sleeper.pid")
    silent = _raw(daemon.run_dir)
    with _raw(daemon.run_dir) as long:
        long.sendall(b'{"op":"hello","protocol":1,"client":"x' + b"x" * (1 << 20) + b'"}\n')
        assert b"longer than 1048576 bytes" in _answer(long)
    with _raw(daemon.run_dir) as garbage:
        garbage.sendall(b"\x00\xff not json\n")
        assert b'"op":"error"' in _answer(garbage)
    with _raw(daemon.run_dir) as early:
        early.sendall(b'{"op":"attach","id":1}\n')
        assert b"expected hello first" in _answer(early)
    with connect(daemon.run_dir) as control:  # meanwhile the run and other clients go on
        assert control.command("skip", "after").ok
        assert control.snapshot().steps["sleeper"].status == "running"
    with silent:
        assert b"no hello within 5 s" in _answer(silent)  # closed by the daemon, not by us
    assert alive(daemon.pid)


def test_another_user_is_refused_even_where_the_modes_let_them_in(shared, daemons, attacker):
    """The folder (0700) and the socket (0600) keep other users out; were they opened up, the
    daemon still checks the peer's uid (SO_PEERCRED) and closes the connection."""
    tmp_path = shared / "workspace"
    tmp_path.mkdir()
    os.chmod(tmp_path, 0o755)
    daemons.append(daemon := start_detached(_recipe(tmp_path), cwd=tmp_path))
    wait_for(lambda: daemon.run_dir.joinpath("daemon.sock").exists(), 10, "the socket")
    for folder in (tmp_path / ".orch", tmp_path / ".orch" / "runs", daemon.run_dir):
        os.chmod(folder, 0o711)
    os.chmod(daemon.run_dir / "daemon.sock", 0o666)
    answer = tmp_path / "answer"
    answer.touch()
    answer.chmod(0o666)
    path = str(daemon.run_dir / "daemon.sock")

    def as_attacker() -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(path)
            try:
                sock.sendall(b'{"op":"hello","protocol":1,"client":"intruder"}\n')
                said = _answer(sock)
            except (BrokenPipeError, ConnectionResetError):  # closed before the hello
                said = b""
            answer.write_bytes(b"said:" + said)

    attacker.do(as_attacker)
    assert answer.read_bytes() == b"said:"  # closed at once, not a word
    assert "refused a connection from uid" in (daemon.run_dir / "daemon.log").read_text()
    with connect(daemon.run_dir) as control:
        assert control.run_id == daemon.run_id


def test_a_waiting_client_is_answered_when_no_step_can_run(tmp_path, daemons):
    recipe = """
steps:
  - {name: bad, type: shell, run: exit 3}
  - {name: after, type: shell, depends_on: [bad], run: "true"}
"""
    daemons.append(daemon := start_detached(_recipe(tmp_path, recipe), cwd=tmp_path))
    with connect(daemon.run_dir, attach=False) as control:
        assert control.wait(30) == 1  # bad failed, after is blocked: the run waits for the user
    assert alive(daemon.pid)  # an interactive run: retry or skip may come
    done = threading.Event()
    with connect(daemon.run_dir) as control:
        control.subscribe(lambda e: e.kind == "run_reopened" and done.set())
        assert control.command("skip", "bad").ok
        assert done.wait(15)
        assert control.wait(30) == 0
        assert control.command("close").ok
        assert control.wait_gone(30)
    assert_gone([daemon.pid], 10)
