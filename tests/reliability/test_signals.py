"""Ctrl-C and SIGTERM to a headless run: exit 130 promptly, nothing left, every step cancelled.

tests/test_processes.py covers plain children, grandchildren and one ``setsid`` grandchild.
Here the run is harder to clean up: double-forked daemons (the middle process exits, so the
daemon is re-parented away from the runner and is nobody's descendant), a ``setsid`` +
double-fork daemon (other session, other group: only its ``ORCH_RUN_DIR`` says it is ours),
a background step with children of its own, a python step waiting on ``stop``, steps still
pending; and the second Ctrl-C against processes that ignore SIGINT and SIGTERM.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.conftest import (
    alive,
    assert_gone,
    descendants,
    kill_tree,
    marked,
    only_run_dir,
    read_pid,
    read_state,
    start_cli,
    wait_for,
    write_module,
    write_recipe,
)

WAITER = """
def wait_stop(ctx, stop):
    ctx["waiter_started"] = True
    stop.wait(1000)
    ctx["waiter_saw_stop"] = stop.is_set()
"""

RECIPE = """
jobs: 8
steps:
  - name: left
    type: shell
    depends_on: []
    run: |
      bash -c 'sleep 1000 & echo $! > left-grandchild.pid; wait' &
      # double fork: the subshell exits at once, its sleep is re-parented
      ( sleep 1000 & echo $! > left-daemon.pid ) &
      wait
  - name: right
    type: shell
    depends_on: []
    run: |
      sleep 1000 & echo $! > right-child.pid
      # setsid + double fork: another session, another group, only ORCH_RUN_DIR is left
      setsid bash -c '( exec sleep 1000 ) & echo $! > right-setsid-daemon.pid' &
      wait
  - name: waiter
    type: python
    depends_on: []
    module: {module}
    function: wait_stop
  - name: server
    type: shell
    depends_on: []
    background: true
    ready: {{log: listening}}
    run: |
      sleep 1000 & echo $! > server-child.pid
      setsid bash -c 'echo $$ > server-setsid.pid; exec sleep 1000' &
      ( sleep 1000 & echo $! > server-daemon.pid ) &
      echo listening
      wait
  - name: after
    type: shell
    depends_on: [left, right, waiter, server]
    run: touch after.ran
  - name: later
    type: shell
    run: touch later.ran
"""

PID_FILES = [
    "left-grandchild",
    "left-daemon",
    "right-child",
    "right-setsid-daemon",
    "server-child",
    "server-setsid",
    "server-daemon",
]


def _start(tmp_path):
    module = write_module(tmp_path, WAITER)
    recipe = write_recipe(tmp_path, RECIPE.format(module=module))
    return start_cli(recipe, "--no-ui", cwd=tmp_path)


def _everything_up(tmp_path, proc) -> tuple[list[int], object]:
    """Wait for every process of the recipe; return them all (descendants and daemons)."""
    daemons = [read_pid(tmp_path / f"{name}.pid") for name in PID_FILES]
    run_dir = wait_for(lambda: only_run_dir(tmp_path), message="the run directory")

    def up():
        steps = read_state(run_dir)["steps"]
        return (
            all(steps[n]["status"] == "running" for n in ("left", "right", "waiter"))
            and steps["server"]["status"] == "ready"
        )

    wait_for(up, message="left, right, waiter running and server ready")
    everything = sorted(set(descendants(proc.pid)) | set(daemons))
    assert all(alive(p) for p in everything)
    # the double-forked daemons are nobody's descendants: only the pid files (and, for the
    # watchdog, ORCH_RUN_DIR) know them
    assert not set(daemons) <= set(descendants(proc.pid))
    assert set(daemons) <= set(marked(run_dir))
    return everything, run_dir


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_daemons_background_and_python_steps_and_exits_130(tmp_path, sig, faults):
    proc = _start(tmp_path)
    pids: list[int] = []
    try:
        pids, run_dir = _everything_up(tmp_path, proc)
        faults.tried(f"{signal.Signals(sig).name} to a headless run")
        started = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
        took = time.monotonic() - started
        print(f"\n{signal.Signals(sig).name}: exit {proc.returncode} in {took:.2f}s")
        assert proc.returncode == 130, err.decode()
        assert took < 5, f"took {took:.1f}s to stop"
        assert_gone(pids, timeout=3)
        assert marked(run_dir) == []

        state = read_state(run_dir)
        assert state["status"] == "interrupted"
        assert state["exit_code"] == 130
        for name in ("left", "right", "waiter", "server", "after", "later"):
            assert state["steps"][name]["status"] == "cancelled", (name, state["steps"][name])
        assert not (tmp_path / "after.ran").exists()
        assert not (tmp_path / "later.ran").exists()
        assert b"Traceback" not in err and b"Traceback" not in out
        assert "interrupted" in out.decode().strip().splitlines()[-1]
        # the python step saw ``stop`` and ended; its write reached ctx.json
        ctx = __import__("json").loads((run_dir / "ctx.json").read_bytes())
        assert ctx.get("waiter_saw_stop") is True
        faults.survived(f"{signal.Signals(sig).name} to a headless run")
    finally:
        kill_tree(proc, pids)


STUBBORN = """
steps:
  - name: stubborn_bg
    type: shell
    background: true
    grace: 30
    run: |
      trap '' INT TERM
      # a daemon that also ignores the polite signals, in another session
      setsid bash -c 'trap "" INT TERM; ( trap "" INT TERM; exec sleep 1000 ) & echo $! > daemon.pid' &
      sleep 1000 & echo $! > bg-child.pid
      wait; wait; wait
  - name: stubborn_fg
    type: shell
    grace: 30
    depends_on: []
    run: |
      trap '' INT TERM
      ( trap '' INT TERM; exec sleep 1000 ) & echo $! > fg-child.pid
      while :; do wait; done
