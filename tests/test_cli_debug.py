"""``--debug`` (README, "Command line": "verbose logging, tracebacks"), through the real command.

Without it an internal error is one line and a hint, never a traceback; with it, the traceback,
and the runner logs what it does (each step's start and end, the run's end) on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT, run_cli, write_recipe

RECIPE = """
steps:
  - {name: hello, type: shell, run: echo hi}
"""


# A bug cannot be triggered on purpose through the command line (every bad input is a usage
# error), so this one is planted: the real ``main`` in a real process, with the recipe loader
# replaced by one that raises what a bug would.
_PLANTED_BUG = """
import sys
import core.recipe
import tui.cli

def broken(*args, **kwargs):
    raise ZeroDivisionError("planted bug")

core.recipe.load_recipe = broken
sys.exit(tui.cli.main(sys.argv[1:]))
"""


def _run_with_a_bug(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-c", _PLANTED_BUG, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_an_internal_error_shows_a_traceback_only_with_debug(tmp_path):
    recipe = write_recipe(tmp_path, RECIPE)

    plain = _run_with_a_bug(tmp_path, str(recipe), "--no-ui")
    assert plain.returncode == 1, plain
    assert plain.stderr.splitlines() == [
        "orch-tui: internal error: ZeroDivisionError: planted bug",
        "orch-tui: run again with --debug for the traceback",
    ]

    debug = _run_with_a_bug(tmp_path, str(recipe), "--no-ui", "--debug")
    assert debug.returncode == 1, debug
    assert debug.stderr.startswith("Traceback (most recent call last):"), debug.stderr
    assert debug.stderr.rstrip().endswith("ZeroDivisionError: planted bug")


def test_debug_logs_what_the_runner_does(tmp_path):
    recipe = write_recipe(tmp_path, RECIPE)

    quiet = run_cli(recipe, "--no-ui", cwd=tmp_path)
    assert quiet.returncode == 0, quiet
    assert quiet.stderr == ""

    verbose = run_cli(recipe, "--no-ui", "--debug", cwd=tmp_path)
    assert verbose.returncode == 0, verbose
    lines = verbose.stderr.splitlines()
    for event in ("step_started {'step': 'hello'", "step_finished {'step': 'hello', 'status': "):
        assert any(line.startswith(f"orch-tui DEBUG orch.runner: {event}") for line in lines), (
            event,
            verbose.stderr,
        )
    assert lines[-1].startswith("orch-tui DEBUG orch.runner: run_finished {'status': 'succeeded'")
    assert "hi" in verbose.stdout  # the run's own output is where it always is
