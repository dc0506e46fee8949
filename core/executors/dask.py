"""Steps on the run's Dask cluster (core.cluster): one task per attempt, which runs
core.executors.on_worker.run_step (a python step) or run_shell (a shell step with ``where:
cluster``) on a worker.

A python step gets a copy of the ctx (the whole snapshot, or its ``reads``); a shell step its
command, cwd and environment as the Launcher makes them here (over the worker's own environment).
Output and ctx writes (a shell step's ORCH_CTX_OUT, read on the worker) come back while it runs,
in order, and are applied here: output to the step's log, writes through the run's Context, so
checks, versions, ctx.json and the viewers behave as for a local step. A set or delete of a key that something else wrote after this step's snapshot would undo
that write: the step fails "ctx conflict on 'k'" instead. Appends and extends commute, and are
always applied.

``stop`` sets the attempt's distributed Event: a python step's ``stop``; for a shell step, the
worker sends SIGTERM to its group, SIGKILL after its ``grace``. ``kill`` gives up on a python
step's task, as on a local thread that ignored ``stop``; a shell step's end is the worker's to
report. A worker that dies under the step fails it "worker
lost": the clusters we start never run a task twice; on another one, a second start of the same
task is caught and fails it the same way.
"""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING, Any

from core.executors.base import LaunchContext, OnExit, Outcome
from core.executors.on_worker import Job, ShellJob, run_shell, run_step

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.cluster import Cluster
    from core.recipe import PythonStep, ShellStep
    from core.steplog import StepLog

#: seconds to wait, after the task's result, for its last batches of output
TAIL_WAIT = 10.0
WORKER_LOST = "worker lost"


