"""``ctl``, ``runs`` and ``attach`` on live runs: ``orch-tui RECIPE --detach`` starts a real run
daemon, and real ``orch-tui`` processes talk to it, as a script or a user would."""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import (
    Daemon,
    alive,
    assert_gone,
    kill_tree,
    marked,
    read_events,
    read_json,
    read_pid,
    read_state,
    run_cli,
    start_cli,
    start_detached,
    wait_for,
    write_module,
    write_recipe,
)
from tests.tui_helpers import TmuxApp

LIVE = """
name: demo
jobs: 8
steps:
  - name: gate
    type: shell
    depends_on: []
    run: 'echo waiting; while [ ! -f go ]; do sleep 0.05; done; echo through'
  - {name: bad, type: shell, run: 'echo bad; exit 4', depends_on: []}
  - {name: after, type: shell, run: 'echo after', depends_on: [bad]}
  - {name: sleeper, type: shell, run: 'echo $$ > sleeper.pid; exec sleep 60', depends_on: []}
  - name: fill
    type: shell
    depends_on: []
    run: |
      echo '{"rows": [1, 2, 3]}' > "$ORCH_CTX_OUT"
"""


def detach(cwd, daemons, yaml_text: str = LIVE, name: str = "recipe.yaml") -> Daemon:
    """``--detach`` a run of ``yaml_text`` (killed with its steps after the test), once its
    state.json is there."""
    daemon = start_detached(write_recipe(cwd, yaml_text, name), cwd=cwd)
    daemons.append(daemon)
    wait_for(lambda: read_state(daemon.run_dir)["steps"], 10, "state.json")
    return daemon


def ctl(cwd, *args, **kw):
    return run_cli("ctl", *args, cwd=cwd, **kw)


def status_of(daemon: Daemon, step: str) -> str:
    return read_state(daemon.run_dir)["steps"][step]["status"]


def read_line(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bytes:
    """One line of a process's stdout, waiting at most ``timeout`` for each byte; read a byte
    at a time from the descriptor, so what follows it is left for ``communicate``."""
    fd = proc.stdout.fileno()
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"no whole line in time: {line!r}"
        byte = os.read(fd, 1)
        assert byte, f"the output ended: {line!r}"
        line += byte
    return line


def test_detach_then_ctl_status_commands_logs_and_wait(tmp_path, daemons):
    cwd = tmp_path
    daemon = detach(cwd, daemons)
    run_id = daemon.run_id
    wait_for(lambda: status_of(daemon, "after") == "blocked", 10, "after blocked")
    for step in ("gate", "sleeper"):
        wait_for(lambda s=step: status_of(daemon, s) == "running", 10, f"{step} running")
    wait_for(lambda: status_of(daemon, "fill") == "succeeded", 10, "fill")

    status = ctl(cwd, "status")  # the newest live run
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith(f"run {run_id} demo: running, ")
    assert lines[0].endswith(f"(live, pid {daemon.pid})")
    rows = {line.split()[0]: line.split()[1] for line in lines[2:]}
    assert rows == {
        "gate": "running",
        "bad": "failed",
        "after": "blocked",
        "sleeper": "running",
        "fill": "succeeded",
    }
    assert json.loads(ctl(cwd, "status", "--json").stdout)["steps"]["bad"]["exit_code"] == 4
    assert json.loads(ctl(cwd, "ctx", "rows").stdout) == [1, 2, 3]
    assert ctl(cwd, run_id, "logs", "bad").stdout == "bad\n"

    refused = ctl(cwd, "retry", "after")
    assert (refused.returncode, refused.stderr) == (
        2,
        "orch-tui: cannot retry 'after': it is blocked\n",
    )
    not_a_service = ctl(cwd, "restart", "gate")
    assert (not_a_service.returncode, not_a_service.stderr) == (
        2,
        "orch-tui: cannot restart 'gate': only a service (a background step) restarts; "
        "retry runs a step again once it has ended\n",
    )

    waiting = start_cli("ctl", run_id, "wait", cwd=cwd)
    follower = start_cli("ctl", run_id, "logs", "gate", "-f", cwd=cwd)
    try:
        assert read_line(follower) == b"waiting\n"
        assert follower.poll() is None  # the gate is still running: it follows

        assert ctl(cwd, "skip", "bad").stdout == "skip: bad\n"
        wait_for(lambda: status_of(daemon, "after") == "succeeded", 10, "after ran")
        sleeper = read_pid(cwd / "sleeper.pid")
        assert ctl(cwd, "stop", "sleeper").stdout == "stop: sleeper\n"
        assert_gone([sleeper])
        assert waiting.poll() is None  # the gate still runs: a step can still run

        (cwd / "go").touch()
        out, err = follower.communicate(timeout=20)
        assert (follower.returncode, out, err) == (0, b"through\n", b"")
        # nothing can run any more; the sleeper was cancelled: a failed run, as headless
        assert waiting.wait(20) == 1
    finally:
        kill_tree(follower)
        kill_tree(waiting)
    assert alive(daemon.pid)  # the run waits for a retry or for its end
    assert ctl(cwd, "stop-run").stdout == "stopping the run\n"
    assert_gone([daemon.pid], timeout=20)
    assert read_state(daemon.run_dir)["status"] == "failed"


QUICK = """
steps:
  - {name: build, type: shell, run: "echo built"}
"""


#: web takes its grace (1 s) to stop: the run's end takes a while
DRAINS = """
steps:
  - {name: web, type: shell, background: true, depends_on: [], grace: 1,
     run: "trap 'echo TERM' TERM; while true; do sleep 0.05; done"}
  - {name: work, type: shell, depends_on: [], run: exec sleep 1000}
"""


def test_wait_on_a_run_that_stays_open_says_its_daemon_is_still_up(tmp_path, daemons):
    """CI's ``orch-tui R --detach`` then ``ctl RUN wait``: the run is over, wait exits 0, and
    its daemon stays up for retry or skip, a process the job leaves behind: wait said nothing
    of it. It says so, and how to end it; not for --exit-when-done, nor once closed."""
    open_run = detach(tmp_path, daemons, QUICK)
    waited = ctl(tmp_path, open_run.run_id, "wait")
    assert waited.returncode == 0
    # and its record says so as wait returns (it was written up to 0.25 s later)
    lines = (open_run.run_dir / "events.jsonl").read_bytes().splitlines()
    assert json.loads(lines[-1])["type"] == "run_finished", lines[-3:]
    run_id = open_run.run_id
    assert waited.stderr == (
        f"orch-tui: run {run_id} is over, its daemon still up for retry or skip: "
        f"orch-tui ctl {run_id} close ends it (--exit-when-done ends a run on its own)\n"
    )
    assert alive(open_run.pid)
    assert ctl(tmp_path, run_id, "close").returncode == 0
    assert_gone([open_run.pid], timeout=20)
    assert ctl(tmp_path, run_id, "wait").stderr == ""

    ends = start_detached(
        write_recipe(tmp_path, QUICK, "ends.yaml"), "--exit-when-done", cwd=tmp_path
    )
    daemons.append(ends)
    waited = ctl(tmp_path, ends.run_id, "wait")
    assert (waited.returncode, waited.stderr) == (0, "")

    # nor of a run being stopped: its daemon exits (the wait's answer came before its word
    # that it closes, and the line said "still up ... close ends it")
    stopped = detach(tmp_path, daemons, DRAINS, "stopped.yaml")
    wait_for(lambda: status_of(stopped, "work") == "running", 10, "work running")
    assert ctl(tmp_path, stopped.run_id, "stop-run").returncode == 0
    waited = ctl(tmp_path, stopped.run_id, "wait")  # as web drains, its grace
    assert (waited.returncode, waited.stderr) == (130, "")


WAITING = """
name: demo
steps:
  - {name: svc, type: shell, background: true, cmd: sleep, args: ["60"]}
  - {name: bad, type: shell, run: "exit 4"}
  - {name: after, type: shell, run: "echo after", depends_on: [bad]}
"""


def runs_table(cwd) -> tuple[dict[str, list[str]], str]:
    """``orch-tui runs``' rows by run id (the cells after it), and what it said on stderr."""
    listed = run_cli("runs", cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split()[1:] for line in listed.stdout.splitlines()[1:]}
    return rows, listed.stderr


SERVING = """
name: demo
steps:
  - {name: svc, type: shell, background: true, cmd: sleep, args: ["60"]}
  - {name: work, type: shell, run: "true", depends_on: []}
"""


def test_a_run_whose_work_is_done_says_its_services_are_up(tmp_path, daemons):
    """The work done, a service up: ``ctl status`` says ``done`` and that services are up
    (what ends them), as the app's header says ``done · services up``. "done" alone read, to a
    process-compose user, as everything having ended. ``runs`` keeps one word a cell."""
    run = detach(tmp_path, daemons, SERVING)
    wait_for(lambda: status_of(run, "work") == "succeeded", 10, "work done")
    wait_for(lambda: status_of(run, "svc") == "ready", 10, "svc up")
    status = ctl(tmp_path, run.run_id, "status").stdout.splitlines()
    assert status[0].startswith(
        f"run {run.run_id} demo: done (services up: ctl close ends the run), "
    ), status[0]
    rows, said = runs_table(tmp_path)
    assert rows[run.run_id][1] == "done" and said == ""
    assert ctl(tmp_path, run.run_id, "close").returncode == 0
    assert_gone([run.pid], timeout=20)


def test_runs_and_ctl_status_say_of_a_run_what_its_app_says(tmp_path, daemons):
    """A failed step waiting for a retry beside a service that is up: the app's header says
    "waiting", state.json "running", and ``runs`` and ``ctl status`` said "running" (a script
    reads that as progress). A run that is over but kept open (a terminal closed under its
    app) was "succeeded" and LIVE "yes" in ``runs``, with nothing said of its daemon: they
    piled up unnoticed."""
    waiting = detach(tmp_path, daemons, WAITING)
    wait_for(lambda: status_of(waiting, "bad") == "failed", 10, "bad failed")
    wait_for(lambda: status_of(waiting, "svc") == "ready", 10, "svc up")
    status = ctl(tmp_path, waiting.run_id, "status").stdout.splitlines()
    assert status[0].startswith(
        f"run {waiting.run_id} demo: waiting (ctl retry or skip a step), "
    ), status[0]
    rows, said = runs_table(tmp_path)
    assert rows[waiting.run_id][1:2] == ["waiting"] and rows[waiting.run_id][-1] == "yes"
    assert said == ""
    assert ctl(tmp_path, waiting.run_id, "stop-run").returncode == 0
    assert_gone([waiting.pid], timeout=20)

    over = detach(tmp_path, daemons, QUICK, "quick.yaml")
    wait_for(lambda: read_state(over.run_dir)["ended"], 10, "the run over")
    rows, said = runs_table(tmp_path)
    assert rows[over.run_id][1] == "succeeded" and rows[over.run_id][-1] == "open"
    assert said == (
        f"orch-tui: run {over.run_id} is over, its daemon still up for retry or skip: "
        f"orch-tui ctl {over.run_id} close ends it\n"
    )
    listed = json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)
    assert [(r["id"], r["live"], r["open"]) for r in listed][0] == (over.run_id, True, True)
    assert ctl(tmp_path, over.run_id, "close").returncode == 0
    assert_gone([over.pid], timeout=20)
    rows, said = runs_table(tmp_path)
    assert rows[over.run_id][-1] == "no" and said == ""


