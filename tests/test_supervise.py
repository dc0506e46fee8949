"""Supervised services: restart policies with a growing delay, health checks, and restarts that
leave nothing behind. Real shell services, real runs; what is checked is what a user reads
afterwards (state.json, events.jsonl) or sees on the machine (which processes are left)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.events import decode_event
from core.health import probe_cmd, probe_http, probe_port
from core.recipe import load_recipe
from core.state import RunState
from core.supervisor import MAX_DELAY, STABLE_AFTER, Supervisor
from tests.conftest import (
    alive,
    assert_gone,
    free_port,
    make_runner,
    marked,
    only_run_dir,
    read_events,
    read_pid,
    read_state,
    run_cli,
    run_recipe,
    wait_for,
    write_recipe,
)


def starts(events: list[dict], step: str) -> list[float]:
    """When each start of ``step`` began, by the runner's clock (events.jsonl)."""
    return [e["ts"] for e in events if e["type"] == "step_started" and e["step"] == step]


def of_type(events: list[dict], type_: str, step: str) -> list[dict]:
    return [e for e in events if e["type"] == type_ and e["step"] == step]


def live_run(tmp_path, runners, recipe: str, **kwargs):
    """``recipe`` run in this process as the app runs it (interactive), through its control
    (the commands a user gives); the runner, the control, and ``step(name)``: that step's
    state now (``svc`` by default)."""
    from core.control import LocalControl

    kwargs.setdefault("interactive", True)
    runner = make_runner(tmp_path, recipe, **kwargs)
    runners.append(runner)
    control = LocalControl(runner)
    runner.start()
    return runner, control, lambda name="svc": control.snapshot().steps[name]


def mirror_matches_state_json(run_dir: Path) -> None:
    """A client following events.jsonl ends with what state.json says (restarts, health)."""
    mirror: RunState | None = None
    for line in (run_dir / "events.jsonl").read_bytes().splitlines():
        event = decode_event(line)
        if mirror is None:
            mirror = event.state.copy()  # run_started
        mirror.apply(event)
    assert mirror == RunState.from_json((run_dir / "state.json").read_bytes())


# ------------------------------------------------------------------------------ restart policy
CRASHES_TWICE = """
steps:
  - name: svc
    type: shell
    background: true
    restart: on_failure
    restart_delay: 0.05
    ready: {log: up, timeout: 5}
    run: |
      echo $$ >> starts
      n=$(wc -l < starts)
      if [ "$n" -eq 1 ]; then
        echo up
        while [ ! -f work.started ]; do sleep 0.02; done
        exit 3
      fi
      [ "$n" -eq 2 ] && exit 3
      exec sleep 30
  - name: work
    type: shell
    run: |
      touch work.started
      while [ "$(wc -l < starts)" -lt 3 ]; do sleep 0.02; done
"""


def test_a_service_that_crashes_twice_is_restarted_twice_and_the_run_succeeds(tmp_path):
    result = run_recipe(tmp_path, CRASHES_TWICE)
    assert result.code == 0, result.state
    svc = result.steps["svc"]
    assert svc["restarts"] == 2 and svc["restart_reason"] == "exit code 3"
    assert svc["status"] == "stopped"  # up until the foreground work was done
    events = result.events
    restarts = of_type(events, "step_restart", "svc")
    assert [(e["restart"], e["reason"]) for e in restarts] == [(1, "exit code 3")] * 1 + [
        (2, "exit code 3")
    ]
    # the dependent, already running when the service crashed, ran once, undisturbed
    assert len(starts(events, "work")) == 1 and result.steps["work"]["status"] == "succeeded"
    # readiness is for the first start: the restarts never print "up", yet are up at once
    assert len(of_type(events, "step_ready", "svc")) == 3
    assert b"--- restart 2 (exit code 3) ---" in result.log("svc")
    mirror_matches_state_json(result.run_dir)


