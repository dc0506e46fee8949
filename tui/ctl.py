"""``orch-tui ctl [RUN] COMMAND``: a run's state, its commands, logs, ctx and events, from a script.

RUN is a run id of this workspace (or a unique beginning of one, or its last part) or a run
folder; without it, the newest live run (for the
commands that only read, the newest run when none is live). A live run is reached through its
daemon (core.client); a finished one (or a headless one) is read from its folder (core.recorded): ``status``, ``logs``, ``ctx`` and ``events`` work on both, commands on a
finished run are refused ("the run is over (read-only)"). Every error is one line on stderr and
exit 2; ``wait`` exits as a headless run would (0, 1, 130), and a follow (``logs -f``,
``events --follow``) of a run that died (its daemon killed) says so and exits 130 as well. A
follow whose connection drops while the daemon still listens connects again and goes on.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import msgspec

from core.events import StepEvent, StepFinished
from core.recorded import DIED_EXIT_CODE, RecordedRun
from core.rundir import EVENTS, RunDir
from core.state import (
    ACTIVE,
    ENDED,
    FAILURES,
    RunState,
    Status,
    StepState,
    waiting_to_restart,
)
from core.text import clean, listed
from tui.cli import EXIT_FAILED, EXIT_OK, UsageError, whole_number
from tui.format import (
    RETRY_HINT,
    format_duration,
    service_note,
    state_words,
    step_status_words,
)
from tui.runs import daemon_listens, find_run, open_run, still_open

if TYPE_CHECKING:
    from core.client import RemoteControl
    from core.control import RunControl
    from core.events import Event

COMMANDS = (
    "status",
    "skip",
    "retry",
    "stop",
    "restart",
    "stop-run",
    "close",
    "wait",
    "logs",
    "ctx",
    "events",
)
#: The commands that only read: without RUN and with no live run, they read the newest run.
READERS = frozenset({"status", "wait", "logs", "ctx", "events"})
#: How long a reader waits between looks at a file when no event says it changed.
POLL_SECONDS = 0.5
#: How long events.jsonl may take to hold what the daemon already sent (it is flushed often).
EVENTS_FILE_PATIENCE = 30.0
LOG_CHUNK = 1 << 20
#: How often events.jsonl is looked at again while it lacks events the daemon has sent.
FILE_POLL_SECONDS = 0.05


class _Parser(argparse.ArgumentParser):
    """Mistakes are one line and exit 2 (UsageError), not argparse's usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog.removeprefix('orch-tui ')}: {message}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Control a run from a script: ctl [RUN] COMMAND, RUN a run id (or a unique beginning "
        "of one, or its last part: 3f9c) or a run folder (default: the newest live run; status, wait, logs, ctx and events: the newest run when none is "
        "live). Commands: " + ", ".join(COMMANDS) + " (-h after one "
        "for its options)."
    )
    parser.add_argument("words", nargs=argparse.REMAINDER, metavar="[RUN] COMMAND ...")


def _commands_parser() -> _Parser:
    parser = _Parser(prog="orch-tui ctl", usage="orch-tui ctl [RUN] COMMAND ...")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", prog="orch-tui ctl [RUN]"
    )
    status = sub.add_parser("status", help="the run and its steps")
    status.add_argument("--json", action="store_true", help="the run's state as JSON")
    status.add_argument(
        "--all", action="store_true", help="every step, also on a terminal (into a pipe: always)"
    )
    for name, what in (
        ("skip", "skip a step (pending, blocked, failed or stopped): its dependents go on"),
        ("retry", "run a step again (failed, cancelled or succeeded)"),
        ("stop", "stop a running step (again while it stops: kill it now)"),
        ("restart", "restart a service step"),
    ):
        sub.add_parser(name, help=what).add_argument("step", metavar="STEP")
    stop_run = sub.add_parser("stop-run", help="stop every step and end the run")
    stop_run.add_argument("--force", action="store_true", help="kill at once (SIGKILL)")
    sub.add_parser("close", help="end the run once nothing runs: background steps stopped")
    sub.add_parser("wait", help="wait until no step can run; exit 0/1 like a headless run")
    logs = sub.add_parser("logs", help="a step's log")
    logs.add_argument("step", metavar="STEP")
    logs.add_argument("-f", "--follow", action="store_true", help="until the step has ended")
    ctx = sub.add_parser("ctx", help="the ctx (or one key) as JSON")
    ctx.add_argument("key", nargs="?", metavar="KEY")
    events = sub.add_parser("events", help="the run's events as JSON lines")
    events.add_argument("--follow", action="store_true", help="then the live ones, to the end")
    events.add_argument(
        "--since", type=whole_number(0), default=0, metavar="SEQ", help="after event SEQ"
    )
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return parser