class DaskExecution:
    """One attempt of a step on the cluster. ``pid`` stays None: the step's process, if it has
    one, is the worker's child, maybe on another machine, out of the runner's signals' reach."""

    pid = None
    native_thread_id = None

    #: the worker process the step runs in, once it started there, if on this machine
    worker_pid: int | None = None

    def __init__(
        self,
        step: PythonStep | ShellStep,
        log: StepLog,
        attempt: int,
        context: LaunchContext,
        on_exit: OnExit,
    ) -> None:
        assert context.cluster is not None
        self.step, self.log, self.context, self.on_exit = step, log, context, on_exit
        self.cluster: Cluster = context.cluster
        self.key = self.cluster.task_key(step.name, attempt)
        self.attempt = attempt
        self._stop_name = f"{self.key}-stop"
        self._future: Any = None
        self._received = threading.Condition()
        self._next = 0  # the batch expected next
        self._early: dict[int, list[Any]] = {}  # batches that overtook one (not seen, but cheap)
        self._seen: dict[str, int] = {}  # key -> the ctx version this step last knew it at
        self._base = 0
        self._failure: str | None = None  # a ctx conflict, a second start
        self._starts = 0

    @classmethod
    def create(
        cls, step: Any, log: StepLog, attempt: int, context: LaunchContext, on_exit: OnExit
    ) -> DaskExecution:
        return cls(step, log, attempt, context, on_exit)

    @property
    def kill_abandons(self) -> bool:
        """A python step's task is given up on; a shell step's process is killed on its worker."""
        return self.step.type == "python"

    def start(self) -> None:
        """ValueError (as a local shell step): a ctx key it exposes cannot be in its environment."""
        task, job = self._shell_job() if self.step.type == "shell" else self._python_job()
        self.cluster.listen(self.key, self._on_batch)
        self._future = self.cluster.client.submit(task, job, key=self.key, pure=False, retries=0)
        self.context.workers.submit(self._wait)

    def _names(self) -> dict[str, str]:
        return {"topic": self.cluster.topic, "key": self.key, "stop": self._stop_name}

    def _python_job(self) -> tuple[Callable[[Job], Any], Job]:
        step = self.step
        assert step.type == "python"
        snapshot, self._base = self.context.ctx.snapshot_at(step.reads)
        workspace = str(self.context.launcher.recipe.workspace)
        return run_step, Job(
            step=step,
            ctx=snapshot,
            workspace=workspace,
            again=self.attempt > 1,
            **self._names(),
        )

    def _shell_job(self) -> tuple[Callable[[ShellJob], Any], ShellJob]:
        step, launcher = self.step, self.context.launcher
        assert step.type == "shell"
        self._base = self.context.ctx.version  # before the keys it exposes are read
        job = ShellJob(
            step=step,
            argv=launcher.argv(step),
            env=launcher.shell_overrides(step),
            cwd=str(launcher.cwd(step)),
            **self._names(),
        )
        return run_shell, job

    # ------------------------------------------------------------------ the end
    def _wait(self) -> None:
        """On a runner worker thread: the task's end, then the batches it sent before it."""
        from distributed import CancelledError
        from distributed.scheduler import KilledWorker

        try:
            outcome, batches = self._future.result()
        except KilledWorker:
            outcome = Outcome(None, error=WORKER_LOST)
        except CancelledError:
            outcome = Outcome(None, error=self._failure or "cancelled")
        except Exception as exc:
            outcome = Outcome(None, error=f"on the cluster: {type(exc).__name__}: {exc}")
        else:
            self._wait_for(batches)
        self.cluster.forget(self.key)
        if self.step.type == "shell":  # the runner closes only a python step's log
            self.log.close()
        self._release()
        if self._failure is not None:
            outcome = Outcome(outcome.exit_code or 1, error=self._failure)
        self.on_exit(outcome)

    def _wait_for(self, batches: int) -> None:
        with self._received:
            if not self._received.wait_for(lambda: self._next >= batches, TAIL_WAIT):
                missing = batches - self._next
                self.log.write_text(f"orch-tui: {missing} batch(es) of output never arrived\n")

    def _release(self) -> None:
        try:
            self._future.release()
            self.cluster.clear_event(self._stop_name)
        except Exception:  # the client is closing with the run
            pass

    # ------------------------------------------------------------------ what comes back
    def _on_batch(self, number: int, items: list[Any]) -> None:
        """On the client's event loop: apply the batches in their order."""
        with self._received:
            self._early[number] = items
            while self._next in self._early:
                self._apply(self._early.pop(self._next))
                self._next += 1
            self._received.notify_all()

    def _apply(self, items: list[Any]) -> None:
        for item in items:
            kind = item[0]
            if kind == "o":
                self.log.write_text(item[1])
            elif kind == "start":
                self._started(item[1], item[2], item[3])
            elif self._failure is None:
                self._write(kind, item)

    def _started(self, pid: int, worker: str, host: str) -> None:
        """The worker first (an 80-column TUI shows a log line's first 50 characters)."""
        self._starts += 1
        if self._starts == 1 and host == socket.gethostname():
            self.worker_pid = pid  # the step's process, for ready: {port} (core.readiness)
        if self._starts > 1:
            self._fail(f"{WORKER_LOST} (Dask started it again, on {worker})")
        else:
            self.log.write_text(f"orch-tui: on Dask worker {worker}, pid {pid} on {host}\n")

    def _write(self, kind: str, item: list[Any]) -> None:
        ctx, key = self.context.ctx, item[1]
        try:
            if kind in ("a", "e"):
                (ctx.append if kind == "a" else ctx.extend)(key, item[2])
                self._seen[key] = ctx.key_version(key)  # its own append is no conflict
            else:
                since = self._seen.get(key, self._base)
                version = ctx.set_unless_changed(
                    key, item[2] if kind == "s" else None, since, delete=kind == "d"
                )
                if version < 0:
                    self._fail(f"ctx conflict on {key!r}")
                    self.log.write_text(
                        f"orch-tui: ctx conflict on {key!r}: another step wrote it after this "
                        "one started; this write and the ones after it were not applied\n"
                    )
                else:
                    self._seen[key] = version
        except (KeyError, ValueError, TypeError) as exc:  # a write local ctx refuses
            self._fail(f"ctx write refused: {exc}")

    def _fail(self, reason: str) -> None:
        """The step fails with ``reason`` whatever it does next: asked to stop, then let go."""
        self._failure = reason
        self.context.workers.submit(self._give_up)

    def _give_up(self) -> None:
        self._signal_stop()
        self._future.cancel()

    # ------------------------------------------------------------------ stopping
    def _signal_stop(self) -> None:
        try:
            self.cluster.set_event(self._stop_name)
        except Exception:  # the cluster is going: the step goes with it
            pass

    def stop(self, sig: int) -> None:
        self.context.workers.submit(self._signal_stop)

    def kill(self) -> None:
        """A python step: give up on it (the runner abandons it as a thread that ignored
        ``stop``). A shell step: its worker kills it after its grace, and says so."""
        if self.kill_abandons:
            self.context.workers.submit(self._future.cancel)
