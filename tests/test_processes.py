"""Nothing a run starts outlives it: signals to a headless ``orch-tui``, and its sudden death.

Each test starts ``orch-tui`` in its own session (signals sent to it never reach pytest), waits
until the steps' processes are up (pid files the steps write, state.json), collects every
descendant with psutil, acts, and then checks that all of them are gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import (
    PY,
    ROOT,
    TMUX,
    User,
    alive,
    assert_gone,
    descendants,
    end_daemon,
    kill_tree,
    marked,
    only_run_dir,
    read_pid,
    read_state,
    run_cli,
    start_cli,
    start_detached,
    wait_for,
    write_module,
    write_recipe,
)

BUSY = """
steps:
  - name: left
    type: shell
    depends_on: []
    run: |
      sleep 1000 & echo $! > left-child.pid
      bash -c 'sleep 1000 & echo $! > left-grandchild.pid; wait' &
      wait
  - name: right
    type: shell
    depends_on: []
    run: |
      sleep 1000 & echo $! > right-child.pid
      setsid bash -c 'echo $$ > right-setsid.pid; exec sleep 1000' &
      wait
  - name: server
    type: shell
    depends_on: []
    background: true
    run: |
      sleep 1000 & echo $! > server-child.pid
      wait
  - name: after
    type: shell
    depends_on: [left, right]
    run: touch after.ran
"""

PID_FILES = [
    "left-child",
    "left-grandchild",
    "right-child",
    "right-setsid",
    "server-child",
]


def _start_busy(tmp_path):
    recipe = write_recipe(tmp_path, BUSY)
    proc = start_cli(recipe, "--no-ui", "--jobs", "4", cwd=tmp_path)
    return proc


def _wait_busy(tmp_path, proc) -> list[int]:
    """Every process of the BUSY recipe is up; return orch-tui's descendants (and the pids)."""
    pids = [read_pid(tmp_path / f"{name}.pid") for name in PID_FILES]
    run_dir = wait_for(lambda: only_run_dir(tmp_path), message="the run directory")

    def running():
        steps = read_state(run_dir)["steps"]
        return (
            steps["left"]["status"] == "running"
            and steps["right"]["status"] == "running"
            and steps["server"]["status"] == "ready"
        )

    wait_for(running, message="left, right running and server ready in state.json")
    found = set(descendants(proc.pid)) | set(pids)
    assert set(pids) <= found, "the step processes are orch-tui's descendants"
    assert all(alive(p) for p in found)
    return sorted(found)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_everything_and_exits_130(tmp_path, sig):
    proc = _start_busy(tmp_path)
    pids: list[int] = []
    try:
        pids = _wait_busy(tmp_path, proc)
        started = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
        took = time.monotonic() - started
        assert proc.returncode == 130, err.decode()
        assert took < 5, f"took {took:.1f}s to stop"
        assert_gone(pids, timeout=3)
        run_dir = only_run_dir(tmp_path)
        assert marked(run_dir) == []

        state = read_state(run_dir)
        assert state["status"] == "interrupted"
        assert state["exit_code"] == 130
        steps = state["steps"]
        for name in ("left", "right", "server", "after"):
            assert steps[name]["status"] == "cancelled", (name, steps[name])
        assert not (tmp_path / "after.ran").exists()
        assert b"Traceback" not in err
    finally:
        kill_tree(proc, pids)


