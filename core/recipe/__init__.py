"""Recipes: the YAML file, loaded safely and checked whole before anything runs.

Where things are:

* ``model``: the msgspec Structs (``Recipe``, the ``Step`` union of ``PythonStep``,
  ``ShellStep`` and ``SessionStep``, ``Readiness``), the one source of every field;
* ``kinds``: the types of field values, the words their problems use, and their checks;
* ``recipefile``: the file's bytes, its limits, ``Source``; ``source``: the YAML read safely
  into plain values with line and column;
* ``cache``: recipes that checked clean, kept compiled, so that a re-run skips the YAML;
* ``problems``: ``Problem``, ``RecipeError`` and the wording helpers ("did you mean");
* ``checks``: the validator, every problem at once; ``pycheck``: python steps' modules,
  functions and params; ``workspace``: where a recipe's modules and shell steps live;
* ``schema``: ``orch-tui schema``, from the model.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from core.recipe.checks import Draft, Validator, no_executor_note, no_executor_warnings
from core.recipe.kinds import (
    BACKENDS,
    HEALTH_KINDS,
    MAX_SECONDS,
    READY_KINDS,
    SESSION_ACTIONS,
    SESSION_NAME_PATTERN,
    SOCKET_NAME_PATTERN,
    STEP_TYPES,
    valid_step_name,
)
from core.recipe.model import (
    HEALTH_FIELDS,
    READY_FIELDS,
    RECIPE_FIELDS,
    STEP_FIELDS,
    HealthCheck,
    PythonStep,
    Readiness,
    Recipe,
    SessionStep,
    ShellStep,
    Step,
    StepBase,
)
from core.recipe.problems import Problem, RecipeError, describe, in_file_order
from core.recipe.pycheck import check_python_steps, put_workspace_on_path
from core.recipe.recipefile import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, locate, read_bytes
from core.recipe.schema import recipe_json_schema
from core.recipe.workspace import find_workspace, step_cwd, workspace_of, workspace_problem

__all__ = [
    "BACKENDS",
    "HEALTH_FIELDS",
    "HEALTH_KINDS",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "MAX_SECONDS",
    "READY_FIELDS",
    "READY_KINDS",
    "RECIPE_FIELDS",
    "SESSION_ACTIONS",
    "SESSION_NAME_PATTERN",
    "SOCKET_NAME_PATTERN",
    "STEP_FIELDS",
    "STEP_TYPES",
    "HealthCheck",
    "Problem",
    "PythonStep",
    "Readiness",
    "Recipe",
    "RecipeError",
    "SessionStep",
    "ShellStep",
    "Step",
    "StepBase",
    "find_workspace",
    "load_recipe",
    "no_executor_note",
    "no_executor_warnings",
    "put_workspace_on_path",
    "recipe_json_schema",
    "step_cwd",
    "valid_step_name",
    "workspace_of",
    "workspace_problem",
]


def load_recipe(path: str | Path, *, check_imports: bool = True) -> Recipe:
    """Read and check a recipe; every problem found is raised together in one RecipeError.

    Nothing else escapes: the command line turns a RecipeError into exit code 2 without a
    traceback, so an unexpected failure here is reported as a recipe problem too.
    """
    shown = str(path)
    try:
        with _no_gc():
            return _load(path, check_imports)
    except RecipeError:
        raise
    except Exception as exc:
        message = f"internal error while checking the recipe: {describe(exc)}"
        raise RecipeError([Problem(shown, None, None, None, message)]) from exc


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while a recipe is loaded. Its passes are triggered
    by the count of objects made, and each older-generation pass scans again every object the
    growing document holds: most of the time of loading 10,000 steps went there, for no
    garbage (the node tree and the values have no cycles; refcounting frees them)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load(path: str | Path, check_imports: bool) -> Recipe:
    from core.recipe.cache import RecipeCache

    absolute, shown = locate(path)
    data = read_bytes(absolute, shown)
    cache = RecipeCache.of(absolute, data)
    entry = cache.get() if cache is not None else None
    if entry is not None:
        check = Validator(entry.source(absolute, shown))
        check.warnings = entry.warnings_for(shown)
        workspace = _check_here(check, entry.drafts, entry.recipe.env, check_imports)
        _raise_problems(check)
        return msgspec.structs.replace(
            entry.recipe, workspace=workspace, warnings=tuple(in_file_order(check.warnings))
        )
    from core.recipe.source import parse  # PyYAML: only on a miss

    source = parse(absolute, shown, data)
    check = Validator(source)
    top, drafts = check.document(source.doc)
    check.graph(drafts)
    check.session_logs(drafts)
    found = list(check.warnings)  # from the bytes alone: kept with the entry
    workspace = _check_here(check, drafts, top.get("env", {}), check_imports)
    check.report_conversion()
    _raise_problems(check)
    recipe = Recipe(
        path=source.path,
        workspace=workspace,
        steps=tuple(d.build() for d in drafts if d is not None),
        warnings=tuple(in_file_order(check.warnings)),
        **top,
    )
    if cache is not None:
        cache.put(recipe, drafts, source, found)
    return recipe


def _check_here(
    check: Validator, drafts: list[Draft | None], env: dict[str, str], check_imports: bool
) -> Path:
    """The checks whose answer depends on this machine, not on the file (run on every load,
    cached or not): the workspace, python steps' modules, shell steps' cwd and cmd."""
    workspace = find_workspace(check.source.path)
    if check_imports:
        check_python_steps(check, drafts, workspace)
    check.paths(drafts, workspace, env)
    return workspace


def _raise_problems(check: Validator) -> None:
    if check.problems:
        raise RecipeError(in_file_order(check.problems))