def test_the_headless_report_says_restarts_not_failures(tmp_path):
    """A CI log of a service restarted twice: each restart is a line that says why and when,
    the starts after it say "restart N", and nothing reads as a failure or an attempt of a
    retries count the step does not have."""
    recipe = write_recipe(tmp_path, CRASHES_TWICE)
    result = run_cli(recipe, "--no-ui", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("svc exit code 3: restarting in") == 2, out
    assert "svc started (restart 1)" in out and "svc started (restart 2)" in out
    assert "svc failed" not in out and "attempt 2 of 1" not in out
    summary_row = next(line for line in out.splitlines() if line.startswith("svc  "))
    assert "stopped" in summary_row and "restarted 2x (exit code 3)" in summary_row


def test_ctl_status_says_restarts_and_health_as_the_summary_does(tmp_path):
    """``ctl status`` of a run says what the headless summary's note says of a service (the
    tree's ↻N, in words; its health only while it is up), in the same words. The work ends
    once the third start has passed a check (it was a race: the run could end before that
    start's first check)."""
    health = (
        "health: {cmd: \"sh -c '[ $(wc -l < starts) -lt 3 ] || touch third.ok'\", interval: 0.05}"
    )
    recipe = write_recipe(
        tmp_path,
        CRASHES_TWICE.replace("restart_delay: 0.05", f"restart_delay: 0.05\n    {health}").replace(
            "-lt 3 ]; do sleep 0.02; done\n",
            "-lt 3 ]; do sleep 0.02; done\n      while [ ! -f third.ok ]; do sleep 0.02; done\n",
        ),
    )
    result = run_cli(recipe, "--no-ui", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    status = run_cli("ctl", only_run_dir(tmp_path), "status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr

    def note(out: str) -> str:
        return next(line for line in out.splitlines() if line.startswith("svc  ")).split("  ")[-1]

    said = "bg; restarted 2x (exit code 3)"  # no health once it has ended (it was "healthy")
    assert note(status.stdout) == f"{said}; stopped after the foreground steps ended"
    assert note(status.stdout).startswith(note(result.stdout).rstrip("…"))  # the summary's, cut


def test_a_service_that_always_crashes_gives_up_after_max_restarts_with_growing_gaps(tmp_path):
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: svc
            type: shell
            background: true
            restart: on_failure
            restart_delay: 0.3
            max_restarts: 3
            run: exit 1
        """,
        keep_alive=True,  # no foreground step: the run lasts as long as the service
    )
    assert result.code == 1
    svc = result.steps["svc"]
    assert svc["status"] == "failed" and svc["restarts"] == 3 and svc["attempts"] == 4
    assert "not restarted: 3 restarts in a row (max_restarts)" in svc["reason"]
    began = starts(result.events, "svc")
    gaps = [b - a for a, b in zip(began, began[1:], strict=False)]
    assert len(gaps) == 3
    assert gaps[0] < gaps[1] < gaps[2], gaps
    assert [e["delay"] for e in of_type(result.events, "step_restart", "svc")] == [0.3, 0.6, 1.2]


def test_giving_up_after_one_restart_says_it_in_the_singular(tmp_path):
    result = run_recipe(
        tmp_path,
        """
        steps:
          - {name: svc, type: shell, background: true, restart: on_failure, max_restarts: 1,
             restart_delay: 0.05, run: exit 1}
        """,
        keep_alive=True,
    )
    reason = result.steps["svc"]["reason"]
    assert reason == "exit code 1; not restarted: 1 restart in a row (max_restarts)", reason


@pytest.mark.parametrize(
    ("policy", "restarted"), [("always", True), ("on_failure", False)], ids=["always", "on_failure"]
)
def test_always_restarts_after_a_clean_exit_and_on_failure_does_not(tmp_path, policy, restarted):
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - name: svc
            type: shell
            background: true
            restart: {policy}
            restart_delay: 0.05
            max_restarts: 2
            run: echo $$ >> starts
        """,
        keep_alive=True,
    )
    svc = result.steps["svc"]
    assert result.code == 0 and svc["status"] == "succeeded"
    lines = (tmp_path / "starts").read_text().split()
    if restarted:
        assert len(lines) == 3 and svc["restarts"] == 2
        assert svc["restart_reason"] == "exit code 0"
    else:
        assert len(lines) == 1 and svc["restarts"] == 0


def test_a_service_restarted_over_a_thousand_times_in_a_row_is_still_restarted(tmp_path):
    """A crash loop left running for hours: the 1,025th restart in a row (some 9 hours of a
    service crashing every 2 s, its restarts 30 s apart; seconds with the smallest delay there
    is, which doubled 1,030 times is still not a millisecond) raised OverflowError in the
    scheduler (``2 ** 1024`` as a float), and the service stayed "ready" with no process,
    never restarted again, the run never ending."""
    result = run_recipe(
        tmp_path,
        """
        steps:
          - {name: svc, type: shell, background: true, restart: on_failure,
             restart_delay: 5.0e-324, max_restarts: 1030, cmd: "false"}
        """,
        keep_alive=True,
        timeout=60,
    )
    svc = result.steps["svc"]
    assert result.code == 1 and svc["status"] == "failed", svc
    assert svc["restarts"] == 1030 and svc["attempts"] == 1031, svc
    assert "not restarted: 1030 restarts in a row (max_restarts)" in svc["reason"]


def test_a_restart_the_run_ends_before_is_not_counted(tmp_path, runners):
    """A service closed while it waits out its restart delay was started once and never
    restarted: it said "restarted 1x" (state.json, ``ctl status``, the summary, the tree's ↻1)
    and "attempts 1", as the restart was counted once it was due, not once it started."""
    runner = make_runner(
        tmp_path,
        """
        steps:
          - name: svc
            type: shell
            background: true
            restart: always
            restart_delay: 30
            run: exit 3
        """,
        keep_alive=True,
    )
    runners.append(runner)
    runner.start()

    def svc():
        return runner.snapshot().steps["svc"]

    wait_for(lambda: svc().status == "pending" and svc().attempts == 1, message="the crash")
    runner.close()
    assert runner.wait(10) is not None
    svc_state = read_state(runner.run_dir)["steps"]["svc"]
    assert (svc_state["status"], svc_state["attempts"]) == ("stopped", 1), svc_state
    assert (svc_state["restarts"], svc_state["restart_reason"]) == (0, None), svc_state
    mirror_matches_state_json(runner.run_dir)


def test_a_service_waiting_to_restart_can_be_stopped(tmp_path, runners):
    """``stop`` (``k``) on a service that crashed and waits out its restart delay: it is not
    started again, and is stopped as if it had been up. It was refused ("cannot stop 'svc':
    it is pending"), so a service crashing every second could be stopped only in the instant
    it ran, or skipped ("skipped by user", as if it had never run)."""
    from core.control import Reply

    runner, control, svc = live_run(
        tmp_path,
        runners,
        """
        steps:
          - {name: svc, type: shell, background: true, restart: always, restart_delay: 30,
             run: "exit 3"}
          - {name: work, type: shell, run: "exec sleep 30", depends_on: []}
        """,
    )

    wait_for(lambda: svc().status == "pending" and svc().attempts == 1, message="the crash")
    assert "stop" in runner.allowed_actions("svc")  # the app offers k, ctl stop is taken
    assert control.command("stop", "svc") == Reply(True, "stop: svc")
    wait_for(lambda: svc().status == "stopped", message="stopped")
    assert (svc().reason, svc().restarts) == ("stopped by user", 0)
    assert control.command("close").ok
    assert control.wait(10) == 130  # work was cut short
    assert svc().status == "stopped" and len(starts(read_events(runner.run_dir), "svc")) == 1


def test_restart_on_a_service_waiting_out_its_restart_delay_starts_it_at_once(tmp_path, runners):
    """``restart`` (``r``, ``ctl restart``) on a service that crashed and waits out a long
    restart delay starts it now, the rest of the delay skipped: the user watched it crash and
    fixed the cause. It was refused ("cannot restart 'svc': it is pending")."""
    from core.control import Reply

    runner, control, svc = live_run(
        tmp_path,
        runners,
        """
        steps:
          - {name: svc, type: shell, background: true, restart: always, restart_delay: 600,
             run: 'test -e "$ORCH_RUN_DIR/fixed" && exec sleep 30; exit 3'}
          - {name: work, type: shell, run: "exec sleep 30", depends_on: []}
        """,
    )

    wait_for(lambda: svc().status == "pending" and svc().attempts == 1, message="the crash")
    (runner.run_dir / "fixed").touch()
    assert "restart" in runner.allowed_actions("svc")  # the app offers r, ctl restart is taken
    assert control.command("restart", "svc") == Reply(True, "restart: svc")
    wait_for(lambda: svc().status in ("running", "ready"), message="the service up again")
    assert (svc().attempts, svc().restarts) == (2, 1)
    assert control.command("close").ok
    assert control.wait(10) == 130  # work was cut short
    assert len(starts(read_events(runner.run_dir), "svc")) == 2


def test_stop_on_a_service_being_restarted_stops_it_for_good(tmp_path, runners):
    """``r`` then ``k`` (``ctl restart``, then ``ctl stop``) on a service that takes its grace
    to stop: ``k`` kills a stopping step ("k Kill step"), and a killed service is not started
    again. It was, as the ``r`` had asked: the user could not stop it."""
    runner, control, svc = live_run(
        tmp_path,
        runners,
        """
        steps:
          - {name: svc, type: shell, background: true, restart: always, grace: 30,
             run: 'trap "" TERM; echo $$ >> starts; while :; do sleep 0.1; done'}
          - {name: work, type: shell, run: "exec sleep 30", depends_on: []}
        """,
    )
    wait_for(lambda: (tmp_path / "starts").exists(), message="the service up")
    wait_for(lambda: svc().status in ("running", "ready"), message="the service running")
    assert control.command("restart", "svc").ok
    wait_for(lambda: svc().stopping, message="the restart's stop")
    assert control.command("stop", "svc").ok
    wait_for(lambda: svc().status == "stopped", message="stopped (killed, not its 30 s grace)")
    assert (svc().reason, svc().restarts) == ("stopped by user", 0)
    assert control.command("close").ok
    assert control.wait(10) == 130  # work was cut short
    assert len(starts(read_events(runner.run_dir), "svc")) == 1
    assert len((tmp_path / "starts").read_text().split()) == 1


@pytest.mark.parametrize("commands", [("restart",), ("stop", "retry")])
def test_a_service_started_again_during_its_last_starts_grace_waits_for_it_to_be_gone(
    tmp_path, runners, commands
):
    """``r`` on a service waiting to restart, or ``k`` then ``r``, while what its last start
    left (a child ignoring SIGTERM) is still being stopped (its ``grace``): the new start
    waits until that child is gone, as every restart does. ``k`` then ``r`` started it beside
    the old child, whose port the new start would find taken."""

    runner, control, svc = live_run(
        tmp_path,
        runners,
        """
        steps:
          - {name: svc, type: shell, background: true, restart: always, restart_delay: 600,
             grace: 2, run: 'test -e "$ORCH_RUN_DIR/fixed" && exec sleep 30;
               (trap "" TERM; exec sleep 60) & echo $! > "$ORCH_RUN_DIR/old.pid"; exit 3'}
          - {name: work, type: shell, run: "exec sleep 30", depends_on: []}
        """,
    )

    old = read_pid(runner.run_dir / "old.pid")
    wait_for(lambda: svc().status == "pending" and svc().attempts == 1, message="the crash")
    (runner.run_dir / "fixed").touch()
    for command in commands:
        assert control.command(command, "svc").ok, command
    wait_for(lambda: svc().status in ("running", "ready"), message="the service up again")
    assert not alive(old), "started again beside its last start's child"
    assert control.command("close").ok


def test_a_retried_service_waiting_for_its_dependency_is_not_offered_stop(tmp_path, runners):
    """A service stopped (``k``), its dependency retried and then itself (``r``): it is
    pending until the dependency is done again, not waiting out a restart delay. The app
    offered ``k`` (a guess from its state: pending, a service, started before) and the runner
    refused it ("cannot stop 'svc': it is pending"); the header counted it as restarting."""
    from tui.format import RESTARTING, count_key

    runner, control, step = live_run(
        tmp_path,
        runners,
        """
        steps:
          - {name: a, type: shell, run: "if [ -e again ]; then exec sleep 30; fi"}
          - {name: svc, type: shell, background: true, restart: on_failure, depends_on: [a],
             run: "exec sleep 100"}
          - {name: tail, type: shell, run: "exec sleep 30", depends_on: []}
        """,
    )

    wait_for(lambda: step("svc").status == "ready", message="svc up")
    assert control.command("stop", "svc").ok
    wait_for(lambda: step("svc").status == "stopped", message="svc stopped")
    (tmp_path / "again").touch()
    assert control.command("retry", "a").ok
    wait_for(lambda: step("a").status == "running", message="a again")
    assert control.command("retry", "svc").ok
    wait_for(lambda: step("svc").status == "pending", message="svc waits for a")
    assert step("svc").attempts == 1
    assert "stop" not in runner.allowed_actions("svc")
    assert count_key(step("svc")) != RESTARTING
    assert control.command("close").ok


def test_a_restart_delay_given_up_on_does_not_start_a_later_one_early(tmp_path, runners):
    """Stopped while it waited to restart (``k``), then retried (``r``): the service crashes
    again and waits out its delay anew. The timer of the wait it was stopped in still fired
    and started it then, ahead of its delay by the time between the two crashes."""

    runner, control, svc = live_run(
        tmp_path,
        runners,
        """
        steps:
          - {name: svc, type: shell, background: true, restart: always, restart_delay: 3,
             run: "exit 3"}
          - {name: work, type: shell, run: "exec sleep 30", depends_on: []}
        """,
    )

    wait_for(lambda: svc().status == "pending" and svc().attempts == 1, message="the crash")
    assert control.command("stop", "svc").ok
    wait_for(lambda: svc().status == "stopped", message="stopped")
    # the first wait's timer is now 0.5 s ahead of the next one's (the delay is long enough
    # that a busy machine still retries before the first wait is over)
    time.sleep(0.5)
    assert control.command("retry", "svc").ok
    wait_for(
        lambda: len(starts(read_events(runner.run_dir), "svc")) == 3,
        message="the restart after the second crash, in events.jsonl",
    )
    events = read_events(runner.run_dir)
    third_start = starts(events, "svc")[2]
    second_crash = of_type(events, "step_restart", "svc")[1]["ts"]  # the first: before the stop
    assert third_start - second_crash > 2.9, "restarted before its restart_delay"
    assert control.command("close").ok


def test_a_restart_loop_leaves_no_orphan(tmp_path):
    # Each start leaves a child in its process group that ignores SIGTERM; the next start
    # writes down any child of an earlier start that is still there.
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: svc
            type: shell
            background: true
            restart: on_failure
            restart_delay: 0.05
            max_restarts: 3
            grace: 0.2
            run: |
              for pid in $(cat kids 2>/dev/null); do
                state=$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)
                [ -n "$state" ] && [ "$state" != Z ] && echo "$pid" >> orphans
              done
              ( trap '' TERM; exec sleep 300 ) &
              echo $! >> kids
              exit 1
        """,
        keep_alive=True,
    )
    assert result.code == 1 and result.steps["svc"]["restarts"] == 3
    kids = [int(pid) for pid in (tmp_path / "kids").read_text().split()]
    assert len(kids) == 4
    assert not (tmp_path / "orphans").exists(), (tmp_path / "orphans").read_text()
    assert_gone(kids)
    assert not marked(result.run_dir)


def test_readiness_timeout_and_stop_are_not_restarted(tmp_path):
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: never_ready
            type: shell
            background: true
            restart: always
            ready: {log: never, timeout: 0.2}
            run: exec sleep 30
        """,
        keep_alive=True,
    )
    step = result.steps["never_ready"]
    assert result.code == 1 and step["status"] == "failed" and step["restarts"] == 0
    assert "not ready within" in step["reason"]


