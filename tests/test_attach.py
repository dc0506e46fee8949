"""``orch-tui attach`` of a run that is over: the real command in tmux at 80x24, read-only.

Attaching to live runs (through the run daemon) is in tests/test_ctl_live.py.
"""

from __future__ import annotations

import os
import signal

from tests.conftest import (
    headless_at_slow,
    only_run_dir,
    read_state,
    run_cli,
    wait_for,
    write_recipe,
)
from tests.test_ctl import RECIPE
from tests.tui_helpers import TmuxApp


def test_attach_shows_a_past_run_read_only(tmp_path, tmux_socket):
    recipe = write_recipe(tmp_path, RECIPE)
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 1
    run_dir = only_run_dir(tmp_path)
    before = read_state(run_dir)

    app = TmuxApp(tmux_socket, ["attach", run_dir.name], tmp_path)
    # the tree, the first step's log, and how the run ended (the summary) in the header
    screen = app.shows("✓ fill", "✗ broken", "⊘ after", "filled", "exit 1 · read-only")
    assert "demo · failed · 1/3 ✗1 ⊘1" in screen.splitlines()[0]
    app.keys("Down")
    app.shows("oops")
    app.keys("r")  # retry: a key that would change the run
    app.shows("read-only: this run is over")
    assert read_state(run_dir) == before
    app.keys("q")  # nothing runs: q just quits
    wait_for(lambda: not app.running(), 10, "the app to quit on q")


def test_attach_shows_a_run_whose_process_died_as_interrupted(tmp_path, tmux_socket):
    with headless_at_slow(tmp_path) as (proc, run_dir):
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

        app = TmuxApp(tmux_socket, ["attach", run_dir.name], tmp_path)
        screen = app.shows("✓ quick", "⊗ slow", "⊗ later", "the daemon is gone · read-only")
        assert "· interrupted ·" in screen.splitlines()[0]
        app.keys("Down")
        app.shows("started")  # the slow step's log
        app.keys("q")
        wait_for(lambda: not app.running(), 10, "the app to quit on q")
