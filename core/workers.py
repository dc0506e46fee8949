"""A pool of daemon worker threads that grows on demand and reuses idle threads.

Steps run as threads (python steps, output readers, readiness probes). Starting a thread per
task costs more than a no-op step, and ``concurrent.futures`` joins its threads at interpreter
exit, which would hang on a step function that ignores ``stop``. These workers are daemons and
are reused, so a thousand short steps cost a handful of threads.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

_log = logging.getLogger("orch.workers")


class Workers:
    def __init__(self, name: str = "orch-worker") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._idle = 0
        self._count = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
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
        while True:
            fn, args = self._queue.get()
            try:
                fn(*args)
            except Exception:
                _log.exception("worker task %r failed", fn)
            with self._lock:
                self._idle += 1
