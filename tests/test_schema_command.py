"""``orch-tui schema`` (README, "A recipe"): a JSON Schema an editor can use, printed by the real
command, that every shipped recipe (the demo first) satisfies and a misspelt field breaks."""

from __future__ import annotations

import json

import jsonschema
import yaml

from core.recipe import STEP_FIELDS
from tests.conftest import ROOT, run_cli


def test_schema_command_prints_a_json_schema_the_shipped_recipes_satisfy(tmp_path):
    result = run_cli("schema", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)  # a valid JSON Schema (2020-12)
    steps = [schema["$defs"][f"{t}Step"] for t in ("Python", "Shell", "Session")]
    assert set().union(*(step["properties"] for step in steps)) == set(STEP_FIELDS)
    validator = jsonschema.Draft202012Validator(schema)

    recipes = sorted((ROOT / "recipes").glob("*.yaml"))
    assert ROOT / "recipes" / "demo_screen_dash_ctx.yaml" in recipes
    for path in recipes:
        doc = yaml.safe_load(path.read_text())
        errors = [e.message for e in validator.iter_errors(doc)]
        assert not errors, (path.name, errors)

    demo = yaml.safe_load((ROOT / "recipes" / "demo_screen_dash_ctx.yaml").read_text())
    demo["steps"][0]["dependson"] = []  # what an editor should flag
    assert not validator.is_valid(demo)
