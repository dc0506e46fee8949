"""scriptlets/python/steps/ctx_init.py: the API (keeps existing values) and the CLI."""

from __future__ import annotations

import json
import subprocess

import pytest

from core.context import Context
from scriptlets.python.steps import ctx_init
from tests.conftest import PY, ROOT, run_recipe

SCRIPT = ROOT / "scriptlets" / "python" / "steps" / "ctx_init.py"


@pytest.mark.parametrize("make_ctx", [dict, Context], ids=["dict", "Context"])
def test_sets_missing_keys_to_empty_lists(make_ctx):
    ctx = make_ctx()
    assert ctx_init.run(ctx, ["foo", "bar"]) == ["foo", "bar"]
    assert ctx["foo"] == [] and ctx["bar"] == []
    assert ctx["foo"] is not ctx["bar"]


@pytest.mark.parametrize("make_ctx", [dict, Context], ids=["dict", "Context"])
def test_keeps_existing_values(make_ctx):
    """A resumed run starts with the restored ctx: initialising must not wipe it."""
    ctx = make_ctx()
    ctx["foo"] = [[1.0, 2.0]]
    ctx["count"] = 3
    assert ctx_init.run(ctx, ["foo", "count", "new"]) == ["new"]
    assert ctx["foo"] == [[1.0, 2.0]]
    assert ctx["count"] == 3
    assert ctx["new"] == []


def test_overwrite_resets():
    ctx = {"foo": [[1.0]]}
    assert ctx_init.run(ctx, ["foo"], overwrite=True) == ["foo"]
    assert ctx["foo"] == []


def test_a_single_key_as_a_string():
    ctx: dict = {}
    assert ctx_init.run(ctx, "foo") == ["foo"]
    assert ctx == {"foo": []}


@pytest.mark.parametrize("bad", ["", None, 3])
def test_bad_keys_are_rejected(bad):
    with pytest.raises(ValueError, match="non-empty strings"):
        ctx_init.run({}, [bad])


def test_cli_prints_the_initialised_ctx():
    result = subprocess.run(
        [PY, str(SCRIPT), "--keys", "foo", "bar"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '{"foo": [], "bar": []}'
    assert json.loads(result.stdout) == {"foo": [], "bar": []}


def test_cli_needs_keys():
    result = subprocess.run([PY, str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--keys" in result.stderr
    assert "Traceback" not in result.stderr


def test_as_a_recipe_step_keeps_the_recipe_ctx(tmp_path):
    done = run_recipe(
        tmp_path,
        """
        ctx:
          kept: [[1, 2]]
        steps:
          - name: init
            type: python
            module: scriptlets.python.steps.ctx_init
            params:
              keys: [kept, fresh]
            output: initialised
        """,
    )
    assert done.code == 0, done.steps
    assert done.ctx["kept"] == [[1, 2]]
    assert done.ctx["fresh"] == []
    assert done.ctx["initialised"] == ["fresh"]
