"""The runner's event stream: typed, serialisable records of what happened, in order.

The headless reporter, the TUI, events.jsonl and any client on the other side of a socket consume
the same events: msgspec Structs tagged by ``type``, so one ``decode_event`` reads any line of
events.jsonl. Every event carries ``seq`` (1, 2, 3, ... in publish order, given by the bus) and
``ts`` (wall-clock seconds). An event that changes a step carries the step's whole new
``StepState``, and every other change of the run's state has an event too, so a client keeps a
mirror of the run with ``RunState.apply`` (core.state) and never asks the runner for more.

Output is deliberately *not* one event per line: a step printing half a million lines a second
would drown every consumer. ``StepOutput`` is coalesced by the runner (a few per second per step)
and carries the log's byte size, its line count and a few of the newest lines; the complete
output is always in the step's log file, which a consumer that wants every byte reads from its
last offset.

An event is not changed once published (the bus gives it its ``seq`` as it is published): its
consumers share it, and the StepState it carries.
"""

from __future__ import annotations

import time
from typing import Any, Union

import msgspec

from core.state import KEPT_MESSAGES, Health, RunNote, RunState, RunStatus, Status, StepState


class Event(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of every event."""

    ts: float = msgspec.field(default_factory=time.time)
    seq: int = 0

    @property
    def kind(self) -> str:
        """The event's ``type`` in events.jsonl."""
        return self.__struct_config__.tag  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON types, with its ``type``: a line of events.jsonl, parsed."""
        return msgspec.to_builtins(self)

    def apply_to(self, run: RunState) -> None:
        """What this event changes in a run's state (``RunState.apply``): most change nothing."""


class StepEvent(Event):
    """An event that changes a step: it carries the step's whole new state."""

    step: str
    state: StepState

    def apply_to(self, run: RunState) -> None:
        run.steps[self.step] = self.state


class RunStarted(Event, tag="run_started"):
    """The run began: ``state`` is the whole run as it starts (every step, pending or skipped)."""

    run_id: str
    recipe: str
    run_dir: str
    state: RunState

    def apply_to(self, run: RunState) -> None:
        for name in RunState.__struct_fields__:
            setattr(run, name, getattr(self.state, name))
        run.steps = dict(self.state.steps)  # the mirror's own: it assigns entries


class StepStarted(StepEvent, tag="step_started"):
    attempt: int
    pid: int | None = None


class StepReady(StepEvent, tag="step_ready"):
    """A background step passed its readiness check: its dependents may start."""


class StepFinished(StepEvent, tag="step_finished"):
    """A step that ran has ended: succeeded, failed, timed_out, cancelled or stopped.

    ``will_retry``: a ``step_status`` (pending) follows, and a new attempt after the delay;
    ``will_restart``: a service that is restarted, a ``step_restart`` follows."""

    status: Status
    attempt: int
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    duration: float | None = None
    will_retry: bool = False
    will_restart: bool = False
    log_size: int | None = None  # the log's size when this attempt ended (None: no log)
    log_lost: int = 0  # bytes of output not in the log: it could not be written (a full disk)


class StepRestart(StepEvent, tag="step_restart"):
    """A service is restarted (its restart policy, or the user's ``restart``): its last start
    ended (``reason``: "exit code 1", "killed by SIGSEGV", "unhealthy: ...", "manual"), and the
    ``restart``-th restart follows in ``delay`` seconds. The state is pending meanwhile; its
    ``restarts`` and ``restart_reason`` count a restart once it starts (a run that ends first
    made none)."""

    restart: int
    reason: str
    delay: float


class StepHealth(StepEvent, tag="step_health"):
    """A service's health changed (its state's ``health``); ``detail``: the last check's
    result ("connection refused", "HTTP 503", "exit code 1", "timed out after 2s")."""

    health: Health
    detail: str | None = None


class StepStatus(StepEvent, tag="step_status"):
    """A change that is not a start or an end: pending, blocked (or blocked by other roots),
    skipped, cancelled; and a skipped step's ``blocked_by`` (what holds up its dependents).
    ``reason`` says why, for the user (not necessarily the state's ``reason``)."""

    status: Status
    reason: str | None = None


class StepOutput(Event, tag="step_output"):
    """New output since the previous StepOutput of this step (coalesced).

    ``size`` is the log file's size in bytes after this output; ``lines_total`` how many lines
    the step has written so far; ``lines`` a glance at the newest complete lines (cleaned text,
    at most ``steplog.EVENT_LINES``, each cut to ``steplog.EVENT_LINE_CHARS``): the log file is
    the record, and a consumer that shows output reads it from its last offset up to ``size``.
    ``log``: the log's name (the step state's ``log``), in the first event after it came to be.
    """

    step: str
    size: int
    lines: list[str]
    lines_total: int
    log: str | None = None

    def apply_to(self, run: RunState) -> None:
        if self.log is not None:
            run.steps[self.step] = msgspec.structs.replace(run.steps[self.step], log=self.log)


class CtxChanged(Event, tag="ctx_changed"):
    """Keys of the ctx that changed, with their new versions (coalesced)."""

    keys: dict[str, int]
    version: int

    def apply_to(self, run: RunState) -> None:
        run.ctx_version = self.version


class ResourcesSampled(Event, tag="resources"):
    """System load and each running step's process-tree CPU % and RSS bytes; ``peaks`` the
    steps whose peak CPU % or RSS (their state's) grew, as ``[peak_cpu, peak_rss]``."""

    cpu_percent: float
    mem_percent: float
    mem_used: int
    steps: dict[str, dict[str, float | int | None]]
    peaks: dict[str, tuple[float | None, int | None]] = {}

    def apply_to(self, run: RunState) -> None:
        for name, (cpu, rss) in self.peaks.items():
            run.steps[name] = msgspec.structs.replace(run.steps[name], peak_cpu=cpu, peak_rss=rss)


class RunMessage(Event, tag="message"):
    """Something the runner wants the user to read (a warning, a note on a command)."""

    level: str
    text: str
    step: str | None = None

    def apply_to(self, run: RunState) -> None:
        """Kept (the newest few) in a new list: snapshots share the one they were given."""
        note = RunNote(level=self.level, text=self.text, step=self.step, ts=self.ts, seq=self.seq)
        run.messages = [*run.messages[1 - KEPT_MESSAGES :], note]


class RunClosing(Event, tag="run_closing"):
    """The run was asked to close or to stop: from now on only ``stop`` applies to its steps.
    ``status``: the run's now (``interrupted`` once stopped)."""

    status: RunStatus

    def apply_to(self, run: RunState) -> None:
        run.closing, run.status = True, self.status


class RunFinished(Event, tag="run_finished"):
    """Every step has ended (for now, in the TUI: a retry may reopen the run). ``ts`` is the
    run's end."""

    status: RunStatus  # succeeded / failed / interrupted
    exit_code: int
    counts: dict[str, int]

    def apply_to(self, run: RunState) -> None:
        run.status, run.exit_code, run.ended = self.status, self.exit_code, self.ts


class RunReopened(Event, tag="run_reopened"):
    """An interactive run that had ended (RunFinished) runs again: the user retried a step."""

    def apply_to(self, run: RunState) -> None:
        run.status, run.exit_code, run.ended = RunStatus.RUNNING, None, None


AnyEvent = Union[  # noqa: UP007 - msgspec needs a runtime union of the tagged types
    RunStarted,
    StepStarted,
    StepReady,
    StepFinished,
    StepRestart,
    StepHealth,
    StepStatus,
    StepOutput,
    CtxChanged,
    ResourcesSampled,
    RunMessage,
    RunClosing,
    RunFinished,
    RunReopened,
]
_decoder: msgspec.json.Decoder[Any] | None = None


def decode_event(data: bytes | str) -> Event:
    """An event from its JSON: a line of events.jsonl (or, later, a frame of the run's socket)."""
    global _decoder
    if _decoder is None:
        _decoder = msgspec.json.Decoder(AnyEvent)
    return _decoder.decode(data)


_encoder = msgspec.json.Encoder()


def encode_event(event: Event) -> bytes:
    """An event's line of events.jsonl (without the newline)."""
    return _encoder.encode(event)


def encode_events(events: list[Event]) -> bytes:
    """Lines of events.jsonl, each with its newline: the same bytes as ``encode_event`` of
    each plus ``\n``, made in one call (half the cost a line at thousands of events a second).
    Raises as ``encode_event`` does if one of them cannot be encoded."""
    return _encoder.encode_lines(events)
