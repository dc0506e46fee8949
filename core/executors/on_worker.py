"""What a Dask worker runs for a step of an orch-tui run (core.executors.dask submits it).

A python step gets a copy of the ctx (``Job.ctx``: the snapshot, or only its ``reads``) in a
``RecordingContext``, the same Context class as at home, so a bad value fails the step at the
write that made it. Its writes (set, delete, append, extend) and what it prints go back, in the
order they happened, as batches on the run's Dask topic (``Worker.log_event``; the runner
subscribed to it before submitting), as JSON: one stream, so a log line and the ctx write after it
arrive in that order. Each batch is numbered, and the task's result says how many there were,
so the runner knows when it has them all.

Nothing here is imported by the runner unless the run has an executor; on a worker it needs
orch-tui installed (``pip install orch-tui[dask]``), which ``check_worker`` proves at the start.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from core.context import Context, encode_json
from core.executors.base import Outcome
from core.executors.python import Interruptible, OutputRouting, call_step
from core.executors.shell import exit_outcome, merge_ctx_out, spawn_error
from core.launch import with_inherited
from core.privatedir import HeldFile, PrivateDir
from core.reactor import CHUNK, DRAIN_SECONDS
from core.recipe import PythonStep, ShellStep
from core.watchdog import stop_group

#: how often what a step printed is sent while it runs; a batch is sent at once past BATCH_BYTES
FLUSH_INTERVAL = 0.05
BATCH_BYTES = 256 * 1024
#: how often a step's stop watcher asks again (a set Event answers at once, not after this)
STOP_POLL = 1.0


class Task(msgspec.Struct, frozen=True, kw_only=True):
    """What every attempt shipped to a worker has. A Struct, not a dataclass: Dask walks a
    dataclass argument and rebuilds its lists as tuples, which the ctx must not see."""

    topic: str  # the run's Dask topic
    key: str  # the task key: names the attempt in every batch
    stop: str  # the name of the distributed Event that asks the step to stop


class Job(Task, frozen=True, kw_only=True):
    """One attempt of a python step, as shipped to a worker."""

    step: PythonStep
    ctx: dict[str, Any]
    workspace: str  # the recipe's folder: python steps import from it
    again: bool = False  # a later attempt: the module as its file is now (core.stepmodules)


class ShellJob(Task, frozen=True, kw_only=True):
    """One attempt of a shell step (``where: cluster``), as the runner's Launcher made it."""

    step: ShellStep
    argv: list[str]  # no shell unless the recipe used ``run:`` (core.launch)
    env: dict[str, str]  # over the worker's own environment (Launcher.shell_overrides)
    cwd: str


class Publisher:
    """Output and ctx writes, in order, sent in numbered batches on the run's topic.

    Batch 0 is ``["start", pid, worker, host]`` (the step's process, the worker's address, its
    host); each item after is ``["o", text]`` (output, adjacent
    pieces joined) or a ctx write: ``["s", key, value]``, ``["d", key]``, ``["a", key, row]``,
    ``["e", key, rows]``. A flusher thread sends what gathered every ``FLUSH_INTERVAL``.
    """

    def __init__(self, send: Callable[[dict[str, Any]], None], key: str) -> None:
        self._send, self._key = send, key
        self._lock = threading.Lock()
        self._items: list[list[Any]] = []
        self._size = 0
        self.sent = 0
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_often, name="orch-publish", daemon=True)

    def start(self, worker: str, pid: int | None = None) -> None:
        """Say where the step runs (``pid``: its process, by default this worker's)."""
        self._add(["start", os.getpid() if pid is None else pid, worker, socket.gethostname()])
        self.flush()
        self._flusher.start()

    @property
    def closed(self) -> bool:
        """Sent its last batch: what a thread the step left running prints goes elsewhere."""
        return self._closed.is_set()

    def write_text(self, text: str) -> None:
        """What the step printed (the OutputRouting sink)."""
        if not text:
            return
        with self._lock:
            last = self._items[-1] if self._items else None
            if last is not None and last[0] == "o":
                last[1] += text
            else:
                self._items.append(["o", text])
            self._grew(len(text))

    def record(self, op: list[Any]) -> None:
        """A ctx write, sent in its place among the output."""
        with self._lock:
            self._items.append(op)
            self._grew(1024)  # a cheap guess: values are not measured

    def _add(self, item: list[Any]) -> None:
        with self._lock:
            self._items.append(item)

    def _grew(self, size: int) -> None:
        self._size += size
        if self._size >= BATCH_BYTES:
            self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._items:
            return
        # as JSON bytes: Dask's msgpack would hand the lists back as tuples; written as ctx.json
        # is, so any value the step's ctx took (numpy's float64 too) gets through
        self._send({"k": self._key, "n": self.sent, "i": encode_json(self._items)})
        self.sent += 1
        self._items, self._size = [], 0

    def _flush_often(self) -> None:
        while not self._closed.wait(FLUSH_INTERVAL):
            self.flush()

    def close(self) -> int:
        """Send the rest; the number of batches sent."""
        self._closed.set()
        if self._flusher.is_alive():
            self._flusher.join()
        self.flush()
        return self.sent