def test_second_sigint_kills_at_once_even_when_steps_ignore_signals(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - name: stubborn
            type: shell
            grace: 30
            run: |
              trap '' INT TERM
              sleep 1000 & echo $! > stubborn-child.pid
              wait; wait; wait
        """,
    )
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    pids: list[int] = []
    try:
        child = read_pid(tmp_path / "stubborn-child.pid")
        run_dir = wait_for(lambda: only_run_dir(tmp_path))
        wait_for(lambda: read_state(run_dir)["steps"]["stubborn"]["status"] == "running")
        pids = sorted(set(descendants(proc.pid)) | {child})

        proc.send_signal(signal.SIGINT)
        wait_for(
            lambda: read_state(run_dir)["status"] == "interrupted",
            message="the first Ctrl-C to be taken",
        )
        assert proc.poll() is None, "the step ignores SIGINT/SIGTERM: grace 30 is being waited"
        assert alive(child)

        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
        assert proc.returncode == 130
        assert time.monotonic() - started < 4, "the second Ctrl-C must not wait for the grace"
        assert_gone(pids, timeout=3)
        assert read_state(run_dir)["steps"]["stubborn"]["status"] == "cancelled"
    finally:
        kill_tree(proc, pids)


def test_watchdog_cleans_up_when_the_runner_is_sigkilled(tmp_path):
    proc = _start_busy(tmp_path)
    pids: list[int] = []
    try:
        pids = _wait_busy(tmp_path, proc)
        run_dir = only_run_dir(tmp_path)
        assert len(marked(run_dir)) >= len(PID_FILES)

        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        # The watchdog outlives the runner, stops every step process (the setsid one too:
        # it is found by its ORCH_RUN_DIR), then exits itself.
        assert_gone(pids, timeout=8)
        assert marked(run_dir) == []
    finally:
        kill_tree(proc, pids)


def test_nothing_left_behind_after_a_normal_run(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - name: litter
            type: shell
            run: |
              sleep 1000 & echo $! > plain.pid
              setsid bash -c 'echo $$ > setsid.pid; exec sleep 1000' &
              ( trap '' TERM; exec sleep 1000 ) & echo $! > stubborn.pid
              until [ -f go ]; do sleep 0.05; done
              echo "step done"
          - name: next
            type: shell
            run: echo next
        """,
    )
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    pids: list[int] = []
    try:
        litter = [read_pid(tmp_path / f"{n}.pid") for n in ("plain", "setsid", "stubborn")]
        pids = sorted(set(descendants(proc.pid)) | set(litter))
        (tmp_path / "go").touch()
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, out.decode() + err.decode()
        assert "stopped 3 processes that steps left running" in out.decode(), out.decode()
        assert_gone(pids, timeout=1)
        run_dir = only_run_dir(tmp_path)
        assert marked(run_dir) == []
        steps = read_state(run_dir)["steps"]
        assert steps["litter"]["status"] == steps["next"]["status"] == "succeeded"
    finally:
        kill_tree(proc, pids)


def test_cleanup_waits_for_a_child_forked_as_its_parent_died_of_the_sigterm(tmp_path):
    """A step's process that forks as the clean-up's SIGTERM kills it (a shell loop's next
    ``sleep``; here a trap) leaves a child in its group that no earlier look saw: it is still
    waited for, then SIGKILLed, not left running after the run."""
    from core.watchdog import kill_leftovers

    script = (
        "trap 'sleep 1000 & echo $! > orphan.pid; exit' TERM\n"
        "echo ready\nwhile :; do sleep 0.01; done"
    )
    step = subprocess.Popen(
        ["bash", "-c", script], cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE
    )
    orphan = None
    try:
        assert step.stdout is not None and step.stdout.readline() == b"ready\n"
        kill_leftovers(str(tmp_path / "no-such-run"), [step.pid], 1.0)
        step.wait(5)
        orphan = read_pid(tmp_path / "orphan.pid")
        assert_gone([orphan], timeout=0.5)
    finally:
        kill_tree(step, [orphan] if orphan else [])


