"""The run's end stops dependents before what they depend on (core.stoporder): the web
server before its database, the tests before the service they test, whichever way the run
ends. Real shell services whose traps write, as they go, the order they were stopped in."""

from __future__ import annotations

import signal

import pytest

from tests.conftest import make_runner, wait_for

#: each step writes its name to ``order`` as it is stopped; web takes a moment to stop (it
#: drains its connections): signalled at once with it, db was gone first
STACK = """
steps:
  - name: db
    type: shell
    background: true
    run: "trap 'echo db >> {order}; exit 0' INT TERM; touch {dir}/db.up; while true; do sleep 0.05; done"
  - name: web
    type: shell
    background: true
    depends_on: [db]
    run: "trap 'sleep 0.3; echo web >> {order}; exit 0' INT TERM; touch {dir}/web.up; while true; do sleep 0.05; done"
  - name: tests
    type: shell
    depends_on: [web]
    run: "trap 'sleep 0.3; echo tests >> {order}; exit 0' INT TERM; {traps_set}; touch {up}; {work}"
  - name: other
    type: shell
    background: true
    depends_on: []
    run: "trap 'echo other >> {order}; exit 0' INT TERM; touch {dir}/other.up; while true; do sleep 0.05; done"
"""


def _traps_set(folder, *names: str) -> str:
    """A shell loop until the services ``names`` (db, web, other) have set their traps: a
    signal before that ends one as the default does, and it writes nothing."""
    names = names or ("db", "web", "other")
    missing = " || ".join(f"[ ! -f {folder}/{name}.up ]" for name in names)
    return f"while {missing}; do sleep 0.02; done"


@pytest.mark.parametrize("end", ["ctrl-c", "close", "work-done"])
def test_the_run_stops_dependents_before_what_they_depend_on(tmp_path, runners, end):
    order, up = tmp_path / "order", tmp_path / "up"
    work = "true" if end == "work-done" else "while true; do sleep 0.05; done"
    runner = make_runner(
        tmp_path,
        STACK.format(order=order, up=up, work=work, dir=tmp_path, traps_set=_traps_set(tmp_path)),
    )
    runners.append(runner)
    runner.start()
    wait_for(up.exists, 10, "the tests step to start")
    if end == "ctrl-c":
        runner.stop_run(signal.SIGINT)
    elif end == "close":
        runner.close()
    assert runner.wait(30) is not None
    stopped = order.read_text().split()
    expected = ["web", "db"] if end == "work-done" else ["tests", "web", "db"]
    assert [name for name in stopped if name != "other"] == expected, stopped
    assert "other" in stopped  # needed by nothing: stopped at once, beside the first
    steps = runner.snapshot().steps
    assert steps["db"].ended >= steps["web"].ended, "db ended before web"


#: web drains for long (until killed): db waits its turn meanwhile
DRAINING = """
steps:
  - name: db
    type: shell
    background: true
    run: "while true; do sleep 0.05; done"
  - name: web
    type: shell
    background: true
    depends_on: [db]
    grace: 30
    run: "trap 'touch {draining}; while true; do sleep 0.05; done' INT TERM; touch {dir}/web.up; while true; do sleep 0.05; done"
  - {{name: work, type: shell, depends_on: [web], run: "{traps_set}; touch {up}; {work}"}}
"""


@pytest.mark.parametrize("end", ["ctrl-c", "keep-alive"])
def test_a_second_ctrl_c_during_the_end_kills_the_waiting_steps_as_stopped(tmp_path, runners, end):
    """Ctrl-C, then Ctrl-C again while web drains and db waits its turn: db, never signalled,
    was killed as if it had failed on its own (✗ failed, SIGKILL, "root failure: db"), and a
    --keep-alive run whose work had succeeded exited 1. db ends as the end records it:
    cancelled, or stopped once the work is done, and the run's outcome is the end's."""
    draining, up = tmp_path / "draining", tmp_path / "up"
    work = "true" if end == "keep-alive" else "while true; do sleep 0.05; done"
    runner = make_runner(
        tmp_path,
        DRAINING.format(
            draining=draining, up=up, work=work, dir=tmp_path, traps_set=_traps_set(tmp_path, "web")
        ),
        keep_alive=end == "keep-alive",
    )
    runners.append(runner)
    runner.start()
    wait_for(up.exists, 10, "the work step to start")
    if end == "keep-alive":
        wait_for(lambda: runner.snapshot().steps["work"].status == "succeeded", 10, "work")
    runner.stop_run(signal.SIGINT)
    wait_for(draining.exists, 10, "web to drain")
    assert runner.snapshot().steps["db"].status == "ready"  # its turn has not come
    runner.stop_run(signal.SIGINT, force=True)  # Ctrl-C again
    code = runner.wait(30)
    steps = runner.snapshot().steps
    if end == "keep-alive":
        assert code == 0, steps
        assert (steps["db"].status, steps["web"].status) == ("stopped", "stopped")
    else:
        assert code == 130, steps
        assert (steps["db"].status, steps["web"].status) == ("cancelled", "cancelled")


