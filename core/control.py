"""The narrow interface a front end uses of a run: ``RunControl``.

All a front end (the headless reporter, the TUI, later ``orch-tui ctl``) may use of a run: the
typed state, the event stream, one small command API, and pull-based reads of the bulky data
(the ctx: a value is read when it is shown, never pushed). In this process it is the Runner
(``LocalControl``); a client of the run daemon's socket (issue 13) implements the same, which is
why nothing here hands out a live object of the runner's.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

if TYPE_CHECKING:
    from core.events import Event
    from core.rundir import RunDir
    from core.runner import Runner
    from core.state import RunState

STEP_COMMANDS = ("skip", "retry", "stop", "restart")
#: The note of the steps ``stop-run`` (a command: no signal was sent to anyone) cut short.
STOPPED_BY_COMMAND = "run stopped (stop-run)"
#: The signals a front end may say made it stop the run (``command("stop_run", signal=...)``).
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def interrupted_by(sig: int) -> str:
    """The note of the steps a signal to the run (Ctrl-C, SIGTERM, a closed terminal) cut short."""
    return f"run interrupted ({signal.Signals(sig).name})"


class Reply(msgspec.Struct, frozen=True):
    """A command's answer: refusals are replies (``ok`` False, ``message`` says why), not
    exceptions."""

    ok: bool
    message: str


class CtxValue(msgspec.Struct, frozen=True):
    """A ctx key's value at ``version``; for a list longer than the tail asked for, only its
    last rows, and its ``length``."""

    version: int
    value: Any
    length: int | None = None


class RunControl(Protocol):
    """What a front end may use of a run (see the module's docstring)."""

    run_dir: RunDir

    def snapshot(self) -> RunState:
        """The run's state now: a consistent copy, with the ``seq`` of the last event in it."""

    def subscribe(
        self,
        callback: Callable[[Event], None],
        on_resync: Callable[[RunState], None] | None = None,
    ) -> None:
        """Every event from now on, in order (``RunState.apply`` passes over those a snapshot
        taken after subscribing already holds). ``on_resync``: the whole state, when a client
        that fell behind was given a fresh one instead of the events it missed (the events
        after it follow; an in-process run never does this)."""

    def command(self, name: str, step: str | None = None, **args: Any) -> Reply:
        """``skip``, ``retry``, ``stop`` or ``restart`` (a running service) a step; ``stop_run``
        (``force``: kill at once) or ``close`` the run."""

    def ctx_keys(self) -> dict[str, int]:
        """Every ctx key, with its version."""

    def ctx_value(self, key: str, tail: int | None = None) -> CtxValue:
        """A ctx key's value (KeyError if there is none), a long list as its last ``tail``
        rows."""

    def wait(self, timeout: float | None = None) -> int | None:
        """The run's exit code once it is over, None if ``timeout`` passed first."""


class LocalControl:
    """``RunControl`` over a Runner in this process. Starting and closing the run stay with
    whoever built the runner (tui/cli.py)."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self.run_dir = runner.rundir

    def snapshot(self) -> RunState:
        return self._runner.snapshot()

    def subscribe(
        self,
        callback: Callable[[Event], None],
        on_resync: Callable[[RunState], None] | None = None,
    ) -> None:
        self._runner.subscribe(callback)

    def command(self, name: str, step: str | None = None, **args: Any) -> Reply:
        runner = self._runner
        if name in STEP_COMMANDS:
            if step is None or step not in runner.runs:
                return Reply(False, f"{name}: no step named {step!r}")
            if name not in runner.allowed_actions(step):
                state = runner.runs[step].state
                if name == "restart" and not state.background:
                    return Reply(
                        False,
                        f"cannot restart {step!r}: only a service (a background "
                        "step) restarts; retry runs a step again once it has ended",
                    )
                if name == "restart" and "retry" in runner.allowed_actions(step):
                    # a service stopped or failed: overmind's restart starts it, here retry does
                    return Reply(
                        False,
                        f"cannot restart {step!r}: it is {state.status}, not running; "
                        "retry starts it again",
                    )
                if name != "stop" and (run := runner.snapshot()).closing:
                    # not the step's status: a failed step is retried, but not as the run ends
                    ending = "over" if run.ended is not None else "stopping"
                    return Reply(False, f"cannot {name} {step!r}: the run is {ending}")
                return Reply(False, f"cannot {name} {step!r}: it is {state.status}")
            commands = {
                "skip": runner.skip,
                "retry": runner.retry,
                "stop": runner.stop_step,
                "restart": runner.restart,
            }
            again = name == "stop" and runner.runs[step].state.stopping  # killed at once
            commands[name](step)
            if again:
                return Reply(True, f"killing {step!r} now (SIGKILL): it was stopping already")
            return Reply(True, f"{name}: {step}")
        if name == "stop_run":
            by = args.get("signal")  # the signal that made the front end stop the run, if one did
            note = STOPPED_BY_COMMAND if by is None else interrupted_by(by)
            runner.stop_run(signal.SIGTERM, force=args.get("force", False), note=note)
            return Reply(True, "stopping the run")
        if name == "close":
            runner.close()
            return Reply(True, "closing the run")
        return Reply(False, f"unknown command {name!r}")

    def ctx_keys(self) -> dict[str, int]:
        return self._runner.ctx.key_versions()

    def ctx_value(self, key: str, tail: int | None = None) -> CtxValue:
        version, value, length = self._runner.ctx.view(key, tail)
        return CtxValue(version, value, length)

    def wait(self, timeout: float | None = None) -> int | None:
        return self._runner.wait(timeout)