def test_ctl_status_on_a_terminal_fits_its_rows_to_it(tmp_path, daemons, tmux_socket):
    """``ctl status`` in an 80-column terminal, a step with a long note (a service's "bg;
    healthy; restarted 2x (...)" and why it ended): its row wrapped onto the next line, which
    no eye can read as a table. The note is cut with an ellipsis; into a pipe it stays whole
    (for grep), as ``runs`` and ``sessions`` do."""
    reason = "x" * 120
    module = write_module(tmp_path, f"def f(ctx):\n    raise ValueError('{reason}')\n")
    daemon = detach(
        tmp_path,
        daemons,
        f"steps:\n  - {{name: long, type: python, module: {module}, function: f}}\n",
    )
    wait_for(lambda: status_of(daemon, "long") == "failed", 10, "long failed")
    app = TmuxApp(tmux_socket, ["ctl", daemon.run_id, "status"], tmp_path)
    assert app.exited() == 0
    rows = app.rows()
    line = next(row for row in rows if row.startswith("long "))
    assert line.endswith("…") and len(line) <= 80, rows
    assert not any(row.startswith("x") for row in rows), rows  # no row wrapped
    whole = ctl(tmp_path, daemon.run_id, "status").stdout  # into a pipe
    assert reason in whole


SLOW_TO_STOP = """
name: demo
steps:
  - name: svc
    type: shell
    background: true
    grace: 60
    run: "trap '' TERM; echo up; while true; do sleep 0.05; done"
    ready: {log: up}
  - {name: bad, type: shell, run: "exit 4"}
  - {name: after, type: shell, run: "echo after", depends_on: [bad]}
"""


def test_a_run_being_stopped_says_stopping_and_a_second_stop_run_kills_it(tmp_path, daemons):
    """``ctl stop-run`` of a run whose service takes its grace: ``ctl status`` and ``runs``
    say "stopping" until it has ended, as its app's header does; they said "waiting (ctl retry
    or skip a step)" (a retry is refused then, "it is failed" said why) or "done". A second ``stop-run`` kills it at
    once (README), where it signalled the service again and left the run to its 60 s grace."""
    daemon = detach(tmp_path, daemons, SLOW_TO_STOP)
    wait_for(lambda: status_of(daemon, "bad") == "failed", 10, "bad failed")
    wait_for(lambda: status_of(daemon, "svc") == "ready", 10, "svc up")
    assert ctl(tmp_path, daemon.run_id, "stop-run").returncode == 0
    wait_for(lambda: read_state(daemon.run_dir)["steps"]["svc"]["stopping"], 10, "svc stopping")
    status = ctl(tmp_path, daemon.run_id, "status").stdout.splitlines()
    assert status[0].startswith(f"run {daemon.run_id} demo: stopping, "), status[0]
    rows, _ = runs_table(tmp_path)
    assert rows[daemon.run_id][1:2] == ["stopping"], rows[daemon.run_id]
    # a failed step is retried, but not as the run ends: said so (was "it is failed")
    assert_error_line(
        ctl(tmp_path, daemon.run_id, "retry", "bad"), "cannot retry 'bad': the run is stopping"
    )
    assert ctl(tmp_path, daemon.run_id, "stop-run").returncode == 0
    assert_gone([daemon.pid], timeout=20)
    state = read_state(daemon.run_dir)
    # its work was done (bad failed, after blocked): ended as close ends it, the work's status
    assert (state["status"], state["steps"]["svc"]["status"]) == ("failed", "stopped")
    assert state["steps"]["svc"]["signal"] == signal.SIGKILL


