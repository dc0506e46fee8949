"""The workspace of a recipe: the folder its python steps import from and its shell steps run
in, found the same way by the validator, the runner and ``orch-tui clean``; and whether it can
be trusted with imports (nobody else may write to it).
"""

from __future__ import annotations

import os
from pathlib import Path

from core.privatedir import chain_problem, folder_problem


def workspace_of(folder: Path) -> Path | None:
    """The nearest of ``folder`` and its parents holding ``pyproject.toml`` or ``scriptlets/``
    (contract.md), or None. The one place this search is made: a recipe's module paths are
    relative to it, and ``orch-tui clean`` removes only the ``.orch`` folder it holds.

    The search ends at the user's home, and at a folder that is not this user's or root's or
    that others may write to (/tmp, a shared project): anyone could have dropped a
    ``pyproject.toml`` there to make it the workspace, and their ``psutil.py`` with it."""
    start = Path(os.path.abspath(folder))
    home = Path(os.path.abspath(os.path.expanduser("~")))
    for candidate in (start, *start.parents):
        try:
            if folder_problem(candidate.stat()) is not None:
                return None
            if (candidate / "pyproject.toml").is_file() or (candidate / "scriptlets").is_dir():
                return candidate
        except OSError:
            return None
        if candidate == home:
            return None
    return None


def workspace_problem(workspace: Path) -> str | None:
    """Why python steps must not be imported from ``workspace`` (put on ``sys.path``), or None.

    Its files become code run as this user, so nobody else may write to it (the sticky bit is
    no help: anyone can add a ``psutil.py`` to /tmp), nor to a folder above it (they could
    swap it for theirs)."""
    try:
        why = folder_problem(workspace.stat())
        return f"it is {why}" if why is not None else chain_problem(workspace)
    except OSError as exc:
        return f"it cannot be checked ({exc.strerror or exc})"


def find_workspace(recipe_path: Path) -> Path:
    """The workspace of a recipe: module paths in recipes are relative to it, wherever the
    command is run from; without one, the current directory."""
    return workspace_of(Path(os.path.abspath(recipe_path)).parent) or Path.cwd()


def step_cwd(workspace: Path, cwd: str | None) -> Path:
    """Where a shell step runs: ``cwd`` (``~`` expanded) relative to the workspace, by default
    the workspace itself. The validator and the runner both ask here, so they agree."""
    if not cwd:
        return workspace
    return (workspace / os.path.expanduser(cwd)).resolve()