def test_k_on_a_step_waiting_its_turn_stops_it_with_its_grace(tmp_path, runners):
    """The run stops (web drains, db waits its turn) and the user stops db (``k``, ``ctl
    stop db``): db gets SIGTERM now and its trap runs (a database flushes). Marked
    ``stopping`` as it waited, db read as asked twice and was SIGKILLed at once, its trap never
    run (r16-review)."""
    draining, up, flushed = tmp_path / "draining", tmp_path / "up", tmp_path / "flushed"
    recipe = DRAINING.format(
        draining=draining,
        up=up,
        work="while true; do sleep 0.05; done",
        dir=tmp_path,
        traps_set=_traps_set(tmp_path, "web", "db"),
    ).replace(
        'run: "while true; do sleep 0.05; done"',
        f"run: \"trap 'touch {flushed}; exit 0' TERM; touch {tmp_path}/db.up; "
        'while true; do sleep 0.05; done"',
        1,
    )
    runner = make_runner(tmp_path, recipe)
    runners.append(runner)
    runner.start()
    wait_for(up.exists, 10, "the work step to start")
    runner.stop_run()
    wait_for(draining.exists, 10, "web to drain")
    assert runner.snapshot().steps["db"].status == "ready"  # its turn has not come
    runner.stop_step("db")
    wait_for(flushed.exists, 10, "db's trap (SIGTERM), not a SIGKILL")
    wait_for(lambda: runner.snapshot().steps["db"].status == "cancelled", 10, "db ended")
    assert runner.snapshot().steps["db"].signal is None  # its own exit 0, from its trap
    runner.stop_run()  # again: web killed now
    assert runner.wait(10) == 130


#: a service that takes its whole grace (it ignores SIGTERM), a test that needs it
SLOW_TO_STOP = """
steps:
  - name: db
    type: shell
    background: true
    grace: 60
    run: "trap '' TERM; touch {up}; while true; do sleep 0.05; done"
  - name: tests
    type: shell
    depends_on: [db]
    run: "{work}"
"""


@pytest.mark.parametrize("first", ["stop-run", "close"])
def test_a_stop_run_while_the_run_stops_kills_at_once(tmp_path, runners, first):
    """``stop-run`` (Ctrl-C) again while the run stops: its steps are killed at once, not
    after their grace, as a second Ctrl-C does headless and README says (`a second stop-run
    kills at once`). After ``stop-run`` or ``close`` (the app's `y`), a second stop-run sent
    SIGTERM again and the run waited out a service's 60 s grace."""
    up = tmp_path / "up"
    runner = make_runner(
        tmp_path, SLOW_TO_STOP.format(up=up, work="sleep 100"), interactive=first == "close"
    )
    runners.append(runner)
    runner.start()
    wait_for(up.exists, 10, "db to start")
    wait_for(lambda: runner.snapshot().steps["tests"].status == "running", 10, "tests to run")
    runner.stop_run() if first == "stop-run" else runner.close()
    wait_for(lambda: runner.snapshot().steps["db"].stopping, 10, "db to be stopping")
    runner.stop_run()
    assert runner.wait(10) == 130, "the second stop-run waited for db's grace"
    db = runner.snapshot().steps["db"]
    closed = "stopped" if first == "close" else "cancelled"  # `y`: a service up is stopped
    assert (db.status, db.signal) == (closed, signal.SIGKILL)


