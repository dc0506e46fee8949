"""The ``orch-tui`` command line, run as a real subprocess with stdout piped.

What a user or a CI script sees: exit codes, what goes to stdout and stderr, the files left
behind. Recipe errors must name ``file:line`` and never show a traceback.
"""

from __future__ import annotations

import re
import signal

import pytest

from core import __version__
from tests.conftest import (
    kill_tree,
    only_run_dir,
    read_state,
    run_cli,
    start_cli,
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


def test_validate_good_recipe(tmp_path):
    recipe = write_recipe(tmp_path, GOOD)
    result = run_cli("validate", recipe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert not (tmp_path / ".orch").exists(), "validate runs nothing"


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
    finally:
        kill_tree(proc)
