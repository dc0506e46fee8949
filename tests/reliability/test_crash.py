"""The runner dies (SIGKILL), steps ignore SIGTERM, steps daemonise: nothing is left behind.

The watchdog (core/watchdog.py) is the only thing alive after a SIGKILL of the runner; these
tests check that it finds every kind of process a step can leave: children, grandchildren,
double-forked daemons, ``setsid`` daemons (by their ``ORCH_RUN_DIR``), processes that ignore
SIGTERM (SIGKILL after the grace). And the one documented limit (README, "Known limits"): a
daemon that clears its environment *and* leaves the process group cannot be found.

The last tests make the kernel hand a finished step's pid to an unrelated process (through
``/proc/sys/kernel/ns_last_pid``): the clean-up must never signal a group that is not the run's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    ROOT,
    alive,
    assert_gone,
    descendants,
    kill_tree,
    marked,
    only_run_dir,
    read_json,
    read_pid,
    read_state,
    start_cli,
    wait_for,
    write_module,
    write_recipe,
)

PYTHON_STEP = """
def spin(ctx, stop):
    ctx["spinning"] = True
    stop.wait(1000)
"""

LITTER = """
jobs: 8
steps:
  - name: tree
    type: shell
    depends_on: []
    run: |
      bash -c 'sleep 1000 & echo $! > tree-grandchild.pid; wait' &
      ( sleep 1000 & echo $! > tree-doublefork.pid ) &
      wait
  - name: daemon
    type: shell
    depends_on: []
    run: |
      # a textbook daemon: setsid, fork again, stdio closed, still ORCH_RUN_DIR in its env
      setsid bash -c '( exec sleep 1000 <&- >&- 2>&- ) & echo $! > daemon.pid' &
      wait
      sleep 1000 & echo $! > daemon-child.pid
      wait
  - name: deaf
    type: shell
    depends_on: []
    grace: 1
    run: |
      trap '' TERM INT
      ( trap '' TERM INT; exec sleep 1000 ) & echo $! > deaf-child.pid
      setsid bash -c 'trap "" TERM INT; echo $$ > deaf-setsid.pid; while :; do sleep 1; done' &
      while :; do wait; done
  - name: py
    type: python
    depends_on: []
    module: {module}
    function: spin
  - name: server
    type: shell
    depends_on: []
    background: true
    run: |
      sleep 1000 & echo $! > server-child.pid
      wait
"""

LITTER_PIDS = [
    "tree-grandchild",
    "tree-doublefork",
    "daemon",
    "daemon-child",
    "deaf-child",
    "deaf-setsid",
    "server-child",
]


def _watchdog_of(runner_pid: int) -> int:
    """The watchdog's pid: its sh, named orch-tui-watchdog, the clean-up's once it runs."""
    for proc in psutil.Process(runner_pid).children(recursive=True):
        if proc.cmdline()[:1] == ["orch-tui-watchdog"]:
            return proc.pid
    raise AssertionError("no watchdog process under the runner")


def test_sigkill_of_the_runner_leaves_nothing(tmp_path, faults):
    module = write_module(tmp_path, PYTHON_STEP)
    recipe = write_recipe(tmp_path, LITTER.format(module=module))
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    pids: list[int] = []
    try:
        own = [read_pid(tmp_path / f"{name}.pid") for name in LITTER_PIDS]
        run_dir = wait_for(lambda: only_run_dir(tmp_path))
        wait_for(
            lambda: all(
                s["status"] in ("running", "ready") for s in read_state(run_dir)["steps"].values()
            ),
            message="every step running",
        )
        watchdog = _watchdog_of(proc.pid)
        pids = sorted(set(descendants(proc.pid)) | set(own))
        assert all(alive(p) for p in pids)
        assert set(own) <= set(marked(run_dir))

        faults.tried("SIGKILL of the runner")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        started = time.monotonic()
        # the deaf ones ignore SIGTERM: they go at the end of the watchdog's grace (1 s here)
        assert_gone([p for p in pids if p != watchdog], timeout=8)
        took = time.monotonic() - started
        print(f"\nwatchdog cleaned {len(pids) - 1} processes in {took:.2f}s")
        assert marked(run_dir) == []
        assert_gone([watchdog], timeout=3)  # and then it leaves too
        # what was on disk is whole: the last atomic saves parse
        read_state(run_dir)
        read_json(run_dir / "ctx.json")
        faults.survived("SIGKILL of the runner")
    finally:
        kill_tree(proc, pids)


def test_step_ignoring_sigterm_past_its_timeout_is_killed_after_grace(tmp_path, faults):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - name: deaf
            type: shell
            timeout: 1
            grace: 1.5
            run: |
              trap '' TERM
              ( trap '' TERM; exec sleep 1000 ) & echo $! > child.pid
              setsid bash -c 'trap "" TERM; echo $$ > setsid.pid; exec sleep 1000' &
              while :; do wait; done
          - {name: after, type: shell, run: touch after.ran}
          - {name: other, type: shell, depends_on: [], run: "true"}
        """,
    )
    faults.tried("step ignoring SIGTERM past its timeout")
    started = time.monotonic()
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    pids: list[int] = []
    try:
        pids = [read_pid(tmp_path / "child.pid"), read_pid(tmp_path / "setsid.pid")]
        out, err = proc.communicate(timeout=15)
        took = time.monotonic() - started
        assert proc.returncode == 1, err.decode()
        steps = read_state(only_run_dir(tmp_path))["steps"]
        deaf = steps["deaf"]
        print(f"\ntimed out and killed after {deaf['duration']:.2f}s; run took {took:.2f}s")
        assert deaf["status"] == "timed_out"
        assert deaf["signal"] == signal.SIGKILL, deaf
        # SIGTERM at 1 s is ignored; SIGKILL 1.5 s later: not before the grace, not long after
        assert 2.4 <= deaf["duration"] < 4.5, deaf
        assert steps["after"]["status"] == "blocked"
        assert steps["other"]["status"] == "succeeded"
        assert not (tmp_path / "after.ran").exists()
        assert "root failure: deaf" in out.decode()
        # the child in the group died with it; the setsid one at the end of the run
        assert_gone(pids, timeout=2)
        assert marked(only_run_dir(tmp_path)) == []
        faults.survived("step ignoring SIGTERM past its timeout")
    finally:
        kill_tree(proc, pids)


