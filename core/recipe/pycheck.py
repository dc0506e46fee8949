"""Python steps: their module imports, has the function, and the params fit its signature.

Checking means importing the user's modules, from the recipe's workspace, so the workspace must
be one nobody else can write to (``workspace_problem``). The validator puts the workspace on
``sys.path`` only while it imports, and takes it off again: loading a recipe leaves the path as
it was. Running python steps is another matter: the runner calls ``put_workspace_on_path``
before it starts, and from then on the workspace stays first on the path for the process.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.recipe.problems import describe, show, suggest
from core.recipe.workspace import workspace_problem

if TYPE_CHECKING:
    from core.recipe.checks import Draft, Validator
    from core.recipe.model import Recipe

RUNNER_KWARGS = ("stop", "log")  # passed by the runner when the function's signature names them


def put_workspace_on_path(recipe: Recipe) -> None:
    """Make the recipe's python steps importable: its workspace first on ``sys.path``, ahead of
    installed packages (a workspace's own ``scriptlets`` must win over the one installed with
    orch-tui), for the rest of the process, as the steps may import more while they run. Only
    a folder of this user's gets there; a recipe with no python step changes nothing."""
    if not any(step.type == "python" for step in recipe.steps):
        return
    if workspace_problem(recipe.workspace) is None and str(recipe.workspace) not in sys.path:
        sys.path.insert(0, str(recipe.workspace))
        importlib.invalidate_caches()


@contextmanager
def _on_path(workspace: Path) -> Iterator[None]:
    """``workspace`` first on ``sys.path`` for the time of the block, then off again (only
    the entry put there: a module may change the path on import, for its own later use)."""
    entry = str(workspace)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    importlib.invalidate_caches()  # modules written a moment ago must be found
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def check_python_steps(check: Validator, drafts: list[Draft | None], workspace: Path) -> None:
    """Import each python step's module and check its function and params."""
    python = [d for d in drafts if d and d.step_type == "python" and "module" in d.values]
    if not python:
        return
    untrusted = workspace_problem(workspace)
    if untrusted is not None:
        first = python[0]
        message = (
            f"python steps are not imported from the workspace {workspace}: {untrusted}; "
            "keep the recipe in a folder of yours"
        )
        check.report(message, first.trail + ("module",), first.who)
        return
    # Many steps call the same function. By id, as a callable object need not be hashable;
    # the function is kept with its signature, so its id cannot be reused meanwhile.
    signatures: dict[int, tuple[Any, inspect.Signature | None]] = {}
    with _on_path(workspace):
        for d in python:
            _check_function(check, d, signatures)


def _check_function(
    check: Validator, d: Draft, signatures: dict[int, tuple[Any, inspect.Signature | None]]
) -> None:
    module = d.values["module"]
    at_module = d.trail + ("module",)
    try:
        mod = importlib.import_module(module)
    except (Exception, SystemExit) as exc:
        check.report(f"cannot import module '{module}': {describe(exc)}", at_module, d.who)
        return
    if "function" in d.data and "function" not in d.values:
        return  # already reported as a bad value
    name = d.values.get("function", "run")
    at_function = d.trail + ("function",) if "function" in d.data else at_module
    try:
        func = getattr(mod, name)
    except AttributeError:
        public = [n for n in dir(mod) if not n.startswith("_")]
        check.report(
            f"module '{module}' has no function '{name}'{suggest(name, public)}",
            at_function,
            d.who,
        )
        return
    except (Exception, SystemExit) as exc:
        check.report(f"cannot get '{module}.{name}': {describe(exc)}", at_function, d.who)
        return
    if not callable(func):
        check.report(
            f"'{module}.{name}' is not callable (it is a {type(func).__name__})",
            at_function,
            d.who,
        )
        return
    if "params" not in d.data or "params" in d.values:
        if id(func) not in signatures:
            signatures[id(func)] = (func, _signature(func))
        sig = signatures[id(func)][1]
        if sig is not None:
            _check_signature(check, d, f"{module}.{name}", sig)


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None  # builtins and C functions may have none: nothing to check against


def _check_signature(check: Validator, d: Draft, qualname: str, sig: inspect.Signature) -> None:
    """Check params the way the runner will call: ``func(ctx, **params)`` plus ``stop`` and
    ``log`` when the signature names them. The first positional parameter gets ctx,
    whatever it is called."""
    params: dict[str, Any] = d.values.get("params", {})
    at_params = d.trail + ("params",)
    where = at_params if "params" in d.data else d.trail + ("module",)
    kinds = inspect.Parameter
    plist = list(sig.parameters.values())
    positional = [
        p for p in plist if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    ]
    var_positional = any(p.kind == kinds.VAR_POSITIONAL for p in plist)
    var_keyword = any(p.kind == kinds.VAR_KEYWORD for p in plist)
    ctx_param = positional[0] if positional else None
    if ctx_param is None and not var_positional:
        check.report(f"{qualname}() must take ctx as its first argument", where, d.who)
        return
    keywords = {
        p.name: p
        for p in plist
        if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY) and p is not ctx_param
    }
    for key in params:
        here = at_params + (key,)
        if ctx_param is not None and key == ctx_param.name:
            message = f"param '{key}' clashes with the ctx argument of {qualname}()"
        elif key in RUNNER_KWARGS and key in keywords:
            message = f"param '{key}' is reserved: the runner passes it to {qualname}()"
        elif key not in keywords and not var_keyword:
            message = f"unknown param {show(key)} for {qualname}(){suggest(key, keywords)}"
        else:
            continue
        check.report(message, here, d.who, key=True)
    for p in plist:
        if p is ctx_param or p.kind in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD):
            continue
        if p.default is not p.empty or p.name in params:
            continue
        if p.name in ("ctx", *RUNNER_KWARGS):
            continue
        check.report(f"missing param '{p.name}' required by {qualname}()", where, d.who)
