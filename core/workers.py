"""A pool of daemon worker threads that grows on demand and reuses idle threads.

Steps run as threads (python steps, output readers, readiness probes). Starting a thread per
task costs more than a no-op step, and ``concurrent.futures`` joins its threads at interpreter
exit, which would hang on a step function that ignores ``stop``. These workers are daemons and
are reused, so a thousand short steps cost a handful of threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from core.log import get_logger

_log = get_logger("orch.workers")


class Workers:
    def __init__(self, name: str = "orch-worker") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._idle = 0
        self._count = 0

    _local = threading.local()

    def chain_next(self) -> None:
        """The current task is about to end: its thread may take the next task submitted.

        A python step calls this just before reporting its end; the scheduler, run on the same
        thread, usually starts the next step at once, and running it here rather than on
        another thread avoids two thread switches per step. Only for tasks that return right
        after (an output pump, which may keep reading, must not hold a chained task back).
        """
        self._local.can_chain = True

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        local = self._local
        if getattr(local, "can_chain", False) and getattr(local, "chained", None) is None:
            local.chained = (fn, args)
            return
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                self._count += 1
                threading.Thread(
                    target=self._work, name=f"{self._name}-{self._count}", daemon=True
                ).start()
        self._queue.put((fn, args))

    def _work(self) -> None:
        local = self._local
        while True:
            task: tuple[Callable[..., Any], tuple[Any, ...]] | None = self._queue.get()
            while task is not None:
                local.can_chain, local.chained = False, None
                fn, args = task
                try:
                    fn(*args)
                except Exception:
                    _log.exception("worker task %r failed", fn)
                task, local.chained, local.can_chain = local.chained, None, False
            with self._lock:
                self._idle += 1