def test_daemon_that_ignores_sigterm_is_stopped_at_the_end_of_a_normal_run(tmp_path, faults):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - name: daemonise
            type: shell
            run: |
              setsid bash -c '( trap "" TERM HUP; exec sleep 1000 <&- >&- 2>&- ) &
                              echo $! > daemon.pid' &
              wait
              echo "daemon started"
          - name: next
            type: shell
            run: echo next
        """,
    )
    faults.tried("step daemonising (setsid, double fork) in a normal run")
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    daemon = 0
    try:
        daemon = read_pid(tmp_path / "daemon.pid")
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, out.decode() + err.decode()
        run_dir = only_run_dir(tmp_path)
        assert not alive(daemon), "the daemon outlived the run"
        assert marked(run_dir) == []
        assert "left running" in out.decode()  # the run says it had to stop something
        faults.survived("step daemonising (setsid, double fork) in a normal run")
    finally:
        kill_tree(proc, [daemon] if daemon else [])


def test_daemon_clearing_its_environment_known_limit(tmp_path, faults):
    """README, "Known limits": found if it stays in its group; escapes if it also setsid's."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (
        "a daemon that clears its environment *and* leaves the process group cannot be found"
        in (readme)
    )
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - name: spawn
            type: shell
            run: |
              # env cleared, but still in the step's process group: found by its group
              ( exec env -i sleep 1000 ) & echo $! > cleared-in-group.pid
              # env cleared AND its own session: nothing marks it as the run's any more
              env -i setsid bash -c 'echo $$ > escaped.pid; exec sleep 1000' &
              # ORCH_RUN_DIR rewritten, own session: the same as clearing it
              ORCH_RUN_DIR=/elsewhere setsid bash -c 'echo $$ > rewritten.pid; exec sleep 1000' &
              until [ -s escaped.pid ] && [ -s rewritten.pid ]; do sleep 0.02; done
        """,
    )
    faults.tried("daemon in its group with a cleared environment")
    faults.tried("daemon with a cleared environment that left its group (known limit)")
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    pids: list[int] = []
    try:
        pids = [
            read_pid(tmp_path / f"{n}.pid") for n in ("cleared-in-group", "escaped", "rewritten")
        ]
        in_group, escaped, rewritten = pids
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, out.decode() + err.decode()
        assert not alive(in_group), "a daemon that stays in its group is found by the group"
        faults.survived("daemon in its group with a cleared environment")
        # the documented limit: these two are nobody's as far as orch-tui can tell
        assert alive(escaped) and alive(rewritten)
        assert os.getsid(escaped) == escaped
        print("\nknown limit confirmed: an env-cleared setsid daemon outlives the run")
    finally:
        kill_tree(proc, pids)


# ------------------------------------------------------------------------------ exhaustion
def test_running_out_of_file_descriptors_fails_steps_cleanly(tmp_path, faults):
    """60 steps at once under ``ulimit -n 64``: some cannot get a pipe or a log file. Those
    fail with the reason; the run ends (once, a log file that could not be opened left its
    step "running" forever); no traceback; the saves that failed are retried."""
    import resource

    steps = "".join(
        f"  - {{name: s{i:02d}, type: shell, depends_on: [], run: 'echo hi {i}; sleep 0.3'}}\n"
        for i in range(60)
    )
    recipe = write_recipe(tmp_path, "jobs: 60\nsteps:\n" + steps)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    faults.tried("file descriptors exhausted (ulimit -n 64, 60 steps at once)")
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path, preexec_fn=limit)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        kill_tree(proc)
    assert proc.returncode == 1, out.decode()[-3000:] + err.decode()
    assert b"Traceback" not in err and b"scheduler error" not in err, err.decode()
    run_dir = only_run_dir(tmp_path)
    state = read_state(run_dir)
    assert state["status"] == "failed"
    statuses = {}
    for name, step in state["steps"].items():
        statuses[step["status"]] = statuses.get(step["status"], 0) + 1
        if step["status"] == "failed":
            assert "Too many open files" in step["reason"], (name, step)
        else:
            assert step["status"] == "succeeded", (name, step)
    print(f"\nunder ulimit -n 64: {statuses}")
    assert statuses.get("failed") and statuses.get("succeeded")
    assert marked(run_dir) == []
    faults.survived("file descriptors exhausted (ulimit -n 64, 60 steps at once)")


def test_disk_full_the_run_still_ends_and_says_what_is_missing(tmp_path, faults):
    """The run directory on a 2 MB filesystem; a step prints 5 MB. Once, the failed log write
    killed the step's output reader: the step stayed "running" forever, its process blocked on
    a full pipe, and not even SIGTERM ended the run."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        recipe = write_recipe(
            tmp_path,
            """
            steps:
              - {name: big, type: shell, run: "head -c 5000000 /dev/zero | tr '\\\\0' x; echo"}
              - {name: after, type: shell, run: echo after}
            """,
        )
        faults.tried("disk full under the run directory")
        started = time.monotonic()
        proc = start_cli(recipe, "--no-ui", "--run-dir", mount / "run", cwd=tmp_path)
        try:
            out, err = proc.communicate(timeout=20)
        finally:
            kill_tree(proc)
        took = time.monotonic() - started
        text = out.decode()
        assert proc.returncode == 0, text[-2000:] + err.decode()
        assert took < 15
        assert b"Traceback" not in err, err.decode()
        assert "disk full: No space left on device" in text
        assert "more bytes of output lost" in text
        assert "run succeeded" in text
        run_dir = mount / "run"
        assert not list(run_dir.glob(".*.tmp")), "no half-written temporary files left"
        assert marked(run_dir) == []
        print(
            f"\ndisk full: run ended in {took:.1f}s; {(run_dir / 'logs' / 'big.log').stat().st_size} B logged"
        )
        faults.survived("disk full under the run directory")
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