"""


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM], ids=["INT-INT", "INT-TERM"])
def test_second_signal_kills_at_once_even_daemons_that_ignore_signals(tmp_path, second, faults):
    recipe = write_recipe(tmp_path, STUBBORN)
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    pids: list[int] = []
    try:
        own = [read_pid(tmp_path / f"{n}.pid") for n in ("daemon", "bg-child", "fg-child")]
        run_dir = wait_for(lambda: only_run_dir(tmp_path))
        wait_for(
            lambda: (
                read_state(run_dir)["steps"]["stubborn_fg"]["status"] == "running"
                and read_state(run_dir)["steps"]["stubborn_bg"]["status"] == "ready"
            )
        )
        pids = sorted(set(descendants(proc.pid)) | set(own))

        faults.tried("second Ctrl-C against processes ignoring signals")
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: read_state(run_dir)["status"] == "interrupted", message="first Ctrl-C")
        assert proc.poll() is None, "everything ignores SIGINT/SIGTERM: the grace of 30 s runs"
        assert all(alive(p) for p in own)

        started = time.monotonic()
        proc.send_signal(second)
        out, err = proc.communicate(timeout=10)
        took = time.monotonic() - started
        print(f"\nsecond signal: exit {proc.returncode} in {took:.2f}s")
        assert proc.returncode == 130, err.decode()
        assert took < 1.5, f"the second signal must kill at once, took {took:.1f}s"
        assert_gone(pids, timeout=2)
        assert marked(run_dir) == []
        steps = read_state(run_dir)["steps"]
        assert steps["stubborn_fg"]["status"] == "cancelled"
        assert steps["stubborn_bg"]["status"] == "cancelled"
        assert b"Traceback" not in err
        faults.survived("second Ctrl-C against processes ignoring signals")
    finally:
        kill_tree(proc, pids)


def test_a_storm_of_signals_still_ends_in_130_without_a_traceback(tmp_path, faults):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - name: a
            type: shell
            depends_on: []
            run: "sleep 1000 & echo $! > a.pid; wait"
          - name: b
            type: shell
            depends_on: []
            run: "( sleep 1000 & echo $! > b.pid ) & wait"
        """,
    )
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    pids: list[int] = []
    try:
        pids = [read_pid(tmp_path / "a.pid"), read_pid(tmp_path / "b.pid")]
        run_dir = wait_for(lambda: only_run_dir(tmp_path))
        wait_for(lambda: read_state(run_dir)["steps"]["a"]["status"] == "running")
        pids += descendants(proc.pid)
        sent = 0
        for i in range(40):
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGINT if i % 2 == 0 else signal.SIGTERM)
            sent += 1
        faults.tried("signal storm (up to 40 signals)", sent)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 130, err.decode()
        assert b"Traceback" not in err
        assert_gone(pids, timeout=3)
        assert marked(run_dir) == []
        assert read_state(run_dir)["status"] == "interrupted"
        faults.survived("signal storm (up to 40 signals)", sent)
    finally:
        kill_tree(proc, pids)