def test_ctl_stop_twice_kills_a_step_taking_its_grace(tmp_path, daemons):
    """``ctl stop svc`` of a service that ignores SIGTERM (grace 60 s), then again: the second
    kills it at once and says so, as a second ``stop-run`` kills the run's steps. It said
    "stop: svc" and sent SIGTERM once more: the service took its whole grace."""
    daemon = detach(tmp_path, daemons, SLOW_TO_STOP)
    wait_for(lambda: status_of(daemon, "svc") == "ready", 10, "svc up")
    assert ctl(tmp_path, daemon.run_id, "stop", "svc").stdout.strip() == "stop: svc"
    wait_for(lambda: read_state(daemon.run_dir)["steps"]["svc"]["stopping"], 10, "svc stopping")
    again = ctl(tmp_path, daemon.run_id, "stop", "svc")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "killing 'svc' now (SIGKILL): it was stopping already"
    wait_for(lambda: status_of(daemon, "svc") == "stopped", 10, "svc killed")
    assert read_state(daemon.run_dir)["steps"]["svc"]["signal"] == signal.SIGKILL
    assert ctl(tmp_path, daemon.run_id, "close").returncode == 0
    assert_gone([daemon.pid], timeout=20)


ANSWERS = """
steps:
  - {name: answer, type: shell, run: 'sleep 0.5; echo "{\\"answer\\": 42}" > "$ORCH_CTX_OUT"'}
"""


@pytest.mark.parametrize("exit_when_done", [False, True])
def test_ctl_wait_returns_once_the_runs_files_say_how_it_ended(tmp_path, daemons, exit_when_done):
    """A script's ``--detach``, ``ctl wait``, then ctx.json: wait returned as the run's end
    reached its daemon's clients, and the files were saved up to 0.25 s later (or as the
    daemon closed): ctx.json was still ``{}`` and state.json said running (CI, under load)."""
    extra = ("--exit-when-done",) if exit_when_done else ()
    daemon = start_detached(write_recipe(tmp_path, ANSWERS), *extra, cwd=tmp_path)
    daemons.append(daemon)
    waited = ctl(tmp_path, daemon.run_id, "wait")
    state, ctx = read_state(daemon.run_dir), read_json(daemon.run_dir / "ctx.json")
    assert waited.returncode == 0, waited.stderr
    assert (state["status"], state["exit_code"], state["steps"]["answer"]["status"]) == (
        "succeeded",
        0,
        "succeeded",
    )
    assert state["ended"] is not None
    assert ctx == {"answer": 42}
    if not exit_when_done:
        assert ctl(tmp_path, daemon.run_id, "close").returncode == 0
    assert_gone([daemon.pid], timeout=20)


def test_stop_run_force_ends_a_busy_run_interrupted(tmp_path, daemons):
    daemon = detach(tmp_path, daemons)
    run_id = daemon.run_id
    sleeper = read_pid(tmp_path / "sleeper.pid")
    assert ctl(tmp_path, run_id, "stop-run", "--force").returncode == 0
    assert_gone([daemon.pid, sleeper], timeout=20)
    assert ctl(tmp_path, run_id, "wait").returncode == 130  # from its folder now
    assert_error_line(ctl(tmp_path, run_id, "skip", "gate"), "the run is over (read-only)")


def assert_error_line(result, message: str) -> None:
    assert (result.returncode, result.stderr, result.stdout) == (2, f"orch-tui: {message}\n", "")


@pytest.mark.parametrize(
    "step",
    [
        "{name: flaky, type: shell, retries: 5, retry_delay: 0.1, run: '%s'}",
        "{name: flaky, type: shell, background: true, restart: on_failure, max_restarts: 5,"
        " restart_delay: 0.1, run: '%s'}",
    ],
    ids=["retries", "restarts"],
)
def test_logs_follow_goes_on_through_a_retry_or_a_restart(tmp_path, daemons, step):
    """``logs -f`` of a step that failed and is tried again (its ``retries``, or a service's
    restart) follows the next attempts to the step's end: it ended after the first attempt,
    which the app shows as failed between two attempts, and the rest was never printed."""
    run = "echo attempt $(wc -l < tries); sleep 0.2; echo >> tries; [ $(wc -l < tries) -ge 6 ]"
    (tmp_path / "tries").write_text("")
    daemon = detach(
        tmp_path,
        daemons,
        "steps:\n  - " + step % run + "\n  - {name: work, type: shell, run: 'sleep 30'}\n",
    )
    follower = start_cli("ctl", daemon.run_id, "logs", "flaky", "-f", cwd=tmp_path)
    try:
        out, err = follower.communicate(timeout=30)
    finally:
        kill_tree(follower)
    assert (follower.returncode, err) == (0, b"")
    said = [line for line in out.decode().splitlines() if line.startswith("attempt")]
    assert said == [f"attempt {n}" for n in range(6)], out


def test_events_follow_has_no_gap_and_no_duplicate(tmp_path, daemons):
    daemon = detach(tmp_path, daemons)
    wait_for(lambda: status_of(daemon, "bad") == "failed", 10, "bad failed")
    follower = start_cli("ctl", daemon.run_id, "events", "--follow", "--since", "2", cwd=tmp_path)
    try:
        first = json.loads(read_line(follower))
        assert first["seq"] == 3
        ctl(tmp_path, "skip", "bad")
        (tmp_path / "go").touch()
        wait_for(lambda: status_of(daemon, "gate") == "succeeded", 10, "gate")
        ctl(tmp_path, "stop-run")
        out, err = follower.communicate(timeout=30)  # it ends with the daemon
    finally:
        kill_tree(follower)
    assert (follower.returncode, err) == (0, b"")  # the run ended: not an error
    seen = [first, *(json.loads(line) for line in out.splitlines())]
    recorded = read_events(daemon.run_dir)
    assert [e["seq"] for e in seen] == [e["seq"] for e in recorded[2:]]
    assert seen == recorded[2:]