def test_the_restart_command_takes_a_running_service_only(tmp_path, runners):
    from core.control import Reply

    runner, control, step = live_run(
        tmp_path,
        runners,
        """
        steps:
          - {name: svc, type: shell, background: true, run: "echo $$ >> starts; exec sleep 30"}
          - {name: work, type: shell, run: "exec sleep 30"}
        """,
    )
    wait_for(lambda: control.snapshot().steps["work"].status == "running")
    assert control.command("restart", "work") == Reply(
        False,
        "cannot restart 'work': only a service (a background step) restarts; "
        "retry runs a step again once it has ended",
    )
    first = read_pid(tmp_path / "starts")
    assert control.command("restart", "svc") == Reply(True, "restart: svc")
    wait_for(lambda: len((tmp_path / "starts").read_text().split()) == 2, message="a new start")
    assert_gone([first])
    svc = control.snapshot().steps["svc"]
    assert (svc.restarts, svc.restart_reason) == (1, "manual")
    assert control.snapshot().steps["work"].attempts == 1
    # a service stopped (k, ctl stop) is not restarted: the refusal says what starts it
    assert control.command("stop", "svc").ok
    wait_for(lambda: control.snapshot().steps["svc"].status == "stopped")
    assert control.command("restart", "svc") == Reply(
        False, "cannot restart 'svc': it is stopped, not running; retry starts it again"
    )
    assert control.command("close").ok
    assert control.wait(10) == 130  # work was cut short


