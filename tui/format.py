"""How a run's figures and statuses look, for both faces: the TUI and the headless reporter.

One spelling of a duration, a size and a signal, and one glyph, ASCII fallback and colour per
status, so a step reads the same in the app, in a CI log and in ``orch-tui clean``. Plain
strings, and styles as Rich style strings (the reporter's plain mode turns the few it uses into
ANSI codes itself): importing this module imports neither Rich nor Textual.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from core.state import (
    ACTIVE,
    FAILURES,
    Health,
    RunState,
    RunStatus,
    Status,
    StepState,
    waiting_to_restart,
)


class Glyph(NamedTuple):
    """How a status is marked: a symbol, its ASCII stand-in (a stream that cannot encode the
    symbol), and a Rich style."""

    symbol: str
    ascii: str
    style: str


STATUS_GLYPHS: dict[str, Glyph] = {
    Status.PENDING: Glyph("○", ".", "dim"),
    Status.BLOCKED: Glyph("⊘", "-", "red dim"),
    Status.RUNNING: Glyph("▶", ">", "bold yellow"),
    Status.READY: Glyph("●", "*", "bold cyan"),
    Status.SUCCEEDED: Glyph("✓", "+", "green"),
    Status.FAILED: Glyph("✗", "x", "bold red"),
    Status.TIMED_OUT: Glyph("⏱", "T", "bold red"),
    Status.SKIPPED: Glyph("↷", "~", "dim"),
    Status.CANCELLED: Glyph("⊗", "!", "magenta"),  # not stopped's ■: a step that never ran
    Status.STOPPED: Glyph("■", "#", "cyan"),
}
UNKNOWN = Glyph("?", "?", "")
#: A failure the recipe allows (``continue_on_error``): it blocks nothing, fails no run.
ALLOWED = "allowed"
#: not a yellow ✗: told from a failure by its shape too (no colour, a colour-blind user), the
#: warning sign CI services mark an allowed failure with
ALLOWED_GLYPH = Glyph("⚠", "!", "yellow")
#: the key a service waiting out its restart delay is counted under by ``count_key``
RESTARTING = "restarting"
#: what such a service is marked with where steps are counted (the header), as restarts are
RESTARTING_GLYPH = Glyph("↻", "R", "yellow")
_MARK_GLYPHS = {ALLOWED: ALLOWED_GLYPH, RESTARTING: RESTARTING_GLYPH}
#: A service's health (``health:`` checks), beside its status.
HEALTH_GLYPHS: dict[str, Glyph] = {
    Health.UNKNOWN: Glyph("♡", "?", "dim"),
    Health.HEALTHY: Glyph("♥", "+", "green"),
    Health.UNHEALTHY: Glyph("♥", "x", "bold red"),
}


def status_icon(status: str) -> str:
    """A status's mark (``ALLOWED`` and ``RESTARTING`` too)."""
    return (_MARK_GLYPHS.get(status) or STATUS_GLYPHS.get(status, UNKNOWN)).symbol


def status_style(status: str) -> str:
    return (_MARK_GLYPHS.get(status) or STATUS_GLYPHS.get(status, UNKNOWN)).style


def mark_key(step: StepState) -> str:
    """The status a step is marked with: its own, but ``ALLOWED`` for an allowed failure,
    as the headless output marks it (a yellow ⚠, not the red ✗ of a failure that fails the run)."""
    return ALLOWED if step.allowed and step.status in FAILURES else step.status


def status_word(status: str) -> str:
    """A status as a word in a sentence: ``timed out``, ``failed``."""
    return "timed out" if status == Status.TIMED_OUT else str(status)


def step_status_words(step: StepState) -> str:
    """A step's status as a listing's column says it (``ctl status``): as the tree marks it,
    ``restarting`` for a service waiting out its restart delay (not ``pending``, as a step
    that never ran), ``stopping`` while it is asked to end, ``failed (allowed)``."""
    if waiting_to_restart(step):
        return "restarting"
    if step.stopping and step.status in ACTIVE:
        return "stopping"
    return str(step.status) + (" (allowed)" if step.allowed else "")


def worth_saying(reason: str | None, status: str, exit_code: int | None, sig: int | None) -> bool:
    """Whether a reason adds to what the line says already ("exit code 1" does not)."""
    if not reason:
        return False
    lowered = reason.lower()
    if lowered.startswith(status_word(status)):
        return False
    if exit_code is not None and lowered in (f"exit code {exit_code}", f"exit {exit_code}"):
        return False
    return not (sig is not None and lowered in (f"signal {sig}", signal_name(sig).lower()))


def timed_out_words(step: StepState, took: str) -> str:
    """How a step that timed out ended: its reason, which says the ``timeout`` as set ("timed
    out after 0.3s"; "StepKilled raised in it" when a python step did not stop), not ``took``,
    its duration, which the ``grace`` of a step that outlived its SIGTERM makes longer."""
    reason = (step.reason or "").strip()
    return reason if reason.lower().startswith("timed out") else f"timed out after {took}"


#: the statuses a step's ending is worth a word for (a success or a skip says it in the tree)
_UNHAPPY = frozenset({Status.FAILED, Status.TIMED_OUT, Status.CANCELLED, Status.STOPPED})


def step_ending(step: StepState | None) -> str:
    """How a step that did not succeed ended, in a few words, for the head of its log:
    ``failed: exit 3``, ``failed: ValueError: bad input``, ``timed out after 0.3s``,
    ``cancelled: run interrupted (SIGTERM)``; empty for any other status (or no step)."""
    if step is None or step.status not in _UNHAPPY:
        return ""
    word, reason = status_word(step.status), (step.reason or "").strip()
    # continue_on_error: "(allowed)" after the word, as the headless summary says it
    allowed = " (allowed)" if step.allowed else ""
    if reason.lower().startswith(word):  # "timed out after 0.3s", "stopped by user"
        return reason + allowed
    word += allowed
    if worth_saying(reason, step.status, step.exit_code, step.signal):
        return f"{word}: {reason}"
    why = cause(step.exit_code, step.signal)
    return f"{word}: {why}" if why else word