def test_ctl_status_says_a_service_waiting_out_its_restart_delay_is_restarting(tmp_path, daemons):
    """A crashed service due to start again is ↻ in the app's tree and counted so in its
    header; ``ctl status`` said "pending", as a step that never ran."""
    daemon = detach(
        tmp_path,
        daemons,
        """
        steps:
          - {name: api, type: shell, background: true, restart: always, restart_delay: 30,
             run: exit 3}
        """,
    )
    wait_for(lambda: read_state(daemon.run_dir)["steps"]["api"]["restarting"], 10, "the crash")
    status = ctl(tmp_path, "status")
    row = next(line for line in status.stdout.splitlines() if line.startswith("api "))
    assert row.split()[1] == "restarting", status.stdout
    assert row.endswith("bg; exit code 3")  # the restart is counted once it is made
    assert ctl(tmp_path, "stop-run").returncode == 0


def test_runs_shows_a_killed_daemon_died_and_removes_only_its_socket(tmp_path, daemons):
    first, second = detach(tmp_path, daemons), detach(tmp_path, daemons, name="second.yaml")
    killed, live = first.run_id, second.run_id
    killed_dir, live_dir = first.run_dir, second.run_dir
    os.kill(first.pid, signal.SIGKILL)
    assert_gone([first.pid])
    assert (killed_dir / "daemon.sock").exists()  # left behind: nobody listens on it

    listed = json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)
    assert [(r["id"], r["status"], r["live"]) for r in listed] == [
        (live, "running", True),
        (killed, "died", False),
    ]
    assert not (killed_dir / "daemon.sock").exists()
    assert (live_dir / "daemon.sock").exists()
    assert not marked(killed_dir)  # the watchdog took the killed daemon's steps with it

    status = ctl(tmp_path, killed, "status").stdout.splitlines()
    assert status[0].startswith(f"run {killed} demo: died, ")  # as runs says (was interrupted)
    assert status[0].endswith("(the daemon is gone)")
    assert "interrupted (the daemon is gone)" in status[5]  # the sleeper
    assert ctl(tmp_path, "status").stdout.startswith(f"run {live} ")  # the newest live one


@pytest.mark.parametrize("end", ["stop-run", "SIGKILL"])
def test_a_step_blocked_by_a_failure_stays_blocked_when_the_run_is_stopped(tmp_path, daemons, end):
    """The failure kept it from running, not the stop: `ctl status` said "cancelled ... blocked
    by bad", against the contract's "steps a failure kept from running end as blocked"."""
    daemon = detach(tmp_path, daemons)
    wait_for(lambda: status_of(daemon, "after") == "blocked", 10, "after blocked")
    if end == "stop-run":
        assert ctl(tmp_path, daemon.run_id, "stop-run").returncode == 0
    else:
        os.kill(daemon.pid, signal.SIGKILL)
    assert_gone([daemon.pid], 30)

    steps = json.loads(ctl(tmp_path, daemon.run_id, "status", "--json").stdout)["steps"]
    assert {name: s["status"] for name, s in steps.items()} == {
        "gate": "cancelled",
        "bad": "failed",
        "after": "blocked",
        "sleeper": "cancelled",
        "fill": "succeeded",
    }
    assert steps["after"]["blocked_by"] == ["bad"]


@pytest.mark.parametrize(
    ("end", "note"),
    [
        ("stop-run", "run stopped (stop-run)"),
        (signal.SIGTERM, "run interrupted (SIGTERM)"),
        (signal.SIGINT, "run interrupted (SIGINT)"),
    ],
)
def test_the_steps_a_stopped_run_cut_short_say_what_stopped_it(tmp_path, daemons, end, note):
    """`stop-run` sends no signal: its steps' note said "run interrupted (SIGTERM)" all the same."""
    daemon = detach(tmp_path, daemons)
    wait_for(lambda: status_of(daemon, "sleeper") == "running", 10, "sleeper running")
    if end == "stop-run":
        assert ctl(tmp_path, daemon.run_id, "stop-run").returncode == 0
    else:
        os.kill(daemon.pid, end)
    assert_gone([daemon.pid], 30)

    state = read_state(daemon.run_dir)
    assert {name: step["reason"] for name, step in state["steps"].items()} == {
        "gate": note,
        "bad": "exit code 4",
        "after": None,
        "sleeper": note,
        "fill": None,
    }
    finished = [e for e in read_events(daemon.run_dir) if e["type"] == "step_finished"]
    assert {e["step"]: e["reason"] for e in finished}["sleeper"] == note
    [sleeper] = [
        row
        for row in ctl(tmp_path, daemon.run_id, "status").stdout.splitlines()[2:]
        if row.startswith("sleeper ")
    ]
    assert sleeper.endswith(note)


def test_a_pending_step_a_stopped_run_cancels_keeps_why_in_its_state(tmp_path, daemons):
    """Its note was only in its event: state.json, and so `ctl status`, gave no reason for a
    step that never ran."""
    recipe = """
steps:
  - {name: sleeper, type: shell, run: 'exec sleep 60'}
  - {name: later, type: shell, run: 'true', depends_on: [sleeper]}
"""
    daemon = detach(tmp_path, daemons, recipe)
    wait_for(lambda: status_of(daemon, "sleeper") == "running", 10, "sleeper running")
    assert ctl(tmp_path, daemon.run_id, "stop-run").returncode == 0
    assert_gone([daemon.pid], 30)

    later = read_state(daemon.run_dir)["steps"]["later"]
    assert (later["status"], later["reason"]) == ("cancelled", "run stopped (stop-run)")
    [row] = [
        row
        for row in ctl(tmp_path, daemon.run_id, "status").stdout.splitlines()[2:]
        if row.startswith("later ")
    ]
    assert row.endswith("run stopped (stop-run)")


TICKER = """
steps:
  - name: ticker
    type: shell
    run: 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05; done'
"""


def test_a_killed_daemon_ran_until_its_last_event_not_its_last_state_save(tmp_path, daemons):
    """state.json is rewritten only when a status changes: a run that printed for a while after
    that, then was killed, lasted until its last event (`runs` said 0.1s for a 12s run)."""
    daemon = detach(tmp_path, daemons, TICKER)
    log = daemon.run_dir / "logs" / "ticker.log"
    wait_for(lambda: log.exists() and b"tick 40\n" in log.read_bytes(), 15, "tick 40")
    os.kill(daemon.pid, signal.SIGKILL)
    assert_gone([daemon.pid])
    last_event = read_events(daemon.run_dir)[-1]["ts"]

    [row] = json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)
    assert row["status"] == "died"
    assert row["ended"] >= last_event
    ticker = json.loads(ctl(tmp_path, daemon.run_id, "status", "--json").stdout)["steps"]["ticker"]
    assert (ticker["status"], ticker["ended"] >= last_event) == ("cancelled", True)


