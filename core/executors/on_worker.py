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

import importlib
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from core.context import Context
from core.executors.base import Outcome
from core.executors.python import OutputRouting, call_step
from core.recipe import PythonStep

#: how often what a step printed is sent while it runs; a batch is sent at once past BATCH_BYTES
FLUSH_INTERVAL = 0.05
BATCH_BYTES = 256 * 1024
#: how often a step's stop watcher asks again (a set Event answers at once, not after this)
STOP_POLL = 1.0


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of a python step, as shipped to a worker. A Struct, not a dataclass: Dask
    walks a dataclass argument and rebuilds its lists as tuples, which the ctx must not see."""

    step: PythonStep
    ctx: dict[str, Any]
    topic: str  # the run's Dask topic
    key: str  # the task key: names the attempt in every batch
    stop: str  # the name of the distributed Event that asks the step to stop
    workspace: str  # the recipe's folder: python steps import from it


class Publisher:
    """Output and ctx writes, in order, sent in numbered batches on the run's topic.

    Batch 0 is ``["start", pid, host]``; each item after is ``["o", text]`` (output, adjacent
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

    def start(self) -> None:
        self._add(["start", os.getpid(), socket.gethostname()])
        self.flush()
        self._flusher.start()

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
        # as JSON bytes: Dask's msgpack would hand the lists back as tuples
        self._send({"k": self._key, "n": self.sent, "i": orjson.dumps(self._items)})
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

    Made only if the step asks for ``stop``; a thread waits on the scheduler's Event (which
    answers as soon as it is set) until the step ends."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._event: threading.Event | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def event(self) -> threading.Event:
        """Called on the task's thread, where Dask finds the worker's client."""
        if self._event is None:
            from distributed import Event, get_client

            remote = Event(self._name, client=get_client())  # lazily, it would find none
            self._event = threading.Event()
            self._thread = threading.Thread(
                target=self._watch, args=(remote,), name="orch-stop", daemon=True
            )
            self._thread.start()
        return self._event

    def _watch(self, remote: Any) -> None:
        assert self._event is not None
        while not self._done.is_set():
            try:
                if remote.wait(STOP_POLL):
                    self._event.set()
                    return
            except Exception:  # the scheduler is gone: the run is over anyway
                if self._done.wait(STOP_POLL):
                    return

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(STOP_POLL + 1)


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
    publisher.start()
    ctx = RecordingContext(job.ctx, publisher.record)
    stop = StopWatch(job.stop)
    OutputRouting.acquire()
    OutputRouting.bind(publisher)
    try:
        outcome = call_step(job.step, ctx, publisher, stop.event)
    finally:
        OutputRouting.bind(None)
        OutputRouting.release()
        stop.close()
    return outcome, publisher.close()


def check_worker(workspace: str, modules: dict[str, str]) -> list[str]:
    """Run on every worker before the run starts: the steps' modules it cannot import
    (``{step: module}``), one line each."""
    put_on_path(workspace)
    problems = []
    for step, module in modules.items():
        try:
            importlib.import_module(module)
        except BaseException as exc:  # a module may raise anything, SystemExit included
            problems.append(f"step {step!r}: cannot import {module}: {type(exc).__name__}: {exc}")
    return problems
