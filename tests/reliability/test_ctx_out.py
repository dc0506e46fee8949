"""Hostile ctx data: what a step hands the ctx (ORCH_CTX_OUT, a python step's values) never
hangs a run, never stops the saving of its files, and never holds up other steps' output.

Once, an ORCH_CTX_OUT nested 100,000 deep left its finished step "running" until a second
signal; one nested 300 deep killed the thread that saves state.json and ctx.json, so the run
hung after every step had succeeded; a 5-million-row one froze every other step's output while
it was merged on the thread that copies them all.
"""

from __future__ import annotations

import json
import textwrap

from tests.conftest import (
    PY,
    kill_tree,
    make_runner,
    only_run_dir,
    read_events,
    read_json,
    read_state,
    run_recipe,
    start_cli,
    wait_for,
    write_module,
    write_recipe,
)


def _args(text_expr: str) -> str:
    """The ``args`` of a ``cmd: PY`` step writing the Python expression ``text_expr`` (the
    text) to ORCH_CTX_OUT."""
    return json.dumps(
        ["-c", f"import os; open(os.environ['ORCH_CTX_OUT'], 'w').write({text_expr})"]
    )


def _nested(depth: int) -> str:
    """An expression for ``{"deep": [[[...]]]}``, ``depth`` lists deep."""
    return f"'{{\"deep\": ' + '[' * {depth} + ']' * {depth} + '}}'"


def test_ctx_out_nested_100000_deep_fails_its_step_and_the_run_ends(tmp_path, faults):
    faults.tried("ORCH_CTX_OUT nested 100,000 deep")
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: deep, type: shell, cmd: {PY}, args: {_args(_nested(100_000))}}}
          - {{name: other, type: shell, depends_on: [], run: "echo other ran"}}
        """,
        timeout=30,
    )
    assert result.code == 1
    deep = result.steps["deep"]
    assert deep["status"] == "failed", deep
    assert deep["reason"] == "step 'deep': ORCH_CTX_OUT: nested deeper than 64 levels"
    assert result.steps["other"]["status"] == "succeeded"
    assert "deep" not in result.ctx
    faults.survived("ORCH_CTX_OUT nested 100,000 deep")


def test_ctx_out_nested_300_deep_fails_its_step_and_the_run_saves_and_ends(tmp_path, faults):
    """Deep enough to pass the JSON decoder, too deep for ctx.json: refused at the merge."""
    faults.tried("ORCH_CTX_OUT nested 300 deep")
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: deep, type: shell, cmd: {PY}, args: {_args(_nested(300))}}}
          - {{name: other, type: shell, depends_on: [], run: "echo other=1 > $ORCH_CTX_OUT"}}
        """,
    )
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        kill_tree(proc)
    text = out.decode()
    assert proc.returncode == 1, text + err.decode()
    assert "Traceback" not in text + err.decode()
    reason = "step 'deep': ORCH_CTX_OUT: ctx['deep']: the value is nested deeper than 64 levels"
    assert reason in text
    run_dir = only_run_dir(tmp_path)
    state = read_state(run_dir)
    assert state["status"] == "failed" and state["ended"]
    assert state["steps"]["deep"]["reason"] == reason
    assert read_json(run_dir / "ctx.json") == {"other": "1"}
    faults.survived("ORCH_CTX_OUT nested 300 deep")


def test_python_step_value_nested_too_deep_is_refused_naming_the_key(tmp_path, faults):
    module = write_module(
        tmp_path,
        """
        def put(ctx):
            value = []
            for _ in range(300):
                value = [value]
            ctx["deep"] = value
        """,
    )
    faults.tried("a python step setting a value nested 300 deep")
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: put, type: python, module: {module}, function: put}}
        """,
        timeout=30,
    )
    assert result.code == 1
    assert result.steps["put"]["reason"] == (
        "ContextValueError: ctx['deep']: the value is nested deeper than 64 levels"
    )
    assert result.ctx == {}
    faults.survived("a python step setting a value nested 300 deep")


SPOIL = """
def spoil(ctx):
    ctx["rows"] = [[1, 2]]
    ctx["rows"].append(object())  # in place: past the ctx's checks, ctx.json cannot hold it
    ctx["spoiled"] = True

def fix(ctx):
    ctx["rows"].pop()
    ctx["fixed"] = True