# The clean-up run as pid 1 of a pid namespace of its own, where the test decides which pid the
# next process gets (ns_last_pid): a step that exits on SIGTERM, an unrelated process given its
# pid during the grace, and a deaf step that makes the clean-up wait out the grace and SIGKILL.
REUSE = r"""
import json, os, subprocess, sys, threading, time
sys.path.insert(0, sys.argv[1])
from core.watchdog import kill_leftovers

RUN = "/orch-test/run"  # only the marker's value: no such folder is needed
marked = dict(os.environ, ORCH_RUN_DIR=RUN)
if sys.argv[2] == "marked process":
    quits, groups = subprocess.Popen(["sleep", "1000"], env=marked), []
else:
    quits = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    groups = [quits.pid]
deaf = subprocess.Popen(
    [sys.executable, "-S", "-c", "import signal, time; signal.signal(signal.SIGTERM, "
     "signal.SIG_IGN); print(flush=True); time.sleep(1000)"],
    env=marked, stdout=subprocess.PIPE,
)
deaf.stdout.readline()
# A process started in the same clock tick as another cannot be told from it by start time
# (/proc's unit is 1/CLK_TCK s); only a forced pid can come back that fast. Not this test's case.
with open(f"/proc/{quits.pid}/stat") as f:
    started = int(f.read().rsplit(")", 1)[1].split()[19])
while time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK") < started + 2:
    time.sleep(0.005)
done = threading.Thread(target=kill_leftovers, args=(RUN, groups, 3.0))
done.start()
quits.wait()  # SIGTERMed and reaped: its pid is free
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(quits.pid - 1))
stranger = subprocess.Popen(["sleep", "1000"], start_new_session=True)
done.join()
# kill() returns before the target has died: a signal on its way shows as pending
with open(f"/proc/{stranger.pid}/status") as f:
    status = dict(line.rstrip("\n").split(":\t", 1) for line in f)
sigkill = 1 << (9 - 1)
hit = status["State"].startswith("Z") or any(
    int(status[k], 16) & sigkill for k in ("SigPnd", "ShdPnd"))
result = {"pid reused": stranger.pid == quits.pid, "stranger alive": not hit,
          "deaf killed": deaf.wait(5) == -9}
stranger.kill()
stranger.wait()
print(json.dumps(result))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)
@pytest.mark.parametrize("how", ["marked process", "process group"])
def test_cleanup_never_kills_a_process_that_got_a_leftovers_pid_during_the_grace(how):
    """The clean-up finds the leftovers, SIGTERMs them, waits, then SIGKILLs what is left: a
    leftover that exited meanwhile may have lent its pid (or group id) to an unrelated process."""
    result = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", PY, "-c", REUSE, str(ROOT), how],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["pid reused"], outcome
    assert outcome["deaf killed"], "the leftover that ignored SIGTERM was not killed"
    assert outcome["stranger alive"], f"the clean-up killed an unrelated process ({how})"


def _watchdog_copy(root: int) -> str:
    """What the watchdog's ``cat`` (a descendant of ``root``: the runner's process, or the
    watchdog's own sh) has copied so far: its stdout, the file with no name."""

    def cat() -> int | None:
        for pid in descendants(root):
            if Path(f"/proc/{pid}/cmdline").read_bytes() == b"cat\0":
                return pid
        return None

    return Path(f"/proc/{wait_for(cat, message='the watchdog cat')}/fd/1").read_text()


def test_a_clean_end_kills_the_watchdog_without_its_clean_up(tmp_path):
    """The end of a clean run kills the watchdog (sh and cat) before closing its pipe, and goes
    on without waiting: the clean-up, a Python start of its own, never runs, so a process of a
    group the watchdog was told of is left to the runner's own end (here: left alone)."""
    from core.watchdog import Watchdog

    watchdog = Watchdog(tmp_path)
    watchdog.start()  # first: a start that fails leaves no step behind
    proc = watchdog._proc
    step = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        watchdog.add(step.pid, 1.0)
        watchdog.flush()
        wait_for(lambda: f"+ {step.pid} 1\n" in _watchdog_copy(proc.pid), message="told")
        watchdog.stop()
        wait_for(lambda: proc.poll() is not None, message="the watchdog was not stopped")
        assert proc.returncode == -signal.SIGKILL
        assert step.poll() is None, "a clean end must not run the watchdog's clean-up"
        assert os.listdir(tmp_path) == [], "the watchdog's copy has no name: nothing to delete"
    finally:
        kill_tree(step)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _runner_gone(watchdog) -> None:
    """What the watchdog sees when the runner dies: its pipe closes (not ``stop``)."""
    watchdog._close_pipe()


