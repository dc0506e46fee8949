"""The ``orch-tui`` command line, run as a real subprocess with stdout piped.

What a user or a CI script sees: exit codes, what goes to stdout and stderr, the files left
behind. Recipe errors must name ``file:line`` and never show a traceback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sysconfig
import textwrap
from pathlib import Path

import pytest

from core import __version__
from core.rundir import RunDir
from tests.conftest import (
    ORCH,
    PY,
    _cli_env,
    assert_gone,
    kill_tree,
    only_run_dir,
    read_state,
    run_cli,
    start_cli,
    start_detached,
    wait_for,
    write_module,
    write_recipe,
)

ANSI = re.compile(rb"\x1b[\[\]()#;?0-9]")

GOOD = """
name: good
steps:
  - {name: build, type: shell, run: "echo building"}
  - {name: test, type: shell, run: "echo testing"}
  - {name: docs, type: shell, depends_on: [], run: "echo docs"}
"""


def test_version(tmp_path):
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"orch-tui {__version__}"


def test_help_mentions_the_commands(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for word in ("--only", "--skip", "--resume-from", "--jobs", "validate"):
        assert word in result.stdout


def test_help_fits_the_width_columns_gives(tmp_path):
    """--help wraps to the terminal (COLUMNS first, as shutil.get_terminal_size has it), less
    argparse's margin of 2, for the run and a subcommand; off a terminal, to 80."""
    for args in (("--help",), ("ctl", "--help")):
        for columns, env in ((50, {"COLUMNS": "50"}), (120, {"COLUMNS": "120"}), (80, {})):
            result = run_cli(*args, cwd=tmp_path, env={"COLUMNS": "", **env})
            assert result.returncode == 0, result.stderr
            widest = max(len(line) for line in result.stdout.splitlines())
            assert columns - 12 <= widest <= columns - 2, (args, columns, result.stdout)


