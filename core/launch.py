"""How a step's process is launched: its command line, working directory and environment (with
the contract's precedence and the ORCH_* variables), and its ORCH_CTX_OUT file.

Executors (core.executors) ask here, so every step type gets the same ORCH_RUN_ID and ORCH_STEP,
and shell steps the same environment rules:

    inherited environment < recipe ``env`` < step ``env`` < exposed ctx keys and ORCH_*
"""

from __future__ import annotations

import os
from pathlib import Path

from core.context import Context, expose_for_shell
from core.privatedir import HeldFile
from core.recipe import Recipe, Step, step_cwd
from core.rundir import RunDir

#: marks every process of the run (the watchdog and the end-of-run clean-up find them by it)
RUN_DIR_VAR = "ORCH_RUN_DIR"


class Launcher:
    """Launching the steps of one run (``recipe``, ``run_id``, in ``rundir``, sharing ``ctx``)."""

    def __init__(self, recipe: Recipe, run_id: str, rundir: RunDir, ctx: Context) -> None:
        self.recipe, self.run_id, self.rundir, self.ctx = recipe, run_id, rundir, ctx

    @property
    def run_dir(self) -> Path:
        return self.rundir.path

    def argv(self, step: Step) -> list[str]:
        """``cmd`` and ``args`` as they are; only ``run`` goes through a shell (it asked for one)."""
        if step.cmd:
            return [step.cmd, *step.args]
        return ["bash", "-c", step.run or ""]

    def cwd(self, step: Step) -> Path:
        return step_cwd(self.recipe.workspace, step.cwd)

    def orch_env(self, step: Step) -> dict[str, str]:
        """The ORCH_* variables every step gets (ORCH_CTX_OUT aside: shell steps only)."""
        return {RUN_DIR_VAR: str(self.run_dir), "ORCH_RUN_ID": self.run_id, "ORCH_STEP": step.name}

    def shell_env(self, step: Step, ctx_out: HeldFile) -> dict[str, str]:
        """A shell step's whole environment, by the contract's precedence (module docstring).
        ValueError (ExposeError, ContextValueError): a ctx key it exposes is missing or cannot
        be an environment value."""
        return with_inherited(self.shell_overrides(step), ctx_out.path)

    def shell_overrides(self, step: Step) -> dict[str, str]:
        """What a shell step's environment sets over the one it inherits: all of it but the
        inherited part and ORCH_CTX_OUT, which a step on a Dask worker gets there (the worker's
        environment, a file of the worker's). ValueError as ``shell_env``."""
        env = dict(self.recipe.env)
        env.update(step.env)
        env.update(expose_for_shell(self.ctx, step.expose))
        env.update(self.orch_env(step))
        return env

    def probe_env(self, step: Step) -> dict[str, str]:
        """A ``health: {cmd}`` check's environment: the step's, without its ctx keys (a check
        runs while the ctx changes) or an ORCH_CTX_OUT (nothing it says is merged). It keeps
        ORCH_RUN_DIR: a check left running is the run's to stop."""
        env = dict(os.environ)
        env.update(self.recipe.env)
        env.update(step.env)
        env.update(self.orch_env(step))
        return env

    def session_env(self, step: Step) -> dict[str, str]:
        """What a created session gets over what it inherits: the recipe's ``env``, the step's
        over it (as a shell step's), then the ORCH_* variables but ORCH_RUN_DIR, which marks
        the run's processes for the end-of-run clean-up and the watchdog; sessions outlive the
        run (contract.md)."""
        env = dict(self.recipe.env)
        env.update(step.env)
        env.update(self.orch_env(step))
        del env[RUN_DIR_VAR]
        return env

    def session_cwd(self, step: Step) -> Path | None:
        """Where a created session's shell starts: the step's ``cwd`` (relative to the
        workspace), or, without one, the folder the run was started in (the multiplexer's
        default)."""
        return self.cwd(step) if step.cwd else None

    def ctx_out(self, step: Step, attempt: int) -> HeldFile:
        """The attempt's ORCH_CTX_OUT (a name; the step makes the file if it writes one)."""
        return self.rundir.new_ctx_out(step.name, attempt)


def with_inherited(overrides: dict[str, str], ctx_out: Path) -> dict[str, str]:
    """This process's environment, ``overrides`` over it, and ORCH_CTX_OUT: a shell step's
    (``Launcher.shell_env``, and on a Dask worker core.executors.on_worker)."""
    env = inherited_env()
    env.update(overrides)
    env["ORCH_CTX_OUT"] = str(ctx_out)
    return env


#: os.environ's raw bytes as last decoded, and the text copy decoded from them
_inherited: tuple[dict[bytes, bytes], dict[str, str]] = ({}, {})


def inherited_env() -> dict[str, str]:
    """A copy of ``os.environ`` as text, decoded again only when the environment changed.

    ``dict(os.environ)`` decodes every name and value in Python (30 us for 35 variables), on
    each shell step's start: the path from one step's end to the next one's start. Comparing
    the raw bytes os.environ keeps (``_data``, what putenv was given) is one C-level dict
    comparison, and sees every change made through os.environ (a python step's too)."""
    global _inherited
    raw, text = _inherited
    current: dict[bytes, bytes] = os.environ._data  # type: ignore[attr-defined]
    if raw != current:
        raw = dict(current)  # taken first: a change meanwhile makes the next call decode again
        text = dict(os.environ)
        _inherited = (raw, text)
    return dict(text)