# ------------------------------------------------------------------------------ health
HEALTH_CMD = """
steps:
  - name: svc
    type: shell
    background: true
    {policy}
    health: {{cmd: "test ! -f sick", interval: 0.05, failures: 2}}
    run: echo $$ >> starts; exec sleep 30
"""


def test_a_service_whose_health_check_starts_failing_is_restarted(tmp_path, runners):
    runner = make_runner(tmp_path, HEALTH_CMD.format(policy="restart: on_failure"), keep_alive=True)
    runners.append(runner)
    runner.start()

    def svc():
        return runner.snapshot().steps["svc"]

    wait_for(lambda: svc().health == "healthy", message="the service to be healthy")
    first = read_pid(tmp_path / "starts")
    (tmp_path / "sick").touch()
    wait_for(lambda: svc().restarts == 1, message="a restart")
    assert svc().restart_reason.startswith("unhealthy: check exit code 1 (2 checks in a row)")
    assert_gone([first])
    (tmp_path / "sick").unlink()
    wait_for(lambda: svc().health == "healthy" and svc().status == "ready")
    assert len((tmp_path / "starts").read_text().split()) == 2
    runner.close()
    assert runner.wait(10) == 0
    events = read_events(runner.run_dir)
    health = [e["health"] for e in of_type(events, "step_health", "svc")]
    assert health == ["healthy", "unhealthy", "healthy"]
    # while it waits to start again it is not marked by its last start's health
    assert [e["state"]["health"] for e in of_type(events, "step_restart", "svc")] == ["unknown"]
    mirror_matches_state_json(runner.run_dir)