class RecordingContext(Context):
    """The step's copy of the ctx: a Context (same checks, same API) that also records every
    write for the runner to apply to the real one."""

    def __init__(self, snapshot: dict[str, Any], record: Callable[[list[Any]], None]) -> None:
        super().__init__()
        self._data.update(snapshot)  # checked when the runner stored them
        self._record = record

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._record(["s", key, value])

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._record(["d", key])

    def append(self, key: str, row: Any) -> int:
        length = super().append(key, row)
        self._record(["a", key, row])
        return length

    def extend(self, key: str, rows: Any) -> int:
        rows = list(rows)
        length = super().extend(key, rows)
        self._record(["e", key, rows])
        return length

    def update_from(self, values: dict[str, Any]) -> None:
        super().update_from(values)
        for key, value in values.items():
            self._record(["s", key, value])


class StopWatch:
    """The step's ``stop`` (a threading.Event), set when the run sets the distributed Event.

    Watched for every step: a python step that ignores ``stop`` is interrupted past its grace
    (``on_stop``), a shell step's process group is stopped (``on_stop``), called on the
    watching thread. That thread waits on the scheduler's Event (which answers as soon as it
    is set) until the step ends; ``close`` does not wait for it (it wakes up to STOP_POLL
    later: the task waited that long, every step of a run lasted a second at least), it only
    makes sure ``on_stop`` is not called once the step has ended (its pid may be another's)."""

    def __init__(self, name: str, on_stop: Callable[[], object] | None = None) -> None:
        self._name = name
        self._on_stop = on_stop
        self._event: threading.Event | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()  # held by on_stop: close comes before or after it

    def event(self) -> threading.Event:
        """Called on the task's thread, where Dask finds the worker's client."""
        if self._event is None:
            from distributed import Event, get_client

            remote = Event(self._name, client=get_client())  # lazily, it would find none
            self._event = threading.Event()
            threading.Thread(
                target=self._watch, args=(remote,), name="orch-stop", daemon=True
            ).start()
        return self._event

    def _watch(self, remote: Any) -> None:
        while not self._done.is_set():
            try:
                if remote.wait(STOP_POLL):
                    self._stopped()
                    return
            except Exception:  # the scheduler is gone: the run is over anyway
                if self._done.wait(STOP_POLL):
                    return

    def _stopped(self) -> None:
        assert self._event is not None
        with self._lock:
            if self._done.is_set():
                return
            self._event.set()
            if self._on_stop is not None:
                self._on_stop()

    def close(self) -> None:
        with self._lock:
            self._done.set()


def dask_setup(worker: Any) -> None:
    """The preload of the LocalCluster's workers (core.cluster), on a worker's main thread as it
    starts: SIGINT gets a handler that does nothing. A Ctrl-C at the terminal (or a cancelled
    CI job's SIGINT) reaches the whole process group, these workers too, which printed 25-40
    lines of tracebacks (KeyboardInterrupt, then their broken connections) over the run's
    summary; the runner stops its workers itself. A handler, not SIG_IGN, which exec keeps:
    the processes a step starts (a ``where: cluster`` shell step's) get SIGINT as at home."""
    import signal

    signal.signal(signal.SIGINT, lambda signum, frame: None)


def put_on_path(workspace: str) -> None:
    """Python steps import from the recipe's folder, on a worker too when it can see it."""
    if workspace not in sys.path and os.path.isdir(workspace):
        sys.path.insert(0, workspace)


def run_step(job: Job) -> tuple[Outcome, int]:
    """The task: the step called as at home; how it ended, and how many batches were sent."""
    from distributed import get_worker

    put_on_path(job.workspace)
    worker = get_worker()
    publisher = Publisher(lambda msg: worker.log_event(job.topic, msg), job.key)
    publisher.start(worker.address)
    ctx = RecordingContext(job.ctx, publisher.record)
    thread, returned = Interruptible(), threading.Event()

    def on_stop() -> None:  # a step that ignores stop past its grace is interrupted, as at home
        if not returned.wait(job.step.grace):
            thread.interrupt()

    stop = StopWatch(job.stop, on_stop=on_stop)
    stop.event()  # watched whether the step asks for it: one ignoring it held the worker for good
    # one thread: every process this worker starts meanwhile is the step's (README, Dask)
    alone = getattr(getattr(worker, "state", None), "nthreads", 0) == 1
    before = _children() if alone else None
    OutputRouting.acquire()
    OutputRouting.bind(publisher)
    try:
        outcome = thread.call(
            lambda: call_step(job.step, ctx, publisher, stop.event, again=job.again)
        )
    finally:
        returned.set()
        OutputRouting.bind(None)
        OutputRouting.release()
        stop.close()
        if before is not None:
            _stop_left(before, job.step.grace, publisher)
    return outcome, publisher.close()


def _children() -> dict[int, float]:
    """This worker's descendants now: pid -> start time."""
    return {child.pid: started for child, started in _descendants()}