@pytest.mark.parametrize("follow", [("logs", "ticker", "-f"), ("events", "--follow")])
def test_a_follow_whose_daemon_is_killed_says_the_run_died(tmp_path, daemons, follow):
    """The daemon SIGKILLed under `logs -f` / `events --follow`: they ended silently with exit
    0, as if the run had ended; now a line says the run died, and the exit is `wait`'s (130)."""
    daemon = detach(tmp_path, daemons, TICKER)
    follower = start_cli("ctl", daemon.run_id, *follow, cwd=tmp_path)
    try:
        read_line(follower)  # it follows
        os.kill(daemon.pid, signal.SIGKILL)
        _, err = follower.communicate(timeout=30)
    finally:
        kill_tree(follower)
    died = (
        130,
        f"orch-tui: run {daemon.run_id} died: its daemon is gone, the run did not end "
        "(orch-tui runs lists it as died)\n",
    )
    assert (follower.returncode, err.decode()) == died
    assert ctl(tmp_path, daemon.run_id, "wait").returncode == 130
    again = ctl(tmp_path, daemon.run_id, *follow)  # read from its folder now: the same end
    assert (again.returncode, again.stderr) == died


class Follower:
    """``ctl RUN logs -f`` / ``events --follow`` in this process, on a thread, so that a test
    can cut its connection to the real daemon (``cut``: its socket shut down, as a dropped
    connection is) while the daemon lives. ``connections``: each one it followed through."""

    def __init__(self, tmp_path, monkeypatch, run_id: str, *command: str) -> None:
        import core.client
        from tui.ctl import cmd_ctl

        self.connections: list = []
        connect = core.client.connect

        def recorded(*args, **kwargs):
            made = connect(*args, **kwargs)
            if kwargs.get("attach", True):  # not the probe that finds the run live
                self.connections.append(made)
            return made

        monkeypatch.setattr(core.client, "connect", recorded)
        monkeypatch.chdir(tmp_path)
        self.codes: list[int] = []
        words = argparse.Namespace(words=[run_id, *command])
        self.thread = threading.Thread(target=lambda: self.codes.append(cmd_ctl(words)))
        self.thread.start()
        wait_for(lambda: self.connections, 10, "following")

    def cut(self) -> int:
        """Cut the connection it follows through (its newest); how many it had made."""
        self.connections[-1]._sock.shutdown(socket.SHUT_RDWR)
        return len(self.connections)

    def end(self, timeout: float = 30) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the follow did not end"
        return self.codes[0]


def test_logs_f_whose_connection_is_cut_connects_again(
    tmp_path, daemons, monkeypatch, capsysbinary
):
    """The connection cut under `logs -f` while the daemon lives: it said the run had died
    (exit 130); now it connects again and goes on, no line lost or shown twice."""
    daemon = detach(tmp_path, daemons)
    log = daemon.run_dir / "logs" / "gate.log"
    wait_for(lambda: log.exists() and log.read_bytes() == b"waiting\n", 10, "gate waiting")
    follower = Follower(tmp_path, monkeypatch, daemon.run_id, "logs", "gate", "-f")
    wait_for(lambda: capsysbinary.readouterr().out == b"waiting\n", 10, "the log so far")
    made = follower.cut()
    wait_for(lambda: len(follower.connections) > made, 10, "connected again")
    (tmp_path / "go").touch()
    assert follower.end() == 0
    captured = capsysbinary.readouterr()
    assert (captured.out, captured.err) == (b"through\n", b"")
    assert alive(daemon.pid)  # it was never gone


def test_events_follow_whose_connection_is_cut_connects_again(
    tmp_path, daemons, monkeypatch, capsysbinary
):
    """As `logs -f`: each event once, none missing, across the new connection."""
    daemon = detach(tmp_path, daemons)
    wait_for(lambda: status_of(daemon, "bad") == "failed", 10, "bad failed")
    follower = Follower(tmp_path, monkeypatch, daemon.run_id, "events", "--follow", "--since", "2")
    made = follower.cut()
    wait_for(lambda: len(follower.connections) > made, 10, "connected again")
    ctl(tmp_path, daemon.run_id, "skip", "bad")
    (tmp_path / "go").touch()
    wait_for(lambda: status_of(daemon, "gate") == "succeeded", 10, "gate")
    ctl(tmp_path, daemon.run_id, "stop-run")
    assert follower.end() == 0  # it ends with the run
    captured = capsysbinary.readouterr()
    seen = [json.loads(line) for line in captured.out.splitlines()]
    assert captured.err == b""
    assert seen == read_events(daemon.run_dir)[2:]


def test_events_follow_cut_as_the_run_ends_still_shows_its_last_events(
    tmp_path, daemons, monkeypatch, capsysbinary
):
    """The connection cut, and the run over before the follow could connect again (nothing to
    connect to): the events of that gap are in events.jsonl, and the follow shows them, each
    once, and ends as the run did (exit 0). It stopped at the cut, missing them."""
    import tui.ctl

    daemon = detach(tmp_path, daemons)
    wait_for(lambda: status_of(daemon, "bad") == "failed", 10, "bad failed")
    over = threading.Event()
    current = tui.ctl._Link.current

    def after_the_end(link):  # the follow's attempt to connect again comes once the run is over
        over.wait(30)
        return current(link)

    monkeypatch.setattr(tui.ctl._Link, "current", after_the_end)
    follower = Follower(tmp_path, monkeypatch, daemon.run_id, "events", "--follow", "--since", "2")
    follower.cut()
    ctl(tmp_path, daemon.run_id, "skip", "bad")
    (tmp_path / "go").touch()
    wait_for(lambda: status_of(daemon, "gate") == "succeeded", 10, "gate")
    ctl(tmp_path, daemon.run_id, "stop-run")
    assert_gone([daemon.pid])
    over.set()
    assert follower.end() == 0
    captured = capsysbinary.readouterr()
    assert captured.err == b""
    assert [json.loads(line) for line in captured.out.splitlines()] == read_events(daemon.run_dir)[
        2:
    ]


def test_a_follow_that_cannot_connect_again_says_how_to_follow_again(
    tmp_path, daemons, monkeypatch, capsysbinary
):
    """The daemon listens but does not answer (stopped): not "the run died" (130) but the
    connection lost, exit 1, and the command that follows it again."""
    daemon = detach(tmp_path, daemons)
    wait_for(lambda: status_of(daemon, "gate") == "running", 10, "gate running")
    follower = Follower(tmp_path, monkeypatch, daemon.run_id, "logs", "gate", "-f")
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        follower.cut()
        code = follower.end()
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    assert code == 1
    assert capsysbinary.readouterr().err.decode() == (
        "orch-tui: lost the connection to the run's daemon (it still runs): "
        f"orch-tui ctl {daemon.run_id} logs gate -f to follow again\n"
    )


def test_runs_never_removes_a_socket_something_listens_on(tmp_path, daemons):
    """A daemon too busy to answer (here: a listener that never reads) is not a dead one."""
    daemon = detach(tmp_path, daemons)
    run_dir = daemon.run_dir
    os.kill(daemon.pid, signal.SIGKILL)
    assert_gone([daemon.pid])
    (run_dir / "daemon.sock").unlink()
    folder = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(f"/proc/self/fd/{folder}/daemon.sock")
        listener.listen(4)
        listed = json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)
        assert [(r["status"], r["live"]) for r in listed] == [("died", False)]
        assert (run_dir / "daemon.sock").exists()
    finally:
        listener.close()
        os.close(folder)