#: What a live front end says may be done about a run whose steps failed, besides its state.
RETRY_HINT = "r retries"
#: beside ``done``: the work is, but its services run on ("done" alone read as all ended)
SERVICES_HINT = "services up"


def count_key(step: StepState) -> str:
    """What ``run_words`` counts ``step`` as: its status, but ``RESTARTING`` for a service that
    ended and waits to start again: it is no more due to run than while it was up, and counted
    as pending it made the header say "running" for each restart's delay."""
    return RESTARTING if waiting_to_restart(step) else mark_key(step)


def run_words(run: RunState, counts: Mapping[str, int], *, final: bool) -> tuple[str, str]:
    """The run's state as a live header says it, and what may be done about it (or "").

    Once every step has ended the run has its status, the one state.json has (``failed``,
    ``succeeded``, ``interrupted``); an interactive run then stays open for a retry or a skip,
    which reopen it, so a failed one says ``r retries`` too, unless ``final`` (the run is
    closing, or is a past one read from its folder). Before its end: ``running`` while a step
    runs or is due to, ``waiting`` (with the hint) when only background steps are up and a step
    failed, is blocked or was cancelled, ``done`` (``services up``) when they are up (or
    between two starts) and nothing failed; ``stopping`` once it is ending (``stop-run``, ``close``, ``q`` then ``y``,
    from any client) until it has: a retry or a skip is refused then, and "waiting (ctl retry
    or skip a step)" or "done" said so to another terminal while its services took their
    grace. ``counts``: the number of steps under each ``count_key``."""
    if run.ended is not None:
        failed = run.status == RunStatus.FAILED and not final
        return str(run.status), RETRY_HINT if failed else ""
    if run.closing:
        return "stopping", ""
    if counts.get(Status.RUNNING) or counts.get(Status.PENDING):
        return "running", ""
    if any(counts.get(s) for s in (*FAILURES, Status.BLOCKED, Status.CANCELLED)):
        return "waiting", RETRY_HINT
    if counts.get(Status.READY) or counts.get(RESTARTING):
        return "done", SERVICES_HINT  # the foreground is; background steps are still up
    return "succeeded", ""


def state_words(run: RunState, *, final: bool) -> tuple[str, str]:
    """``run_words`` of a whole state (``ctl status``, ``runs``), its steps counted here: so
    that they say what the app's header says (state.json has ``running`` for a run waiting
    for a retry beside a service that is up). An ended or closing run's words need no count
    (``runs`` of sixty past 10,000-step runs spent a third of its time counting)."""
    counts: dict[str, int] = {}
    if run.ended is not None or run.closing:
        return run_words(run, counts, final=final)
    for step in run.steps.values():
        key = count_key(step)
        counts[key] = counts.get(key, 0) + 1
    return run_words(run, counts, final=final)


def shown_health(step: StepState) -> Health | None:
    """The service's health as it is marked: while it is up or about to start again, not
    once it has ended (a service stopped by the user still said "healthy")."""
    if step.health is None or not (step.status in ACTIVE or waiting_to_restart(step)):
        return None
    return step.health


def service_note(step: StepState, note: str = "") -> str:
    """``note`` after what the tree marks beside a service (bg, its health mark, ↻N), in words:
    ``bg; healthy; restarted 2x (exit code 3); note``. The headless summary and ``ctl status``
    both say it so."""
    marks = ["bg"] if step.background else []
    if (health := shown_health(step)) is not None:
        marks.append(str(health))
    if step.restarts:
        marks.append(f"restarted {step.restarts}x ({step.restart_reason})")
    return "; ".join([*marks, note] if note else marks)


def counted(count: int, word: str) -> str:
    """``1 step``, ``2 steps``: a count and its noun, as a reader says them."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def format_duration(seconds: float | None) -> str:
    """``0.4s``, ``5.0s``, ``12s``, ``3m05s``, ``1h02m``; ``-`` for None.

    At most five cells, and tenths only below ten seconds, where they matter: a running step's
    figure grows in place instead of jumping in width every tick."""
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 9.95:
        return f"{seconds:.1f}s"
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_bytes(size: float | None) -> str:
    """``512 B``, ``50.0 MiB``; ``-`` for None."""
    if size is None:
        return "-"
    value, unit = _scaled(size, ("B", "KiB", "MiB", "GiB"))
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


def format_bytes_short(size: float | None) -> str:
    """``1.4G``, ``512M``, ``3.0K``: for the resource meter's narrow column."""
    if size is None:
        return "-"
    value, unit = _scaled(size, ("B", "K", "M", "G"))
    wide = unit in ("B", "M") and value >= 100
    return f"{value:.0f}{unit}" if wide else f"{value:.1f}{unit}"


def _scaled(size: float, units: tuple[str, ...]) -> tuple[float, str]:
    """``size`` in the largest of ``units`` (steps of 1024) that keeps it under 1024."""
    value, unit = float(size), units[0]
    for bigger in units[1:]:
        if abs(value) < 1024:
            break
        value, unit = value / 1024, bigger
    return value, unit


def signal_name(number: int) -> str:
    """``SIGTERM``; ``signal 99`` for a number without a name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def cause(exit_code: int | None, sig: int | None) -> str:
    """Why a process ended, in two words: ``exit 1``, ``SIGKILL``; empty when unknown."""
    if sig is not None:
        return signal_name(sig)
    if exit_code is not None:
        return f"exit {exit_code}"
    return ""


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)
