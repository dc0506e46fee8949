"""The runner: the state machine of a run. It schedules a recipe's steps, publishes events,
and takes commands.

All step state is changed on one scheduler thread (core.loop), from messages (a step ended, a
step is ready, a timer fired, a command arrived), so there are no races between, say, a timeout
and the step's own exit. The run's state is one ``RunState`` (core.state), changed on that
thread; every change is published as an event that carries it (core.events). Everything else
talks to the runner through the small API at the top of the class: ``subscribe`` for events;
``skip``, ``retry``, ``stop_step``, ``restart``, ``stop_run``, ``close`` for commands;
``snapshot`` for a consistent copy of the state. Front ends (the headless reporter, the TUI)
use it only through core.control's ``RunControl``.

What it decides with: core.dependencies (who waits for whom, what a failure blocks),
core.steprun (a step's record, an attempt's start and end), core.executors and core.launch (how
a step of each type is started), core.readiness (when a background step is ready), core.ticker
(the coalesced output, ctx and resource events), core.store and core.rundir (the run's files),
core.supervisor and core.health (when a service is restarted, and whether it is healthy),
core.stoporder (the run's end stops dependents before what they depend on).

Two modes: headless, the run ends when no step can run any more; ``interactive`` (the TUI), a
failed step blocks its dependents and the runner waits for the user to retry or skip it, until
``close``.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from core import events as ev
from core.bus import EventBus
from core.context import Context
from core.control import STOPPED_BY_COMMAND
from core.dependencies import Dependencies
from core.diskspace import disk_is_full
from core.executors import Execution, LaunchContext, Outcome, executor_for
from core.executors.python import OutputRouting
from core.health import Commands, HealthMonitor, make_probe
from core.launch import Launcher
from core.limits import limit_words
from core.log import DEBUG, get_logger, say_where_a_crash_is
from core.loop import MessageLoop
from core.reactor import OutputReactor
from core.readiness import Readiness
from core.recipe import Recipe, no_executor_note, put_workspace_on_path
from core.resources import Sampler
from core.rundir import RunDir, new_run_id
from core.state import (
    ACTIVE,
    FAILURES,
    Health,
    RunState,
    RunStatus,
    Status,
    allowed_actions,
)
from core.steplog import StepLog
from core.steprun import MANUAL, StepRun, preselect
from core.stoporder import StopOrder
from core.store import ResumePoint, RunStore
from core.ticker import Ticker
from core.watchdog import Watchdog, mark_this_process, stop_group
from core.workers import Workers

if TYPE_CHECKING:
    from core.cluster import Cluster

_log = get_logger("orch.runner")

#: events too frequent for the --debug log (the step logs and the meters have them)
_NOT_LOGGED = frozenset({"step_output", "resources"})
#: fields of an event left out of the --debug log line (the state: the other fields say it)
_NOT_DEBUG_FIELDS = frozenset({"type", "ts", "seq", "state"})
#: Statuses that fail the run, unless the step's failure is allowed (continue_on_error).
_FAILS_THE_RUN = FAILURES | {Status.BLOCKED, Status.CANCELLED}


class RunStartError(Exception):
    """The run could not start: a limit ran out (open files, processes: core.limits). Its
    message is one line for the user; nothing ran, and what the run had made is removed."""


#: the recipe's warnings a run daemon says as messages, the rest counted: with the count, as
#: many as the app shows of the messages said before it attached (tui.app.MESSAGES_AT_ONCE)
WARNINGS_SAID = 2


def _default_signals() -> None:
    """In a child a python step forks without exec (``multiprocessing``'s fork, ``os.fork``):
    the signals the runner handles are as in any new Python process again. The runner's own
    handler ran in the child, which SIGTERM then never ended: a daemonic process a step left
    was terminated at the runner's exit, joined, and orch-tui waited for it for ever."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if callable(signal.getsignal(sig)):
            signal.signal(sig, signal.SIG_DFL)
    if callable(signal.getsignal(signal.SIGINT)):
        signal.signal(signal.SIGINT, signal.default_int_handler)


class Runner:
    def __init__(
        self,
        recipe: Recipe,
        *,
        run_dir: Path | None = None,
        jobs: int | None = None,
        only: list[str] | None = None,
        skip: list[str] | None = None,
        resume: ResumePoint | None = None,
        interactive: bool = False,
        keep_alive: bool = False,
        sampler: Sampler | None = None,
        resource_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        cluster: Cluster | None = None,
        own_process: bool = False,
        say_warnings: bool = False,
    ) -> None:
        """``cluster``: the run's Dask cluster (core.cluster), already checked; the run
        closes it when it ends. ``own_process``: the run is this process's only one (the run
        daemon, a headless orch-tui): its marker goes in the process's environment
        (``mark_this_process``), so what python steps start is the run's to stop.
        ``say_warnings``: the recipe's warnings are the run's first messages (a run daemon's:
        the app and ``ctl events`` show them, as the run's other warnings; a headless run's
        command line has printed them already)."""
        self.recipe = recipe
        self.own_process = own_process
        self.say_warnings = say_warnings
        self.jobs = jobs or recipe.jobs or os.cpu_count() or 1
        self.interactive = interactive
        self.keep_alive = keep_alive
        self.clock = clock
        self.resume = resume
        self.ctx = Context(resume.ctx if resume is not None else recipe.ctx)
        run_id = new_run_id()
        self._made_folder = run_dir is None  # not a --run-dir: ours to remove, if it must be
        self.rundir = RunDir.create(run_dir, Path.cwd(), run_id)
        #: the default folder is named after the run, made unique there (RunDir.create)
        self.run_id = self.rundir.path.name if run_dir is None else run_id
        self.rundir.name_logs(lambda: [s.name for s in recipe.steps])
        self.store = RunStore(self.rundir)
        self.store.space.on_full = self._disk_full
        self.bus = EventBus(sink=self.store.append_events)
        self.workers = Workers()
        self.reactor = OutputReactor()
        self.watchdog = Watchdog(self.run_dir)
        launcher = self.launcher = Launcher(recipe, self.run_id, self.rundir, self.ctx)
        self.cluster = cluster
        self._launch = LaunchContext(self.ctx, self.workers, self.reactor, launcher, cluster)
        self.lock = threading.RLock()  # the run's state changes, and is read, under it
        #: the run's kept messages: a store thread's save error may be said while the scheduler
        #: says something else (neither holds the other's lock; each keeps its message)
        self._messages_lock = threading.Lock()
        self.loop = MessageLoop(self.lock, self._turn_end, self._scheduler_error)
        self.commands = Commands()  # the ready and health cmds: the run's end stops them
        self.readiness = Readiness(
            self.ctx, self.workers, self.loop.post, self.loop.after, launcher, self.commands
        )
        self.ticker = Ticker(self, sampler, resource_interval)

        self.runs = {s.name: StepRun.of(s, self.run_dir) for s in recipe.steps}
        self.run_state = RunState(
            run_id=self.run_id,
            recipe=str(recipe.path),
            name=recipe.name or recipe.path.stem,
            run_dir=str(self.run_dir),
            pid=os.getpid(),
            resumed_from=resume.record() if resume else None,
            ctx_version=self.ctx.version,
            steps={name: run.state for name, run in self.runs.items()},
        )
        self.deps = Dependencies(self.runs, recipe.deps, self._emit_status)
        preselect(self.runs, only, skip, resume.step if resume else None)

        self._running_fg = 0
        self._interrupted = False
        self._closing = False
        self._cut_short = False
        self._finished = threading.Event()
        self._stopping_background = False
        self._stop_order = StopOrder(self.runs)  # the run's end: dependents first

    # ------------------------------------------------------------------ public API
    def subscribe(self, callback: Callable[[ev.Event], None]) -> None:
        """Receive every event, in order, on the event thread (never on the scheduler's)."""
        self.bus.subscribe(callback)

    def start(self) -> None:
        """Begin the run in background threads and return at once."""
        put_workspace_on_path(self.recipe)
        self.run_state.started = self.clock()
        self.run_state.status = RunStatus.RUNNING
        routed = False
        try:
            self.watchdog.start()
            if self.cluster is not None and self.cluster.scratch is not None:
                self.watchdog.own_folder(self.cluster.scratch)  # removed if the runner is killed
            if self.own_process:  # after the watchdog's start: it is not the run's to stop
                mark_this_process(str(self.run_dir))
                say_where_a_crash_is()
                os.register_at_fork(after_in_child=_default_signals)
            OutputRouting.acquire()
            routed = True
            self.store.start(
                self._state_json, self.ctx.to_json_bytes, lambda: self.ctx.version, self._save_error
            )
            self.bus.start()
        except (OSError, RuntimeError) as exc:  # a limit ran out: nothing ran, one line says it
            words = limit_words(exc)
            if words is None:
                raise
            self.watchdog.stop()
            if routed:
                OutputRouting.release()
            self.abandon()
            raise RunStartError(f"cannot start the run: {words}") from None
        with self.lock:
            self.emit(
                ev.RunStarted(
                    run_id=self.run_id,
                    recipe=str(self.recipe.path),
                    run_dir=str(self.run_dir),
                    state=self.run_state.copy(),
                    ts=self.clock(),
                )
            )
        if self.resume is not None:
            where = f"{self.resume.run_id} ({self.resume.run_dir})"
            self.emit(ev.RunMessage(level="info", text=f"ctx restored from run {where}"))
        if self.say_warnings:
            self._say_recipe_warnings()
        if self.cluster is None and (note := no_executor_note(self.recipe)) is not None:
            self.emit(ev.RunMessage(level="warning", text=note, ts=self.clock()))
        for run in self.runs.values():
            if run.state.status == Status.SKIPPED:
                self._emit_status(run)
        self.loop.start(self.deps.release_initial)
        self.ticker.start()

    def abandon(self) -> None:
        """The run could not start (``start`` failed, or the daemon could not serve it):
        what it made goes (its first files, its folder if orch-tui made it), its cluster is
        closed."""
        self.store.abandon(folder_too=self._made_folder)
        if self.cluster is not None:
            self.cluster.close()

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the run is over; its exit code (None if ``timeout`` passed first)."""
        if not self._finished.wait(timeout):
            return None
        return self.run_state.exit_code

    def run(self) -> int:
        """Start and wait: the headless entry point.

        What exists by then (the modules, the recipe, every step's record) is left out of the
        cyclic garbage collector's passes while the run goes on (``gc.freeze``): none of it is
        garbage, and a full pass over it held the GIL, and so the next step's start, for 150 ms
        at a time in a 5,000-step run. Unfrozen after: a process running more than one run
        (the tests) must not keep what was garbage when this one began.
        """
        gc.freeze()
        try:
            self.start()
            while (code := self.wait(0.5)) is None:
                pass
        finally:
            gc.unfreeze()
        return code

    @property
    def run_dir(self) -> Path:
        """The run's folder (``rundir`` knows where each file in it is)."""
        return self.rundir.path

    @property
    def exit_code(self) -> int | None:
        """The run's exit code once it has ended (see ``status``), else None."""
        return self.run_state.exit_code

    @property
    def started_at(self) -> float | None:
        return self.run_state.started

    @property
    def finished(self) -> bool:
        """The runner's threads are done (after ``close`` in interactive mode): see ``status``."""
        return self._finished.is_set()

    @property
    def status(self) -> RunStatus:
        """The run's status as state.json has it: running, then succeeded, failed or
        interrupted once every step has ended, which in interactive mode happens before
        ``finished`` (the app stays open) and may be undone by a retry."""
        return self.run_state.status

    @property
    def ended_at(self) -> float | None:
        """When the run ended (None while it runs, and again after a retry reopened it)."""
        return self.run_state.ended

    def skip(self, name: str) -> None:
        """Skip a pending, blocked, failed or cancelled step: its dependents go on as if it
        succeeded."""
        self._command(self._do_skip, name)

    def retry(self, name: str) -> None:
        """Run a finished step again; steps it blocked go on after it."""
        self._command(self._do_retry, name)

    def stop_step(self, name: str) -> None:
        """Stop a running step (SIGTERM to its group, grace, SIGKILL); recorded as cancelled."""
        self._command(self._do_stop_step, name)

    def restart(self, name: str) -> None:
        """Restart a running service: stop it (SIGTERM, grace, SIGKILL), start it again at once."""
        self._command(self._do_restart, name)

    def stop_run(
        self, sig: int = signal.SIGTERM, *, force: bool = False, note: str = STOPPED_BY_COMMAND
    ) -> None:
        """Stop everything (``stop-run``, Ctrl-C, SIGTERM): ``sig`` to the steps' groups, then
        their grace; ``force``: SIGKILL at once. ``note``: why, as each step it cuts short
        records it (``interrupted_by(SIGINT)`` when a signal asked for it, not a command)."""
        self.loop.post(lambda: self._do_stop_run(sig, force, note))

    def close(self) -> None:
        """End an interactive or keep-alive run: stop background steps, finish cleanly."""
        self.loop.post(self._do_close)

    def allowed_actions(self, name: str) -> frozenset[str]:
        """Which of skip/retry/stop apply to the step now (the TUI shows only these keys)."""
        with self.lock:
            return allowed_actions(self.runs[name].state, self.run_state)

    def snapshot(self) -> RunState:
        """The run's state now, a copy that does not change (its ``seq``: the last event in it)."""
        with self.lock:
            return self.run_state.copy()

    def state(self) -> dict[str, Any]:
        """The state.json document: a consistent snapshot, safe to call from any thread."""
        with self.lock:
            return self.run_state.to_dict()

    def _state_json(self) -> bytes:
        """state.json's bytes, taken under the lock (10,000 steps take a few ms)."""
        with self.lock:
            return self.run_state.to_json()

    # ------------------------------------------------------------------ scheduling
    def _command(self, fn: Callable[[StepRun], None], name: str) -> None:
        if name not in self.runs:
            raise KeyError(f"no step named {name!r}")
        self.loop.post(lambda: fn(self.runs[name]))

    def _scheduler_error(self) -> None:
        self.emit(ev.RunMessage(level="error", text="internal scheduler error"))

    def _turn_end(self) -> None:
        """After each message of the loop (core.loop): start what may start, end what is over."""
        self._schedule()
        self._maybe_finish()

    def _schedule(self) -> None:
        if self._interrupted or self._closing or self._stopping_background:
            return
        while (run := self.deps.pop_ready(background=True)) is not None:
            self._start_if_pending(run)
        while self._running_fg < self.jobs and (run := self.deps.pop_ready(False)) is not None:
            self._start_if_pending(run)

    def _start_due(self, run: StepRun) -> bool:
        """Pending, not waiting out a delay nor for its last start's group to be gone (a
        service's restart: a new start beside a process of the old one could find its port
        taken), its dependencies done."""
        return (
            run.state.status == Status.PENDING
            and not run.retry_due
            and not run.clearing
            and self.deps.satisfied(run)
        )

    def _start_if_pending(self, run: StepRun) -> None:
        if self._start_due(run):
            self._start(run)

    # ------------------------------------------------------------------ starting a step
    def _start(self, run: StepRun) -> None:
        step = run.step
        restarted, run.restarting = run.restarting, False
        run.begin(self.clock())
        if restarted:  # counted as it happens: a run that ends before made no restart
            run.state.restarts += 1
            run.state.restart_reason = run.restart_for
        if not step.background:
            self._running_fg += 1
        try:
            log_file = self.rundir.log_file(step.name)
            steplog = StepLog(  # the file made if written
                self.rundir.logs_folder, log_file, lazy=True, space=self.store.space
            )
        except OSError as exc:  # no log file (too many open files, disk trouble): fail, not hang
            run.steplog = None
            self._emit_step(ev.StepStarted, run, attempt=run.state.attempts)
            self._ended(run, None, Outcome(None, error=f"cannot open its log: {exc}"))
            return
        if restarted:
            state = run.state
            steplog.write_text(f"--- restart {state.restarts} ({state.restart_reason}) ---\n")
        elif run.state.attempts > 1:
            steplog.write_text(f"--- attempt {run.state.attempts} ---\n")
        run.steplog = steplog
        self.ticker.started(run)
        taken = self.readiness.port_taken(step)
        if taken:
            steplog.write_text(f"orch-tui: not started: {taken}\n")
            self._emit_step(ev.StepStarted, run, attempt=run.state.attempts)
            self._ended(run, None, Outcome(None, error=taken))
            return
        try:
            execution = self._make_execution(run, steplog)
            run.execution = execution
            execution.start()
        except (OSError, ValueError) as exc:  # ValueError: a ctx value with NUL to expose, ...
            run.execution = None
            steplog.write_text(f"orch-tui: cannot start {step.name!r}: {exc}\n")
            self._emit_step(ev.StepStarted, run, attempt=run.state.attempts)
            why = getattr(exc, "strerror", None) or exc
            self._ended(run, None, Outcome(None, error=f"cannot start: {why}"))
            return
        pid = execution.pid
        if pid is not None:
            self.watchdog.add(pid, step.grace)
        self._emit_step(ev.StepStarted, run, attempt=run.state.attempts, pid=pid)
        if step.timeout:
            self.loop.after(step.timeout, lambda: self._on_timeout(run, execution))
        if step.background and run.satisfied:
            # a restart: readiness is for the first start only, but its health counts only
            # once it is up, within the time the first start had for its ready check
            self._mark_ready(run, settle=step.ready.timeout if step.ready else 0.0)
        elif step.background:
            self._arm_readiness(run, execution)
        self.store.state_changed()

    def _make_execution(self, run: StepRun, steplog: StepLog) -> Execution:
        """The attempt, made by its step type's executor (core.executors); it reports its end
        on the scheduler thread."""

        def on_exit(outcome: Outcome) -> None:
            self.loop.post(lambda: self._ended(run, execution, outcome))

        make = executor_for(run.step, self._launch)
        execution = make(run.step, steplog, run.state.attempts, self._launch, on_exit)
        return execution

    # ------------------------------------------------------------------ readiness
    def _arm_readiness(self, run: StepRun, execution: Execution) -> None:
        """Check the background step's readiness (core.readiness): ready only while this
        attempt still waits for it."""

        def waiting() -> bool:  # not once it is being stopped: nothing is tried after
            return (
                run.execution is execution
                and run.state.status == Status.RUNNING
                and not run.stop_as
            )

        def ready() -> None:
            if waiting():
                self._mark_ready(run)

        def fail(reason: str) -> None:
            if waiting():
                self._stop(run, Status.FAILED, reason)

        assert run.steplog is not None
        self.readiness.arm(run.step, execution, run.steplog, waiting, ready, fail)

    def _mark_ready(self, run: StepRun, *, settle: float = 0.0) -> None:
        run.state.status, run.ready = Status.READY, True
        self._emit_step(ev.StepReady, run)
        if not run.satisfied:
            self.deps.satisfy(run)
        self._watch_health(run, settle)
        self.store.state_changed()

    # ------------------------------------------------------------------ health
    def _watch_health(self, run: StepRun, settle: float) -> None:
        """Check the up service's health (core.health) until this start ends; ``settle``:
        seconds its failures count only after a check passed (core.health.HealthMonitor)."""
        spec, execution = run.step.health, run.execution
        if spec is None or execution is None:
            return
        launcher = self.launcher
        env, cwd = launcher.probe_env(run.step), launcher.cwd(run.step)
        probe = make_probe(spec, env, cwd, self.commands)

        def report(health: Health, detail: str | None) -> None:
            self.loop.post(lambda: self._health_changed(run, monitor, health, detail))

        monitor = run.monitor = HealthMonitor(spec, probe, report, settle=settle)
        monitor.start(self.workers)

    def _health_changed(
        self, run: StepRun, monitor: HealthMonitor, health: Health, detail: str | None
    ) -> None:
        """Record the service's health; an unhealthy one is stopped, to be restarted if its
        policy says so (``_ended``), else it fails."""
        if run.monitor is not monitor or run.stop_as:
            return  # a report about a start that has ended, or is being stopped anyway
        run.state.health = health
        self._emit_step(ev.StepHealth, run, health=health, detail=detail)
        if health == Health.UNHEALTHY:
            run.end_cause = f"unhealthy: {detail}"
            self._stop(run, Status.FAILED, run.end_cause)
        self.store.state_changed()

    # ------------------------------------------------------------------ stopping
    def _on_timeout(self, run: StepRun, execution: Execution) -> None:
        if run.execution is execution and not run.stop_as:
            self._stop(run, Status.TIMED_OUT, f"timed out after {run.step.timeout:g}s")

    def _stop(
        self, run: StepRun, status: str, reason: str | None, sig: int = signal.SIGTERM
    ) -> None:
        """Ask the running attempt to end; record ``status`` when it does; SIGKILL after grace."""
        execution = run.execution
        if execution is None:
            return
        if run.stop_as is None:
            run.stop_as, run.stop_reason = status, reason
        execution.stop(sig)
        self.loop.after(run.step.grace, lambda: self._kill(run, execution))
        if not run.state.stopping:  # said: a service draining its connections takes a while
            run.state.stopping = True
            self._emit_status(run)

    def _stop_in_turn_as(
        self, run: StepRun, status: str, reason: str | None, sig: int = signal.SIGTERM
    ) -> None:
        """The run's end: ``run`` is to stop as ``status``, signalled in its turn
        (``_stop_in_turn``). Recorded so at once: whatever ends it while it waits (a second
        Ctrl-C's SIGKILL, its own crash as what it serves goes) is the end's, not a failure
        of its own, as when every step was signalled together."""
        if run.stop_as is None:
            run.stop_as, run.stop_reason = status, reason
        self._stop_order.add(run, partial(self._stop, run, status, reason, sig))

    def _stop_in_turn(self) -> None:
        """The run's end: stop the steps whose turn it is (core.stoporder: those no step
        still running depends on), the others as the steps they hold up end (``_ended``)."""
        for stop in self._stop_order.due():
            stop()

    def _kill(self, run: StepRun, execution: Execution) -> None:
        if run.execution is not execution:
            return
        execution.kill()
        if execution.kill_abandons:  # a thread that ignored ``stop``: give up on it
            reason = f"did not stop within {run.step.grace:g}s; StepKilled raised in it"
            # recorded with why it was stopped (state.json's reason), not instead of it
            run.stop_reason = "; ".join(filter(None, (run.stop_reason, reason)))
            self._ended(run, execution, Outcome(None, error=reason))

    # ------------------------------------------------------------------ a step ended
    def _ended(self, run: StepRun, execution: Execution | None, outcome: Outcome) -> None:
        if execution is not None and run.execution is not execution:
            return  # a late report from an attempt we already gave up on
        step = run.step
        if not step.background:
            self._running_fg -= 1
        if step.type != "shell" and run.steplog is not None:
            run.steplog.close()
        if run.monitor is not None:
            run.monitor.stop()
            run.monitor = None
        status = run.settle(outcome, execution, self.clock())
        restart_in = self._restart_delay(run, status)
        will_retry = (
            restart_in is None
            and status in FAILURES
            and run.state.attempts <= step.retries
            and not (self._interrupted or self._closing)
        )
        run.state.status = status
        if restart_in is not None:  # in its end's state too: another start comes
            run.restarting = True
        # a continue_on_error failure lets its dependents go on (once no retry is due)
        run.state.allowed = status in FAILURES and step.continue_on_error and not will_retry
        self.ticker.flush_output(run)  # the attempt's output, then its end, then the next attempt
        self._emit_step(
            ev.StepFinished,
            run,
            status=status,
            attempt=run.state.attempts,
            exit_code=run.state.exit_code,
            signal=run.state.signal,
            reason=run.state.reason,
            duration=run.state.duration,
            will_retry=will_retry,
            will_restart=restart_in is not None,
            log_size=None if run.steplog is None else run.steplog.size,
            log_lost=0 if run.steplog is None else run.steplog.lost,
        )
        if (  # a full disk was said once for the whole run (_disk_full)
            run.steplog is not None
            and run.steplog.write_error is not None
            and not disk_is_full(run.steplog.write_error)
        ):
            self.emit(
                ev.RunMessage(
                    level="warning",
                    text=f"the log of {step.name!r} is incomplete: {run.steplog.write_error}",
                    step=step.name,
                    ts=self.clock(),
                )
            )
        if restart_in is not None:
            self._restart(run, execution, restart_in)
        elif will_retry:
            run.state.status, run.retry_due = Status.PENDING, True
            self._emit_status(run, f"retrying in {step.retry_delay:g}s")
            wait = run.wait = run.wait + 1
            self.loop.after(step.retry_delay, lambda: self._retry_due(run, wait))
        elif run.state.allowed or (status == Status.SUCCEEDED and not run.satisfied):
            self.deps.satisfy(run)
        elif not run.satisfied:
            self.deps.recompute_blocking()
        if self._stop_order:  # the run is ending: what this step held up may stop now
            self._stop_in_turn()
        self.store.state_changed()

    def _retry_due(self, run: StepRun, wait: int) -> None:
        if wait != run.wait:  # a wait given up on (a stop, a skip), another one since
            return
        run.retry_due = False
        if run.state.status == Status.PENDING and self.deps.satisfied(run):
            self.deps.push_ready(run)

    # ------------------------------------------------------------------ restarting a service
    def _restart_delay(self, run: StepRun, status: Status) -> float | None:
        """Seconds until the next start of a service whose start just ended (``status``), or
        None: it is not restarted. A start that ended on its own, or was failed by its health
        checks, goes by the restart policy (core.supervisor); one the user restarted starts
        again at once; one stopped otherwise (by the user, ``timeout``, a ``ready`` that never
        came, the run's end) stays stopped."""
        stopping = self._interrupted or self._closing or self._stopping_background
        if stopping or not run.step.background:
            return None
        if run.end_cause == MANUAL:
            return 0.0
        supervisor = run.supervisor
        if (run.stop_as and run.end_cause is None) or supervisor is None:
            return None
        if not supervisor.wants(failed=status != Status.SUCCEEDED):
            return None
        delay = supervisor.next_delay(run.state.duration or 0.0)
        if delay is None:
            limit = supervisor.limit
            gave_up = (
                f"not restarted: {limit} restart{'' if limit == 1 else 's'} in a row (max_restarts)"
            )
            run.state.reason = "; ".join(filter(None, (run.state.reason, gave_up)))
        return delay

    def _restart(self, run: StepRun, execution: Execution | None, delay: float) -> None:
        """The service starts again after ``delay``, once what its last start left in its
        process group is gone (SIGTERM, grace, SIGKILL: a restart never leaves an orphan).
        Its dependents are not disturbed: they went on when it was first ready."""
        state = run.state
        run.restart_for = run.end_cause or state.reason or "exit code 0"
        state.status, run.retry_due, run.restarting = Status.PENDING, True, True
        state.restart_due = self.clock() + delay  # the app counts it down
        if state.health is not None:  # the next start is checked afresh
            state.health = Health.UNKNOWN
        self._emit_step(
            ev.StepRestart, run, restart=state.restarts + 1, reason=run.restart_for, delay=delay
        )
        run.restart_at = time.monotonic() + delay
        wait = run.wait = run.wait + 1
        pgid = None if execution is None else execution.pid
        grace = run.step.grace

        def clear_then_wait() -> None:  # on a worker: stopping the group waits up to grace
            if pgid is not None:
                stop_group(pgid, grace)
            self.loop.post(lambda: self._arm_restart(run, wait))

        run.clearing = True
        self.workers.submit(clear_then_wait)

    def _arm_restart(self, run: StepRun, wait: int) -> None:
        """The last start's group is gone: the next start comes at ``restart_at`` (which a
        restart command moves to now). A wait given up on meanwhile (a stop, then perhaps a
        retry, which held the start back until now): the step goes on as that left it."""
        run.clearing = False
        if wait != run.wait:
            if self._start_due(run):
                self.deps.push_ready(run)
            return
        self.loop.after(
            max(0.0, run.restart_at - time.monotonic()), lambda: self._retry_due(run, wait)
        )

    # ------------------------------------------------------------------ commands
    def _refuse(self, run: StepRun, action: str) -> None:
        self.emit(
            ev.RunMessage(
                level="warning",
                text=f"cannot {action} {run.step.name!r}: it is {run.state.status}",
                step=run.step.name,
                ts=self.clock(),
            )
        )

    def _do_skip(self, run: StepRun) -> None:
        if "skip" not in self.allowed_actions(run.step.name):
            return self._refuse(run, "skip")
        # A pending step passes its dependents on once its own dependencies are done; skipping
        # a failed or blocked one is the user asking for its dependents to go on now.
        now = run.state.status != Status.PENDING or self.deps.satisfied(run)
        run.state.status, run.state.reason, run.state.blocked_by = (
            Status.SKIPPED,
            "skipped by user",
            [],
        )
        self._give_up_wait(run)
        self._emit_status(run, run.state.reason)
        if now:
            self.deps.satisfy(run)
        self.deps.recompute_blocking()
        self.store.state_changed()

    def _do_retry(self, run: StepRun) -> None:
        if "retry" not in self.allowed_actions(run.step.name):
            return self._refuse(run, "retry")
        run.state.status, run.state.reason, run.state.allowed = Status.PENDING, None, False
        run.satisfied = False
        if run.supervisor is not None:
            run.supervisor.reset()
        self._emit_status(run, "retry requested")
        self.deps.recompute_blocking()
        if self.deps.satisfied(run):
            self.deps.push_ready(run)
        self.store.state_changed()

    def _do_restart(self, run: StepRun) -> None:
        if "restart" not in self.allowed_actions(run.step.name):
            return self._refuse(run, "restart")
        if run.restarting:  # a service waiting out its restart delay: started at once
            return self._restart_now(run)
        run.end_cause = MANUAL
        self._stop(run, Status.STOPPED, "restarted by the user")

    def _restart_now(self, run: StepRun) -> None:
        """Skip what is left of a service's restart delay: the user who watched it crash and
        fixed the cause wants it up now, not in 30 s. Not before its last start's group is
        gone (``_arm_restart`` then starts it at once)."""
        run.restart_at = time.monotonic()
        run.state.restart_due = self.clock()
        if not run.clearing:  # the timer is set for the delay: a new wait, due now
            wait = run.wait = run.wait + 1
            self.loop.after(0.0, lambda: self._retry_due(run, wait))

    def _do_stop_step(self, run: StepRun) -> None:
        if run.restarting:  # a service between two starts: not started again
            self._stop_restart(run, "stopped by user")
            self.store.state_changed()
            return
        if run.state.status not in ACTIVE:
            return self._refuse(run, "stop")
        if run.state.stopping and run.end_cause == MANUAL:
            # stopped to be restarted (`r`), then `k` ("k Kill step" on any stopping step):
            # killed, and not started again
            run.end_cause, run.stop_reason = None, "stopped by user"
        if run.state.stopping and run.execution is not None:
            # asked again while it takes its grace (`k` twice, `ctl stop` twice): killed now,
            # as the run's stop asked again kills every step (it only sent SIGTERM once more)
            self._kill(run, run.execution)
            return
        status = Status.STOPPED if run.ready else Status.CANCELLED
        self._stop(run, status, "stopped by user")

    def _do_stop_run(self, sig: int, force: bool, note: str) -> None:
        # A stop asked for while the run already ends (a stop-run, ``close``, ``q`` then
        # ``y``) is the user's "again": its steps are killed at once, as a second Ctrl-C kills
        # them headless and a second signal does the daemon's (a second stop-run only
        # signalled them again, so a stack taking its graces could not be hurried but by
        # --force).
        again = self._interrupted or self._closing
        if not self._interrupted:
            # what a first stop does: waiting steps cancelled, or a run whose work is done closed
            self._stop_first(sig, note)
        if force or again:  # then every step killed, without its grace, whatever its turn
            self._stop_order.clear()
            for run in self.runs.values():
                if run.execution is not None:
                    execution = run.execution
                    execution.kill()
                    # Record the end now: ``_finish`` follows at once, before the process's
                    # own exit report could arrive, and a killed step must not stay "running".
                    outcome = (
                        Outcome(None, error="abandoned")
                        if execution.pid is None
                        else Outcome(None, signal=signal.SIGKILL, error="killed by SIGKILL")
                    )
                    self._ended(run, execution, outcome)
            self._finish(leftover_grace=0.0)  # "again to kill at once": leftovers too

    def _stop_first(self, sig: int, note: str) -> None:
        """The run's first stop: what runs is stopped in its turn, what waits cancelled; a run
        whose work is done (its services still up, or being stopped as a headless run's end
        stops them) is closed: its services ``stopped``, its exit code the work's."""
        work_done = (
            self.run_state.ended is not None
            or self._stopping_background  # a headless run's foreground is done: its end
            or ((self.keep_alive or self.interactive) and self._foreground_done())
        )
        if work_done and not self._interrupted:
            # --keep-alive, or an interactive run whose steps have all ended (its services
            # perhaps still up): Ctrl-C or a signal is how the user ends a run whose work is
            # done; the background steps are stopped, not cancelled, and the exit code is the
            # work's. The signal is the one asked for (SIGINT for Ctrl-C).
            self._do_close(sig)
            return
        self._interrupted = True
        self._mark_closing(RunStatus.INTERRUPTED)
        for run in self.runs.values():
            # A blocked step stays blocked: the failure kept it from running, not the stop.
            if run.state.status == Status.PENDING:
                run.state.status, run.retry_due, run.restarting = Status.CANCELLED, False, False
                run.state.reason = note  # kept in state.json too: ctl status and runs say it
                self._emit_status(run)
            elif run.execution is not None:
                self._stop_in_turn_as(run, Status.CANCELLED, note, sig)
        self._stop_in_turn()
        self.store.state_changed()

    def _mark_closing(self, status: RunStatus) -> None:
        """Only ``stop`` applies to the steps from now on (``status``: the run's now)."""
        if not self.run_state.closing or status != self.run_state.status:
            self.run_state.closing, self.run_state.status = True, status
            self.emit(ev.RunClosing(status=status, ts=self.clock()))

    def _stop_restart(self, run: StepRun, reason: str) -> None:
        """A service between two starts is not started again: stopped, as if it had been up."""
        run.state.status, run.state.reason = Status.STOPPED, reason
        self._give_up_wait(run)
        self._emit_status(run)

    @staticmethod
    def _give_up_wait(run: StepRun) -> None:
        """No retry or restart is due any more (a skip, a stop): the timer of the wait it was
        in is stale, and a start the user asks for later is not held to it."""
        run.retry_due = run.restarting = False
        run.wait += 1

    def _work_left(self) -> bool:
        """A foreground step, or a background step not yet ready, is still to run or running
        (a service between two starts is not work: it is up again soon)."""
        return any(
            r.state.status in (Status.PENDING, Status.RUNNING) and not r.restarting
            for r in self.runs.values()
        )

    def _foreground_done(self) -> bool:
        return not self._work_left()

    def _do_close(self, sig: int = signal.SIGTERM) -> None:
        """Stop what runs (``sig``, grace, SIGKILL); a run closed before its foreground steps
        ended counts as interrupted. Once: a run already ending (a stop-run, then a close; the
        app's SIGTERM asks both) does not signal its steps again, which some programs take for
        "quit now, skip the drain"."""
        if self._closing or self._interrupted:
            return
        self._closing = True
        self._mark_closing(self.run_state.status)
        for run in self.runs.values():
            if run.execution is not None:
                status = Status.STOPPED if run.step.background and run.ready else Status.CANCELLED
                self._cut_short = self._cut_short or status == Status.CANCELLED
                reason = "stopped when the run was closed"
                self._stop_in_turn_as(run, status, reason, sig)
            elif run.restarting:
                self._stop_restart(run, "stopped when the run was closed")
            elif run.state.status == Status.PENDING:
                self._cut_short = True
                run.state.status, run.retry_due = Status.CANCELLED, False
                run.state.reason = "the run was closed before it started"
                self._emit_status(run)
        self._stop_in_turn()
        self.store.state_changed()

    # ------------------------------------------------------------------ finishing
    def _maybe_finish(self) -> None:
        if self._finished.is_set():
            return
        if self._running_fg and not (self._interrupted or self._closing):
            if self.run_state.ended is not None:
                self._reopen()
            return  # the common case, answered without looking at every step
        active = [r for r in self.runs.values() if r.execution is not None]
        if self._interrupted or self._closing:
            if not active:
                self._finish()
            return
        if self._work_left():
            if self.run_state.ended is not None:
                self._reopen()
            return
        # Every foreground step is done; what is left are ready background steps (some
        # perhaps between two starts).
        services = [r for r in self.runs.values() if r.execution is not None or r.restarting]
        if self.interactive:
            # The app stays open for retries, but the run is over once nothing runs any more.
            if not services:
                self._record_end()
            elif self.run_state.ended is not None:
                self._reopen()  # a service started again (`r` after `k`): the run goes on
            return
        if self.keep_alive and services:
            return
        if services and not self._stopping_background:
            self._stopping_background = True
            # the run ends: said so to every client (`stopping`), and no retry, skip or restart
            # taken meanwhile (a service retried then was never stopped: the run never ended)
            self._mark_closing(self.run_state.status)
            for run in services:
                reason = "stopped after the foreground steps ended"
                if run.restarting:
                    self._stop_restart(run, reason)
                else:
                    self._stop_in_turn_as(run, Status.STOPPED, reason)
            self._stop_in_turn()
        if any(r.execution is not None for r in self.runs.values()):
            return
        self._finish()

    def _finish(self, leftover_grace: float = 2.0) -> None:
        if self._finished.is_set():
            return
        if self.cluster is not None:  # first: a worker its nanny started again since the run
            self.cluster.close()  # began carries the run's marker, and is no step's leftover
        self.commands.close()  # a ready or health cmd being run is no step's leftover
        leftovers = self._kill_leftovers(leftover_grace)
        if leftovers:
            self.emit(
                ev.RunMessage(
                    level="info",
                    text=f"stopped {leftovers} process{'es' if leftovers > 1 else ''} that steps"
                    " left running",
                    ts=self.clock(),
                )
            )
        if leftovers is None:  # its clean-up, a process of its own, looks for them instead,
            # now: the steps' leftovers hold the descriptors the end's saves need (after the
            # final save, the run hung short of them)
            self.watchdog.hand_over()
        else:
            self.watchdog.stop()
        self._record_end()
        self.bus.close()
        self.store.close()
        OutputRouting.release()
        self._finished.set()
        self.ticker.stop()
        self.loop.stop()

    def _kill_leftovers(self, grace: float) -> int | None:
        """``Watchdog.kill_leftovers``, tried again for a moment when a limit ran out (with
        ``ulimit -n`` low, /proc cannot be read until the steps' pipes are closed); None if it
        never could: said, and left to the watchdog. An error here once left the run hanging,
        its end never recorded."""
        for wait in (0.05, 0.1, 0.25, 0.5, 1.0, None):
            try:
                return self.watchdog.kill_leftovers(grace)
            except OSError as exc:
                words = limit_words(exc) or exc.strerror or str(exc)
                if wait is None or limit_words(exc) is None:
                    text = (
                        f"cannot look for processes the steps left running: {words}; the run's"
                        " watchdog stops them"
                    )
                    self.emit(ev.RunMessage(level="warning", text=text, ts=self.clock()))
                    return None
                time.sleep(wait)  # until the steps' descriptors are closed: nothing to wait on
        return None

    def _record_end(self) -> None:
        """The run's end in state.json and events: status, exit code, end time, RunFinished.

        Once per end: closing an interactive run that already ended (every step had) adds
        nothing, unless it changed the outcome. A retry may reopen it (``_reopen``) and it
        ends again later.
        """
        outcome = self._outcome()
        if self.run_state.ended is not None and outcome == (
            self.run_state.exit_code,
            self.run_state.status,
        ):
            return
        self.run_state.ended = self.clock()
        self.run_state.exit_code, self.run_state.status = outcome
        for run in self.ticker.live():
            self.ticker.flush_output(run)
        self.ticker.flush_ctx()
        # on disk before RunFinished reaches a client: ``ctl wait`` returns on it, and a script
        # then reads ctx.json (which stayed as the run began, for a run of a few steps)
        self.store.save_now()
        counts: dict[str, int] = {}
        for run in self.runs.values():
            status = str(run.state.status)
            counts[status] = counts.get(status, 0) + 1
        self.emit(
            ev.RunFinished(
                status=self.run_state.status,
                exit_code=self.run_state.exit_code,
                counts=counts,
                ts=self.run_state.ended,
            )
        )
        self.store.state_changed()

    def _reopen(self) -> None:
        """An interactive run that had ended runs again (a retry, a skip that let blocked
        steps go on): state.json says running, with no end, until it ends again."""
        self.run_state.ended = self.run_state.exit_code = None
        self.run_state.status = RunStatus.RUNNING
        self.emit(ev.RunReopened(ts=self.clock()))
        self.store.state_changed()

    def _outcome(self) -> tuple[int, RunStatus]:
        if self._interrupted or self._cut_short:
            return 130, RunStatus.INTERRUPTED
        for run in self.runs.values():
            if run.state.status in _FAILS_THE_RUN and not run.state.allowed:
                return 1, RunStatus.FAILED
        return 0, RunStatus.SUCCEEDED

    def _say_recipe_warnings(self) -> None:
        """The recipe's warnings as the run's first messages, ``WARNINGS_SAID`` at most and a
        count of the rest: each is a toast in the app, which shows three of the messages said
        before it attached, and a recipe warned of once a step (a program an earlier step
        makes, in 500 steps) would flood it."""
        import shlex

        warnings = self.recipe.warnings
        for warning in warnings[:WARNINGS_SAID]:
            self.emit(ev.RunMessage(level="warning", text=str(warning), ts=self.clock()))
        if len(warnings) > WARNINGS_SAID:
            more = len(warnings) - WARNINGS_SAID
            text = (
                f"{more} more warning{'' if more == 1 else 's'} of the recipe: "
                f"orch-tui validate {shlex.quote(str(self.recipe.path))} lists them"
            )
            self.emit(ev.RunMessage(level="warning", text=text, ts=self.clock()))

    # ------------------------------------------------------------------ events
    def emit(self, event: ev.Event) -> None:
        """Publish an event; the run's state includes it (``seq``)."""
        if event.kind not in _NOT_LOGGED and _log.isEnabledFor(DEBUG):  # --debug
            fields = {k: v for k, v in event.to_dict().items() if k not in _NOT_DEBUG_FIELDS}
            _log.debug("%s %s", event.kind, fields)
        self.bus.publish(event)
        if isinstance(event, ev.RunMessage):  # kept: a client attaching later shows it too
            with self._messages_lock:
                event.apply_to(self.run_state)
        self.run_state.seq = event.seq

    def _emit_step(self, kind: type[ev.StepEvent], run: StepRun, **fields: Any) -> None:
        """A step event carrying (a copy of) the step's state as it is now."""
        state = msgspec.structs.replace(run.state)
        self.emit(kind(step=run.step.name, state=state, ts=self.clock(), **fields))

    def _emit_status(self, run: StepRun, reason: str | None = None) -> None:
        status, reason = run.state.status, reason or run.state.reason
        self._emit_step(ev.StepStatus, run, status=status, reason=reason)

    def _disk_full(self, what: str, exc: OSError) -> None:
        """The run folder's disk was found full (core.diskspace), writing ``what``: said once,
        with what is lost from now on."""
        text = (
            f"disk full: {exc.strerror or exc}, writing {self.run_dir / what}. From now on"
            " this run writes neither the steps' output to their logs (each step's end says"
            " how much of its own is lost) nor events.jsonl; state.json and ctx.json are kept"
            " up to date in space held back for them"
        )
        self._save_error(text)

    def _save_error(self, text: str) -> None:
        """The store could not save a file (said once a file): a warning in the run's events,
        or on stderr once they are closed (the final save comes after them)."""
        if self.bus.closed:
            _log.warning("%s", text)
        else:
            self.emit(ev.RunMessage(level="warning", text=text, ts=self.clock()))