def test_attach_follows_a_live_run_and_d_leaves_it_going(tmp_path, daemons, tmux_socket):
    daemon = detach(tmp_path, daemons)
    wait_for(lambda: status_of(daemon, "bad") == "failed", 10, "bad failed")
    app = TmuxApp(tmux_socket, ["attach"], tmp_path)  # the newest live run
    app.shows("▶ gate", "✗ bad", "waiting")
    ctl(tmp_path, "skip", "bad")  # another client's command shows here
    app.shows("✓ after")
    app.keys("d")
    wait_for(lambda: not app.running(), 10, "the app to leave on d")
    assert alive(daemon.pid)
    assert json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)[0]["live"] is True


def test_attach_waits_for_a_daemon_too_busy_to_answer_at_once(tmp_path, daemons, tmux_socket):
    """`attach` to a run whose daemon does not answer at once (busy in C code; here stopped
    until the app has said it waits): it says so and waits for it, as ctl does. It gave up
    after 5 s: "did not answer", exit 2, for a run that was live."""
    daemon = detach(tmp_path, daemons)
    wait_for(lambda: status_of(daemon, "sleeper") == "running", 10, "sleeper running")
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        app = TmuxApp(tmux_socket, ["attach", daemon.run_id], tmp_path)
        app.shows(f"run {daemon.run_id}: its daemon is busy", "waiting for it", timeout=30)
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    app.shows("▶ sleeper")
    app.keys("d")
    wait_for(lambda: not app.running(), 10, "the app to leave on d")
    assert alive(daemon.pid)


def test_an_attached_app_whose_daemon_is_killed_says_so_and_exits(tmp_path, daemons, tmux_socket):
    """The daemon SIGKILLed under an attached app: the app leaves its full screen (no hang,
    no traceback), says the daemon is gone and where its log is, and exits 1; the terminal
    is left as it was (not in the alternate screen, no mouse reporting)."""
    daemon = detach(tmp_path, daemons)
    wait_for(lambda: status_of(daemon, "sleeper") == "running", 10, "sleeper running")
    app = TmuxApp(tmux_socket, ["attach"], tmp_path)
    app.shows("▶ sleeper")
    assert app.modes() == {"alternate_on": "1", "mouse_any_flag": "1"}  # what it must undo
    os.kill(daemon.pid, signal.SIGKILL)
    assert app.exited() == 1
    printed = app.printed()
    log = daemon.run_dir.relative_to(tmp_path) / "daemon.log"
    assert (
        f"orch-tui: the run daemon went away without ending the run (was it killed?); see {log}"
        in printed
    )
    assert "Traceback" not in printed
    assert app.modes() == {"alternate_on": "0", "mouse_any_flag": "0"}


async def test_an_app_whose_daemon_is_killed_as_the_ctx_changes_shows_no_traceback(
    tmp_path, daemons
):
    """A dev stack with a dashboard feeder changes the ctx all the time; its daemon SIGKILLed,
    the app's next refresh of the ctx asked the dead daemon and the app crashed with a
    traceback (DaemonGone in the ctx tree's refresh, a screen of locals) over the line saying
    the daemon was gone. A key that asks the daemon (k on a step) did the same."""
    from core.client import connect
    from tests.tui_helpers import SIZE, until
    from tui.app import make_app

    module = write_module(
        tmp_path,
        """
        def run(ctx, stop):
            n = 0
            while not stop.wait(0.01):
                n += 1
                ctx["n"] = n
        """,
    )
    daemon = detach(
        tmp_path,
        daemons,
        f"""
        steps:
          - {{name: feed, type: python, background: true, module: {module}}}
          - {{name: sleeper, type: shell, run: 'exec sleep 60', depends_on: []}}
        """,
    )
    wait_for(lambda: status_of(daemon, "sleeper") == "running", 10, "sleeper running")
    control = connect(daemon.run_dir, client="tui")
    try:
        app = make_app(control, detachable=True)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app._ctx_dirty, 10, "a ctx change not shown yet")
            os.kill(daemon.pid, signal.SIGKILL)
            await until(pilot, lambda: control.gone is not None, 10, "the daemon gone")
            await until(pilot, lambda: not app._ctx_dirty, 10, "the ctx tree's refresh")
            await pilot.press("k")  # feed, the first step: a command to the dead daemon
            await until(
                pilot,
                lambda: any("went away" in str(n.message) for n in app._notifications),
                10,
                "a notice that the daemon went away",
            )
            assert app.is_running
    finally:
        control.close()


def test_attach_shows_the_sessions_the_run_made_before(tmp_path, daemons, tmux_socket):
    """The tree's Sessions group comes from the run's session steps: attached to a live run
    after they ended, the app lists the sessions they made, as the run's own app did. It
    listed none: only steps ending while it watched counted."""
    session = f"backend: tmux, socket: {tmux_socket}"
    daemon = detach(
        tmp_path,
        daemons,
        f"""
        steps:
          - {{name: lab, type: session, {session}, action: create, session: made_before}}
          - {{name: second, type: session, {session}, action: create, session: made_too}}
          - {{name: sleeper, type: shell, run: 'exec sleep 60'}}
        """,
    )
    wait_for(lambda: status_of(daemon, "sleeper") == "running", 10, "sleeper running")
    app = TmuxApp(tmux_socket, ["attach"], tmp_path)
    app.shows("▶ sleeper", "▼ Sessions", "▣ made_before tmux", "▣ made_too tmux")  # tree rows
    app.keys("d")
    wait_for(lambda: not app.running(), 10, "the app to leave on d")


def test_ctl_says_which_run_it_took_when_a_newer_one_runs_headless(tmp_path, daemons):
    """A run in a daemon, then a newer one ``--no-ui`` (no daemon to reach): ``ctl`` without
    RUN takes the live one, and says so, naming the newer one and why it is not it; a step
    only the newer run has was "no step named ..." with nothing to tell which run was asked."""
    daemon = detach(tmp_path, daemons)
    headless = start_cli(
        write_recipe(
            tmp_path,
            "steps:\n  - {name: ticker, type: shell, run: 'while [ ! -f go ]; do sleep 0.05; done'}\n",
            "headless.yaml",
        ),
        "--no-ui",
        cwd=tmp_path,
    )
    try:
        wait_for(
            lambda: len(json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)) == 2,
            message="the headless run listed",
        )
        newest = json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)[0]
        assert (newest["recipe"].endswith("headless.yaml"), newest["live"]) == (True, False)
        result = ctl(tmp_path, "stop", "ticker")
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"orch-tui: run {daemon.run_id}, the newest live one ({newest['id']}, newer, "
            "runs --no-ui, without a daemon)",
            "orch-tui: no step named 'ticker'",
        ]
        (tmp_path / "go").touch()
        assert headless.wait(10) == 0
    finally:
        kill_tree(headless)