"""


def test_an_unsaveable_ctx_is_reported_once_and_the_saver_goes_on(tmp_path, runners, faults):
    module = write_module(tmp_path, SPOIL)
    runner = make_runner(
        tmp_path,
        f"""
        steps:
          - {{name: spoil, type: python, module: {module}, function: spoil}}
          - {{name: hold, type: shell, run: "until [ -f go ]; do sleep 0.02; done"}}
          - {{name: fix, type: python, module: {module}, function: fix}}
          - {{name: hold2, type: shell, run: "until [ -f go2 ]; do sleep 0.02; done"}}
        """,
    )
    runners.append(runner)
    messages: list[str] = []
    runner.subscribe(lambda e: messages.append(e.text) if e.kind == "message" else None)
    faults.tried("a ctx value changed in place into one ctx.json cannot hold")
    runner.start()
    run_dir = runner.run_dir
    wait_for(lambda: any("ctx.json" in m for m in messages), 10, "the save error reported")
    # saved without the spoiled key only: every other key is there for a resume
    wait_for(lambda: read_json(run_dir / "ctx.json").get("spoiled"), 10, "the other keys saved")
    assert "rows" not in read_json(run_dir / "ctx.json")
    (tmp_path / "go").touch()
    # the saver survived: the ctx, savable again, reaches ctx.json while the run goes on
    wait_for(lambda: read_json(run_dir / "ctx.json").get("fixed"), 10, "ctx.json saved again")
    wait_for(lambda: read_state(run_dir)["steps"]["hold2"]["status"] == "running", 10, "state.json")
    (tmp_path / "go2").touch()
    assert runner.wait(20) == 0
    (warning,) = [m for m in messages if "saved without" in m]
    assert warning in [e.get("text") for e in read_events(run_dir)]
    assert warning == (
        f"{run_dir / 'ctx.json'} saved without ctx['rows']: Type is not JSON serializable: object"
    )
    assert read_json(run_dir / "ctx.json")["rows"] == [[1, 2]]
    faults.survived("a ctx value changed in place into one ctx.json cannot hold")


def test_a_ctx_unsaveable_to_the_end_still_ends_the_run_with_its_state(tmp_path, faults):
    module = write_module(tmp_path, SPOIL)
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: spoil, type: python, module: {module}, function: spoil}}
          - {{name: after, type: shell, run: "echo after"}}
        """,
    )
    faults.tried("a ctx ctx.json cannot hold at the end of the run")
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        kill_tree(proc)
    text, errors = out.decode(), err.decode()
    assert proc.returncode == 0, text + errors
    assert "Traceback" not in text + errors
    said = [line for line in (text + errors).splitlines() if "saved without" in line]
    assert len(said) == 1 and "ctx.json saved without ctx['rows']" in said[0], said
    assert read_json(only_run_dir(tmp_path) / "ctx.json") == {"spoiled": True}
    state = read_state(only_run_dir(tmp_path))
    assert state["status"] == "succeeded" and state["ended"]
    assert state["steps"]["after"]["status"] == "succeeded"
    faults.survived("a ctx ctx.json cannot hold at the end of the run")


HOOK = """
import pathlib, time

HERE = pathlib.Path(__file__).parent  # the workspace (a python step runs in orch-tui's cwd)

def hook(ctx):
    '''Hold the merge of 'merged' (which holds the ctx's lock) until the test says so.'''
    def on_write(key):
        if key == "merged":
            (HERE / "merging").touch()
            deadline = time.monotonic() + 60
            while not (HERE / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
    ctx.add_listener(on_write)
"""


def test_a_slow_ctx_out_merge_does_not_hold_up_other_steps_output(tmp_path, runners, faults):
    module = write_module(tmp_path, HOOK)
    runner = make_runner(
        tmp_path,
        f"""
        steps:
          - {{name: hook, type: python, module: {module}, function: hook}}
          - {{name: writer, type: shell, depends_on: [hook],
             run: "echo merged=1 > $ORCH_CTX_OUT"}}
          - name: talker
            type: shell
            depends_on: [hook]
            run: |
              until [ -f merging ]; do sleep 0.01; done
              echo "heard while the merge was going on"
        """,
    )
    runners.append(runner)
    faults.tried("a slow ORCH_CTX_OUT merge beside another step's output")
    runner.start()
    try:
        talker_log = runner.run_dir / "logs" / "talker.log"
        wait_for(
            lambda: b"heard while the merge" in talker_log.read_bytes(),
            10,
            "the other step's output copied while the merge is held",
        )
    finally:
        (tmp_path / "release").touch()
    assert runner.wait(20) == 0
    assert read_json(runner.run_dir / "ctx.json")["merged"] == "1"
    faults.survived("a slow ORCH_CTX_OUT merge beside another step's output")


def test_ctx_out_over_the_size_limit_fails_the_step_clearly(tmp_path, faults):
    write = textwrap.dedent(
        """
        import os
        with open(os.environ["ORCH_CTX_OUT"], "w") as f:
            f.write('{"rows": "' + "x" * (65 * 2**20) + '"}')
        """
    )
    (tmp_path / "big.py").write_text(write)
    faults.tried("a 65 MiB ORCH_CTX_OUT")
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: big, type: shell, cmd: {PY}, args: [big.py]}}
        """,
        timeout=60,
    )
    assert result.code == 1
    assert result.steps["big"]["reason"] == (
        "step 'big': ORCH_CTX_OUT: 65.0 MiB, over the limit of 64 MiB "
        "(write large data to a file and put its path in the ctx)"
    )
    assert "rows" not in result.ctx
    for path in (result.run_dir / "ctx_out").iterdir():
        path.unlink()  # 65 MB: not worth keeping in pytest's temporary folders
    faults.survived("a 65 MiB ORCH_CTX_OUT")