SLOW_TO_START = """
steps:
  - name: svc
    type: shell
    background: true
    restart: on_failure
    max_restarts: 1
    ready: {log: "^up$", timeout: 20}
    health: {cmd: "test -f up", interval: 0.05, failures: 2}
    run: >-
      rm -f up; sleep 1; touch up; echo up;
      while [ ! -f crash ]; do sleep 0.05; done; rm -f up crash; exit 1
"""


def test_a_restarted_service_has_its_ready_timeout_to_come_up_before_health_counts(
    tmp_path, runners
):
    """A service that takes a while to come up (here 1 s) and crashes: its restart is up at once
    (its dependents are not held again), but failed health checks count only once one passed
    or its ``ready`` timeout is over, the time its first start had. They counted at once: the
    restart was unhealthy before it could listen, restarted again and again, then failed."""
    runner = make_runner(tmp_path, SLOW_TO_START, keep_alive=True)
    runners.append(runner)
    runner.start()

    def svc():
        return runner.snapshot().steps["svc"]

    wait_for(lambda: svc().health == "healthy", message="the first start healthy")
    # it crashes, taking its up file with it: the restart's checks cannot pass before it is up
    (tmp_path / "crash").touch()
    wait_for(lambda: svc().restarts == 1, message="a restart")
    wait_for(
        lambda: svc().health == "healthy" or svc().status == "failed",
        message="the restart healthy, or given up",
    )
    assert (svc().status, svc().restarts) == ("ready", 1), svc()
    runner.close()
    assert runner.wait(10) == 0