# ------------------------------------------------------------------------------ pid reuse
NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


def _spawn_with_pid(pid: int, tries: int = 50) -> subprocess.Popen | None:
    """An unrelated process (its own session and group) that gets exactly ``pid``, or None."""
    for _ in range(tries):
        try:
            NS_LAST_PID.write_text(str(pid - 1))
        except OSError:
            return None
        proc = subprocess.Popen(["sleep", "1000"], start_new_session=True, stdin=subprocess.DEVNULL)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
        if alive(pid):  # someone else took it
            return None
    return None


REUSE = """
steps:
  - name: first
    type: shell
    run: echo $$ > first.pid
  - name: hold
    type: shell
    run: |
      echo $$ > hold.pid
      until [ -f go ]; do sleep 0.02; done
"""


@pytest.mark.skipif(
    not os.access(NS_LAST_PID, os.W_OK), reason="needs a writable /proc/sys/kernel/ns_last_pid"
)
@pytest.mark.parametrize("how", ["end of run", "runner SIGKILL"])
def test_cleanup_never_signals_a_process_that_reused_a_finished_steps_pid(tmp_path, how, faults):
    recipe = write_recipe(tmp_path, REUSE)
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    stranger = None
    try:
        first = read_pid(tmp_path / "first.pid")
        run_dir = wait_for(lambda: only_run_dir(tmp_path))
        wait_for(lambda: read_state(run_dir)["steps"]["hold"]["status"] == "running")
        assert not alive(first)
        stranger = _spawn_with_pid(first)
        if stranger is None:
            pytest.skip(f"could not get pid {first} for the stand-in process (busy machine)")
        assert os.getpgid(stranger.pid) == first  # it leads process group ``first`` now
        faults.tried(f"finished step's pid reused by another process ({how})")
        if how == "end of run":
            (tmp_path / "go").touch()
            proc.communicate(timeout=15)
            assert proc.returncode == 0
        else:
            watchdog = _watchdog_of(proc.pid)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=5)
            assert_gone([watchdog], timeout=8)  # it has done its clean-up and left
            assert_gone([read_pid(tmp_path / "hold.pid")], timeout=1)
        assert stranger.poll() is None, (
            f"the clean-up killed an unrelated process that got a finished step's pid ({how})"
        )
        faults.survived(f"finished step's pid reused by another process ({how})")
    finally:
        if stranger is not None:
            stranger.kill()
            stranger.wait()
        kill_tree(proc)