def cmd_ctl(args: argparse.Namespace) -> int:
    from core.client import DaemonGone

    words = list(args.words)
    run = None
    if words and words[0] not in COMMANDS and not words[0].startswith("-"):
        run = words.pop(0)
    if not words:
        raise UsageError(f"ctl: which command? ({', '.join(COMMANDS)})")
    parsed = _commands_parser().parse_args(words)
    reader = parsed.command in READERS
    control = open_run(find_run(run, Path.cwd(), or_newest=reader), client="ctl", reader=reader)
    try:
        return _HANDLERS[parsed.command](control, parsed)
    except DaemonGone as exc:
        raise UsageError(f"run {control.run_dir.path.name}: {exc}") from None
    finally:
        control.close()  # type: ignore[attr-defined]  # RemoteControl and RecordedRun have it


# -- status ----------------------------------------------------------------------------------------
def _status(control: RunControl, args: argparse.Namespace) -> int:
    state = control.snapshot()
    if args.json:
        print(json.dumps(state.to_dict(), indent=2))
        return EXIT_OK
    line = _run_line(control, state, time.time())
    print(line)
    _print_steps(state, time.time(), every=args.all, above=line)
    return EXIT_OK


def _run_line(control: RunControl, state: RunState, now: float) -> str:
    took = format_duration((state.ended or now) - state.started) if state.started else "not started"
    recorded = isinstance(control, RecordedRun)
    if recorded:
        if control.died:
            where = "the daemon is gone"
        elif control.busy:  # live: it did not answer (stopped, or busy in C code)
            where = f"live, pid {state.pid}, busy: read from its folder"
        else:
            where = "not live"
    else:
        where = f"live, pid {state.pid}"
    # the app header's words: "waiting" for a failed step's retry while a service is up, not
    # state.json's "running"; and what to do about it, in ctl's words
    word, hint = state_words(state, final=recorded or state.closing)
    if hint == RETRY_HINT:
        word += " (ctl retry or skip a step)"
    elif hint:
        word += f" ({hint}: ctl close ends the run)"
    if recorded and control.died:  # as ``runs`` says it (state.json: interrupted, as read)
        word = "died"
    return f"run {state.run_id} {clean(state.name)}: {word}, {took} ({where})"


#: ``status``'s columns, and those cut to fit a terminal (the note first, then the name)
STEPS_HEADER = ("STEP", "STATUS", "DURATION", "ATTEMPTS", "EXIT", "NOTE")
_STEP_TEXT = (5, 0)
#: A run of up to this many steps has each on a terminal (the headless summary's number)
STATUS_ALL_UP_TO = 40
#: A larger one's steps worth a row, the first kept when the screen has no room for all: what
#: runs (and is stopping or restarting), what failed, what a failure cut short or kept waiting
_WORTH_ORDER = {
    Status.RUNNING: 0,
    Status.READY: 0,
    Status.FAILED: 1,
    Status.TIMED_OUT: 1,
    "allowed": 2,
    Status.CANCELLED: 3,
    Status.STOPPED: 3,
    Status.BLOCKED: 4,
}


