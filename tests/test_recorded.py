"""core.recorded: a run read back from its folder (``RecordedRun``), read-only.

Runs are real ``orch-tui --no-ui`` processes; the one that "dies" is SIGKILLed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from core.control import Reply
from core.recorded import DIED, READ_ONLY, NotARun, RecordedRun, process_alive
from tests.conftest import (
    headless_at_slow,
    only_run_dir,
    read_state,
    run_cli,
    wait_for,
    write_recipe,
)
from tests.test_ctl import RECIPE


@pytest.fixture
def finished(tmp_path):
    recipe = write_recipe(tmp_path, RECIPE)
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 1
    run = RecordedRun.open(only_run_dir(tmp_path))
    yield run
    run.close()


def test_a_finished_run_reads_back_as_its_files_say(finished):
    state = finished.snapshot()
    assert state.to_dict() == read_state(finished.run_dir.path)
    assert not finished.died
    assert finished.wait() == 1
    assert finished.run_dir.log("broken").read_bytes() == b"oops\n"
    events: list = []
    finished.subscribe(events.append)
    assert events == []


def test_every_command_is_refused_as_read_only(finished):
    for name, step in (("retry", "broken"), ("skip", "after"), ("stop_run", None), ("close", None)):
        assert finished.command(name, step) == Reply(False, READ_ONLY)
    assert finished.snapshot().steps["broken"].status == "failed"


def test_the_ctx_comes_from_ctx_json(finished):
    assert set(finished.ctx_keys()) == {"rows", "word"}
    shown = finished.ctx_value("rows", tail=2)
    assert (shown.value, shown.length) == ([2, 3], 3)
    assert finished.ctx_value("word").value == "hi"
    with pytest.raises(KeyError):
        finished.ctx_value("missing")


def test_a_folder_that_is_not_a_run_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotARun, match="is not a run folder"):
        RecordedRun.open(tmp_path / "empty")
    with pytest.raises(NotARun, match="cannot read the run folder"):
        RecordedRun.open(tmp_path / "missing")


def test_a_run_whose_process_died_is_interrupted_not_running(tmp_path):
    with headless_at_slow(tmp_path) as (proc, run_dir):
        with RecordedRun.open(run_dir) as going:  # its process is alive: shown as it is
            assert not going.died
            assert going.snapshot().status == "running"
            assert going.wait(0.3) is None

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        with RecordedRun.open(run_dir) as dead:
            state = dead.snapshot()
            assert dead.died
            assert (state.status, state.exit_code, state.closing) == ("interrupted", 130, True)
            slow, later = state.steps["slow"], state.steps["later"]
            assert (slow.status, slow.reason) == ("cancelled", DIED)
            assert slow.duration is not None and slow.duration >= 0
            assert (later.status, later.reason) == ("cancelled", DIED)
            assert state.steps["quick"].status == "succeeded"
            assert dead.wait(0) == 130
        assert read_state(run_dir)["status"] == "running"  # the files are not changed


def test_a_refusing_daemon_socket_counts_as_gone_whatever_the_pid(tmp_path):
    """pids are reused: a run that says it is running, under a pid that is alive (here
    pytest's own), died all the same when the caller found its daemon's socket refusing."""
    recipe = write_recipe(tmp_path, "steps: [{name: one, type: shell, run: 'true'}]")
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 0
    run_dir = only_run_dir(tmp_path)
    state = read_state(run_dir)
    state.update(status="running", exit_code=None, ended=None, pid=os.getpid())
    (run_dir / "state.json").write_text(json.dumps(state))
    with RecordedRun.open(run_dir) as alive_pid:
        assert not alive_pid.died
    with RecordedRun.open(run_dir, daemon_gone=True) as gone:
        assert gone.died
        assert gone.snapshot().status == "interrupted"


def test_a_zombie_is_not_alive():
    """A killed daemon's parent is init, which in a container may never reap it."""
    child = subprocess.Popen(["true"])
    try:
        wait_for(lambda: Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][0] == "Z")
        assert not process_alive(child.pid)
    finally:
        child.wait()
    assert process_alive(os.getpid())
    assert not process_alive(child.pid)