def _descendants() -> list[tuple[Any, float]]:
    """This worker's descendants (psutil processes) and their start times; one that ended
    as it was looked at is left out."""
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            found.append((child, child.create_time()))
    return found


def _stop_left(before: dict[int, float], grace: float, publisher: Publisher) -> None:
    """What a python step started on this worker and left running (``subprocess.Popen``):
    SIGTERM, ``grace``, SIGKILL, as a shell step's group here; no run's end comes to the worker
    to do it. It once outlived the run, and held the run's stdout (the workers' own) open, so
    ``orch-tui R --executor dask-local://2 --no-ui | tee log`` waited for it to end. Each is
    signalled only while it is the process found (psutil checks its start time)."""
    import psutil

    left = [child for child, started in _descendants() if before.get(child.pid) != started]
    if not left:
        return
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(left, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=2)
    plural = "es" if len(left) > 1 else ""
    publisher.write_text(f"orch-tui: stopped {len(left)} process{plural} the step left running\n")


def run_shell(job: ShellJob) -> tuple[Outcome, int]:
    """The task of a shell step: its process in its own group on this worker, its output sent
    as it comes, its ORCH_CTX_OUT (a name in a private folder of this worker's; the step makes
    the file if it writes one, as at home) merged into an empty
    recording ctx, whose writes go back like a python step's. Stopping it (the distributed
    Event) is SIGTERM to the group, ``grace``, SIGKILL, as the runner does at home; whatever
    is left of the group when the process has exited is stopped the same way, for no run's
    end will come here to clean up."""
    from distributed import get_worker

    worker = get_worker()
    publisher = Publisher(lambda msg: worker.log_event(job.topic, msg), job.key)
    with (
        tempfile.TemporaryDirectory(prefix="orch-ctx-out-") as tmp,
        PrivateDir.open(Path(tmp), create=False) as folder,
    ):
        ctx_out = HeldFile(folder, "ORCH_CTX_OUT")  # made by the step if it writes one
        outcome = _run_process(job, with_inherited(job.env, ctx_out.path), publisher, worker)
        if outcome.ok and not ctx_out.untouched():
            recording = RecordingContext({}, publisher.record)
            outcome = merge_ctx_out(job.step.name, ctx_out, recording)
    return outcome, publisher.close()


def _run_process(job: ShellJob, env: dict[str, str], publisher: Publisher, worker: Any) -> Outcome:
    """Start the step's process, pump its output until it has ended, stop what it left."""
    try:
        proc = subprocess.Popen(
            job.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one pipe: their order is kept
            cwd=job.cwd,
            env=env,
            start_new_session=True,  # its own group: the stop reaches the whole tree
            close_fds=True,
        )
    except OSError as exc:
        return Outcome(None, error=f"cannot start: {spawn_error(exc, job.argv, Path(job.cwd))}")
    publisher.start(worker.address, proc.pid)
    grace = job.step.grace
    stop = StopWatch(job.stop, on_stop=lambda: stop_group(proc.pid, grace))
    stop.event()  # watched from now on (made here, on the task's thread: module doc)
    try:
        code = _pump(proc, publisher)
    finally:
        stop_group(proc.pid, grace)
        stop.close()
    return exit_outcome(code)


def _pump(proc: subprocess.Popen[bytes], publisher: Publisher) -> int:
    """Send the output until the process has exited and its pipe is at EOF, or DRAIN_SECONDS
    after its exit while something it started still holds the pipe (as the OutputReactor does
    at home); its exit code. Bytes that are not UTF-8 arrive as U+FFFD: batches are JSON."""
    assert proc.stdout is not None
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    fd, pidfd = proc.stdout.fileno(), os.pidfd_open(proc.pid)
    deadline: float | None = None  # once it has exited
    eof = False
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ, "output")
            selector.register(pidfd, selectors.EVENT_READ, "exit")
            while not (eof and deadline is not None):
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready = selector.select(timeout)
                if not ready:  # drained for DRAIN_SECONDS: a grandchild holds the pipe
                    break
                for key, _ in ready:
                    if key.data == "exit":
                        selector.unregister(pidfd)
                        deadline = time.monotonic() + DRAIN_SECONDS
                        continue
                    data = os.read(fd, CHUNK)
                    if data:
                        publisher.write_text(decoder.decode(data))
                    else:
                        selector.unregister(fd)
                        eof = True
    finally:
        os.close(pidfd)
        publisher.write_text(decoder.decode(b"", final=True))
        proc.stdout.close()
    return proc.wait()


def check_worker(workspace: str, modules: dict[str, str]) -> list[str]:
    """Run on every worker before the run starts: the steps' modules it cannot import
    (``{step: module}``), one line each."""
    from core import stepmodules

    put_on_path(workspace)
    problems = []
    for step, module in modules.items():
        try:
            stepmodules.import_module(module)
        except BaseException as exc:  # a module may raise anything, SystemExit included
            problems.append(f"step {step!r}: cannot import {module}: {type(exc).__name__}: {exc}")
    return problems
