"""The runner: schedules a recipe's steps, publishes events, and takes commands.

All step state is changed on one scheduler thread, from a queue of messages (a step ended, a
step is ready, a timer fired, a command arrived), so there are no races between, say, a timeout
and the step's own exit. The run's state is one ``RunState`` (core.state), changed on that
thread; every change is published as an event that carries it (core.events). Everything else
talks to the runner through the small API at the top of the class: ``subscribe`` for events;
``skip``, ``retry``, ``stop_step``, ``stop_run``, ``close`` for commands; ``snapshot`` for a
consistent copy of the state. Front ends (the headless reporter, the TUI) use it only through
core.control's ``RunControl``.

Two modes: headless, the run ends when no step can run any more; ``interactive`` (the TUI), a
failed step blocks its dependents and the runner waits for the user to retry or skip it, until
``close``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from core import events as ev
from core.bus import EventBus
from core.context import Context, expose_for_shell
from core.executors import Execution, Outcome
from core.executors.python import OutputRouting, PythonExecution
from core.executors.session import SessionExecution
from core.executors.shell import ShellExecution
from core.graph import dependents_of, topological_order
from core.ports import (
    answers,
    describe_holder,
    group_members,
    held_by,
    listeners,
    local_addresses,
)
from core.privatedir import HeldFile
from core.reactor import OutputReactor
from core.recipe import Recipe, Step, step_cwd
from core.resources import Sampler, StepTarget
from core.rundir import RunDir, new_run_id
from core.state import (
    ACTIVE,
    DEAD,
    FAILURES,
    WAITING,
    RunState,
    RunStatus,
    SessionRef,
    Status,
    StepState,
    allowed_actions,
)
from core.steplog import StepLog
from core.store import ResumePoint, RunStore
from core.watchdog import Watchdog, kill_leftovers
from core.workers import Workers

_log = logging.getLogger("orch.runner")

TICK = 0.1  # output and ctx events are coalesced to this period
#: events too frequent for the --debug log (the step logs and the meters have them)
_NOT_LOGGED = frozenset({"step_output", "resources"})
#: fields of an event left out of the --debug log line (the state: the other fields say it)
_NOT_DEBUG_FIELDS = frozenset({"type", "ts", "seq", "state"})
#: Statuses that fail the run, unless the step's failure is allowed (continue_on_error).
_FAILS_THE_RUN = FAILURES | {Status.BLOCKED, Status.CANCELLED}


@dataclass
class StepRun:
    """The scheduler's view of one step: its ``state`` (what state.json and the events say)
    and what only the scheduler needs. Changed only on the scheduler thread."""

    step: Step
    state: StepState
    satisfied: bool = False
    ready: bool = False
    execution: Execution | None = None
    steplog: StepLog | None = None
    stop_as: Status | None = None
    stop_reason: str | None = None
    retry_due: bool = False

    @property
    def passing_through(self) -> bool:
        """Skipped, but still waiting for its own dependencies before its dependents go on."""
        return self.state.status == Status.SKIPPED and not self.satisfied

    @property
    def dead(self) -> bool:
        """Finished without letting its dependents go on."""
        return self.state.status in DEAD and not self.satisfied


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
    ) -> None:
        self.recipe = recipe
        self.run_id = new_run_id()
        self.jobs = jobs or recipe.jobs or os.cpu_count() or 1
        self.interactive = interactive
        self.keep_alive = keep_alive
        self.clock = clock
        self.resume = resume
        self.ctx = Context(resume.ctx if resume is not None else recipe.ctx)
        self.rundir = RunDir.create(run_dir, Path.cwd(), self.run_id)
        self.rundir.name_logs(s.name for s in recipe.steps)
        self.store = RunStore(self.rundir)
        self.bus = EventBus(sink=self.store.append_event)
        self.workers = Workers()
        self.reactor = OutputReactor()
        self.watchdog = Watchdog(self.run_dir)
        self._sampler = sampler
        self._resource_interval = resource_interval
        self._sampling = threading.Event()  # a sample is being taken, on a worker thread

        self.runs = {s.name: StepRun(s, self._step_state(s)) for s in recipe.steps}
        self._state = RunState(
            run_id=self.run_id,
            recipe=str(recipe.path),
            name=recipe.name or recipe.path.stem,
            run_dir=str(self.run_dir),
            pid=os.getpid(),
            resumed_from=resume.record() if resume else None,
            ctx_version=self.ctx.version,
            steps={name: run.state for name, run in self.runs.items()},
        )
        self._dependents = dependents_of(recipe.deps)
        self._topo = topological_order(recipe.deps)
        self._preselect(only, skip, resume.step if resume else None)

        self._lock = threading.RLock()
        self._handling = False
        self._thread = threading.Thread(target=self._loop, name="orch-scheduler", daemon=True)
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._ready_fg: list[int] = []
        self._ready_bg: list[int] = []
        self._by_index = {s.index: s.name for s in recipe.steps}
        self._running_fg = 0
        self._ctx_watch: dict[str, list[str]] = {}
        self._interrupted = False
        self._closing = False
        self._cut_short = False
        self._finished = threading.Event()
        self._stopping_background = False
        self._groups: set[int] = set()
        self.ctx.add_listener(self._on_ctx_write)

    # ------------------------------------------------------------------ public API
    def subscribe(self, callback: Callable[[ev.Event], None]) -> None:
        """Receive every event, in order, on the event thread (never on the scheduler's)."""
        self.bus.subscribe(callback)

    def start(self) -> None:
        """Begin the run in background threads and return at once."""
        self._state.started = self.clock()
        self._state.status = RunStatus.RUNNING
        self.watchdog.start()
        OutputRouting.acquire()
        self.store.start(
            self._state_json, self.ctx.to_json_bytes, lambda: self.ctx.version, self._save_error
        )
        self.bus.start()
        with self._lock:
            self._emit(
                ev.RunStarted(
                    run_id=self.run_id,
                    recipe=str(self.recipe.path),
                    run_dir=str(self.run_dir),
                    state=self._state.copy(),
                    ts=self.clock(),
                )
            )
        if self.resume is not None:
            where = f"{self.resume.run_id} ({self.resume.run_dir})"
            self._emit(ev.RunMessage(level="info", text=f"ctx restored from run {where}"))
        for run in self.runs.values():
            if run.state.status == Status.SKIPPED:
                self._emit_status(run)
        self._thread.start()
        threading.Thread(target=self._tick_loop, name="orch-ticker", daemon=True).start()

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the run is over; its exit code (None if ``timeout`` passed first)."""
        if not self._finished.wait(timeout):
            return None
        return self._state.exit_code

    def run(self) -> int:
        """Start and wait: the headless entry point."""
        self.start()
        while (code := self.wait(0.5)) is None:
            pass
        return code

    @property
    def run_dir(self) -> Path:
        """The run's folder (``rundir`` knows where each file in it is)."""
        return self.rundir.path

    @property
    def exit_code(self) -> int | None:
        """The run's exit code once it has ended (see ``status``), else None."""
        return self._state.exit_code

    @property
    def started_at(self) -> float | None:
        return self._state.started

    @property
    def finished(self) -> bool:
        """The runner's threads are done (after ``close`` in interactive mode): see ``status``."""
        return self._finished.is_set()

    @property
    def status(self) -> RunStatus:
        """The run's status as state.json has it: running, then succeeded, failed or
        interrupted once every step has ended, which in interactive mode happens before
        ``finished`` (the app stays open) and may be undone by a retry."""
        return self._state.status

    @property
    def ended_at(self) -> float | None:
        """When the run ended (None while it runs, and again after a retry reopened it)."""
        return self._state.ended

    def skip(self, name: str) -> None:
        """Skip a pending, blocked or failed step: its dependents go on as if it succeeded."""
        self._command(self._do_skip, name)

    def retry(self, name: str) -> None:
        """Run a finished step again; steps it blocked go on after it."""
        self._command(self._do_retry, name)

    def stop_step(self, name: str) -> None:
        """Stop a running step (SIGTERM to its group, grace, SIGKILL); recorded as cancelled."""
        self._command(self._do_stop_step, name)

    def stop_run(self, sig: int = signal.SIGTERM, *, force: bool = False) -> None:
        """Stop everything (Ctrl-C, SIGTERM, quitting the TUI). ``force``: SIGKILL at once."""
        self._post(lambda: self._do_stop_run(sig, force))

    def close(self) -> None:
        """End an interactive or keep-alive run: stop background steps, finish cleanly."""
        self._post(self._do_close)

    def allowed_actions(self, name: str) -> frozenset[str]:
        """Which of skip/retry/stop apply to the step now (the TUI shows only these keys)."""
        with self._lock:
            return allowed_actions(self.runs[name].state, self._state)

    def snapshot(self) -> RunState:
        """The run's state now, a copy that does not change (its ``seq``: the last event in it)."""
        with self._lock:
            return self._state.copy()

    def state(self) -> dict[str, Any]:
        """The state.json document: a consistent snapshot, safe to call from any thread."""
        with self._lock:
            return self._state.to_dict()

    def _state_json(self) -> bytes:
        """state.json's bytes, taken under the lock (10,000 steps take a few ms)."""
        with self._lock:
            return self._state.to_json()

    # ------------------------------------------------------------------ scheduler loop
    def _post(self, message: Callable[[], None]) -> None:
        """Handle ``message`` now on this thread if the scheduler is free, else queue it.

        Handling it here saves a thread switch per step end (the difference between a few
        thousand and ten thousand python steps a second). A thread already inside the
        scheduler (a callback fired while handling another message) always queues.
        """
        if self._lock.acquire(blocking=False):
            try:
                if not self._handling:
                    self._handle(message)
                    return
            finally:
                self._lock.release()
        self._inbox.put(message)

    def _handle(self, message: Callable[[], None] | None) -> None:
        """One turn of the scheduler: the message, due timers, new starts. Holds the lock."""
        self._handling = True
        try:
            if message is not None:
                message()
            while self._timers and self._timers[0][0] <= time.monotonic():
                heapq.heappop(self._timers)[2]()
            self._schedule()
            self._maybe_finish()
        except Exception:  # a bug here must not leave the run hanging
            _log.exception("scheduler error")
            self._emit(ev.RunMessage(level="error", text="internal scheduler error"))
        finally:
            self._handling = False

    def _command(self, fn: Callable[[StepRun], None], name: str) -> None:
        if name not in self.runs:
            raise KeyError(f"no step named {name!r}")
        self._post(lambda: fn(self.runs[name]))

    def _after(self, delay: float, callback: Callable[[], None]) -> None:
        entry = (time.monotonic() + delay, next(self._seq), callback)
        heapq.heappush(self._timers, entry)
        if self._timers[0] is entry and threading.current_thread() is not self._thread:
            self._inbox.put(_noop)  # the scheduler thread sleeps until its earliest timer

    def _loop(self) -> None:
        with self._lock:
            self._release_initial()
            # Nothing may be left to wait for (every step skipped, or none could start): no
            # message would ever arrive to end the run, so check now.
            self._handle(None)
        while not self._finished.is_set():
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            try:
                message: Callable[[], None] | None = self._inbox.get(timeout=timeout)
            except queue.Empty:
                message = None
            with self._lock:
                self._handle(message)

    def _release_initial(self) -> None:
        for name in self._topo:
            run = self.runs[name]
            if not self._deps_satisfied(run):
                continue
            if run.state.status == Status.PENDING:
                self._push_ready(run)
            elif run.passing_through:
                self._satisfy(run)

    def _deps_satisfied(self, run: StepRun) -> bool:
        return all(self.runs[d].satisfied for d in run.step.depends_on)

    def _push_ready(self, run: StepRun) -> None:
        heapq.heappush(self._ready_bg if run.step.background else self._ready_fg, run.step.index)

    def _schedule(self) -> None:
        if self._interrupted or self._closing:
            return
        while self._ready_bg:
            self._start_if_pending(self.runs[self._by_index[heapq.heappop(self._ready_bg)]])
        while self._ready_fg and self._running_fg < self.jobs:
            self._start_if_pending(self.runs[self._by_index[heapq.heappop(self._ready_fg)]])

    def _start_if_pending(self, run: StepRun) -> None:
        if run.state.status == Status.PENDING and not run.retry_due and self._deps_satisfied(run):
            self._start(run)

    # ------------------------------------------------------------------ starting a step
    def _start(self, run: StepRun) -> None:
        step = run.step
        run.state.attempts += 1
        run.state.status = Status.RUNNING
        run.state.started, run.state.ended, run.state.duration = self.clock(), None, None
        run.state.exit_code = run.state.signal = None
        run.state.reason = run.stop_as = run.stop_reason = None
        run.ready = False
        if not step.background:
            self._running_fg += 1
        try:
            log_file = self.rundir.log_file(step.name)
            steplog = StepLog(self.rundir.logs_folder, log_file, lazy=step.type == "python")
        except OSError as exc:  # no log file (too many open files, disk trouble): fail, not hang
            run.steplog = None
            self._emit_step(ev.StepStarted, run, attempt=run.state.attempts)
            self._ended(run, None, Outcome(None, error=f"cannot open its log: {exc}"))
            return
        if run.state.attempts > 1:
            steplog.write_text(f"--- attempt {run.state.attempts} ---\n")
        run.steplog = steplog
        self._note_log(run)
        taken = self._port_taken(step)
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
            self._groups.add(pid)
            self.watchdog.add(pid, step.grace)
        self._emit_step(ev.StepStarted, run, attempt=run.state.attempts, pid=pid)
        if step.timeout:
            self._after(step.timeout, lambda: self._on_timeout(run, execution))
        if step.background:
            self._arm_readiness(run, execution)
        self.store.state_changed()

    def _port_taken(self, step: Step) -> str | None:
        """Why a ``ready: {port: N}`` step cannot start: somebody already listens on N (its own
        server would die with "Address already in use" while the stranger answered for it)."""
        ready = step.ready
        if ready is None or ready.kind != "port":
            return None
        addresses = local_addresses(ready.host)
        if addresses is None:
            return None  # another machine: nobody's processes to see there
        port = int(ready.value)
        found = listeners(port, addresses) if answers(ready.host, port) else []
        if not found:
            return None
        return f"port {port} is already in use by {describe_holder(found[0])}"

    def _make_execution(self, run: StepRun, steplog: StepLog) -> Execution:
        step = run.step

        def on_exit(outcome: Outcome, _run: StepRun = run) -> None:
            self._post(lambda: self._ended(_run, execution, outcome))

        execution: Execution
        if step.type == "python":
            execution = PythonExecution(step, self.ctx, steplog, self.workers, on_exit)
        elif step.type == "shell":
            ctx_out = self.rundir.new_ctx_out(step.name, run.state.attempts)
            argv = [step.cmd, *step.args] if step.cmd else ["bash", "-c", step.run or ""]
            execution = ShellExecution(
                step,
                argv=argv,  # type: ignore[list-item]
                env=self._shell_env(step, ctx_out),
                cwd=self._cwd(step),
                log=steplog,
                ctx=self.ctx,
                ctx_out=ctx_out,
                reactor=self.reactor,
                workers=self.workers,
                on_exit=on_exit,
            )
        else:
            execution = SessionExecution(
                step,
                run_dir=self.run_dir,
                # not ORCH_RUN_DIR: it marks the run's processes for kill_leftovers and the
                # watchdog, and sessions outlive the run (contract.md)
                env={k: v for k, v in self._orch_env(step).items() if k != "ORCH_RUN_DIR"},
                log=steplog,
                workers=self.workers,
                on_exit=on_exit,
            )
        return execution

    def _cwd(self, step: Step) -> Path:
        return step_cwd(self.recipe.workspace, step.cwd)

    def _orch_env(self, step: Step) -> dict[str, str]:
        return {
            "ORCH_RUN_DIR": str(self.run_dir),
            "ORCH_RUN_ID": self.run_id,
            "ORCH_STEP": step.name,
        }

    def _shell_env(self, step: Step, ctx_out: HeldFile) -> dict[str, str]:
        """Inherited < recipe env < step env < exposed ctx keys and ORCH_* (contract.md)."""
        env = dict(os.environ)
        env.update(self.recipe.env)
        env.update(step.env)
        env.update(expose_for_shell(self.ctx, step.expose))
        env.update(self._orch_env(step))
        env["ORCH_CTX_OUT"] = str(ctx_out.path)
        return env

    # ------------------------------------------------------------------ readiness
    def _arm_readiness(self, run: StepRun, execution: Execution) -> None:
        ready = run.step.ready
        if ready is None:
            self._mark_ready(run)
            return

        def became_ready() -> None:
            self._post(lambda: self._on_ready(run, execution))

        if ready.kind == "log":
            assert run.steplog is not None
            run.steplog.watch(str(ready.value), became_ready)
        elif ready.kind == "ctx":
            key = str(ready.value)
            if key in self.ctx:
                self._mark_ready(run)
                return
            self._ctx_watch.setdefault(key, []).append(run.step.name)
        elif ready.kind == "delay":
            self._after(float(ready.value), lambda: self._on_ready(run, execution))
        elif ready.kind == "port":
            self.workers.submit(self._probe_port, run, execution, became_ready)
        self._after(ready.timeout, lambda: self._on_ready_timeout(run, execution))

    def _probe_port(self, run: StepRun, execution: Execution, became_ready: Callable) -> None:
        """Poll until the step itself listens on the port (another machine's port: until it
        answers), the attempt ends, or readiness times out."""
        ready = run.step.ready
        assert ready is not None
        deadline = time.monotonic() + ready.timeout
        port, addresses = int(ready.value), local_addresses(ready.host)
        while run.execution is execution and run.state.status == Status.RUNNING:
            pause = 0.05  # polling a port: there is nothing to wait on
            try:
                if answers(ready.host, port):
                    if addresses is None or self._listens(execution, port, addresses):
                        became_ready()
                        return
                    pause = 0.25  # somebody else answers: /proc/net/tcp less often
            except ValueError as exc:  # a host that cannot even be looked up ("label too long")
                reason = f"cannot probe ready.port: host {ready.host!r}: {exc}"

                def bad_host(reason: str = reason) -> None:
                    if run.execution is execution and run.state.status == Status.RUNNING:
                        self._stop(run, Status.FAILED, reason)

                self._post(bad_host)
                return
            if time.monotonic() > deadline:
                return
            time.sleep(pause)

    @staticmethod
    def _listens(execution: Execution, port: int, addresses: frozenset[str]) -> bool:
        """A LISTEN socket on ``port`` belongs to the step: its process group or session, or
        for a python step (a thread of the runner) the runner's own process."""
        found = listeners(port, addresses)
        if not found:
            return False
        pids = [os.getpid()] if execution.pid is None else group_members(execution.pid)
        return held_by(found, pids)

    def _on_ctx_write(self, key: str) -> None:
        names = self._ctx_watch.get(key)
        if names:
            self._post(lambda: self._on_ctx_key(key))

    def _on_ctx_key(self, key: str) -> None:
        for name in self._ctx_watch.pop(key, []):
            run = self.runs[name]
            if run.state.status == Status.RUNNING and run.execution is not None:
                self._mark_ready(run)

    def _on_ready(self, run: StepRun, execution: Execution) -> None:
        if run.execution is execution and run.state.status == Status.RUNNING and not run.stop_as:
            self._mark_ready(run)

    def _mark_ready(self, run: StepRun) -> None:
        run.state.status, run.ready = Status.READY, True
        self._emit_step(ev.StepReady, run)
        self._satisfy(run)
        self.store.state_changed()

    def _on_ready_timeout(self, run: StepRun, execution: Execution) -> None:
        if run.execution is execution and run.state.status == Status.RUNNING:
            ready = run.step.ready
            assert ready is not None
            what = f"{ready.kind} {ready.value}"
            self._stop(run, Status.FAILED, f"not ready within {ready.timeout:g}s ({what})")

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
        self._after(run.step.grace, lambda: self._kill(run, execution))

    def _kill(self, run: StepRun, execution: Execution) -> None:
        if run.execution is not execution:
            return
        execution.kill()
        if execution.pid is None:  # a thread that ignored ``stop``: give up on it
            reason = f"did not stop within {run.step.grace:g}s; its thread was abandoned"
            # recorded with why it was stopped (state.json's reason), not instead of it
            run.stop_reason = "; ".join(filter(None, (run.stop_reason, reason)))
            self._ended(run, execution, Outcome(None, error=reason))

    # ------------------------------------------------------------------ a step ended
    def _ended(self, run: StepRun, execution: Execution | None, outcome: Outcome) -> None:
        if execution is not None and run.execution is not execution:
            return  # a late report from an attempt we already gave up on
        step = run.step
        was_ready = run.ready
        run.execution = None
        if not step.background:
            self._running_fg -= 1
        if step.type != "shell" and run.steplog is not None:
            run.steplog.close()
        run.state.ended = self.clock()
        run.state.duration = round(run.state.ended - (run.state.started or run.state.ended), 3)
        run.state.exit_code, run.state.signal = outcome.exit_code, outcome.signal
        if run.stop_as:
            status, run.state.reason = run.stop_as, run.stop_reason or outcome.error
            if execution is not None and execution.pid is None:
                run.state.exit_code = None  # a thread we stopped: its "0" only says it returned
        elif step.background and not was_ready and execution is not None:
            status = Status.FAILED
            run.state.reason = f"exited before it was ready ({outcome.error or 'exit code 0'})"
        elif outcome.ok:
            status, run.state.reason = Status.SUCCEEDED, None
        else:
            status, run.state.reason = Status.FAILED, outcome.error
        will_retry = (
            status in FAILURES
            and run.state.attempts <= step.retries
            and not (self._interrupted or self._closing)
        )
        run.state.status = status
        # a continue_on_error failure lets its dependents go on (once no retry is due)
        run.state.allowed = status in FAILURES and step.continue_on_error and not will_retry
        self._flush_output(run)  # the attempt's output, then its end, then the next attempt
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
            log_size=None if run.steplog is None else run.steplog.size,
        )
        if run.steplog is not None and run.steplog.write_error is not None:
            self._emit(
                ev.RunMessage(
                    level="warning",
                    text=f"the log of {step.name!r} is incomplete: {run.steplog.write_error}",
                    step=step.name,
                    ts=self.clock(),
                )
            )
        if will_retry:
            run.state.status, run.retry_due = Status.PENDING, True
            self._emit_status(run, f"retrying in {step.retry_delay:g}s")
            self._after(step.retry_delay, lambda: self._retry_due(run))
        elif run.state.allowed or (status == Status.SUCCEEDED and not run.satisfied):
            self._satisfy(run)
        elif not run.satisfied:
            self._recompute_blocking()
        self.store.state_changed()

    def _prune_groups(self) -> None:
        """Forget the process groups of ended steps that no longer exist: the kernel may give
        their ids to unrelated processes, which the end-of-run clean-up and the watchdog must
        never signal. Groups a step left members in are kept until those are gone."""
        running = {
            r.execution.pid
            for r in self.runs.values()
            if r.execution is not None and r.execution.pid is not None
        }
        for pgid in self._groups - running:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                self._groups.discard(pgid)
                self.watchdog.remove(pgid)
            except PermissionError:
                pass

    def _retry_due(self, run: StepRun) -> None:
        run.retry_due = False
        if run.state.status == Status.PENDING and self._deps_satisfied(run):
            self._push_ready(run)

    def _satisfy(self, run: StepRun) -> None:
        """The step lets its dependents go on: queue those whose dependencies are all met.

        A skipped dependent still waiting for its own dependencies is a pass-through: it lets
        its dependents go on in turn, now that it may (a loop, not recursion: a chain of
        thousands of skipped steps must not overflow the stack).
        """
        run.satisfied = True
        passing = [run]
        while passing:
            for name in self._dependents[passing.pop().step.name]:
                child = self.runs[name]
                if child.state.status == Status.PENDING:
                    if self._deps_satisfied(child):
                        self._push_ready(child)
                elif child.passing_through and self._deps_satisfied(child):
                    child.satisfied = True
                    self._pass_blocked_by(child, [])
                    passing.append(child)

    def _recompute_blocking(self) -> None:
        """Mark every waiting step that cannot run because of a failure upstream, and un-mark.

        ``blocked_by`` names the root failures (the steps that failed on their own), so the
        summary and the TUI can point at the cause rather than at the nearest victim.
        """
        for name in self._topo:
            run = self.runs[name]
            if run.passing_through:  # skipped, waiting: what holds it up holds up its dependents
                self._pass_blocked_by(run, sorted(self._failed_roots(run)))
                continue
            if run.state.status not in WAITING or run.retry_due:
                continue
            roots = sorted(self._failed_roots(run))
            if roots:
                if run.state.status != Status.BLOCKED or roots != run.state.blocked_by:
                    run.state.status, run.state.blocked_by = Status.BLOCKED, roots
                    self._emit_status(run, "blocked by " + ", ".join(roots))
            elif run.state.status == Status.BLOCKED:
                run.state.status, run.state.blocked_by = Status.PENDING, []
                self._emit_status(run)
                if self._deps_satisfied(run):
                    self._push_ready(run)

    def _pass_blocked_by(self, run: StepRun, roots: list[str]) -> None:
        """A skipped step still waiting for its dependencies: what holds it up (and so its
        dependents) changed."""
        if roots != run.state.blocked_by:
            run.state.blocked_by = roots
            self._emit_status(run)

    def _failed_roots(self, run: StepRun) -> set[str]:
        """The root failures that keep ``run``'s dependencies from being done."""
        roots: set[str] = set()
        for dep in run.step.depends_on:
            parent = self.runs[dep]
            if parent.dead:
                roots.add(dep)
            elif parent.state.status == Status.BLOCKED or parent.passing_through:
                roots.update(parent.state.blocked_by)
        return roots

    # ------------------------------------------------------------------ commands
    def _refuse(self, run: StepRun, action: str) -> None:
        self._emit(
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
        now = run.state.status != Status.PENDING or self._deps_satisfied(run)
        run.state.status, run.state.reason, run.state.blocked_by, run.retry_due = (
            Status.SKIPPED,
            "skipped by user",
            set(),
            False,
        )
        self._emit_status(run, run.state.reason)
        if now:
            self._satisfy(run)
        self._recompute_blocking()
        self.store.state_changed()

    def _do_retry(self, run: StepRun) -> None:
        if "retry" not in self.allowed_actions(run.step.name):
            return self._refuse(run, "retry")
        run.state.status, run.state.reason, run.state.allowed, run.satisfied = (
            Status.PENDING,
            None,
            False,
            False,
        )
        self._emit_status(run, "retry requested")
        self._recompute_blocking()
        if self._deps_satisfied(run):
            self._push_ready(run)
        self.store.state_changed()

    def _do_stop_step(self, run: StepRun) -> None:
        if run.state.status not in ACTIVE:
            return self._refuse(run, "stop")
        status = Status.STOPPED if run.ready else Status.CANCELLED
        self._stop(run, status, "stopped by user")

    def _do_stop_run(self, sig: int, force: bool) -> None:
        if force and self._interrupted:
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
            return
        work_done = self._state.ended is not None or (self.keep_alive and self._foreground_done())
        if work_done and not self._interrupted:
            # --keep-alive, or an interactive run whose steps have all ended: Ctrl-C or a
            # signal is how the user ends a run whose work is done; the background steps are
            # stopped, not cancelled, and the exit code is the work's.
            self._do_close()
            return
        self._interrupted = True
        self._mark_closing(RunStatus.INTERRUPTED)
        for run in self.runs.values():
            if run.state.status in WAITING:
                run.state.status, run.retry_due = Status.CANCELLED, False
                self._emit_status(run, "run interrupted")
            elif run.execution is not None:
                self._stop(
                    run, Status.CANCELLED, f"run interrupted ({signal.Signals(sig).name})", sig
                )
        self.store.state_changed()

    def _mark_closing(self, status: RunStatus) -> None:
        """Only ``stop`` applies to the steps from now on (``status``: the run's now)."""
        if not self._state.closing or status != self._state.status:
            self._state.closing, self._state.status = True, status
            self._emit(ev.RunClosing(status=status, ts=self.clock()))

    def _foreground_done(self) -> bool:
        return not any(
            r.state.status in (Status.PENDING, Status.RUNNING) for r in self.runs.values()
        )

    def _do_close(self) -> None:
        """Stop what runs; a run closed before its foreground steps ended counts as interrupted."""
        self._closing = True
        self._mark_closing(self._state.status)
        for run in self.runs.values():
            if run.execution is not None:
                if run.step.background and run.ready:
                    self._stop(run, Status.STOPPED, "stopped when the run was closed")
                else:
                    self._cut_short = True
                    self._stop(run, Status.CANCELLED, "stopped when the run was closed")
            elif run.state.status == Status.PENDING:
                self._cut_short = True
                run.state.status, run.retry_due = Status.CANCELLED, False
                self._emit_status(run, "the run was closed before it started")
        self.store.state_changed()

    # ------------------------------------------------------------------ finishing
    def _maybe_finish(self) -> None:
        if self._finished.is_set():
            return
        if self._running_fg and not (self._interrupted or self._closing):
            if self._state.ended is not None:
                self._reopen()
            return  # the common case, answered without looking at every step
        active = [r for r in self.runs.values() if r.execution is not None]
        if self._interrupted or self._closing:
            if not active:
                self._finish()
            return
        if any(r.state.status in (Status.PENDING, Status.RUNNING) for r in self.runs.values()):
            if self._state.ended is not None:
                self._reopen()
            return
        # Every foreground step is done; what is left are ready background steps.
        if self.interactive:
            # The app stays open for retries, but the run is over once nothing runs any more.
            if not active:
                self._record_end()
            return
        if self.keep_alive and active:
            return
        if active:
            if not self._stopping_background:
                self._stopping_background = True
                for run in active:
                    self._stop(run, Status.STOPPED, "stopped after the foreground steps ended")
            return
        self._finish()

    def _finish(self, leftover_grace: float = 2.0) -> None:
        if self._finished.is_set():
            return
        leftovers = kill_leftovers(str(self.run_dir), sorted(self._groups), grace=leftover_grace)
        if leftovers:
            self._emit(
                ev.RunMessage(
                    level="info",
                    text=f"stopped {leftovers} process(es) that steps left running",
                    ts=self.clock(),
                )
            )
        self.watchdog.stop()
        self._record_end()
        self.bus.close()
        self.store.close()
        OutputRouting.release()
        self._finished.set()
        self._inbox.put(_noop)  # the scheduler thread may be asleep: let it see the end

    def _record_end(self) -> None:
        """The run's end in state.json and events: status, exit code, end time, RunFinished.

        Once per end: closing an interactive run that already ended (every step had) adds
        nothing, unless it changed the outcome. A retry may reopen it (``_reopen``) and it
        ends again later.
        """
        outcome = self._outcome()
        if self._state.ended is not None and outcome == (self._state.exit_code, self._state.status):
            return
        self._state.ended = self.clock()
        self._state.exit_code, self._state.status = outcome
        for run in self.runs.values():
            self._flush_output(run)
        self._flush_ctx()
        counts: dict[str, int] = {}
        for run in self.runs.values():
            status = str(run.state.status)
            counts[status] = counts.get(status, 0) + 1
        self._emit(
            ev.RunFinished(
                status=self._state.status,
                exit_code=self._state.exit_code,
                counts=counts,
                ts=self._state.ended,
            )
        )
        self.store.state_changed()

    def _reopen(self) -> None:
        """An interactive run that had ended runs again (a retry, a skip that let blocked
        steps go on): state.json says running, with no end, until it ends again."""
        self._state.ended = self._state.exit_code = None
        self._state.status = RunStatus.RUNNING
        self._emit(ev.RunReopened(ts=self.clock()))
        self.store.state_changed()

    def _outcome(self) -> tuple[int, RunStatus]:
        if self._interrupted or self._cut_short:
            return 130, RunStatus.INTERRUPTED
        for run in self.runs.values():
            if run.state.status in _FAILS_THE_RUN and not run.state.allowed:
                return 1, RunStatus.FAILED
        return 0, RunStatus.SUCCEEDED

    # ------------------------------------------------------------------ events
    def _emit(self, event: ev.Event) -> None:
        """Publish an event; the run's state includes it (``seq``)."""
        if event.kind not in _NOT_LOGGED and _log.isEnabledFor(logging.DEBUG):  # --debug
            fields = {k: v for k, v in event.to_dict().items() if k not in _NOT_DEBUG_FIELDS}
            _log.debug("%s %s", event.kind, fields)
        self.bus.publish(event)
        self._state.seq = event.seq

    def _emit_step(self, kind: type[ev.StepEvent], run: StepRun, **fields: Any) -> None:
        """A step event carrying (a copy of) the step's state as it is now."""
        state = msgspec.structs.replace(run.state)
        self._emit(kind(step=run.step.name, state=state, ts=self.clock(), **fields))

    def _emit_status(self, run: StepRun, reason: str | None = None) -> None:
        status, reason = run.state.status, reason or run.state.reason
        self._emit_step(ev.StepStatus, run, status=status, reason=reason)

    def _note_log(self, run: StepRun) -> str | None:
        """state.json names the log once its file exists (a python step's: once it printed);
        the name, the first time."""
        if run.state.log is None and run.steplog is not None and run.steplog.created:
            run.state.log = self.rundir.log_name(run.step.name)
            return run.state.log
        return None

    def _flush_output(self, run: StepRun) -> None:
        """A StepOutput for what the step wrote since the last one (naming its log, the first
        time the file exists)."""
        steplog = run.steplog
        if steplog is None:
            return
        log = self._note_log(run)
        new = steplog.take_new()
        if new is None and log is None:
            return
        size, lines, total = new or (steplog.size, [], steplog.lines_total)
        if log is not None:
            self.store.state_changed()
        name = run.step.name
        self._emit(
            ev.StepOutput(
                step=name, size=size, lines=lines, lines_total=total, log=log, ts=self.clock()
            )
        )

    def _save_error(self, text: str) -> None:
        """The store could not save a file (said once a file): a warning in the run's events,
        or on stderr once they are closed (the final save comes after them)."""
        if self.bus.closed:
            _log.warning("%s", text)
        else:
            self._emit(ev.RunMessage(level="warning", text=text, ts=self.clock()))

    def _tick_loop(self) -> None:
        """Coalesced output and ctx events, and resource samples, until the run is over."""
        next_sample = time.monotonic()
        while not self._finished.wait(TICK):
            with self._lock:
                if self._finished.is_set():
                    return
                for run in self.runs.values():
                    if run.steplog is not None and run.steplog.dirty:
                        self._flush_output(run)
                if self._groups:
                    self._prune_groups()
                self.watchdog.flush()
                self._flush_ctx()
                # no step runs: nothing to sample, nothing appended while an idle app is open
                targets = self._sample_targets() if self._sampler else None
            if targets and time.monotonic() >= next_sample and not self._sampling.is_set():
                next_sample = time.monotonic() + self._resource_interval
                # Not on this thread: a slow sample (a stalled /proc, thousands of processes)
                # must not hold up output and ctx events, nor the saving they trigger.
                self._sampling.set()
                self.workers.submit(self._sample, targets)

    def _flush_ctx(self) -> None:
        """A CtxChanged for the keys written since the last one."""
        if self.ctx.version != self._state.ctx_version:
            changed = self.ctx.changed_since(self._state.ctx_version)
            version = self._state.ctx_version = self.ctx.version
            self._emit(ev.CtxChanged(keys=changed, version=version, ts=self.clock()))
            self.store.ctx_changed()

    def _sample_targets(self) -> dict[str, StepTarget]:
        return {
            name: StepTarget(pid=run.execution.pid, thread_native_id=run.execution.native_thread_id)
            for name, run in self.runs.items()
            if run.execution is not None
        }

    def _sample(self, targets: dict[str, StepTarget]) -> None:
        assert self._sampler is not None
        try:
            sample = self._sampler.sample(targets)
            peaks = self._sampler.peaks()
            with self._lock:
                if self._finished.is_set() or self._state.ended is not None:
                    return  # taken as the run ended: no sample after its end
                grown = {}
                for name, peak in peaks.items():
                    state = self.runs[name].state
                    figures = (peak.get("peak_cpu"), peak.get("peak_rss"))
                    if figures != (state.peak_cpu, state.peak_rss):
                        state.peak_cpu, state.peak_rss = grown[name] = figures  # type: ignore[assignment]
                self._emit(msgspec.structs.replace(sample, peaks=grown))
                if grown:
                    self.store.state_changed()
        finally:
            self._sampling.clear()

    # ------------------------------------------------------------------ set-up helpers
    def _preselect(self, only: list[str] | None, skip: list[str] | None, resume_from: str | None):
        """--only / --skip / --resume-from: steps that will not run are skipped up front.

        They pass their dependents on once their own dependencies are done, so the order of
        the recipe is kept (contract.md, --skip)."""
        first = self.runs[resume_from].step.index if resume_from else 0
        for name, run in self.runs.items():
            reason = None
            if only and name not in only:
                reason = "not in --only"
            elif skip and name in skip:
                reason = "--skip"
            elif run.step.index < first:
                reason = f"before --resume-from {resume_from}"
            if reason:  # a pass-through: released in order by _release_initial
                run.state.status, run.state.reason = Status.SKIPPED, reason

    def _step_state(self, step: Step) -> StepState:
        """A step's state before it runs: what it is, for every client, and pending."""
        session = None
        if step.type == "session":
            from core.sessions.step import session_log_path

            action = step.action or ""
            log = None
            if action in ("create", "recreate"):
                path = session_log_path(
                    step.log, action=action, run_dir=self.rundir.path, session=step.session or ""
                )
                log = None if path is None else str(path)
            session = SessionRef(
                backend=step.backend,
                name=step.session or "",
                action=action,
                socket=step.socket,
                log=log,
            )
        return StepState(
            name=step.name,
            type=step.type,
            index=step.index,
            background=step.background,
            depends_on=list(step.depends_on),
            retries=step.retries,
            session=session,
        )


def _noop() -> None:
    pass
