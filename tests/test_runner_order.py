"""Steps that do not run keep the order of the recipe (issue 10).

A step left out by ``--skip`` or ``--only``, or skipped from the TUI while its dependencies are
still to come, is a pass-through: its dependents go on once *its own* dependencies are done, not
at once. Each step of these recipes checks, when it runs, that the files the steps before it
write are there, so running out of order fails the step (and the run) rather than a timing check.
"""

from __future__ import annotations

import pytest

from tests.conftest import make_runner, only_run_dir, read_state, run_cli, wait_for, write_recipe

# Every step needs the marker of the step before it in the file (absent depends_on: linear).
LINEAR = """
steps:
  - {name: a, type: shell, run: "sleep 0.5; touch a.done"}
  - {name: b, type: shell, run: "test -f a.done && touch b.done"}
  - {name: c, type: shell, run: "test -f a.done && touch c.done"}
  - {name: d, type: shell, run: "test -f a.done && touch d.done"}
  - {name: e, type: shell, run: "test -f a.done && touch e.done"}
"""


def _statuses(tmp_path) -> dict[str, str]:
    steps = read_state(only_run_dir(tmp_path))["steps"]
    return {name: step["status"] for name, step in steps.items()}


@pytest.mark.parametrize(
    "options",
    [["--skip", "b"], ["--skip", "b", "c", "d"], ["--only", "a", "e"]],
    ids=["skip-one", "skip-a-chain", "only-leaves-a-gap"],
)
def test_steps_left_out_keep_the_order_of_the_recipe(tmp_path, options):
    recipe = write_recipe(tmp_path, LINEAR)
    result = run_cli(recipe, "--no-ui", "--jobs", "4", *options, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    statuses = _statuses(tmp_path)
    left_out = {"b"} if options == ["--skip", "b"] else {"b", "c", "d"}
    assert {n for n, s in statuses.items() if s == "skipped"} == left_out
    assert {n for n, s in statuses.items() if s == "succeeded"} == set("abcde") - left_out
    steps = read_state(only_run_dir(tmp_path))["steps"]
    assert steps["e"]["started"] >= steps["a"]["ended"]


def test_skipped_step_whose_dependency_fails_blocks_its_dependents(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - {name: a, type: shell, run: "exit 3"}
          - {name: b, type: shell, run: "touch b.ran"}
          - {name: c, type: shell, run: "touch c.ran"}
          - {name: d, type: shell, run: "touch d.ran"}
        """,
    )
    result = run_cli(recipe, "--no-ui", "--skip", "b", "c", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    steps = read_state(only_run_dir(tmp_path))["steps"]
    assert steps["a"]["status"] == "failed"
    assert steps["b"]["status"] == steps["c"]["status"] == "skipped"
    assert steps["d"]["status"] == "blocked"
    assert steps["d"]["blocked_by"] == ["a"], "blocked_by names the root failure"
    assert not list(tmp_path.glob("*.ran"))
    assert "blocked by a: d" in result.stdout


def test_resume_from_still_starts_at_once(tmp_path):
    recipe = write_recipe(tmp_path, LINEAR.replace("sleep 0.5; ", ""))
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 0
    for marker in tmp_path.glob("*.done"):
        if marker.name != "a.done":
            marker.unlink()
    result = run_cli(recipe, "--no-ui", "--resume-from", "c", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.glob("*.done")) == [
        "a.done",
        "c.done",
        "d.done",
        "e.done",
    ]


# ------------------------------------------------------------------------------ from the TUI
GATED = """
steps:
  - {name: a, type: shell, run: "while [ ! -f go ]; do sleep 0.05; done; touch a.done"}
  - {name: b, type: shell, run: "touch b.ran"}
  - {name: c, type: shell, run: "test -f a.done && touch c.done"}
"""


def _status(runner, name: str) -> str:
    return runner.state()["steps"][name]["status"]


def test_skipping_a_pending_step_lets_its_dependents_wait_for_its_dependencies(tmp_path, runners):
    runner = make_runner(tmp_path, GATED, interactive=True, jobs=4)
    runners.append(runner)
    runner.start()
    wait_for(lambda: _status(runner, "a") == "running", message="a running")
    runner.skip("b")
    wait_for(lambda: _status(runner, "b") == "skipped", message="b skipped")
    assert _status(runner, "c") == "pending", "c waits for a, which b depends on"
    (tmp_path / "go").touch()
    wait_for(lambda: _status(runner, "c") == "succeeded", message="c ran after a")
    assert not (tmp_path / "b.ran").exists()
    runner.close()
    assert runner.wait(10) == 0


def test_skip_behind_a_failure_waits_and_goes_on_once_the_failure_is_skipped(tmp_path, runners):
    runner = make_runner(
        tmp_path,
        """
        steps:
          - {name: a, type: shell, run: "while [ ! -f go ]; do sleep 0.05; done; exit 3"}
          - {name: b, type: shell, run: "touch b.ran"}
          - {name: c, type: shell, run: "touch c.ran"}
          - {name: d, type: shell, run: "touch d.ran"}
        """,
        interactive=True,
    )
    runners.append(runner)
    runner.start()
    wait_for(lambda: _status(runner, "a") == "running", message="a running")
    runner.skip("b")  # pending behind a: a pass-through
    wait_for(lambda: _status(runner, "b") == "skipped")
    (tmp_path / "go").touch()
    wait_for(lambda: _status(runner, "d") == "blocked", message="d blocked by a, through b")
    steps = runner.state()["steps"]
    assert steps["a"]["status"] == "failed"
    assert steps["c"]["status"] == "blocked"
    assert steps["c"]["blocked_by"] == steps["d"]["blocked_by"] == ["a"]

    runner.skip("c")  # blocked: skipping it is asking for its dependents to go on
    wait_for(lambda: _status(runner, "d") == "succeeded", message="d ran once c was skipped")
    assert _status(runner, "a") == "failed"
    assert not (tmp_path / "b.ran").exists() and not (tmp_path / "c.ran").exists()
    runner.close()
    assert runner.wait(10) == 1


def test_retried_root_releases_the_steps_behind_a_skipped_one(tmp_path, runners):
    runner = make_runner(
        tmp_path,
        """
        steps:
          - {name: a, type: shell, run: "test -f fixed"}
          - {name: b, type: shell, run: "touch b.ran"}
          - {name: c, type: shell, run: "touch c.ran"}
        """,
        interactive=True,
        skip=["b"],
    )
    runners.append(runner)
    runner.start()
    wait_for(lambda: _status(runner, "c") == "blocked", message="c blocked by a")
    assert runner.state()["steps"]["c"]["blocked_by"] == ["a"]
    (tmp_path / "fixed").touch()
    runner.retry("a")
    wait_for(lambda: _status(runner, "c") == "succeeded", message="c ran after a succeeded")
    assert not (tmp_path / "b.ran").exists()
    runner.close()
    assert runner.wait(10) == 0


def test_skipping_the_failed_root_lets_the_steps_behind_a_skipped_one_go_on(tmp_path, runners):
    runner = make_runner(
        tmp_path,
        """
        steps:
          - {name: a, type: shell, run: "exit 3"}
          - {name: b, type: shell, run: "touch b.ran"}
          - {name: c, type: shell, run: "touch c.ran"}
          - {name: d, type: shell, run: "touch d.ran"}
        """,
        interactive=True,
        skip=["b", "c"],
    )
    runners.append(runner)
    runner.start()
    wait_for(lambda: _status(runner, "d") == "blocked", message="d blocked by a")
    assert runner.state()["steps"]["d"]["blocked_by"] == ["a"]
    runner.skip("a")
    wait_for(lambda: _status(runner, "d") == "succeeded", message="d ran once a was skipped")
    assert sorted(p.name for p in tmp_path.glob("*.ran")) == ["d.ran"]
    runner.close()
    assert runner.wait(10) == 0