def test_validate_good_recipe(tmp_path):
    recipe = write_recipe(tmp_path, GOOD)
    result = run_cli("validate", recipe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert not (tmp_path / ".orch").exists(), "validate runs nothing"


def test_validate_counts_one_step_in_the_singular(tmp_path):
    recipe = write_recipe(tmp_path, "steps:\n  - {name: a, type: shell, run: 'true'}\n")
    result = run_cli("validate", recipe, cwd=tmp_path)
    assert result.stdout.strip() == f"{recipe}: OK, 1 step (1 shell)"


def test_validate_checks_every_recipe_given(tmp_path):
    """A pre-commit hook (``entry: orch-tui validate``) hands over every staged recipe at
    once: each is checked and told about, a bad one does not hide the next, and the exit is 2
    if any is bad. Two files were a usage error, whatever they held."""
    one = write_recipe(tmp_path, "steps:\n  - {name: a, type: shell, run: 'true'}\n", "one.yaml")
    bad = write_recipe(tmp_path, "steps:\n  - {name: b, type: shell, rn: 'true'}\n", "bad.yaml")
    two = write_recipe(tmp_path, GOOD, "two.yaml")

    good = run_cli("validate", one, two, cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert good.stdout.splitlines() == [
        f"{one}: OK, 1 step (1 shell)",
        f"{two}: OK, 3 steps (3 shell)",
    ]

    mixed = run_cli("validate", one, bad, two, cwd=tmp_path)
    assert mixed.returncode == 2
    assert mixed.stdout.splitlines() == good.stdout.splitlines()
    assert "bad.yaml:2:28: step 'b': unknown field 'rn'" in mixed.stderr, mixed.stderr
    assert "Traceback" not in mixed.stderr


def test_a_one_step_run_says_1_step(tmp_path):
    recipe = write_recipe(tmp_path, "steps:\n  - {name: a, type: shell, run: 'true'}\n")
    result = run_cli(recipe, "--no-ui", cwd=tmp_path)
    assert f"of {recipe}: 1 step, logs in" in result.stdout.splitlines()[0]


def test_the_summary_to_a_pipe_keeps_every_cell_whole(tmp_path):
    """A CI log is read whole: the table's note is not cut at any width (a reason is at most
    REASON_MAX characters, which is wider than any terminal's row)."""
    words = " ".join(f"word{i}" for i in range(40))  # 269 characters
    module = write_module(tmp_path, f"import sys\n\ndef run(ctx):\n    sys.exit({words!r})\n")
    recipe = write_recipe(tmp_path, f"steps:\n  - {{name: a, type: python, module: {module}}}\n")
    result = run_cli(recipe, "--no-ui", cwd=tmp_path)
    assert result.returncode == 1
    row = next(line for line in result.stdout.splitlines() if re.match(r"a +✗ failed ", line))
    assert row.endswith(f"  {words}"), result.stdout


# Each bad recipe and the line its problem is reported on.
BAD_RECIPES = {
    "unknown_field": (
        """
        steps:
          - name: build
            type: shell
            run: "true"
            dependson: [x]
        """,
        5,
        "dependson",
    ),
    "unknown_dependency": (
        """
        steps:
          - {name: build, type: shell, run: "true"}
          - {name: test, type: shell, run: "true", depends_on: [biuld]}
        """,
        3,
        "biuld",
    ),
    "cycle": (
        """
        steps:
          - {name: a, type: shell, run: "true", depends_on: [b]}
          - {name: b, type: shell, run: "true", depends_on: [a]}
        """,
        2,
        "cycle",
    ),
    "bad_yaml": (
        """
        steps:
          - name: a
            type: shell
            run: [unclosed
        """,
        None,
        "YAML",
    ),
    "missing_module": (
        """
        steps:
          - {name: a, type: python, module: no_such_module_q8z}
        """,
        2,
        "no_such_module_q8z",
    ),
    "missing_function": (
        """
        steps:
          - name: a
            type: python
            module: MODULE
            function: not_there
        """,
        5,
        "not_there",
    ),
    "bad_session_name": (
        """
        steps:
          - name: a
            type: session
            action: create
            session: "web; rm -rf ~"
        """,
        5,
        "session",
    ),
    "python_object_tag": (
        """
        steps:
          - name: a
            type: shell
            run: !!python/object/apply:os.system ["touch pwned"]
        """,
        4,
        "python/object/apply",
    ),
}


def _bad_recipe(tmp_path, kind):
    text, line, word = BAD_RECIPES[kind]
    if "MODULE" in text:
        text = text.replace("MODULE", write_module(tmp_path, "def run(ctx):\n    pass\n"))
    return write_recipe(tmp_path, text), line, word


@pytest.mark.parametrize("kind", sorted(BAD_RECIPES))
def test_validate_bad_recipe_names_file_and_line(tmp_path, kind):
    recipe, line, word = _bad_recipe(tmp_path, kind)
    result = run_cli("validate", recipe, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    location = re.search(r"recipe\.yaml:(\d+)", result.stderr)
    assert location, result.stderr
    if line is not None:
        assert f"recipe.yaml:{line}:" in result.stderr, result.stderr
    assert word in result.stderr
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("kind", ["unknown_dependency", "missing_module", "python_object_tag"])
def test_running_a_bad_recipe_exits_2_and_runs_nothing(tmp_path, kind):
    recipe, _, word = _bad_recipe(tmp_path, kind)
    result = run_cli(recipe, "--no-ui", cwd=tmp_path)
    assert result.returncode == 2
    assert word in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".orch").exists(), "no run directory for a recipe that never ran"
    assert not (tmp_path / "pwned").exists()


def test_missing_recipe_file(tmp_path):
    result = run_cli("nonexistent.yaml", "--no-ui", cwd=tmp_path)
    assert result.returncode == 2
    assert "nonexistent.yaml" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args", [[], ["--jobs", "0"], ["--jobs", "many"], ["--no-such-option"]], ids=str
)
def test_usage_errors_exit_2(tmp_path, args):
    recipe = write_recipe(tmp_path, GOOD)
    result = run_cli(*(args if not args else [recipe, "--no-ui", *args]), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".orch").exists()


@pytest.mark.parametrize(
    "args, said",
    [
        (["--jobs", "many"], "orch-tui: argument --jobs: expected a whole number, got 'many'"),
        (["--no-such-option"], "orch-tui: unrecognized arguments: --no-such-option"),
        (["graph", "R", "--format", "png"], "orch-tui graph: argument --format: invalid choice"),
        (["validate"], "orch-tui validate: the following arguments are required: RECIPE"),
    ],
    ids=["run", "unknown", "graph", "validate"],
)
def test_a_usage_error_is_one_line_that_points_to_help(tmp_path, args, said):
    """Like every other error of orch-tui: one line, what was wrong and where to look, not
    argparse's usage block (five lines for the run's options) above it."""
    recipe = write_recipe(tmp_path, GOOD)
    if args[0] not in ("graph", "validate"):
        args = [str(recipe), "--no-ui", *args]
    result = run_cli(*[str(recipe) if a == "R" else a for a in args], cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(said), line
    command = said.split(":")[0]
    assert line.endswith(f"(see {command} --help)"), line


def test_graph_dot_and_mermaid(tmp_path):
    recipe = write_recipe(tmp_path, GOOD)
    dot = run_cli("graph", recipe, "--format", "dot", cwd=tmp_path)
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.lstrip().startswith("digraph")
    assert '"build" -> "test"' in dot.stdout
    assert '"docs"' in dot.stdout
    assert '-> "docs"' not in dot.stdout, "depends_on: [] has no incoming edge"

    default = run_cli("graph", recipe, cwd=tmp_path)
    assert default.stdout == dot.stdout, "dot is the default format"

    mermaid = run_cli("graph", recipe, "--format", "mermaid", cwd=tmp_path)
    assert mermaid.returncode == 0, mermaid.stderr
    first = mermaid.stdout.lstrip().splitlines()[0]
    assert first.startswith(("flowchart", "graph"))
    ids = dict(re.findall(r"^\s*(\w+)\[\"?(\w+)", mermaid.stdout, re.M))
    by_name = {name: node for node, name in ids.items()}
    assert f"{by_name['build']} --> {by_name['test']}" in mermaid.stdout
    assert "docs" in by_name


def test_headless_when_piped_plain_output_prefixed_by_step(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - name: colourful
            type: shell
            run: |
              printf '\\033[31mred text\\033[0m\\n'
              echo "second line"
          - {name: other, type: shell, run: "echo from other >&2"}
        """,
    )
    # No --no-ui: stdout is a pipe, so orch-tui must fall back to headless by itself.
    result = run_cli(recipe, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    raw = result.stdout.encode()
    assert not ANSI.search(raw), f"ANSI escape in piped output: {raw[:400]!r}"
    lines = result.stdout.splitlines()
    assert "colourful | red text" in lines
    assert "colourful | second line" in lines
    assert "other | from other" in lines
    assert "red text" not in [line.strip() for line in lines], "output lines carry the step name"
    assert "run succeeded" in lines[-1]


def test_recipe_option_spelling(tmp_path):
    recipe = write_recipe(tmp_path, GOOD)
    result = run_cli("--recipe", recipe, "--no-ui", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "build | building" in result.stdout
    steps = read_state(only_run_dir(tmp_path))["steps"]
    assert {s["status"] for s in steps.values()} == {"succeeded"}


def test_run_dir_option(tmp_path):
    recipe = write_recipe(tmp_path, GOOD)
    result = run_cli(recipe, "--no-ui", "--run-dir", "custom/run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_state(tmp_path / "custom" / "run")["status"] == "succeeded"
    assert not (tmp_path / ".orch").exists()


def test_every_step_skipped_still_finishes(tmp_path):
    recipe = write_recipe(tmp_path, GOOD)
    result = run_cli(recipe, "--no-ui", "--skip", "build", "test", "docs", cwd=tmp_path, timeout=15)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = read_state(only_run_dir(tmp_path))["steps"]
    assert {s["status"] for s in steps.values()} == {"skipped"}


def test_clean_dry_run_then_clean(tmp_path):
    recipe = write_recipe(tmp_path, GOOD)
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 0
    run_dir = only_run_dir(tmp_path)
    source = tmp_path / "keep_me.py"
    source.write_text("x = 1\n")

    dry = run_cli("clean", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert ".orch" in dry.stdout
    assert run_dir.is_dir(), "--dry-run removes nothing"

    real = run_cli("clean", cwd=tmp_path)
    assert real.returncode == 0, real.stderr
    assert ".orch" in real.stdout
    assert not (tmp_path / ".orch").exists()
    assert source.exists() and recipe.exists() and (tmp_path / "pyproject.toml").exists()

    again = run_cli("clean", cwd=tmp_path)
    assert again.returncode == 0
    assert ".orch" not in again.stdout


def test_exit_code_0_and_1(tmp_path):
    ok = write_recipe(tmp_path, "steps:\n  - {name: a, type: shell, run: 'true'}\n", "ok.yaml")
    bad = write_recipe(tmp_path, "steps:\n  - {name: a, type: shell, run: 'exit 5'}\n", "bad.yaml")
    assert run_cli(ok, "--no-ui", cwd=tmp_path).returncode == 0
    failed = run_cli(bad, "--no-ui", cwd=tmp_path)
    assert failed.returncode == 1
    assert "root failure: a" in failed.stdout


def test_a_timeout_is_said_as_set_and_with_why_its_step_took_longer(tmp_path):
    """A step with ``timeout: 0.3`` that outlives its SIGTERM (its ``grace``) ends later than
    0.3 s. The headless lines said "timed out after 0.8s" (its duration, read as the timeout),
    and left out state.json's reason, whose "StepKilled raised in it" is why a python step
    ended in a timeout without an exit. They say what the app says (the step's reason)."""
    module = write_module(tmp_path, "import time\ndef run(ctx):\n    time.sleep(3)\n")
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: sh, type: shell, timeout: 0.3, grace: 0.5, run: "trap '' TERM; sleep 30"}}
          - {{name: py, type: python, module: {module}, depends_on: [], timeout: 0.3, grace: 0.5}}
        """,
    )
    result = run_cli(recipe, "--no-ui", "--jobs", "2", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert re.search(r"⏱ sh timed out after 0\.3s$", out, re.M), out
    abandoned = "timed out after 0.3s; did not stop within 0.5s; StepKilled raised in it"
    assert re.search(rf"⏱ py {abandoned}$", out, re.M), out
    assert "root failure: sh (timed out after 0.3s)" in out, out
    assert f"root failure: py ({abandoned})" in out, out


def test_exit_code_130_on_sigint(tmp_path):
    recipe = write_recipe(
        tmp_path, "steps:\n  - {name: long, type: shell, run: 'touch started; exec sleep 100'}\n"
    )
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "started").exists(), message="the step to start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 130, err
        assert b"Traceback" not in err
        assert "interrupted" in out.decode().splitlines()[-1]
        # off a terminal (a cancelled CI job: GitHub Actions sends SIGINT) it is no Ctrl-C,
        # and no blank line ends a ^C that no terminal echoed
        assert err.decode() == "orch-tui: SIGINT: stopping steps (again to kill at once)\n"
    finally:
        kill_tree(proc)


def test_ctrl_c_under_the_live_view_says_so_above_it(tmp_path, tmux_socket):
    """Ctrl-C on a terminal: the stop line is printed above the live view, as the event lines
    are. Written to the terminal by the signal handler, it went under the view, whose next
    refresh wiped it and left the view's top rows above the cancellations, a stale frame."""
    from tests.tui_helpers import TmuxApp

    recipe = write_recipe(
        tmp_path,
        """
        name: stuck
        steps:
          - {name: a, type: shell, depends_on: [], run: 'touch started; exec sleep 100'}
          - {name: b, type: shell, depends_on: [], run: 'exec sleep 100'}
        """,
    )
    app = TmuxApp(tmux_socket, [str(recipe), "--no-ui", "--jobs", "2"], tmp_path, size=(100, 30))
    wait_for(lambda: (tmp_path / "started").exists(), message="the step to start")
    app.shows("stuck · ")  # the live view
    app.keys("C-c")
    assert app.exited() == 130
    rows = [row.rstrip() for row in app.rows()]
    stop = rows.index("orch-tui: Ctrl-C: stopping steps (again to kill at once)")
    assert "cancelled" in rows[stop + 1], rows
    frames = [i for i, row in enumerate(rows) if row.startswith("stuck · ")]
    assert len(frames) == 1 and frames[0] > stop, rows  # the last frame, left as the run ends


# -- clean: only what orch-tui made, in the workspace it is run in -------------------------------
def _user_files(folder: Path) -> list[Path]:
    """What a user or a developer keeps next to their recipes; clean must leave all of it."""
    made = [
        folder / "logs" / "measurements.csv",
        folder / "mypkg.egg-info" / "PKG-INFO",
        folder / "sub" / "__pycache__" / "mod.cpython-311.pyc",
        folder / ".pytest_cache" / "README.md",
    ]
    for path in made:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep me\n")
    return made


def _fake_run(runs: Path, name: str, state: dict | None = None) -> Path:
    run = runs / name
    (run / "logs").mkdir(parents=True)
    (run / "state.json").write_text(json.dumps(state or {"status": "succeeded", "pid": 1}))
    return run


def test_clean_outside_a_workspace_removes_the_runs_made_there_and_nothing_else(tmp_path):
    """A recipe run in a folder that is no workspace makes its runs in that folder's .orch,
    and ``orch-tui runs`` lists them there: clean removes them too. It said "nothing to
    clean: ... not in a workspace" and left them for good."""
    here = tmp_path / "not_a_workspace"
    kept = _user_files(here)
    run = _fake_run(here / ".orch" / "runs", "20260101-000000-0001")
    result = run_cli("clean", "--dry-run", cwd=here)
    assert result.returncode == 0, result.stderr
    assert f"would remove .orch/runs/{run.name}" in result.stdout and run.exists()
    result = run_cli("clean", cwd=here)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "removed .orch"
    assert not (here / ".orch").exists()
    assert all(path.exists() for path in kept)


def test_clean_in_a_subfolder_removes_the_runs_started_there(tmp_path):
    """Runs started in a workspace's subfolder go to its .orch (under the cwd, as --run-dir
    says), where ``orch-tui runs`` lists them; clean there removes them, and the workspace
    root's runs as before. It cleaned only the root's: "nothing to clean in <workspace>"."""
    write_recipe(tmp_path, GOOD)
    sub = tmp_path / "sub"
    sub.mkdir()
    recipe = sub / "recipe.yaml"  # no pyproject.toml here: sub is in tmp_path's workspace
    recipe.write_text(textwrap.dedent(GOOD))
    assert run_cli(recipe, "--no-ui", cwd=sub).returncode == 0
    assert run_cli("runs", cwd=sub).stdout.count("succeeded") == 1
    result = run_cli("clean", cwd=sub)
    assert result.returncode == 0, result.stderr
    assert "removed .orch" in result.stdout.splitlines(), result.stdout
    assert not (sub / ".orch").exists()
    assert (recipe.exists(), (tmp_path / "pyproject.toml").exists()) == (True, True)


def test_clean_in_a_system_folder_lists_nothing():
    stdlib = Path(sysconfig.get_paths()["stdlib"])  # full of __pycache__, no workspace
    result = run_cli("clean", "--dry-run", cwd=stdlib)
    assert result.returncode == 0, result.stderr
    assert "remove" not in result.stdout, result.stdout[:500]
    assert "nothing to clean" in result.stdout


def test_clean_removes_the_workspace_runs_and_nothing_else(tmp_path):
    recipe = write_recipe(tmp_path, GOOD)
    kept = _user_files(tmp_path) + [recipe, tmp_path / "pyproject.toml"]
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 0
    run_dir = only_run_dir(tmp_path)

    result = run_cli("clean", cwd=tmp_path / "sub")  # from below: the workspace is found
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(rf"removed {re.escape(str(run_dir))} \(\d[\d.]* KiB\)", lines[0])
    assert lines[-1] == f"removed {tmp_path / '.orch'}"
    assert not (tmp_path / ".orch").exists()
    assert all(path.exists() for path in kept), [p for p in kept if not p.exists()]


def test_clean_leaves_symlinks_and_their_targets(tmp_path):
    """orch-tui makes no symlink in .orch, and deletes only what it made: a link there (the
    user's ``latest``, or another's) is left and said, and what it points to is never
    followed. Links were removed ("removed .orch (a symlink: ...)")."""
    workspace, outside = tmp_path / "ws", tmp_path / "outside"
    workspace.mkdir()
    write_recipe(workspace, GOOD)
    target = _fake_run(outside / "orch" / "runs", "20260101-000000-0001")
    (workspace / ".orch").symlink_to(outside / "orch")
    result = run_cli("clean", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"left alone .orch: a symlink to {outside / 'orch'} (orch-tui makes none)"
    )
    assert os.path.islink(workspace / ".orch") and (target / "state.json").exists()

    (workspace / ".orch").unlink()
    runs = workspace / ".orch" / "runs"
    runs.mkdir(parents=True)
    (runs / "latest").symlink_to(target)
    finished = _fake_run(runs, "20260101-000000-0002")
    result = run_cli("clean", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert f"left alone .orch/runs/latest: a symlink to {target}" in result.stdout
    assert f"removed .orch/runs/{finished.name}" in result.stdout
    assert os.path.islink(runs / "latest") and (target / "state.json").exists()
    assert not finished.exists()


def test_clean_leaves_what_does_not_look_like_orch_tui_s(tmp_path):
    recipe = write_recipe(tmp_path, GOOD)
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 0
    run_dir = only_run_dir(tmp_path)
    stranger = tmp_path / ".orch" / "runs" / "my-notes"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine\n")
    (tmp_path / ".orch" / "settings.toml").write_text("mine\n")
    (tmp_path / ".orch" / "runs" / "todo.txt").write_text("mine\n")
    os.mkfifo(tmp_path / ".orch" / "runs" / "pipe")

    result = run_cli("clean", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"removed .orch/runs/{run_dir.name}" in result.stdout
    assert "left alone .orch/runs/my-notes: not an orch-tui run (no state.json)" in result.stdout
    assert "left alone .orch/settings.toml: not made by orch-tui" in result.stdout
    # the user's own file: not someone else's, as "not a folder of yours" said
    assert "left alone .orch/runs/todo.txt: not an orch-tui run (not a folder)" in result.stdout
    assert "left alone .orch/runs/pipe: not an orch-tui run (not a folder)" in result.stdout
    assert (tmp_path / ".orch" / "runs" / "todo.txt").read_text() == "mine\n"
    assert not run_dir.exists()
    assert (stranger / "notes.txt").exists() and (tmp_path / ".orch" / "settings.toml").exists()


def test_clean_removes_a_run_whose_process_is_a_zombie(tmp_path):
    """A SIGKILLed run daemon's parent is init, which in a container may never reap it: its
    state.json says running for good, and its pid stays a zombie. That run is over."""
    write_recipe(tmp_path, GOOD)
    zombie = subprocess.Popen(["true"])
    try:
        wait_for(lambda: Path(f"/proc/{zombie.pid}/stat").read_text().split(") ")[1][0] == "Z")
        died = _fake_run(tmp_path / ".orch" / "runs", "20200101-000000-0001",
                         {"status": "running", "pid": zombie.pid})  # fmt: skip
        result = run_cli("clean", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"removed .orch/runs/{died.name}" in result.stdout
        assert not died.exists()
    finally:
        zombie.wait()


def test_clean_keeps_a_live_run(tmp_path):
    recipe = write_recipe(
        tmp_path, "steps:\n  - {name: long, type: shell, run: 'touch started; exec sleep 100'}\n"
    )
    finished = _fake_run(tmp_path / ".orch" / "runs", "20200101-000000-0001")
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "started").exists(), message="the step to start")
        live = wait_for(
            lambda: [
                d
                for d in (tmp_path / ".orch" / "runs").iterdir()
                if read_state(d).get("status") == "running"
            ],
            message="the live run's state.json",
        )[0]
        result = run_cli("clean", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"kept .orch/runs/{live.name}: still running (pid {proc.pid})" in result.stdout
        assert f"removed .orch/runs/{finished.name}" in result.stdout
        assert (live / "state.json").exists() and not finished.exists()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    finally:
        kill_tree(proc)


def test_clean_keeps_a_finished_run_whose_daemon_still_serves(tmp_path, daemons):
    """A --detach run whose steps are all over says so in its state.json, yet its daemon
    serves on until closed (attach and ctl reach it): clean, dry or not, keeps all of it and
    says how to end it; once closed, the run goes."""
    recipe = write_recipe(tmp_path, "steps:\n  - {name: quick, type: shell, run: 'true'}\n")
    daemon = start_detached(recipe, cwd=tmp_path)
    daemons.append(daemon)
    wait_for(lambda: read_state(daemon.run_dir)["status"] == "succeeded", 30, "the run's end")
    before = sorted(p.relative_to(daemon.run_dir) for p in daemon.run_dir.rglob("*"))
    kept = f"kept .orch/runs/{daemon.run_id}: its daemon is live (orch-tui ctl {daemon.run_id} close ends it)"
    for args in (["--dry-run"], []):
        result = run_cli("clean", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert kept in result.stdout.splitlines()
        assert "remove" not in result.stdout
    assert sorted(p.relative_to(daemon.run_dir) for p in daemon.run_dir.rglob("*")) == before
    assert run_cli("ctl", daemon.run_id, "status", cwd=tmp_path).returncode == 0
    assert run_cli("ctl", daemon.run_id, "close", cwd=tmp_path).returncode == 0
    assert_gone([daemon.pid], 30)
    result = run_cli("clean", cwd=tmp_path)
    assert f"removed .orch/runs/{daemon.run_id}" in result.stdout
    assert not daemon.run_dir.exists()


def test_clean_keeps_a_run_just_started(tmp_path):
    """``orch-tui R --detach``'s daemon makes the run's folder and binds its socket before the
    run's first state.json: until then clean says the run has just started and keeps it. A
    socket nobody listens on (a daemon that died) does not make a folder a run."""
    write_recipe(tmp_path, GOOD)
    with (
        RunDir.create(None, tmp_path, "20260101-000000-0001") as run_dir,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as daemon,
    ):
        daemon.bind(run_dir.socket_address())
        daemon.listen(8)
        for args in (["--dry-run"], []):
            result = run_cli("clean", *args, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            assert (
                f"kept .orch/runs/{run_dir.path.name}: just started "
                "(its daemon is live, no state.json yet)" in result.stdout
            )
            assert "no state.json)" not in result.stdout
            assert run_dir.socket.exists()
        daemon.close()
        result = run_cli("clean", "--dry-run", cwd=tmp_path)
        assert (
            f"left alone .orch/runs/{run_dir.path.name}: not an orch-tui run (no state.json)"
            in result.stdout
        )


def _first_line_then_close(*args: str, cwd: Path) -> tuple[str, int, str]:
    """``orch-tui ARGS | head -1``: read a line, close the pipe, let it finish."""
    proc = start_cli(*args, cwd=cwd)
    try:
        first = proc.stdout.readline().decode()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        return first, proc.wait(timeout=30), err
    finally:
        kill_tree(proc)


def test_a_closed_stdout_ends_quietly(tmp_path):
    write_recipe(tmp_path, GOOD)
    runs = tmp_path / ".orch" / "runs"
    for i in range(3000):  # far more than a pipe holds
        _fake_run(runs, f"20260101-000000-{i:04x}")
    first, code, err = _first_line_then_close("clean", "--dry-run", cwd=tmp_path)
    assert first.startswith("would remove .orch/runs/20260101-000000-0000 ("), first
    assert (code, err) == (0, "")
    assert len(list(runs.iterdir())) == 3000

    steps = "".join(f"  - {{name: s{i}, type: shell, run: 'true'}}\n" for i in range(3000))
    big = write_recipe(tmp_path, "steps:\n" + steps, "big.yaml")
    first, code, err = _first_line_then_close("graph", str(big), cwd=tmp_path)
    assert first.startswith("digraph")
    assert (code, err) == (0, "")


# -- which words are the recipe, which are step names, which are commands ------------------------
STEPS3 = """
steps:
  - {name: load, type: shell, run: "echo loaded"}
  - {name: check, type: shell, run: "echo checked"}
  - {name: report, type: shell, run: "echo reported"}
"""


def _ran(cwd: Path) -> dict[str, str]:
    runs = sorted((cwd / ".orch" / "runs").iterdir())
    return {name: info["status"] for name, info in read_state(runs[-1])["steps"].items()}


@pytest.mark.parametrize(
    "args",
    [
        ["--only", "load", "check", "r1.yaml"],
        ["--only", "load,check", "r1.yaml"],
        ["--only", "load", "--only", "check", "r1.yaml"],
        ["r1.yaml", "--only", "load", "check"],
        ["--skip", "report", "r1.yaml"],
    ],
    ids=" ".join,
)
def test_only_and_skip_leave_the_recipe_alone(tmp_path, args):
    write_recipe(tmp_path, STEPS3, "r1.yaml")
    result = run_cli(*args, "--no-ui", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _ran(tmp_path) == {"load": "succeeded", "check": "succeeded", "report": "skipped"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "check", "--skip", "check"], "--only check and --skip check: choose one"),
        (
            ["--only", "load", "--resume-from", "check"],
            "--only load: 'load' comes before --resume-from check, so it would not run",
        ),
    ],
    ids=["and-skip", "before-resume-from"],
)
def test_only_a_step_another_option_leaves_out_is_refused(tmp_path, args, message):
    """A CI job asking for a step and leaving it out in the same breath ran nothing, skipped
    it, and passed (exit 0, "run succeeded"): a green job that did nothing."""
    write_recipe(tmp_path, STEPS3, "r1.yaml")
    assert run_cli("r1.yaml", "--no-ui", cwd=tmp_path).returncode == 0  # for --resume-from
    runs = set((tmp_path / ".orch" / "runs").iterdir())
    result = run_cli("r1.yaml", "--no-ui", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert result.stderr == f"orch-tui: {message}\n"
    assert set((tmp_path / ".orch" / "runs").iterdir()) == runs, "nothing ran"


def test_a_step_name_with_a_comma_is_one_step(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - {name: "a,b", type: shell, depends_on: [], run: "true"}
          - {name: a, type: shell, depends_on: [], run: "true"}
        """,
    )
    result = run_cli(recipe, "--no-ui", "--only", "a,b", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _ran(tmp_path) == {"a,b": "succeeded", "a": "skipped"}
    unknown = run_cli(recipe, "--no-ui", "--only", "a,c", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "--only: no step named 'c'" in unknown.stderr


def test_a_subcommand_name_is_never_a_recipe(tmp_path):
    (tmp_path / "validate").write_text("steps:\n  - {name: a, type: shell, run: 'touch ran'}\n")
    recipe = write_recipe(tmp_path, GOOD)

    result = run_cli("--no-ui", "validate", cwd=tmp_path)
    assert result.returncode == 2
    assert "'validate' is a command" in result.stderr
    assert "./validate or --recipe validate" in result.stderr
    assert not (tmp_path / "ran").exists()

    after_debug = run_cli("--debug", "validate", recipe, cwd=tmp_path)
    assert after_debug.returncode == 0, after_debug.stderr
    assert "OK" in after_debug.stdout

    for spelling in (["./validate"], ["--recipe", "validate"]):
        (tmp_path / "ran").unlink(missing_ok=True)
        assert run_cli(*spelling, "--no-ui", cwd=tmp_path).returncode == 0
        assert (tmp_path / "ran").exists()


# -- usage errors name what is wrong ----------------------------------------------------------------
def test_run_dir_that_is_a_file_is_a_usage_error(tmp_path):
    recipe = write_recipe(tmp_path, GOOD)
    (tmp_path / "afile").write_text("x\n")
    for run_dir, message in (
        ("afile", "--run-dir afile: is a file, expected a folder"),
        ("afile/run", f"--run-dir afile/run: {tmp_path / 'afile'} is a file, not a folder"),
    ):
        result = run_cli(recipe, "--no-ui", "--run-dir", run_dir, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == f"orch-tui: {message}"
    assert not (tmp_path / ".orch").exists()


def test_a_run_folder_that_cannot_be_made_is_a_usage_error(tmp_path):
    recipe = write_recipe(tmp_path, "steps:\n  - {name: a, type: shell, run: 'touch ran'}\n")
    result = run_cli(recipe, "--no-ui", "--run-dir", "/proc/orch-tui-test/run", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        "orch-tui: cannot make the run's folder /proc/orch-tui-test: No such file or directory\n"
    )
    assert not (tmp_path / "ran").exists()


def test_a_folder_given_as_the_recipe(tmp_path):
    write_recipe(tmp_path, GOOD)
    (tmp_path / "recipes").mkdir()
    result = run_cli("recipes/", "--no-ui", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "orch-tui: recipe recipes/: is a directory, expected a YAML file"
    )
    dot = run_cli("validate", ".", cwd=tmp_path)
    assert dot.returncode == 2
    assert (
        dot.stderr.strip()
        == f"orch-tui: recipe .: is a directory ({tmp_path}), expected a YAML file"
    )


# -- cmd and cwd are checked before anything runs ----------------------------------------------------
def test_validate_a_missing_cmd_or_cwd(tmp_path):
    for text, expected in (
        (
            "steps:\n  - {name: x, type: shell, cmd: ./does_not_exist.sh}\n",
            f"recipe.yaml:2:33: step 'x': cmd: ./does_not_exist.sh not found "
            f"(relative to cwd {tmp_path})",
        ),
        (
            "steps:\n  - {name: x, type: shell, cwd: /nonexistent/dir, cmd: ls}\n",
            "recipe.yaml:2:33: step 'x': cwd: /nonexistent/dir does not exist",
        ),
    ):
        recipe = write_recipe(tmp_path, text)
        for args in (["validate", recipe], [recipe, "--no-ui"]):
            result = run_cli(*args, cwd=tmp_path)
            assert result.returncode == 2, result.stdout
            assert result.stderr.splitlines()[-1] == expected
            assert not (tmp_path / ".orch").exists()


def test_a_cmd_an_earlier_step_builds_is_a_warning(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - name: make
            type: shell
            run: mkdir -p build && printf '#!/bin/sh\\necho built app\\n' > build/app && chmod +x build/app
          - {name: app, type: shell, cmd: build/app}
        """,
    )
    warning = (
        f"orch-tui: warning: recipe.yaml:5:35: step 'app': cmd: build/app not found "
        f"(relative to cwd {tmp_path}): fine only if a step before it makes it"
    )
    checked = run_cli("validate", recipe, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.strip() == warning
    assert checked.stdout.strip().endswith("OK, 2 steps (2 shell), 1 warning")
    ran = run_cli(recipe, "--no-ui", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert warning in ran.stderr
    assert "app | built app" in ran.stdout


NO_EXECUTOR = "where: cluster, but no executor (executor: in the recipe or --executor)"


def test_where_cluster_without_an_executor_is_a_warning_in_validate_and_the_run(tmp_path):
    """A user who wrote ``where: cluster`` expects the cluster: validate and the run say the
    steps run locally, without failing (the recipe is often run with --executor too)."""
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - {name: a, type: shell, cmd: "true", where: cluster}
          - {name: b, type: shell, run: "true", where: local}
          - {name: c, type: shell, run: "true", where: cluster}
        """,
    )
    checked = run_cli("validate", recipe, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.splitlines() == [
        f"orch-tui: warning: recipe.yaml:{line}: step '{name}': {NO_EXECUTOR}: it runs locally"
        for line, name in ((2, "a"), (4, "c"))
    ]
    assert checked.stdout.strip().endswith("OK, 3 steps (3 shell), 2 warnings")
    ran = run_cli(recipe, "--no-ui", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    note = f"steps 'a' and 'c': {NO_EXECUTOR}: they run locally"
    assert ran.stdout.count(note) == 1 and NO_EXECUTOR not in ran.stderr
    events = (only_run_dir(tmp_path) / "events.jsonl").read_text().splitlines()
    messages = [e for e in map(json.loads, events) if e["type"] == "message"]
    assert [(m["level"], m["text"]) for m in messages] == [("warning", note)]


def test_where_cluster_with_an_executor_in_the_recipe_is_not_warned_of(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        executor: dask-local://1
        steps:
          - {name: a, type: shell, cmd: "true", where: cluster}
        """,
    )
    checked = run_cli("validate", recipe, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""


def test_a_cwd_gone_at_run_time_is_named_as_text(tmp_path):
    (tmp_path / "gone").mkdir()
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - {name: remove, type: shell, run: rmdir gone}
          - {name: inside, type: shell, cwd: gone, cmd: pwd}
        """,
    )
    result = run_cli(recipe, "--no-ui", cwd=tmp_path)
    assert result.returncode == 1
    state = read_state(only_run_dir(tmp_path))
    expected = f"cannot start: cwd {tmp_path / 'gone'}: No such file or directory"
    assert state["steps"]["inside"]["reason"] == expected
    log = (only_run_dir(tmp_path) / "logs" / "inside.log").read_text()
    everything = result.stdout + result.stderr + log + json.dumps(state)
    assert "PosixPath" not in everything and expected in result.stdout


# -- the run's files ---------------------------------------------------------------------------------
def test_log_names_keep_the_step_names(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - {name: 数据处理, type: shell, run: "echo 一"}
          - {name: データ処理, type: shell, run: "echo 二"}
          - {name: .hidden, type: shell, run: "echo three"}
          - {name: hidden, type: shell, run: "echo four"}
        """,
    )
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 0
    run_dir = only_run_dir(tmp_path)
    logs = {p.name: p.read_text() for p in (run_dir / "logs").iterdir()}
    assert logs == {
        "数据处理.log": "一\n",
        "データ処理.log": "二\n",
        "hidden.log": "three\n",
        "hidden-2.log": "four\n",
    }
    assert read_state(run_dir)["steps"]["hidden"]["log"] == "logs/hidden-2.log"


def test_debug_reaches_the_steps(tmp_path):
    recipe = write_recipe(
        tmp_path, "steps:\n  - {name: show, type: shell, run: 'echo debug=${ORCH_DEBUG:-off}'}\n"
    )
    quiet = run_cli(recipe, "--no-ui", cwd=tmp_path, env={"ORCH_DEBUG": ""})
    assert "show | debug=off" in quiet.stdout.splitlines()
    loud = run_cli(recipe, "--no-ui", "--debug", cwd=tmp_path, env={"ORCH_DEBUG": ""})
    assert "show | debug=1" in loud.stdout.splitlines()


@pytest.mark.parametrize("args", [["ctl", "status"], ["attach"]], ids=" ".join)
def test_usage_errors_of_the_client_commands_under_python_m(tmp_path, args):
    """``python -m tui.cli`` (the module run as __main__) says a client command's usage error
    and exits 2, as the ``orch-tui`` script does: tui.ctl and tui.attach raise the UsageError
    of the tui.cli they import, which was a second copy of the module that main() did not
    catch ("internal error", exit 1)."""
    result = subprocess.run(
        [PY, "-m", "tui.cli", *args],
        cwd=tmp_path,  # no runs here, and no terminal: both are usage errors
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_cli_env(None),
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("orch-tui: "), result.stderr
    assert "internal error" not in result.stderr


CYCLE = """
steps:
  - {name: a, type: shell, run: "echo hi", depends_on: [a]}
"""


@pytest.mark.parametrize(("recipe", "code"), [(GOOD, 0), (CYCLE, 2)], ids=["ok", "recipe-error"])
def test_a_closed_stdout_is_as_dev_null(tmp_path, recipe, code):
    """``orch-tui R --no-ui >&-``: the run's own exit code and no traceback. Every write to
    the closed stream failed: tracebacks from the event consumers, "internal error", exit 1."""
    path = write_recipe(tmp_path, recipe)
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *ORCH, str(path), "--no-ui"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_cli_env(None),
        timeout=30,
    )
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def _to_dev_full(*args: str, cwd: Path) -> tuple[int, str]:
    """``orch-tui ARGS > /dev/full`` (stdout a full disk, as a CI log can be): exit code and
    stderr."""
    with open("/dev/full", "wb") as full:
        proc = start_cli(*args, cwd=cwd, stdout=full)
        _, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode()


def test_stdout_on_a_full_disk_is_said_in_one_line(tmp_path):
    """A run's output to a full disk was lost without a word (exit 0, stderr empty); a listing
    (`runs`, `validate`, `graph`) said "internal error: OSError: [Errno 28] ...", as if a bug.
    Now one line says what happened; a run keeps its exit code and its files."""
    path = write_recipe(tmp_path, GOOD)
    code, err = _to_dev_full(str(path), "--no-ui", cwd=tmp_path)
    run_dir = only_run_dir(tmp_path)
    assert (code, err) == (
        0,
        "orch-tui: cannot write to stdout (No space left on device): the output stops short "
        f"there (the run's files are complete in {run_dir})\n",
    )
    assert read_state(run_dir)["status"] == "succeeded"
    for args in (
        ["runs"],
        ["validate", str(path)],
        ["graph", str(path)],
        ["ctl", run_dir.name, "status"],
    ):
        code, err = _to_dev_full(*args, cwd=tmp_path)
        assert (code, err) == (1, "orch-tui: cannot write to stdout: No space left on device\n"), (
            args
        )


def _reader_run(tmp_path, *args: str) -> subprocess.Popen[bytes]:
    """``orch-tui R --no-ui ARGS`` of a python step that returns the line it reads from stdin
    (into ctx["got"]), with a stdin that stays open until the test closes it."""
    module = write_module(
        tmp_path,
        """
        import sys

        def run(ctx):
            return sys.stdin.readline()
        """,
    )
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: reader, type: python, module: {module}, output: got}}
        """,
    )
    return subprocess.Popen(
        [*ORCH, str(recipe), "--no-ui", *args],
        cwd=tmp_path,
        stdin=subprocess.PIPE,  # open, never written unless the test does: read, it waits
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_cli_env(None),
        start_new_session=True,
    )


def _got(proc: subprocess.Popen[bytes], tmp_path) -> str:
    """The run's end (exit 0), and what its python step read (ctx["got"])."""
    wait_for(lambda: proc.poll() is not None, 20, "the run to end")
    assert proc.returncode == 0, proc.stderr.read().decode()
    return json.loads((only_run_dir(tmp_path) / "ctx.json").read_text())["got"]


def test_a_python_step_reads_an_empty_stdin_headless(tmp_path):
    """``--no-ui`` with a stdin that stays open (a terminal, an ssh channel, a CI pipe): a
    python step that reads it gets end of file at once, as in the app and as every shell step
    does (/dev/null); it waited for the keyboard, the run hung."""
    proc = _reader_run(tmp_path)
    try:
        assert _got(proc, tmp_path) == ""
    finally:
        kill_tree(proc)
        proc.stdin.close()


def test_with_debug_a_python_step_reads_the_runs_stdin(tmp_path):
    """``--debug``: the run keeps its stdin, so a ``breakpoint()`` in a python step can be
    answered from the terminal; here a line written to it reaches the step."""
    proc = _reader_run(tmp_path, "--debug")
    try:
        proc.stdin.write(b"typed\n")
        proc.stdin.flush()
        assert _got(proc, tmp_path) == "typed\n"
    finally:
        kill_tree(proc)
        proc.stdin.close()


@pytest.mark.parametrize("value", ["inf", "1e400"])
def test_an_endless_stdout_timeout_waits_for_stdout_without_an_internal_error(tmp_path, value):
    """``ORCH_STDOUT_TIMEOUT=inf`` (never give up on stdout) ended a run that succeeded with
    ``internal error: OverflowError`` and exit 1: a wait of inf seconds is more than the
    thread library takes."""
    recipe = write_recipe(tmp_path, GOOD)
    result = run_cli(recipe, "--no-ui", cwd=tmp_path, env={"ORCH_STDOUT_TIMEOUT": value})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