def test_an_unhealthy_service_without_a_restart_policy_fails(tmp_path):
    (tmp_path / "sick").touch()
    result = run_recipe(tmp_path, HEALTH_CMD.format(policy="restart: no"), keep_alive=True)
    svc = result.steps["svc"]
    assert result.code == 1 and svc["status"] == "failed" and svc["restarts"] == 0
    assert svc["reason"].startswith("unhealthy: check exit code 1")
    assert svc["health"] == "unhealthy"
    assert not marked(result.run_dir)  # nor anything of the checks (they carry its marker)


def test_one_failed_check_is_said_in_the_singular(tmp_path):
    """``failures: 1``: the reason says "(1 check)", not "(1 checks in a row)"."""
    (tmp_path / "sick").touch()
    recipe = HEALTH_CMD.format(policy="restart: no").replace("failures: 2", "failures: 1")
    result = run_recipe(tmp_path, recipe, keep_alive=True)
    assert result.steps["svc"]["reason"] == "unhealthy: check exit code 1 (1 check)"


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        code = int(self.path.strip("/"))
        self.send_response(code)
        if 300 <= code < 400:
            self.send_header("Location", "/404")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_check_takes_2xx_and_3xx_and_refuses_the_rest(http_server):
    assert probe_http(f"{http_server}/200", 2) is None
    assert probe_http(f"{http_server}/302", 2) is None  # answered: not followed to its 404
    assert probe_http(f"{http_server}/503", 2) == f"{http_server}/503: HTTP 503"
    closed = f"http://127.0.0.1:{free_port()}/"
    assert "Connection refused" in probe_http(closed, 2)


