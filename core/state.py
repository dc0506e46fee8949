"""The typed state of a run: what state.json holds, and what every client of a run mirrors.

One model for every face. The runner keeps one ``RunState`` and changes its ``StepState``s on its
scheduler thread; state.json is ``RunState.to_json()``. Each event that changes a step carries
the step's whole new ``StepState`` (core.events), so a client (the TUI, the headless reporter, a
client on the other side of a socket) starts from a snapshot and keeps a mirror with ``apply``,
without asking the runner for anything else. The status groups the code asks about ("can this
be retried", "is it still going") are named here once, as is which commands a step takes now
(``allowed_actions``), so every face gives the same answer.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from core.events import Event


class Status(StrEnum):
    """A step's status, as state.json writes it (contract.md, "Run directory").

    A ``str``: it compares, hashes and prints as its value (``Status.FAILED == "failed"``).
    """

    PENDING = "pending"
    BLOCKED = "blocked"
    RUNNING = "running"
    READY = "ready"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


# The groups the code asks about ("status in ACTIVE"; a plain status string works too).
#: Running, or a background step that passed its readiness check.
ACTIVE = frozenset({Status.RUNNING, Status.READY})
#: Not started (this attempt).
WAITING = frozenset({Status.PENDING, Status.BLOCKED})
#: Ended: will not run again unless retried.
ENDED = frozenset(
    {
        Status.SUCCEEDED,
        Status.FAILED,
        Status.TIMED_OUT,
        Status.SKIPPED,
        Status.CANCELLED,
        Status.STOPPED,
    }
)
#: A failure of the step itself (what blocks its dependents, unless allowed).
FAILURES = frozenset({Status.FAILED, Status.TIMED_OUT})
#: Ended without letting its dependents go on (unless skipped or allowed afterwards).
DEAD = frozenset({Status.FAILED, Status.TIMED_OUT, Status.CANCELLED, Status.STOPPED})
#: What ``skip`` applies to: not run yet, failed, or stopped by the user before it was ready
#: (cancelled): its dependents then go on.
SKIPPABLE = WAITING | FAILURES | {Status.CANCELLED}
#: What ``retry`` applies to: ended, except skipped.
RETRYABLE = ENDED - {Status.SKIPPED}
#: What ``stop`` applies to.
STOPPABLE = ACTIVE


class Health(StrEnum):
    """A service's health, by its ``health`` checks (a step without them has none: None)."""

    UNKNOWN = "unknown"  # started; no check has decided yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"

    def __str__(self) -> str:
        return self.value