def _detach_until_ctx_saved(tmp_path, daemons, module: str) -> tuple[Daemon, Path]:
    """A detached run of ``module``'s ``run`` as its one step; the run and its ctx.json, once
    saved with something in it."""
    daemon = detach(
        tmp_path, daemons, f"steps:\n  - {{name: put, type: python, module: {module}}}\n"
    )
    ctx_json = daemon.run_dir / "ctx.json"
    wait_for(lambda: ctx_json.exists() and json.loads(ctx_json.read_bytes()), 10, "ctx saved")
    return daemon, ctx_json


def test_numpy_scalars_a_step_stores_are_in_ctx_json_and_ctl_ctx(tmp_path, daemons):
    """A mean computed with numpy is an ``np.float64`` (a float), a label an ``np.str_``: the
    ctx takes them, so ctx.json and ``ctl ctx`` show them as the numbers and text they are.
    Once, one of them kept every key out of ctx.json (saved as ``{}`` all run long) and made
    ``ctl ctx`` an internal error."""
    module = write_module(
        tmp_path,
        """
        import numpy as np

        def run(ctx, stop):
            ctx["mean"] = np.mean(np.arange(4.0))
            ctx["label"] = np.str_("hello")
            ctx["n"] = 4
            stop.wait(60)
        """,
    )
    daemon, ctx_json = _detach_until_ctx_saved(tmp_path, daemons, module)
    assert json.loads(ctx_json.read_bytes()) == {"mean": 1.5, "label": "hello", "n": 4}
    shown = ctl(tmp_path, "ctx")
    assert (shown.returncode, shown.stderr) == (0, "")
    assert "mean" in shown.stdout and "label" in shown.stdout
    for key, value in (("mean", 1.5), ("label", "hello")):
        assert json.loads(ctl(tmp_path, "ctx", key).stdout) == value
    assert ctl(tmp_path, "stop-run").returncode == 0
    assert_gone([daemon.pid], timeout=20)


def test_ctl_ctx_shows_a_value_changed_in_place_past_the_checks_and_where_it_is(tmp_path, daemons):
    """``ctx["rows"].append(np.int64(3))`` goes past the ctx's checks: ctx.json is saved
    without the key, and ``ctl ctx`` shows it anyway, the culprit marked where it is. Once,
    ``ctl ctx`` was an internal error and ``ctl ctx rows`` said "no ctx key 'rows' (did you
    mean 'rows'?)"."""
    module = write_module(
        tmp_path,
        """
        import numpy as np

        def run(ctx, stop):
            ctx["rows"] = [1]
            ctx["rows"].append(np.int64(3))
            ctx["n"] = 2
            stop.wait(60)
        """,
    )
    daemon, ctx_json = _detach_until_ctx_saved(tmp_path, daemons, module)
    assert json.loads(ctx_json.read_bytes()) == {"n": 2}
    rows_shown = [1, "<np.int64(3): not JSON, its key left out of ctx.json>"]
    shown = ctl(tmp_path, "ctx")
    assert (shown.returncode, shown.stderr) == (0, ""), shown.stderr
    assert json.loads(shown.stdout) == {"rows": rows_shown, "n": 2}
    rows = ctl(tmp_path, "ctx", "rows")
    assert (rows.returncode, json.loads(rows.stdout)) == (0, rows_shown), rows.stderr
    assert ctl(tmp_path, "stop-run").returncode == 0
    assert_gone([daemon.pid], timeout=20)


def _ctl_in_thread(tmp_path, monkeypatch, *words: str) -> tuple[threading.Thread, list]:
    """``orch-tui ctl WORDS`` in this process, on a thread: its exit code, or the one-line
    error it ends with (a UsageError's message), goes in the list."""
    from tui.cli import UsageError
    from tui.ctl import cmd_ctl

    monkeypatch.chdir(tmp_path)
    results: list = []

    def run() -> None:
        try:
            results.append(cmd_ctl(argparse.Namespace(words=list(words))))
        except UsageError as exc:
            results.append(str(exc))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


def test_ctl_waits_for_a_daemon_too_busy_to_answer_at_once(tmp_path, daemons, monkeypatch, capsys):
    """A daemon that does not answer ctl's first look within its 2 s (a python step holding
    the interpreter in C code, a regex backtracking; here: stopped until ctl has looked) is
    busy, not over: `ctl RUN stop-run` said "the run is over (read-only)", exit 2, and the run
    went on. Now ctl waits for the daemon, and the run is stopped."""
    import tui.runs

    daemon = detach(tmp_path, daemons)
    wait_for(lambda: status_of(daemon, "sleeper") == "running", 10, "sleeper running")
    looked = threading.Event()
    probe = tui.runs.probe

    def probed(run_dir):
        try:
            return probe(run_dir)
        finally:
            looked.set()

    monkeypatch.setattr(tui.runs, "probe", probed)
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        thread, results = _ctl_in_thread(tmp_path, monkeypatch, daemon.run_id, "stop-run")
        assert looked.wait(30), "ctl did not look at the run"
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    thread.join(60)
    assert results == [0]
    captured = capsys.readouterr()
    assert captured.out == "stopping the run\n"
    assert f"run {daemon.run_id}: its daemon is busy" in captured.err
    assert_gone([daemon.pid])
    assert status_of(daemon, "sleeper") == "cancelled"


def test_ctl_on_a_stopped_daemon_whose_queue_is_full_does_not_hang(
    tmp_path, daemons, monkeypatch, capsys
):
    """A daemon that answers nothing for long (stopped, or busy in C code) while scripts keep
    asking (``watch ctl status``): each ask leaves connections queued on its socket, and once
    its queue was full the next ``ctl`` waited for ever in its look at whether the daemon is
    there (a connect with no timeout), "30 s at most" notwithstanding. A full queue is a
    daemon that is there: ctl waits its patience, then reads the run's folder."""
    import tui.runs

    monkeypatch.setattr(tui.runs, "HELLO_TIMEOUT", 0.2)
    monkeypatch.setattr(tui.runs, "BUSY_PATIENCE", 0.5)
    daemon = detach(tmp_path, daemons)
    wait_for(lambda: status_of(daemon, "sleeper") == "running", 10, "sleeper running")
    os.kill(daemon.pid, signal.SIGSTOP)
    queued = []
    try:
        while True:  # the daemon accepts none of them: its queue fills
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            queued.append(sock)
            try:
                sock.connect(str(daemon.run_dir / "daemon.sock"))
            except BlockingIOError:
                break
        thread, results = _ctl_in_thread(tmp_path, monkeypatch, daemon.run_id, "status")
        thread.join(30)
        hung = thread.is_alive()
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
        for sock in queued:
            sock.close()
    assert not hung, "ctl status hung on the full queue"
    assert results == [0]
    captured = capsys.readouterr()
    assert "did not answer in time: read from its folder" in captured.err
    # the run is live, its daemon there: its line said "(not live)"
    first = captured.out.splitlines()[0]
    assert first.endswith(f"(live, pid {daemon.pid}, busy: read from its folder)"), first


