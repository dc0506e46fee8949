"""Python steps: their module imports, has the function, and the params fit its signature.

Checking means importing the user's modules, from the recipe's workspace, so the workspace must
be one nobody else can write to (``workspace_problem``). The validator puts the workspace on
``sys.path`` only while it imports, and takes it off again: loading a recipe leaves the path as
it was. Running python steps is another matter: the runner calls ``put_workspace_on_path``
before it starts, and from then on the workspace stays first on the path for the process.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import stepmodules
from core.recipe.problems import describe, show, suggest
from core.recipe.workspace import workspace_problem

if TYPE_CHECKING:
    import inspect

    from core.recipe.checks import Draft, Validator
    from core.recipe.model import Recipe

RUNNER_KWARGS = ("stop", "log")  # passed by the runner when the function's signature names them
#: all these checks read of a step (``Draft``): these values, and whether these fields are
#: written; a recipe served from core.recipe.cache keeps only what the checks of each load read
READS_VALUES = ("module", "function", "params")
READS_WRITTEN = ("function", "params")


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
    seen = _Seen(workspace)
    with _on_path(workspace):
        for d in python:
            _check_function(check, d, seen)


def _importing(filename: str) -> bool:
    """A frame of the import machinery (importlib's, orch-tui's), not of the module imported."""
    return (
        filename.startswith("<frozen ")
        or filename in (__file__, stepmodules.__file__)
        or os.path.dirname(filename) == os.path.dirname(importlib.__file__)
    )


def _raised_at(exc: BaseException, workspace: Path) -> str:
    """Where importing a module failed, `` (at ana/sub/deep.py:2)``: the file and line that
    raised (a SyntaxError: the line it found), relative to the workspace when it is in it; ""
    when only the import machinery is on the traceback (a module that does not exist). Once,
    "RuntimeError: config missing" left the analyst to find which of their modules said it."""
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        filename, line = exc.filename, exc.lineno
    else:
        tb, found = exc.__traceback__, None
        while tb is not None:
            if not _importing(tb.tb_frame.f_code.co_filename):
                found = tb
            tb = tb.tb_next
        if found is None:
            return ""
        filename, line = found.tb_frame.f_code.co_filename, found.tb_lineno
    path = Path(filename)
    if path.is_relative_to(workspace):
        path = path.relative_to(workspace)
    return f" (at {path}:{line})"


class _Callee:
    """What a function takes, as ``_check_params`` needs it: worked out once per function."""

    __slots__ = ("ctx", "takes_ctx", "keywords", "var_keyword", "required")

    def __init__(self, sig: inspect.Signature) -> None:
        import inspect  # here, not at the top: a recipe without python steps never needs it

        kinds = inspect.Parameter
        plist = list(sig.parameters.values())
        positional = [
            p for p in plist if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
        ]
        ctx = positional[0] if positional else None
        var_positional = any(p.kind == kinds.VAR_POSITIONAL for p in plist)
        self.ctx = ctx.name if ctx else None  # the parameter that gets ctx, if not ``*args``
        self.takes_ctx = ctx is not None or var_positional
        self.var_keyword = any(p.kind == kinds.VAR_KEYWORD for p in plist)
        self.keywords = frozenset(
            p.name
            for p in plist
            if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY) and p is not ctx
        )
        self.required = tuple(
            p.name
            for p in plist
            if p is not ctx
            and p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)
            and p.default is p.empty
            and p.name not in ("ctx", *RUNNER_KWARGS)
        )


class _Seen:
    """Many steps call the same function of the same module: each module is imported once (a
    failed import too: its error is kept) and each function's signature read once. Functions
    by id, as a callable object need not be hashable; each is kept with its _Callee, so its id
    cannot be reused meanwhile."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.modules: dict[str, Any] = {}  # the module, or the exception importing it raised
        self.callees: dict[int, tuple[Any, _Callee | None]] = {}

    def module(self, name: str) -> Any:
        if name not in self.modules:
            try:
                self.modules[name] = stepmodules.import_module(name)
            except (Exception, SystemExit) as exc:
                self.modules[name] = exc
        found = self.modules[name]
        if isinstance(found, BaseException):
            raise found
        return found

    def callee(self, func: Callable[..., Any]) -> _Callee | None:
        if id(func) not in self.callees:
            import inspect  # here, not at the top: as in _Callee

            try:
                callee = _Callee(inspect.signature(func))
            except (TypeError, ValueError):
                callee = None  # builtins and C functions may have none: nothing to check against
            self.callees[id(func)] = (func, callee)
        return self.callees[id(func)][1]


def _check_function(check: Validator, d: Draft, seen: _Seen) -> None:
    module = d.values["module"]
    at_module = d.trail + ("module",)
    try:
        mod = seen.module(module)
    except (Exception, SystemExit) as exc:
        # a SyntaxError's own text names the file without its folder: the place says it whole
        said = f"SyntaxError: {exc.msg}" if isinstance(exc, SyntaxError) else describe(exc)
        where = _raised_at(exc, seen.workspace)
        check.report(f"cannot import module '{module}': {said}{where}", at_module, d.who)
        return
    if "function" in d.data and "function" not in d.values:
        return  # already reported as a bad value
    name = d.values.get("function", "run")
    at_function = d.trail + ("function",) if "function" in d.data else at_module
    try:
        func = getattr(mod, name)
    except AttributeError:
        # what could be the step: not a module it imported (np), not a constant
        public = [n for n, v in vars(mod).items() if not n.startswith("_") and callable(v)]
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
        callee = seen.callee(func)
        if callee is not None:
            _check_params(check, d, f"{module}.{name}", callee)


def _check_params(check: Validator, d: Draft, qualname: str, callee: _Callee) -> None:
    """Check params the way the runner will call: ``func(ctx, **params)`` plus ``stop`` and
    ``log`` when the signature names them. The first positional parameter gets ctx,
    whatever it is called."""
    params: dict[str, Any] = d.values.get("params", {})
    at_params = d.trail + ("params",)
    where = at_params if "params" in d.data else d.trail + ("module",)
    if not callee.takes_ctx:
        check.report(f"{qualname}() must take ctx as its first argument", where, d.who)
        return
    for key in params:
        if key == callee.ctx:
            message = f"param '{key}' clashes with the ctx argument of {qualname}()"
        elif key in RUNNER_KWARGS and key in callee.keywords:
            message = f"param '{key}' is reserved: the runner passes it to {qualname}()"
        elif key not in callee.keywords and not callee.var_keyword:
            message = f"unknown param {show(key)} for {qualname}(){suggest(key, callee.keywords)}"
        else:
            continue
        check.report(message, at_params + (key,), d.who, key=True)
    for name in callee.required:
        if name not in params:
            check.report(f"missing param '{name}' required by {qualname}()", where, d.who)
