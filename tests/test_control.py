"""core.control: the one narrow way a front end reaches a run, in this process over a Runner.

Commands answer with a Reply (a refusal says why, it does not raise), the ctx is read a key at a
time (a long list as its last rows and its length), and the front ends import nothing else of
the run: not the runner, not the command line.
"""

from __future__ import annotations

import ast

import pytest

from core.control import CtxValue, LocalControl, Reply
from tests.conftest import ROOT, make_runner, wait_for, write_module

GATE = "while [ ! -f go ]; do sleep 0.02; done"


def test_commands_answer_and_refusals_say_why(tmp_path, runners):
    runner = make_runner(
        tmp_path,
        f"""
        steps:
          - {{name: gate, type: shell, run: '{GATE}'}}
          - {{name: after, type: shell, run: "true"}}
        """,
        interactive=True,
    )
    runners.append(runner)
    control = LocalControl(runner)
    runner.start()
    wait_for(lambda: control.snapshot().steps["gate"].status == "running")

    assert control.command("skip", "gate") == Reply(False, "cannot skip 'gate': it is running")
    assert control.command("retry", "nope") == Reply(False, "retry: no step named 'nope'")
    assert control.command("dance") == Reply(False, "unknown command 'dance'")
    assert control.command("skip", "after") == Reply(True, "skip: after")
    wait_for(lambda: control.snapshot().steps["after"].status == "skipped")
    (tmp_path / "go").touch()
    wait_for(lambda: control.snapshot().steps["gate"].status == "succeeded")
    assert control.command("close").ok
    assert control.wait(10) == 0
    assert control.snapshot().closing


def test_a_closing_run_takes_only_stop(tmp_path, runners):
    runner = make_runner(
        tmp_path,
        f"""
        steps:
          - {{name: gate, type: shell, run: '{GATE}', depends_on: []}}
          - {{name: failing, type: shell, run: exit 1, depends_on: []}}
        """,
        interactive=True,
    )
    runners.append(runner)
    control = LocalControl(runner)
    runner.start()
    wait_for(lambda: control.snapshot().steps["failing"].status == "failed")
    assert control.command("stop_run").ok
    wait_for(lambda: control.snapshot().closing)
    assert control.command("retry", "failing") == Reply(
        False,
        "cannot retry 'failing': the run is stopping",  # not "it is failed": why not
    )
    assert control.wait(10) == 130


def test_ctx_is_read_a_key_at_a_time(tmp_path, runners):
    module = write_module(
        tmp_path,
        """
        def fill(ctx):
            ctx["name"] = "orch"
            ctx.extend("rows", [[i, i * i] for i in range(500)])
        """,
    )
    runner = make_runner(
        tmp_path, f"steps: [{{name: fill, type: python, module: {module}, function: fill}}]"
    )
    runners.append(runner)
    control = LocalControl(runner)
    runner.start()
    assert control.wait(10) == 0

    keys = control.ctx_keys()
    assert set(keys) == {"name", "rows"} and keys["rows"] > keys["name"]
    assert control.ctx_value("name") == CtxValue(keys["name"], "orch")
    tail = control.ctx_value("rows", tail=3)
    assert tail == CtxValue(keys["rows"], [[497, 497**2], [498, 498**2], [499, 499**2]], 500)
    assert control.ctx_value("rows", tail=1000).length is None  # short enough: all of it
    assert len(control.ctx_value("rows").value) == 500
    with pytest.raises(KeyError):
        control.ctx_value("missing")


FRONT_ENDS = [
    "tui/app.py",
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tui" / "headless").glob("*.py")),
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tui").glob("*/*.py")),
]


@pytest.mark.parametrize("path", FRONT_ENDS)
def test_front_ends_use_nothing_of_the_run_but_its_control(path):
    """Not the runner (the app is given a RunControl: in issue 13 the run is another process),
    not the command line (which builds the run and hands the app its control)."""
    tree = ast.parse((ROOT / path).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not imported & {"core.runner", "tui.cli", "core.context"}, imported