def test_runs_lists_a_busy_daemon_live_and_ctl_finds_it(tmp_path, daemons, monkeypatch, capsys):
    """A run whose daemon is too busy to answer at once is live (its socket accepts, its
    process is there): `runs --json` said `"live": false` beside `"status": "running"`, and
    `ctl` without RUN said there was no live run (a command) or read the folder."""
    daemon = detach(tmp_path, daemons)
    wait_for(lambda: status_of(daemon, "sleeper") == "running", 10, "sleeper running")
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        listed = json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    assert [(r["id"], r["status"], r["live"]) for r in listed] == [(daemon.run_id, "running", True)]


def test_a_retry_runs_the_step_module_as_edited_since_it_failed(tmp_path, daemons):
    """An analyst's python step fails, they fix its module and retry it (``r``, ``ctl
    retry``): the retry runs the fixed code. It once ran the module as imported when the run
    started, failing again with the old error (its traceback showing the new source). An edit
    that breaks the file fails the retry with its SyntaxError, naming file and line; fixed
    once more, the next retry takes it."""
    module = write_module(
        tmp_path,
        """
        FAIL = True

        def clean(ctx):
            ctx.append("attempts", 1)
            if FAIL:
                raise ValueError("bug in clean")
            return "fixed"
        """,
    )
    source = tmp_path / f"{module}.py"
    daemon = detach(
        tmp_path,
        daemons,
        f"""
        steps:
          - {{name: clean, type: python, module: {module}, function: clean, output: result}}
          - {{name: report, type: shell, expose: [result], run: 'echo "result=$result"'}}
        """,
    )
    wait_for(lambda: status_of(daemon, "clean") == "failed", 10, "clean failed")

    def retry_until_over(attempts: int) -> dict:
        assert ctl(tmp_path, "retry", "clean").returncode == 0
        wait_for(
            lambda: (
                read_state(daemon.run_dir)["steps"]["clean"]["attempts"] == attempts
                and status_of(daemon, "clean") in ("failed", "succeeded")
            ),
            10,
            f"attempt {attempts} over",
        )
        return read_state(daemon.run_dir)["steps"]["clean"]

    source.write_text(source.read_text().replace('return "fixed"', 'return ("fixed"'))
    broken = retry_until_over(2)
    assert broken["status"] == "failed"
    assert broken["reason"].startswith("SyntaxError"), broken["reason"]
    log = (daemon.run_dir / "logs" / "clean.log").read_text()
    assert f'{source}", line 7' in log.split("--- attempt 2 ---")[1]

    source.write_text(source.read_text().replace('("fixed"', '"fixed"').replace("True", "False"))
    fixed = retry_until_over(3)
    assert fixed["status"] == "succeeded", fixed
    assert ctl(tmp_path, "wait").returncode == 0
    assert json.loads(ctl(tmp_path, "ctx", "result").stdout) == "fixed"
    assert status_of(daemon, "report") == "succeeded"
    assert ctl(tmp_path, "close").returncode == 0
    assert_gone([daemon.pid], timeout=20)


def test_a_detached_run_keeps_the_recipe_warnings_for_the_app_and_ctl_events(tmp_path, daemons):
    """A recipe's warnings were printed on the terminal the app then covered, and kept nowhere:
    the app on the run, `attach` the next morning and `ctl events` never said that the tests
    would not wait for the service's health. They are the run's first messages now."""
    recipe = write_recipe(
        tmp_path,
        """
        name: warned
        steps:
          - name: db
            type: shell
            background: true
            run: exec sleep 60
            health: {cmd: "true"}
          - {name: tests, type: shell, run: "echo tests"}
        """,
    )
    daemon = start_detached(recipe, "--exit-when-done", cwd=tmp_path)
    daemons.append(daemon)
    said = ctl(tmp_path, daemon.run_id, "wait")
    assert said.returncode == 0, said.stderr
    warning = "recipe.yaml:7:5: step 'db': step 'tests' will not wait for its health"
    messages = read_state(daemon.run_dir)["messages"]
    assert [m["level"] for m in messages] == ["warning"], messages
    assert messages[0]["text"].startswith(warning), messages
    events = ctl(tmp_path, daemon.run_id, "events")
    said = [json.loads(line) for line in events.stdout.splitlines()]
    assert [e["text"][: len(warning)] for e in said if e["type"] == "message"] == [warning]


def test_many_recipe_warnings_are_two_messages_and_a_count(tmp_path, runners):
    """A recipe warned of once a step (a program an earlier step makes) gave the app a toast
    for each warning as the run began: the first two are said, the rest counted, naming the
    command that lists them (the app shows three of the messages said before it attached)."""
    from tests.conftest import make_runner

    steps = "\n".join(f"  - {{name: s{i}, type: shell, cmd: build/app{i}}}" for i in range(1, 9))
    runner = make_runner(
        tmp_path,
        "steps:\n  - {name: s0, type: shell, run: 'true'}\n" + steps + "\n",
        say_warnings=True,
    )
    runners.append(runner)
    assert len(runner.recipe.warnings) == 8
    runner.start()
    runner.wait(20)
    texts = [m.text for m in runner.snapshot().messages]
    assert len(texts) == 3 and all("fine only if a step before it makes it" in t for t in texts[:2])
    assert texts[2] == (
        f"6 more warnings of the recipe: orch-tui validate {tmp_path / 'recipe.yaml'} lists them"
    )


@pytest.mark.parametrize(
    ("db", "shown"),
    [
        ("{run: exec sleep 60}", "db"),
        # between two starts: named too (it said "services  still up", no name, r17-review)
        ("{run: 'sleep 0.3; exit 1', restart: always, restart_delay: 30}", "db (restarting)"),
    ],
    ids=["up", "restarting"],
)
def test_wait_on_an_open_run_says_once_its_work_is_done_and_a_service_keeps_it(
    tmp_path, daemons, db, shown
):
    """CI's ``--detach`` (no --exit-when-done) then ``ctl RUN wait``, a service in the recipe:
    the tests passed, the service stays up, and wait waited on without a word, the job hung.
    It says, once, as the work is done, what keeps the run and how to end it."""
    service = detach(
        tmp_path,
        daemons,
        f"""
        steps:
          - {{name: db, type: shell, background: true, {db[1:-1]}}}
          - {{name: tests, type: shell, run: 'while [ ! -f go ]; do sleep 0.05; done'}}
        """,
    )
    run_id = service.run_id
    wait_for(lambda: status_of(service, "tests") == "running", 10, "tests running")
    if "restart" in db:
        wait_for(lambda: status_of(service, "db") == "pending", 10, "db waiting to restart")
    waiting = start_cli("ctl", run_id, "wait", cwd=tmp_path)
    (tmp_path / "go").touch()
    said = (
        f"orch-tui: run {run_id}: its work is done, service {shown} still up: wait waits until the "
        f"run ends (orch-tui ctl {run_id} close ends it; --exit-when-done ends a run on its own)"
    )
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([waiting.stderr], [], [], 10)
        assert ready, f"nothing said: {line!r}"
        line += os.read(waiting.stderr.fileno(), 1)
    assert line.decode() == said + "\n"
    assert waiting.poll() is None  # still waiting, as README says
    assert ctl(tmp_path, run_id, "close").returncode == 0
    out, err = waiting.communicate(timeout=20)
    assert (waiting.returncode, err) == (0, b"")