def test_port_check(tmp_path):
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert probe_port(port, 2) is None
    assert probe_port(port, 2) == f"port {port}: Connection refused"


def test_a_cmd_check_that_times_out_is_killed_with_what_it_started(tmp_path):
    command = "( trap '' TERM; exec sleep 300 ) & echo $! > child; exec sleep 300"
    assert probe_cmd(command, 0.3, {"PATH": "/usr/bin:/bin"}, tmp_path) == (
        "check timed out after 0.3s"
    )
    child = int((tmp_path / "child").read_text())
    assert_gone([child])
    # and one that passes leaves nothing running either
    assert probe_cmd("sleep 300 & echo $! > child2", 5, {"PATH": "/usr/bin:/bin"}, tmp_path) is None
    assert_gone([int((tmp_path / "child2").read_text())])


def test_bad_service_fields_are_recipe_errors(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - name: web
            type: shell
            run: x
            restart: always
            health: {http: "ftp://x"}
          - name: db
            type: shell
            run: x
            background: true
            restart: sometimes
            max_restarts: many
        """,
    )
    result = run_cli("validate", recipe, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines() + result.stdout.splitlines()
    for where, text in [
        ("recipe.yaml:5:5: step 'web'", "field 'restart: always' needs 'background: true'"),
        ("recipe.yaml:6:5: step 'web'", "field 'health' needs 'background: true'"),
        ("recipe.yaml:6:20: step 'web'", "field 'health.http' must be an http:// or https://"),
        ("recipe.yaml:11:14: step 'db'", "field 'restart' must be one of no, on_failure, always"),
        ("recipe.yaml:12:19: step 'db'", "field 'max_restarts' must be an integer >= 0"),
    ]:
        assert any(line.startswith(f"{where}: {text}") for line in lines), (where, lines)
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------ the policy
def service(tmp_path: Path, **fields: object):
    extra = "".join(f"\n  {k}: {v}" for k, v in fields.items())
    path = write_recipe(
        tmp_path, f"- name: s\n  type: shell\n  run: x\n  background: true{extra}\n"
    )
    return load_recipe(path).steps[0]


def test_the_delay_doubles_per_restart_in_a_row_up_to_a_cap_and_starts_over(tmp_path):
    supervisor = Supervisor(service(tmp_path, restart="always", restart_delay=2))
    delays = [supervisor.next_delay(uptime=0.1) for _ in range(7)]
    assert delays == [2, 4, 8, 16, MAX_DELAY, MAX_DELAY, MAX_DELAY]
    assert supervisor.next_delay(uptime=STABLE_AFTER) == 2  # it stayed up: a new row


def test_the_delay_stays_at_its_cap_however_long_the_row(tmp_path):
    """A service crashing every 2 s, restarted 30 s apart, never stays up the 60 s that ends
    its row: past 1,024 restarts (~9 hours) the delay was 2 ** 1024 times restart_delay, an
    OverflowError."""
    supervisor = Supervisor(service(tmp_path, restart="always", restart_delay=1))
    delays = [supervisor.next_delay(uptime=2.0) for _ in range(1100)]
    assert delays[:6] == [1, 2, 4, 8, 16, MAX_DELAY] and set(delays[5:]) == {MAX_DELAY}
    tiny = Supervisor(service(tmp_path, restart="always", restart_delay="1.0e-300"))
    assert [tiny.next_delay(uptime=0) for _ in range(1100)][-1] == MAX_DELAY


def test_a_zero_restart_delay_restarts_at_once_then_backs_off(tmp_path):
    """``restart_delay: 0`` on a service that crashes at once: it was restarted with no delay
    for ever, a core spinning and events.jsonl growing by a megabyte a second (59 MB in 40 s).
    The first restart in a row is at once; the next ones back off from 0.1 s, to the cap; a
    start that stayed up starts a new row."""
    supervisor = Supervisor(service(tmp_path, restart="always", restart_delay=0))
    delays = [supervisor.next_delay(uptime=0.01) for _ in range(12)]
    assert delays[:5] == [0, 0.1, 0.2, 0.4, 0.8] and delays[-1] == MAX_DELAY, delays
    assert supervisor.next_delay(uptime=STABLE_AFTER) == 0


def test_max_restarts_counts_restarts_in_a_row(tmp_path):
    on_failure = Supervisor(service(tmp_path, restart="on_failure", restart_delay=1))
    assert [on_failure.next_delay(0) for _ in range(6)] == [1, 2, 4, 8, 16, None]  # default 5
    assert on_failure.next_delay(STABLE_AFTER) == 1  # a long run earns a new row
    assert Supervisor(service(tmp_path, restart="always")).limit is None
    assert Supervisor(service(tmp_path, restart="always", max_restarts=0)).next_delay(0) is None


def test_which_ends_a_policy_restarts(tmp_path):
    always = Supervisor(service(tmp_path, restart="always"))
    on_failure = Supervisor(service(tmp_path, restart="on_failure"))
    assert always.wants(failed=False) and always.wants(failed=True)
    assert on_failure.wants(failed=True) and not on_failure.wants(failed=False)


def test_a_health_cmd_running_as_the_run_ends_is_stopped_not_called_a_leftover(tmp_path):
    """The run ends (its work done) while a health check runs: the check is killed as its
    service's start ends, and the run's end waits for that. It ran on until its timeout, and
    the end's clean-up killed it as a step's leftover: "stopped 1 process that steps left
    running", said of a check of orch-tui's own."""
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: svc
            type: shell
            background: true
            health: {cmd: "echo $$ >> checks; exec sleep 300", timeout: 600}
            run: exec sleep 300
          - {name: work, type: shell, run: "until [ -s checks ]; do sleep 0.02; done"}
        """,
    )
    assert result.code == 0, result.steps
    (check,) = map(int, (tmp_path / "checks").read_text().split())
    assert not alive(check)
    assert not [e for e in result.events if "left running" in e.get("text", "")], result.events
    assert not marked(result.run_dir)
