"""The runner's event stream: plain, serialisable records of what happened.

The headless reporter, the TUI, events.jsonl and any future remote client all consume the same
events, so each one is a frozen dataclass of JSON types only. ``to_dict`` adds a ``type`` tag and
``event_from_dict`` reverses it, which is all a client on the other side of a socket needs.

Output is deliberately *not* one event per line: a step printing half a million lines a second
would drown every consumer. ``StepOutput`` is coalesced by the runner (a few per second per step)
and carries the log's byte size, its line count and a few of the newest lines; the complete
output is always in ``logs/<step>.log``, which a consumer that wants every byte reads from its
last offset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event. ``ts`` is wall-clock seconds since the epoch."""

    kind: ClassVar[str] = "event"
    ts: float = field(default_factory=_now, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (values are shared, not copied: events are immutable once published)."""
        names = _FIELD_NAMES.get(type(self))
        if names is None:
            names = _FIELD_NAMES[type(self)] = tuple(f.name for f in fields(self))
        data = {name: getattr(self, name) for name in names}
        data["type"] = self.kind
        return data


@dataclass(frozen=True, slots=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    run_id: str
    recipe: str
    run_dir: str
    steps: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class StepStarted(Event):
    kind: ClassVar[str] = "step_started"
    step: str
    attempt: int
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class StepReady(Event):
    """A background step passed its readiness check: its dependents may start."""

    kind: ClassVar[str] = "step_ready"
    step: str


@dataclass(frozen=True, slots=True)
class StepFinished(Event):
    """A step that ran has ended: succeeded, failed, timed_out, cancelled or stopped."""

    kind: ClassVar[str] = "step_finished"
    step: str
    status: str
    attempt: int
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    duration: float | None = None
    will_retry: bool = False
    log_size: int | None = None  # the log's size when this attempt ended (None: no log)


@dataclass(frozen=True, slots=True)
class StepStatus(Event):
    """A status change that is not a start or an end: pending, blocked, skipped, cancelled."""

    kind: ClassVar[str] = "step_status"
    step: str
    status: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class StepOutput(Event):
    """New output since the previous StepOutput of this step (coalesced).

    ``size`` is the log file's size in bytes after this output; ``lines_total`` how many lines
    the step has written so far; ``lines`` a glance at the newest complete lines (cleaned text,
    at most ``steplog.EVENT_LINES``, each cut to ``steplog.EVENT_LINE_CHARS``): the log file is
    the record, and a consumer that shows output reads it from its last offset up to ``size``.
    """

    kind: ClassVar[str] = "step_output"
    step: str
    size: int
    lines: list[str]
    lines_total: int


@dataclass(frozen=True, slots=True)
class CtxChanged(Event):
    """Keys of the ctx that changed, with their new versions (coalesced)."""

    kind: ClassVar[str] = "ctx_changed"
    keys: dict[str, int]
    version: int


@dataclass(frozen=True, slots=True)
class ResourcesSampled(Event):
    """System load and each running step's process-tree CPU % and RSS bytes."""

    kind: ClassVar[str] = "resources"
    cpu_percent: float
    mem_percent: float
    mem_used: int
    steps: dict[str, dict[str, float | int | None]]


@dataclass(frozen=True, slots=True)
class RunMessage(Event):
    """Something the runner wants the user to read (a warning, a note on a command)."""

    kind: ClassVar[str] = "message"
    level: str
    text: str
    step: str | None = None


@dataclass(frozen=True, slots=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    status: str  # succeeded / failed / interrupted
    exit_code: int
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class RunReopened(Event):
    """An interactive run that had ended (RunFinished) runs again: the user retried a step."""

    kind: ClassVar[str] = "run_reopened"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        RunStarted,
        StepStarted,
        StepReady,
        StepFinished,
        StepStatus,
        StepOutput,
        CtxChanged,
        ResourcesSampled,
        RunMessage,
        RunFinished,
        RunReopened,
    )
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from ``to_dict`` output (a line of events.jsonl)."""
    cls = EVENT_TYPES[data["type"]]
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
