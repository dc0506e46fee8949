"""One step as the scheduler sees it (``StepRun``): its ``StepState`` (what state.json and the
events say), what only the scheduler needs, and the two changes every attempt makes to it (its
beginning, and its end from how it went). The scheduler (core.runner) decides when; these say
what the state becomes, and are changed only on the scheduler's thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from core.executors import Execution, Outcome
from core.recipe import Step
from core.state import DEAD, Health, SessionRef, Status, StepState
from core.steplog import StepLog
from core.supervisor import Supervisor

if TYPE_CHECKING:
    from core.health import HealthMonitor

#: ``end_cause`` of a start the user ended to restart the service
MANUAL = "manual"


class StepRun(msgspec.Struct):
    step: Step
    state: StepState
    satisfied: bool = False  # its dependents may go on
    ready: bool = False  # this attempt (of a background step) passed its readiness check
    execution: Execution | None = None
    steplog: StepLog | None = None
    stop_as: Status | None = None  # this attempt was stopped: the status it ends with
    stop_reason: str | None = None
    retry_due: bool = False  # waiting for its retry_delay (a service: its restart delay)
    wait: int = 0  # which wait that is: the timer of an earlier one, given up on, is stale
    restart_at: float = 0.0  # then when (time.monotonic()) its next start is due
    clearing: bool = False  # its last start's group is being stopped: no start, no timer yet
    restart_for: str | None = None  # why (the state counts the restart once it starts)
    end_cause: str | None = None  # the runner ended this start to restart it: why
    supervisor: Supervisor | None = None  # a service's restart policy
    monitor: HealthMonitor | None = None  # this start's health checks

    @property
    def restarting(self) -> bool:
        """A service between two starts: it will be up again (in its state, for every client:
        stop and restart apply to it then)."""
        return self.state.restarting

    @restarting.setter
    def restarting(self, value: bool) -> None:
        self.state.restarting = value
        if not value:
            self.state.restart_due = None

    @classmethod
    def of(cls, step: Step, run_dir: Path) -> StepRun:
        """A step before it runs: pending, with what it is for every client."""
        state = StepState(
            name=step.name,
            type=step.type,
            index=step.index,
            background=step.background,
            depends_on=list(step.depends_on),
            retries=step.retries,
            session=_session(step, run_dir) if step.type == "session" else None,
        )
        supervisor = Supervisor(step) if step.restart != "no" else None
        return cls(step, state, supervisor=supervisor)

    @property
    def passing_through(self) -> bool:
        """Skipped, but still waiting for its own dependencies before its dependents go on."""
        return self.state.status == Status.SKIPPED and not self.satisfied

    @property
    def dead(self) -> bool:
        """Finished without letting its dependents go on."""
        return self.state.status in DEAD and not self.satisfied

    def begin(self, now: float) -> None:
        """A new attempt starts: running, and nothing of the last one's end left."""
        state = self.state
        state.attempts += 1
        state.status = Status.RUNNING
        state.started, state.ended, state.duration = now, None, None
        state.exit_code = state.signal = None
        state.reason = self.stop_as = self.stop_reason = self.end_cause = None
        state.restart_due, state.stopping = None, False
        state.health = None if self.step.health is None else Health.UNKNOWN
        self.ready = False

    def settle(self, outcome: Outcome, execution: Execution | None, now: float) -> Status:
        """The attempt ended with ``outcome``: its times, exit code and reason in the state,
        and the status it ends with (the caller records it: a retry may follow)."""
        state = self.state
        state.ended = now
        state.duration = round(now - (state.started or now), 3)
        state.exit_code, state.signal = outcome.exit_code, outcome.signal
        state.stopping = False
        if self.stop_as:
            status, state.reason = self.stop_as, self.stop_reason or outcome.error
            if execution is not None and execution.pid is None:
                state.exit_code = None  # a thread we stopped: its "0" only says it returned
        elif self.step.background and not self.ready and execution is not None:
            status = Status.FAILED
            state.reason = f"exited before it was ready ({outcome.error or 'exit code 0'})"
        elif outcome.ok:
            status, state.reason = Status.SUCCEEDED, None
        else:
            status, state.reason = Status.FAILED, outcome.error
        self.execution = None
        return status


def _session(step: Step, run_dir: Path) -> SessionRef:
    """The session a session step acts on, and where its create/recreate keeps a log."""
    from core.sessions.step import session_log_path

    action, session, log = step.action or "", step.session or "", None
    if action in ("create", "recreate"):
        path = session_log_path(step.log, action=action, run_dir=run_dir, session=session)
        log = None if path is None else str(path)
    return SessionRef(
        backend=step.backend, name=session, action=action, socket=step.socket, log=log
    )


def preselect(
    runs: dict[str, StepRun],
    only: list[str] | None,
    skip: list[str] | None,
    resume_from: str | None,
) -> None:
    """--only / --skip / --resume-from: steps that will not run are skipped up front.

    They pass their dependents on once their own dependencies are done, so the order of the
    recipe is kept (contract.md, --skip)."""
    first = runs[resume_from].step.index if resume_from else 0
    for name, run in runs.items():
        reason = None
        if only and name not in only:
            reason = "not in --only"
        elif skip and name in skip:
            reason = "--skip"
        elif run.step.index < first:
            reason = f"before --resume-from {resume_from}"
        if reason:  # a pass-through: released in order when the run starts
            run.state.status, run.state.reason = Status.SKIPPED, reason