def test_the_clean_up_runs_the_watchdog_as_it_was_when_the_run_began(tmp_path):
    """The clean-up may start days after the run began: the watchdog's file is held open from
    the start, so a checkout or venv removed or changed meanwhile does not stop it."""
    import importlib.util

    copy = tmp_path / "checkout" / "watchdog.py"
    copy.parent.mkdir()
    shutil.copy(ROOT / "core" / "watchdog.py", copy)
    spec = importlib.util.spec_from_file_location("watchdog_copy", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    watchdog = module.Watchdog(tmp_path)
    watchdog.start()  # first: a start that fails leaves no step behind
    step = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        watchdog.add(step.pid, 1.0)
        watchdog.flush()
        wait_for(lambda: f"+ {step.pid} 1\n" in _watchdog_copy(watchdog._proc.pid), message="told")
        shutil.rmtree(copy.parent)  # the checkout is gone
        _runner_gone(watchdog)
        wait_for(lambda: step.poll() is not None, message="the clean-up did not stop the step")
    finally:
        kill_tree(step)
        kill_tree(watchdog._proc)


def test_without_bin_sh_the_watchdog_is_the_python_clean_up_itself(tmp_path, monkeypatch):
    """A system with no /bin/sh (a distroless image; faked here, the one mock: Popen refuses
    that program alone) still gets a watchdog: the Python clean-up, reading the pipe live."""
    import subprocess as real

    from core.watchdog import Watchdog

    popen = real.Popen

    def no_sh(argv, *args, **kwargs):
        if kwargs.get("executable", argv[0]) == "/bin/sh":
            raise FileNotFoundError(2, "No such file or directory", "/bin/sh")
        return popen(argv, *args, **kwargs)

    watchdog = Watchdog(tmp_path)
    with monkeypatch.context() as patched:
        patched.setattr(real, "Popen", no_sh)
        watchdog.start()  # first: a start that fails leaves no step behind
    step = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        watchdog.add(step.pid, 1.0)
        watchdog.flush()
        _runner_gone(watchdog)
        wait_for(lambda: step.poll() is not None, message="the clean-up did not stop the step")
    finally:
        kill_tree(step)
        kill_tree(watchdog._proc)


def test_a_garbled_line_does_not_stop_the_clean_up():
    """A copy cut in the middle of a line (a full disk: cat could not write what it read), then
    the pipe's rest: the broken line is passed over, and the groups told before and after it
    are still stopped (the clean-up died on it, and stopped nothing, not even marked steps)."""
    from core.watchdog import _told

    copy = [b"+ 11 2\n+ 12 5\n", b"- 12\n+ 99"]  # its end was lost
    pipe = [b"+ 34 1\n", b"+ 35 x\n- \n"]  # and two lines of nonsense
    assert _told([copy, pipe]) == {11: 2.0, 34: 1.0}


def test_a_process_a_python_step_forked_does_not_keep_the_watchdog_from_the_runners_death(
    tmp_path,
):
    """A python step runs in the runner's process; a child it forks without exec (a
    multiprocessing worker) got the watchdog's pipe with the rest of the runner. It kept the
    pipe open after the runner was SIGKILLed, so the clean-up never started and the run's
    other steps were left running. Forked children now close it."""
    module = write_module(
        tmp_path,
        """
        import os, time

        def run(ctx):
            pid = os.fork()
            if pid == 0:
                time.sleep(1000)
                os._exit(0)
            with open("forked.pid", "w") as f:
                f.write(str(pid))
        """,
    )
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: forks, type: python, module: {module}}}
          - name: other
            type: shell
            depends_on: []
            run: echo $$ > other.pid; exec sleep 1000
        """,
    )
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    pids: list[int] = []
    try:
        forked = read_pid(tmp_path / "forked.pid")
        other = read_pid(tmp_path / "other.pid")
        pids = [forked, other]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        assert_gone([other], timeout=8)  # the clean-up ran
    finally:
        kill_tree(proc, pids)


def test_the_watchdog_stops_the_groups_it_was_told_of_once_the_runner_is_gone(tmp_path):
    """A step's child that dropped the run's marker (``env -i``) is found by its process group
    alone: the groups the runner told the watchdog, kept in the watchdog's copy, reach the
    clean-up that starts when the runner is SIGKILLed."""
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - name: unmarked
            type: shell
            run: |
              env -i sh -c 'echo $$ > unmarked.pid; exec sleep 1000' &
              wait
        """,
    )
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    pids: list[int] = []
    try:
        unmarked = read_pid(tmp_path / "unmarked.pid")
        pids = sorted(set(descendants(proc.pid)) | {unmarked})
        run_dir = only_run_dir(tmp_path)
        assert unmarked not in marked(run_dir)
        step = os.getpgid(unmarked)  # the step's group: its shell's, which it stayed in
        wait_for(
            lambda: f"+ {step} " in _watchdog_copy(proc.pid),
            message="the runner told the watchdog the step's group",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        assert_gone(pids, timeout=8)
    finally:
        kill_tree(proc, pids)


def test_terminal_closed_under_a_headless_run_ends_it_as_interrupted(tmp_path, tmux_socket):
    """``--no-ui`` on a terminal that goes away (a lost ssh connection, a killed tmux): the run
    is stopped as SIGTERM would stop it, its state.json says interrupted with every step
    cancelled (not left "running", then listed as died), and nothing it started is left."""
    from tests.tui_helpers import TmuxApp

    recipe = write_recipe(tmp_path, BUSY)
    app = TmuxApp(tmux_socket, [str(recipe), "--no-ui", "--jobs", "4"], tmp_path)
    pids = [read_pid(tmp_path / f"{name}.pid") for name in PID_FILES]
    run_dir = wait_for(lambda: only_run_dir(tmp_path), message="the run directory")
    wait_for(
        lambda: read_state(run_dir)["steps"]["server"]["status"] == "ready",
        message="the server ready in state.json",
    )
    try:
        app.close_terminal()
        assert_gone(pids, timeout=10)
        state = read_state(run_dir)
        assert state["status"] == "interrupted"
        assert state["exit_code"] == 130
        assert state["ended"] is not None
        for name in ("left", "right", "server", "after"):
            assert state["steps"][name]["status"] == "cancelled", (name, state["steps"][name])
        for name in ("left", "right", "server"):  # SIGTERMed, but the hang-up stopped the run
            assert state["steps"][name]["reason"] == "run interrupted (SIGHUP)", name
        assert marked(run_dir) == []
    finally:
        for pid in pids:  # the steps' processes, should the run have left them
            kill_tree(pid)


def test_a_headless_run_under_nohup_outlives_its_terminal(tmp_path):
    """SIGHUP ignored (``nohup orch-tui R --no-ui &``): the hang-up does not stop the run; it
    ends when its steps do, exit 0."""
    recipe = write_recipe(
        tmp_path,
        "steps:\n  - {name: gate, type: shell, run: 'touch up; while [ ! -f go ]; do sleep 0.05; done'}\n",
    )
    proc = start_cli(
        recipe,
        "--no-ui",
        cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    try:
        wait_for(lambda: (tmp_path / "up").exists(), message="the step running")
        proc.send_signal(signal.SIGHUP)
        (tmp_path / "go").touch()
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err.decode()
        assert read_state(only_run_dir(tmp_path))["status"] == "succeeded"
    finally:
        kill_tree(proc)


def test_the_end_of_a_run_leaves_another_users_process_that_claims_its_marker(
    tmp_path: Path, attacker: User
):
    """Anyone can put ORCH_RUN_DIR=<a run's folder> in their own process's environment (the
    folder's name is no secret); a run started by root SIGTERMed it with its own leftovers."""
    recipe = write_recipe(tmp_path, "steps:\n  - {name: a, type: shell, cmd: 'true'}\n")
    run_dir = tmp_path / "run"
    stranger = subprocess.Popen(
        attacker.argv("env", f"ORCH_RUN_DIR={run_dir}", "sleep", "600"),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: b"sleep" in Path(f"/proc/{stranger.pid}/cmdline").read_bytes(), 10)
        result = run_cli(recipe, "--no-ui", "--run-dir", run_dir, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert stranger.poll() is None, "the run stopped another user's process"
    finally:
        kill_tree(stranger)


def test_the_watchdog_removes_only_a_scratch_folder_of_the_runs_kind(tmp_path):
    """What the watchdog is told to remove (``d HEXPATH``) goes only if it is still a folder of
    this user's named ``orch-dask-*``: a link put in its place (to a folder with files) or a
    folder of another name is left, its content too."""
    from core.watchdog import _told, remove_scratch

    ours = tmp_path / "orch-dask-abc"
    (ours / "sub").mkdir(parents=True)
    (ours / "sub" / "f").write_text("x")
    target = tmp_path / "precious"
    target.mkdir()
    (target / "f").write_text("keep")
    link = tmp_path / "orch-dask-link"
    link.symlink_to(target)
    other = tmp_path / "not-ours"
    other.mkdir()
    folders: list[bytes] = []
    lines = b"".join(b"d " + os.fsencode(p).hex().encode() + b"\n" for p in (ours, link, other))
    assert _told([[lines + b"d zz\n"]], folders) == {}
    assert [os.fsdecode(f) for f in folders] == [str(ours), str(link), str(other)]
    assert [remove_scratch(os.fsdecode(f)) for f in folders] == [True, False, False]
    assert not ours.exists() and (target / "f").read_text() == "keep"
    assert link.is_symlink() and other.is_dir()


def test_a_sigkilled_runners_space_reserve_is_given_back_by_its_watchdog(tmp_path):
    """A run holds space back for its state.json (core.diskspace: 64 KiB and twice its first
    state, megabytes for a big recipe) and gives it back as it ends; a runner SIGKILLed left
    it in its folder until ``clean``. Its watchdog's clean-up removes it, with the steps."""
    from core.rundir import RESERVE

    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - {name: sleeper, type: shell, run: echo $$ > sleeper.pid; exec sleep 1000}
        """,
    )
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    pids: list[int] = []
    try:
        pids = [read_pid(tmp_path / "sleeper.pid")]
        reserve = only_run_dir(tmp_path) / RESERVE
        assert reserve.is_file()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        assert_gone(pids, timeout=8)  # the clean-up ran
        wait_for(lambda: not reserve.exists(), 5, "the reserve given back")
    finally:
        kill_tree(proc, pids)


#: A python step that starts a process and returns, leaving it running (its pid in child.pid).
LITTERING_STEP = """
import subprocess

def run(ctx):
    child = subprocess.Popen(["sleep", "1000"])
    with open("child.pid", "w") as f:
        f.write(str(child.pid))
"""


def test_what_a_python_step_started_is_stopped_at_the_end_of_the_run(tmp_path, tmux_socket):
    """A python step runs in the runner's process: a process it starts and leaves running
    (``subprocess.Popen``) once outlived the run, found by nothing (``sleep`` left after every
    nightly run). The runner now carries the run's marker, so it is stopped with the other
    steps' leftovers; a session the run creates, meant to outlive it, does not get the marker
    and is left. (Holding the runner's stdout, it also kept ``orch-tui R --no-ui | tee log``
    from ever ending.)"""
    module = write_module(tmp_path, LITTERING_STEP)
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: spawns, type: python, module: {module}}}
          - name: lab
            type: session
            backend: tmux
            socket: {tmux_socket}
            action: create
            session: lab
          - {{name: next, type: shell, run: echo next}}
        """,
    )
    try:
        result = run_cli(recipe, "--no-ui", cwd=tmp_path)
        child = read_pid(tmp_path / "child.pid")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "stopped 1 process that steps left running" in result.stdout, result.stdout
        assert_gone([child], timeout=1)
        assert marked(only_run_dir(tmp_path)) == []
        session = [TMUX, "-L", tmux_socket, "has-session", "-t", "=lab"]
        assert subprocess.run(session, capture_output=True).returncode == 0, "the session is gone"
    finally:
        if (tmp_path / "child.pid").exists():
            kill_tree(read_pid(tmp_path / "child.pid"))


def test_what_a_python_step_started_is_stopped_when_the_runner_is_killed(tmp_path):
    """The same process, its runner SIGKILLed: the watchdog's clean-up finds it by the run's
    marker (it once reparented to init and ran on)."""
    module = write_module(tmp_path, LITTERING_STEP)
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: spawns, type: python, module: {module}}}
          - {{name: other, type: shell, run: echo $$ > other.pid; exec sleep 1000}}
        """,
    )
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    pids: list[int] = []
    try:
        pids = [read_pid(tmp_path / "child.pid"), read_pid(tmp_path / "other.pid")]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        assert_gone(pids, timeout=8)
    finally:
        kill_tree(proc, pids)


#: A python step that crashes the interpreter, as a C extension's bug does (once ``go`` exists).
CRASHING_STEP = """
import ctypes, os, time