def _worth_a_row(step: StepState) -> int | None:
    """Where ``step`` comes among a large run's rows on a terminal (None: counted, not listed:
    it succeeded, was skipped or waits its turn)."""
    if step.stopping or step.restarting:
        return 0
    return _WORTH_ORDER.get("allowed" if step.allowed else step.status)


def _terminal_rows(
    steps: list[StepState], above: str, width: int
) -> tuple[list[StepState], list[StepState]]:
    """The steps a terminal lists, in recipe order, and those left out: every step of a run of
    up to STATUS_ALL_UP_TO; of a larger one those worth a row (``_worth_a_row``), as many as
    fit on the screen under the run's line (``above``), the header, and the line counting the
    rest (two lines kept for it), the shell's prompt after them. Ten thousand rows scrolled the
    run's line away and left the last steps on the screen, pending."""
    from tui.cells import cell_len

    if len(steps) <= STATUS_ALL_UP_TO:
        return steps, []
    height = os.get_terminal_size(sys.stdout.fileno()).lines
    room = max(height - -(-cell_len(above) // max(width, 1)) - 4, 1)
    ranked = sorted(
        (
            (rank, index)
            for index, step in enumerate(steps)
            if (rank := _worth_a_row(step)) is not None
        )
    )
    kept = sorted(index for _, index in ranked[:room])
    chosen = set(kept)
    return [steps[i] for i in kept], [s for i, s in enumerate(steps) if i not in chosen]


def _print_steps(state: RunState, now: float, *, every: bool = False, above: str = "") -> None:
    from tui.cells import fit_table
    from tui.stdout import print_table, terminal_width

    steps, hidden = list(state.steps.values()), []
    width = terminal_width()
    if width is not None and not every:
        steps, hidden = _terminal_rows(steps, above, width)
    rows = []
    for step in steps:
        elapsed = step.elapsed(now)
        exit_ = step.exit_code if step.exit_code is not None else step.signal
        note = f"blocked by {', '.join(step.blocked_by)}" if step.blocked_by else step.reason
        note = service_note(step, note or "")
        rows.append(
            (
                clean(step.name),
                step_status_words(step),
                format_duration(elapsed) if elapsed is not None else "",
                str(step.attempts),
                ""
                if exit_ is None
                else (str(exit_) if step.exit_code is not None else f"sig {exit_}"),
                " ".join(clean(note or "").split()),
            )
        )
    if width is not None:  # a row wrapped on a terminal is unreadable (into a pipe: whole)
        rows = fit_table(STEPS_HEADER, rows, width - 2 * (len(STEPS_HEADER) - 1), _STEP_TEXT)[1]
    if rows:
        print_table(STEPS_HEADER, rows)
    if hidden:
        from tui.headless.summary import counts

        more = f"… and {len(hidden)} more steps" if rows else f"{len(hidden)} steps"
        line = f"{more} ({counts(hidden)}): --all lists every step"
        if width is not None and len(line) > width:  # a wrapped line is one line more
            line = f"{more}: --all lists every step"
        print(line)


# -- commands ----------------------------------------------------------------------------------------
def _step_command(control: RunControl, args: argparse.Namespace) -> int:
    step = _known_step(control, args.step)
    _no_daemon_yet_going(control)
    reply = control.command(args.command, step)
    if not reply.ok and args.command == "restart" and reply.message.startswith("unknown command"):
        raise UsageError(f"restart {step!r}: not supported by this run")
    return _said(reply.ok, reply.message)


def _stop_run(control: RunControl, args: argparse.Namespace) -> int:
    if isinstance(control, RecordedRun):
        return _over_already(control)
    reply = control.command("stop_run", force=args.force)
    return _said(reply.ok, reply.message)


def _close(control: RunControl, args: argparse.Namespace) -> int:
    if isinstance(control, RecordedRun):
        return _over_already(control)
    reply = control.command("close")
    return _said(reply.ok, reply.message)


def _over_already(recorded: RecordedRun) -> int:
    """``stop-run`` or ``close`` of a run that is over: what they ask for is done, exit 0 (a
    CI job's cleanup step runs them whether the run ended first or not)."""
    _no_daemon_yet_going(recorded)
    state = recorded.snapshot()
    print(
        f"run {recorded.run_dir.path.name} is over already ({state.status}, exit "
        f"{state.exit_code}): nothing to stop"
    )
    return EXIT_OK


def _no_daemon_yet_going(control: RunControl) -> None:
    """A command for a run read from its folder that is not over: one running ``--no-ui``, in
    its own process, which has no daemon to take commands (it was refused as "the run is
    over", which it is not)."""
    if not isinstance(control, RecordedRun):
        return
    state = control.snapshot()
    if state.ended is None:
        raise UsageError(
            f"run {control.run_dir.path.name} runs without a daemon (--no-ui, pid {state.pid}): "
            f"ctl cannot change it; Ctrl-C in its terminal or kill -INT {state.pid} stops it"
        )


def _said(ok: bool, message: str) -> int:
    if not ok:
        raise UsageError(clean(message))
    print(clean(message))
    return EXIT_OK


def _known_step(control: RunControl, name: str) -> str:
    steps = list(control.snapshot().steps)
    if name in steps:
        return name
    raise UsageError(f"no step named {name!r}{_did_you_mean(name, steps)}")


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _wait(control: RunControl, args: argparse.Namespace) -> int:
    """The run's exit code once no step can run; a daemon that dies meanwhile leaves the run
    as its folder tells it (interrupted)."""
    from core.client import DaemonGone, RemoteControl

    if isinstance(control, RemoteControl) and control.stays_open:
        _say_why_waiting(control)
    try:
        code = control.wait()
    except DaemonGone:
        code = None
    if code is None:  # the daemon went away without saying how the run ended
        with RecordedRun.open(control.run_dir.path, daemon_gone=True) as recorded:
            code = recorded.wait()
    elif isinstance(control, RemoteControl) and control.stays_open and not _ending(control):
        _say_still_open(control.run_dir.path.name)
    return code if code is not None else EXIT_OK


def _say_why_waiting(control: RunControl) -> None:
    """A run kept open (no --exit-when-done) whose work is done while a service is up is not
    over: ``wait`` waits on until it is closed, and it said nothing of it (a CI job hung
    there). Said once on stderr, when the run is found so (now, or as its steps end), from a
    thread of its own: the reader thread's events only flag it."""
    run_id = control.run_dir.path.name
    changed = threading.Event()

    def watch() -> None:
        while True:
            state = control.snapshot()
            word, _hint = state_words(state, final=state.closing)
            if word in ("done", "waiting"):
                up = [
                    s.name if s.status in ACTIVE else f"{s.name} (restarting)"
                    for s in state.steps.values()
                    if s.background and (s.status in ACTIVE or waiting_to_restart(s))
                ]
                work = (
                    "its work is done"
                    if word == "done"
                    else "a step failed and waits for ctl retry or skip"
                )
                print(
                    f"orch-tui: run {run_id}: {work}, {_services(up)} still up: wait waits "
                    f"until the run ends (orch-tui ctl {run_id} close ends it; "
                    "--exit-when-done ends a run on its own)",
                    file=sys.stderr,
                    flush=True,
                )
                return
            changed.wait()
            changed.clear()
            time.sleep(POLL_SECONDS)  # a look at most this often: a snapshot copies the run

    control.subscribe(lambda _event: changed.set())
    threading.Thread(target=watch, name="ctl-wait-why", daemon=True).start()


def _services(names: list[str]) -> str:
    if not names:
        return "its services"
    return f"{'service' if len(names) == 1 else 'services'} {listed(names, 3)}"


def _ending(control: RunControl) -> bool:
    """The run was ended (a stop-run, a close): its daemon exits, though the wait's answer
    may come before its word that it closes (said "still up ... close ends it", falsely)."""
    return control.snapshot().closing


def _say_still_open(run_id: str) -> None:
    """A run started without --exit-when-done stays open for retry or skip once no step
    can run: its daemon outlives ``wait``, a process a CI job would leave behind unawares."""
    print(f"{still_open([run_id])} (--exit-when-done ends a run on its own)", file=sys.stderr)


# -- logs ------------------------------------------------------------------------------------------
def _logs(control: RunControl, args: argparse.Namespace) -> int:
    """The step's log; with -f, what it writes next too, until the step has ended (and its
    log is complete) or the run is over."""
    step = _known_step(control, args.step)
    out = sys.stdout.buffer
    changed = threading.Event()
    end = _StepEnd(step)

    def follow(live: RunControl) -> None:
        live.subscribe(lambda event: end.see(event) and changed.set())
        end.seed(live.snapshot())

    if args.follow:
        follow(control)
    offset = _copy_log(control.run_dir, step, 0, out)
    if not args.follow:
        return EXIT_OK
    with _Link(control, follow) as link:
        while not _log_done(link.current(), end):
            changed.wait(POLL_SECONDS)
            changed.clear()
            offset = _copy_log(control.run_dir, step, offset, out)
        _copy_log(control.run_dir, step, offset, out)  # what it wrote up to its end
        return _followed_to_the_end(link.control, f"logs {step} -f")


class _StepEnd:
    """Whether a followed step has ended, from its events in order (they come on the client's
    reader thread): an end that says another attempt follows (``will_retry``, a service's
    ``will_restart``) is not the step's end. The run's mirror could not tell it: a look
    between that end and the event after it (pending again) saw the step failed, and ``logs
    -f`` stopped after one attempt of several."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.seq = -1  # the newest event of the step's seen, or the state it was seeded from
        self.ended = False
        self._lock = threading.Lock()

    def seed(self, run: RunState) -> None:
        """The step as the run was when the follow began (or connected again), unless an event
        said more since. A failed attempt with a retry to come is not taken for an end: the
        snapshot may come right after its end and before the event that makes it pending
        again; nor a service's end with a restart to come (``restarting``)."""
        state = run.steps[self.step]
        ended = (
            state.status in ENDED
            and not state.restarting
            and not (state.status in FAILURES and state.attempts <= state.retries)
        )
        with self._lock:
            if run.seq > self.seq:
                self.seq, self.ended = run.seq, ended

    def see(self, event: Event) -> bool:
        """Note ``event``; whether it is the step's or the run's end (worth a look at the log)."""
        if getattr(event, "step", None) != self.step:
            return event.kind in ("run_finished", "run_closing")
        if isinstance(event, StepEvent):  # output events have no state
            again = isinstance(event, StepFinished) and (event.will_retry or event.will_restart)
            with self._lock:
                if event.seq > self.seq:
                    self.seq = event.seq
                    self.ended = event.state.status in ENDED and not again
        return True


def _log_done(control: RunControl, end: _StepEnd) -> bool:
    if isinstance(control, RecordedRun):  # no events come: its folder is read again
        run = control.refresh()
        end.seed(run)
        return end.ended or run.exit_code is not None  # over, or died
    if _gone(control):
        return True  # nothing more will be written by this run
    return end.ended or control.wait(0) is not None


def _gone(control: RunControl) -> bool:
    """Whether the live run's daemon has closed the connection (it ended, or was killed)."""
    return getattr(control, "gone", None) is not None


class _Link:
    """The connection a follow reads a live run through, made again when it drops while the
    run goes on and its daemon still listens (the daemon let this client go, or the socket
    was cut): such a run is not dead, and following it is what was asked. ``follow`` subscribes
    each new connection as the first one was."""

    def __init__(self, control: RunControl, follow: Callable[[RunControl], None]) -> None:
        self.control = control
        self._follow = follow
        self._made: list[RemoteControl] = []

    def current(self) -> RunControl:
        """The connection, made again first if it dropped while the daemon still listens; the
        dropped one when it cannot be (the daemon ended meanwhile, or does not answer)."""
        from core.client import DaemonGone, ProtocolError, connect

        if not _dropped(self.control):
            return self.control
        try:
            fresh = connect(self.control.run_dir.path, client="ctl")
        except (DaemonGone, ProtocolError):
            return self.control
        self._made.append(fresh)
        self._follow(fresh)
        self.control = fresh
        return fresh

    def __enter__(self) -> _Link:
        return self

    def __exit__(self, *exc: object) -> None:
        for control in self._made:
            control.close()


def _dropped(control: RunControl) -> bool:
    """Whether the connection to a live run dropped while the run goes on: not over as far
    as it told this client, and its daemon still listens (core.client's daemon closes every
    connection as it ends, after saying so; a killed one's socket refuses)."""
    return _gone(control) and control.wait(0) is None and daemon_listens(control.run_dir)


def _followed_to_the_end(control: RunControl, again: str = "") -> int:
    """How a follow ends: 0 when the run ended (or is going on); when its daemon went away
    without ending it (killed), the run died: said on stderr, and ``wait``'s exit code for
    such a run (130, interrupted), so that a script following it does not take it for a
    run that ended as it should. A connection lost and not made again while the daemon still
    listens (it did not answer): 1, and how to follow again (``again``: the command)."""
    run_id = control.run_dir.path.name
    if _dropped(control):
        print(
            "orch-tui: lost the connection to the run's daemon (it still runs): "
            f"orch-tui ctl {run_id} {again} to follow again",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if not _died(control):
        return EXIT_OK
    print(
        f"orch-tui: run {run_id} died: its daemon is gone, the run did not "
        "end (orch-tui runs lists it as died)",
        file=sys.stderr,
    )
    return DIED_EXIT_CODE


def _died(control: RunControl) -> bool:
    """Whether the run died, as its folder tells it once the daemon is gone: its end is not in
    state.json (a daemon that ended the run wrote it there before it closed the connection)."""
    if isinstance(control, RecordedRun):
        return control.died
    if not _gone(control):
        return False
    with RecordedRun.open(control.run_dir.path, daemon_gone=True) as recorded:
        return recorded.died


def _copy_log(run_dir: RunDir, step: str, offset: int, out: BinaryIO) -> int:
    """Write the log from ``offset`` to what it holds now; the new offset."""
    while True:
        data, size = run_dir.read_log(step, offset, LOG_CHUNK)
        if not data:
            out.flush()
            return offset
        out.write(data)
        offset += len(data)


# -- ctx ---------------------------------------------------------------------------------------------
def _ctx(control: RunControl, args: argparse.Namespace) -> int:
    if args.key is None:
        value: Any = {key: control.ctx_value(key).value for key in control.ctx_keys()}
    else:
        try:
            value = control.ctx_value(args.key).value
        except KeyError:
            hint = _did_you_mean(args.key, list(control.ctx_keys()))
            raise UsageError(f"no ctx key {args.key!r}{hint}") from None
    print(json.dumps(value, indent=2, ensure_ascii=False))
    return EXIT_OK


# -- events ------------------------------------------------------------------------------------------
class _Seq(msgspec.Struct):
    """What is read of each line of events.jsonl: its sequence number."""

    seq: int = 0


def _events(control: RunControl, args: argparse.Namespace) -> int:
    """events.jsonl after ``--since``: of a live run, up to its snapshot's event; with
    --follow, then the live ones, each once (the live stream starts right after the snapshot:
    subscribed before it was taken), a resync's gap filled from the file."""
    from core.events import encode_event

    out = sys.stdout.buffer
    if isinstance(control, RecordedRun):  # the file is the whole run, or all of it so far
        if not args.follow:
            _past_events(control.run_dir, args.since, None, out)
            return EXIT_OK
        # a headless run still going (or died): the file read on as it grows, once, up to
        # the run's end (its events are written before state.json says it ended)
        _past_events(control.run_dir, args.since, None, out, until=_ended(control))
        return _followed_to_the_end(control)
    live: queue.SimpleQueue[Event | RunState] = queue.SimpleQueue()

    def follow(connection: RunControl) -> None:
        connection.subscribe(live.put, on_resync=live.put)

    if not args.follow:
        _past_events(control.run_dir, args.since, control.snapshot().seq, out)
        return EXIT_OK
    follow(control)
    with _Link(control, follow) as link:

        def gone() -> bool:
            return _gone(link.control)

        last = _past_events(control.run_dir, args.since, control.snapshot().seq, out, gone)
        while True:
            try:
                item: Event | RunState = live.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not gone():
                    continue
                if _gone(link.current()):
                    break
                item = link.control.snapshot()  # connected again: on from its state, as a resync
            if isinstance(item, RunState):  # a resync: the events it skipped are in the file
                last = _past_events(control.run_dir, last, item.seq, out, gone)
            elif item.seq > last:
                out.write(encode_event(item) + b"\n")
                out.flush()
                last = item.seq
        # the file's events past the stream's: a connection that dropped just before the
        # daemon ended (nothing to connect to again) missed them
        last = _past_events(control.run_dir, last, None, out, gone)
        return _followed_to_the_end(link.control, f"events --follow --since {last}")


def _ended(control: RecordedRun) -> Callable[[], bool]:
    """Whether the run read from its folder has ended (or died), its state.json read again
    at most every POLL_SECONDS (another process writes it: nothing to wait on)."""
    looked = time.monotonic()

    def ended() -> bool:
        nonlocal looked
        if time.monotonic() - looked < POLL_SECONDS:
            return False
        looked = time.monotonic()
        return control.refresh().exit_code is not None

    return ended


def _past_events(
    run_dir: RunDir,
    after: int,
    upto: int | None,
    out: BinaryIO,
    gone: Callable[[], bool] = lambda: False,
    until: Callable[[], bool] | None = None,
) -> int:
    """Copy events.jsonl's lines with ``after`` < seq <= ``upto`` (None: to its end), waiting
    (a while) for the file to hold them all, unless the daemon is ``gone``: a killed one never
    writes what it had sent and not yet flushed; ``until``: to its end, waiting for more until
    it says so. The last seq copied."""
    last = after
    deadline = time.monotonic() + EVENTS_FILE_PATIENCE

    def enough(seen: int) -> bool:
        if until is not None:
            return until()
        return upto is None or seen >= upto or time.monotonic() > deadline or gone()

    for seq, line in _event_lines(run_dir, enough):
        if seq > after and (upto is None or seq <= upto):
            out.write(line)
            last = seq
    out.flush()
    return last


def _event_lines(run_dir: RunDir, enough: Callable[[int], bool]) -> Iterator[tuple[int, bytes]]:
    """(seq, line) of each whole line of events.jsonl, read through the held folder; at its
    end, waits for more until ``enough(the last seq read)``."""
    assert run_dir.folder is not None
    decoder = msgspec.json.Decoder(_Seq)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(EVENTS, flags, dir_fd=run_dir.folder.fd)
    except FileNotFoundError:
        return
    seen, partial = 0, b""
    with open(fd, "rb") as file:
        while True:
            chunk = file.read(LOG_CHUNK)
            if not chunk:
                if enough(seen):
                    chunk = file.read(LOG_CHUNK)  # what came as it looked
                    if not chunk:
                        return
                else:
                    time.sleep(FILE_POLL_SECONDS)  # another process appends: nothing to wait on
                    continue
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            for line in lines:
                if line:
                    seen = decoder.decode(line).seq
                    yield seen, line + b"\n"


_HANDLERS: dict[str, Callable[[RunControl, argparse.Namespace], int]] = {
    "status": _status,
    "skip": _step_command,
    "retry": _step_command,
    "stop": _step_command,
    "restart": _step_command,
    "stop-run": _stop_run,
    "close": _close,
    "wait": _wait,
    "logs": _logs,
    "ctx": _ctx,
    "events": _events,
}