def test_ctrl_c_while_a_headless_run_stops_its_services_keeps_the_works_exit_code(
    tmp_path, runners
):
    """A headless run whose work succeeded stops its services (in turn, each its grace):
    Ctrl-C then hurries that end (twice: killed at once), it does not interrupt the work that
    was done. The run was ``interrupted``, exit 130, its summary ``run interrupted``, though
    every step had done what it was for (README: a run whose work is done, its services still
    up, is ended as ``close`` ends it, the work's exit code)."""
    up = tmp_path / "up"
    # the work ends once db has set its trap: a SIGTERM before that ended db at once, as the
    # default does, and the Ctrl-C found nothing to hurry (a flaky failure on a loaded machine)
    work = f"while [ ! -f {up} ]; do sleep 0.02; done"
    runner = make_runner(tmp_path, SLOW_TO_STOP.format(up=up, work=work))
    runners.append(runner)
    runner.start()
    wait_for(lambda: runner.snapshot().steps["db"].stopping, 10, "the run's end to stop db")
    assert runner.snapshot().steps["tests"].status == "succeeded"
    runner.stop_run(signal.SIGINT)  # Ctrl-C: db ignores SIGTERM, not SIGINT
    assert runner.wait(10) == 0
    state = runner.snapshot()
    assert str(state.status) == "succeeded"
    assert (state.steps["db"].status, state.steps["db"].signal) == ("stopped", signal.SIGINT)


def test_nothing_is_retried_as_a_headless_run_stops_its_services(tmp_path, runners):
    """The work is done and the run stops its services (--exit-when-done, headless): a retry
    of a service then was taken, the service came up again and nothing stopped it: the run
    never ended (``ctl wait`` for ever). The run says it is stopping; retry, skip and restart
    are refused, and it ends."""
    from core.control import LocalControl

    draining = tmp_path / "draining"
    runner = make_runner(
        tmp_path,
        f"""
        steps:
          - {{name: db, type: shell, background: true, depends_on: [], run: exec sleep 1000}}
          - name: slow
            type: shell
            background: true
            depends_on: []
            grace: 30
            run: "trap 'touch {draining}' TERM; touch slow.up; while true; do sleep 0.05; done"
          - {{name: work, type: shell, depends_on: [], run: "{_traps_set(tmp_path, "slow")}"}}
        """,
    )
    runners.append(runner)
    runner.start()
    wait_for(draining.exists, 10, "slow to drain, the work done")
    wait_for(lambda: runner.snapshot().steps["db"].status == "stopped", 10, "db stopped")
    assert runner.snapshot().closing  # said "done" and took a retry
    reply = LocalControl(runner).command("retry", "db")
    assert (reply.ok, reply.message) == (False, "cannot retry 'db': the run is stopping")
    runner.stop_run(force=True)  # not slow's 30 s of grace
    assert runner.wait(10) == 0
    assert runner.snapshot().steps["db"].status == "stopped"


def test_a_close_after_a_stop_run_does_not_signal_the_steps_again(tmp_path, runners):
    """``ctl stop-run`` then ``ctl close`` (the app's SIGTERM asks both): each step draining
    got a second SIGTERM, which many programs take for "quit now, skip the drain"."""
    log, beats = tmp_path / "terms", tmp_path / "beats"
    runner = make_runner(
        tmp_path,
        f"""
        steps:
          - name: web
            type: shell
            background: true
            depends_on: []
            grace: 30
            run: "trap 'echo TERM >> {log}' TERM; while true; do echo >> {beats}; sleep 0.05; done"
          - {{name: work, type: shell, depends_on: [], run: exec sleep 1000}}
        """,
    )
    runners.append(runner)
    runner.start()
    wait_for(lambda: runner.snapshot().steps["work"].status == "running", 10, "work running")
    wait_for(beats.exists, 10, "web's trap set")
    runner.stop_run(signal.SIGTERM)
    wait_for(log.exists, 10, "web's first SIGTERM")
    runner.close()
    wait_for(lambda: runner.snapshot().steps["work"].ended, 10, "work to end")
    seen = beats.read_text().count("\n")  # a few turns of web's loop: a trap due has run
    wait_for(lambda: beats.read_text().count("\n") >= seen + 3, 10, "web to go on")
    runner.stop_run(force=True)  # not web's 30 s of grace
    assert runner.wait(10) == 130
    assert log.read_text() == "TERM\n"