def crash(ctx):
    while not os.path.exists("go"):
        time.sleep(0.02)
    ctypes.string_at(0)
"""


@pytest.mark.parametrize("where", ["headless", "daemon"])
def test_a_python_step_that_crashes_the_runner_says_where(tmp_path, where):
    """A segfault in a python step takes the runner with it (a known limit): it once did so in
    silence, the headless output stopping short with exit 139 and the app's "see daemon.log"
    pointing to an empty file. Python's fault handler now writes the crashing stack there,
    the step's own file and line in it."""
    module = write_module(tmp_path, CRASHING_STEP)
    recipe = write_recipe(
        tmp_path,
        f"steps:\n  - {{name: crashes, type: python, module: {module}, function: crash}}\n",
    )
    (tmp_path / "go").touch()
    if where == "headless":
        result = run_cli(recipe, "--no-ui", cwd=tmp_path)
        assert result.returncode == -signal.SIGSEGV, result.stdout + result.stderr
        said = result.stderr
    else:
        (tmp_path / "go").unlink()
        daemon = start_detached(recipe, cwd=tmp_path)
        try:
            (tmp_path / "go").touch()
            assert_gone([daemon.pid], timeout=10)
        finally:
            end_daemon(daemon)
        said = (daemon.run_dir / "daemon.log").read_text()
    assert "Fatal Python error: Segmentation fault" in said, said
    assert f'{tmp_path / module}.py", line 6 in crash' in said, said


