"""``--debug`` (README, "Command line": "verbose logging, tracebacks"), through the real command.

Without it an internal error is one line and a hint, never a traceback; with it, the traceback,
and the runner logs what it does (each step's start and end, the run's end) on stderr.
"""

from __future__ import annotations

from tests.conftest import run_cli, write_recipe

RECIPE = """
steps:
  - {name: hello, type: shell, run: echo hi}
"""


def test_an_internal_error_shows_a_traceback_only_with_debug(tmp_path):
    recipe = write_recipe(tmp_path, RECIPE)
    (tmp_path / "a-file").write_text("")  # a run directory that cannot be one: not a usage error

    plain = run_cli(recipe, "--no-ui", "--run-dir", "a-file", cwd=tmp_path)
    assert plain.returncode == 1, plain
    assert plain.stderr.splitlines() == [
        "orch-tui: internal error: NotADirectoryError: [Errno 20] Not a directory: 'a-file'",
        "orch-tui: run again with --debug for the traceback",
    ]

    debug = run_cli(recipe, "--no-ui", "--run-dir", "a-file", "--debug", cwd=tmp_path)
    assert debug.returncode == 1, debug
    assert debug.stderr.startswith("Traceback (most recent call last):"), debug.stderr
    assert debug.stderr.rstrip().endswith(
        "NotADirectoryError: [Errno 20] Not a directory: 'a-file'"
    )


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