class RunStatus(StrEnum):
    """The run's status in state.json."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


class SessionRef(msgspec.Struct, frozen=True, kw_only=True):
    """The multiplexer session a session step acts on (what attaching to it needs), and the
    log its create/recreate keeps (None: no log, or another action's step)."""

    backend: str
    name: str
    action: str
    socket: str | None = None
    log: str | None = None


class StepState(msgspec.Struct, kw_only=True, gc=False):
    """One step: what it is (fixed for the run), then where it is.

    Lists are never changed in place (the runner assigns new ones), so a copy made with
    ``msgspec.structs.replace`` is as good as a deep one: events carry such copies, and
    clients share them, read-only.

    Not tracked by the cyclic collector (``gc=False``: its fields hold strings, numbers, lists
    of names and a SessionRef, never a cycle back to it). A run makes one per step event, and
    the app keeps the last of each step: in a 4,000-step run they were 30 % of what the app's
    full collections walked, each pass stopping its event loop.
    """

    name: str
    type: str
    index: int
    background: bool = False
    depends_on: list[str] = []
    retries: int = 0
    session: SessionRef | None = None

    status: Status = Status.PENDING
    attempts: int = 0
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    started: float | None = None
    ended: float | None = None
    duration: float | None = None  # set when an attempt ends
    allowed: bool = False  # a continue_on_error failure: its dependents went on
    blocked_by: list[
        str
    ] = []  # the root failures that keep it (or, skipped, its dependents) waiting
    peak_cpu: float | None = None
    peak_rss: int | None = None
    log: str | None = None  # relative to the run dir; None until the file exists
    restarts: int = 0  # times the runner restarted this service (its restart policy, or `r`)
    restart_reason: str | None = None  # why the last time: "exit code 1", "unhealthy: ...", ...
    restarting: bool = False  # a service between two starts, waiting out its restart delay
    restart_due: float | None = None  # then when its next start is due (the run's clock)
    stopping: bool = False  # this attempt was asked to end (its grace, then SIGKILL): not yet
    health: Health | None = None  # None: the step has no health checks

    def elapsed(self, now: float) -> float | None:
        """Seconds it has run: up to ``now`` while active, else the last attempt's duration."""
        if self.status in ACTIVE and self.started is not None:
            return now - self.started
        if self.duration is not None:
            return self.duration
        if self.started is not None and self.ended is not None:
            return self.ended - self.started
        return None


#: the newest messages a run keeps in its state (RunState.messages)
KEPT_MESSAGES = 50


class RunNote(msgspec.Struct, kw_only=True, gc=False):
    """A message the runner gave the user (a ``message`` event), kept in the run's state: a
    client that attaches once it was said (the app on a run daemon, ``attach``) still shows
    it. ``seq``: its event's, so a client tells the ones it has shown from those it has not."""

    level: str
    text: str
    step: str | None = None
    ts: float
    seq: int


class RunState(msgspec.Struct, kw_only=True):
    """The run: state.json, and the snapshot a client starts its mirror from.

    ``seq`` is the sequence number of the last event this state includes: ``apply`` passes over
    events it already holds, so a client may subscribe first and take the snapshot after.
    ``ctx_version`` is the ctx's version as of the last ``ctx_changed`` event. ``closing``: the
    run was asked to close or stop, and only ``stop`` applies to its steps from then on.
    """

    run_id: str
    recipe: str
    name: str
    run_dir: str
    pid: int
    status: RunStatus = RunStatus.PENDING
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None
    resumed_from: dict[str, str] | None = None
    closing: bool = False
    seq: int = 0
    ctx_version: int = 0
    steps: dict[str, StepState] = {}
    messages: list[RunNote] = []  # the newest KEPT_MESSAGES, oldest first

    # -- state.json and snapshots ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON types only: statuses as their strings, lists as lists."""
        return msgspec.to_builtins(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        return msgspec.convert(data, cls)

    def to_json(self) -> bytes:
        """state.json's bytes (indented: people read it too)."""
        return msgspec.json.format(msgspec.json.encode(self), indent=2)

    @classmethod
    def from_json(cls, data: bytes | str) -> RunState:
        return msgspec.json.decode(data, type=cls)

    def copy(self) -> RunState:
        """A snapshot: a new RunState and new StepStates (what they hold is never changed in
        place), so the original may go on changing."""
        steps = {name: msgspec.structs.replace(step) for name, step in self.steps.items()}
        return msgspec.structs.replace(self, steps=steps)

    # -- the mirror -------------------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        """Bring this state up to ``event`` (in order); one it already includes changes nothing."""
        if event.seq <= self.seq:
            return
        event.apply_to(self)
        self.seq = event.seq


def waiting_to_restart(step: StepState) -> bool:
    """A service that ended and waits out its restart delay (the runner's own fact, not a guess
    from the state: a service the user retried while its dependencies run is pending too)."""
    return step.status == Status.PENDING and step.restarting


def allowed_actions(step: StepState, run: RunState) -> frozenset[str]:
    """Which of skip, retry, stop and restart apply to ``step`` now (the TUI offers only these
    keys, and the runner refuses the others). Restart is for a running service: a background
    step that is not a session step (whose action ends at once); stop and restart, for a
    service, also while it waits to start again (one that crashes every second is up only for
    an instant; restart then starts it at once, the rest of its delay skipped)."""
    service = step.background and step.type != "session"
    if step.status in STOPPABLE:
        return _STOP_RESTART if service and not run.closing else _STOP
    if run.closing:
        return _NONE
    if waiting_to_restart(step):
        return _ACTIONS[step.status] | (_STOP_RESTART if service else _STOP)
    return _ACTIONS[step.status]


_NONE: frozenset[str] = frozenset()
_STOP = frozenset({"stop"})
_STOP_RESTART = frozenset({"stop", "restart"})
_ACTIONS = {
    status: frozenset(
        name for name, group in (("skip", SKIPPABLE), ("retry", RETRYABLE)) if status in group
    )
    for status in Status
}