def test_an_attached_app_whose_daemon_crashes_says_how_it_ended(tmp_path, tmux_socket):
    """The app on the daemon it started, which a python step's segfault takes down: it said
    "the run daemon went away without ending the run (was it killed?)", or, crashed before the
    app connected, "[Errno 104] Connection reset by peer" (exit 2), or "see the run's
    folder/daemon.log" word for word. It says the daemon died, how (SIGSEGV), and which
    daemon.log holds the crash's stack; exit 1."""
    from tests.tui_helpers import TmuxApp

    module = write_module(tmp_path, CRASHING_STEP)
    recipe = write_recipe(
        tmp_path,
        f"steps:\n  - {{name: crashes, type: python, module: {module}, function: crash}}\n",
    )
    app = TmuxApp(tmux_socket, [str(recipe)], tmp_path)
    app.shows("▶ crashes")
    (tmp_path / "go").touch()
    assert app.exited() == 1
    log = only_run_dir(tmp_path).relative_to(tmp_path) / "daemon.log"
    printed = " ".join(app.printed().split())
    assert (
        "orch-tui: the run daemon died (killed by SIGSEGV) without ending the run; "
        f"see {log}" in printed
    ), printed
    # crashed as it started: said so too, the run's folder found by the daemon's pid
    app = TmuxApp(tmux_socket, [str(recipe)], tmp_path, session="again")
    assert app.exited() == 1
    printed = " ".join(app.printed().split())
    assert "orch-tui: the run daemon died as " in printed, printed
    assert "(killed by SIGSEGV)" in printed and "/daemon.log" in printed, printed


