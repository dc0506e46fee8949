"""A retry runs its python step's module as edited since it failed (core.stepmodules), and
leaves the steps still running from the module as it was alone. Real runs, in-process."""

from __future__ import annotations

import json

from tests.conftest import run_recipe, write_module

#: ``slow`` keeps a global of the module and returns it once ``flaky``, of the same module, has
#: failed, edited the module's file (as the analyst fixing it would) and been retried
SHARED = """
import os, time
SEEN = {}

def slow(ctx):
    SEEN["slow"] = "started"
    while not os.path.exists("retried"):
        time.sleep(0.02)
    return dict(SEEN)

def flaky(ctx):
    if not os.path.exists("edited"):
        open("edited", "w").close()
        with open(__file__, "a") as f:
            f.write("\\n# fixed\\n")
        raise RuntimeError("bug")
    open("retried", "w").close()
    return "ok"
"""


def test_a_retry_of_an_edited_module_leaves_its_running_steps_their_globals(tmp_path, monkeypatch):
    """An analyst's pipeline in one module: one step runs while another of that module fails,
    is fixed and retried. The retry ran the file again in the module's own namespace
    (``importlib.reload``): the running step's globals were reset under it, what it had put
    in them gone (its output ``{}``). Now the edited file is a new module object."""
    monkeypatch.chdir(tmp_path)  # the steps' files are relative
    module = write_module(tmp_path, SHARED)
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: slow, type: python, module: {module}, function: slow, output: slow_saw}}
          - {{name: flaky, type: python, module: {module}, function: flaky, retries: 1,
             retry_delay: 0.1, depends_on: []}}
        """,
    )
    assert result.code == 0, result.steps
    assert result.steps["flaky"]["attempts"] == 2  # it ran the edited file
    ctx = json.loads((result.run_dir / "ctx.json").read_text())
    assert ctx["slow_saw"] == {"slow": "started"}, ctx