def test_a_step_module_crashing_as_the_recipe_is_checked_says_where(tmp_path):
    """A module whose import crashes the interpreter (a C extension's bug) as ``validate`` (or
    any run) checks the recipe: "Segmentation fault", exit 139, nothing else. The fault
    handler names the module's file and line."""
    module = write_module(tmp_path, "import ctypes\nctypes.string_at(0)\n\ndef f(ctx):\n    pass\n")
    recipe = write_recipe(
        tmp_path, f"steps:\n  - {{name: s, type: python, module: {module}, function: f}}\n"
    )
    result = run_cli("validate", recipe, cwd=tmp_path)
    assert result.returncode == -signal.SIGSEGV
    assert f'{tmp_path / module}.py", line 2 in <module>' in result.stderr, result.stderr


def test_a_daemonic_process_a_python_step_forked_does_not_keep_orch_tui_from_exiting(tmp_path):
    """A python step starts a daemonic ``multiprocessing.Process`` (forked, no exec) and
    returns: the run ended, printed its summary, and orch-tui never exited (multiprocessing
    terminates daemonic children at exit and joins them, and the child ran the runner's
    SIGTERM handler, which ended nothing). A forked child has the default handlers."""
    module = write_module(
        tmp_path,
        """
        import multiprocessing, os, time

        def _sleep():
            time.sleep(1000)

        def run(ctx):
            child = multiprocessing.get_context("fork").Process(target=_sleep, daemon=True)
            child.start()
            with open("child.pid", "w") as f:
                f.write(str(child.pid))
        """,
    )
    recipe = write_recipe(
        tmp_path, f"steps:\n  - {{name: forks, type: python, module: {module}, function: run}}\n"
    )
    result = run_cli(recipe, "--no-ui", cwd=tmp_path, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_gone([read_pid(tmp_path / "child.pid")], timeout=5)


def test_a_run_a_step_detaches_is_not_the_steps_leftover(tmp_path, daemons):
    """A step starts a run of its own in the background (``orch-tui inner.yaml --detach``):
    its daemon carried the outer run's marker, and the outer run's end stopped it as a process
    the step left running. A detached run is a run of its own: it goes on."""
    import shlex

    from tests.conftest import ORCH, Daemon

    inner = write_recipe(
        tmp_path, "steps:\n  - {name: long, type: shell, run: 'sleep 60'}\n", "inner.yaml"
    )
    detach = shlex.join([*ORCH, str(inner), "--detach"])
    outer = write_recipe(
        tmp_path, f"steps:\n  - {{name: starts, type: shell, run: {shlex.quote(detach)}}}\n"
    )
    result = run_cli(outer, "--no-ui", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)
    inner_run = next(r for r in listed if r["recipe"].endswith("inner.yaml"))
    state = read_state(tmp_path / ".orch" / "runs" / inner_run["id"])
    daemons.append(
        Daemon(inner_run["id"], tmp_path / ".orch" / "runs" / inner_run["id"], state["pid"])
    )
    assert "left running" not in result.stdout, result.stdout
    assert alive(state["pid"]) and inner_run["live"], inner_run
