"""The scheduler's thread: every change of a run's state is made by one message at a time.

Messages come from any thread (a step ended, a check found it ready, a command), timers fire on
the same thread, and each turn ends with the owner's own work (``turn_end``: start what may
start, see whether the run is over). So there are no races between, say, a timeout and the
step's own exit. Everything runs under the owner's ``lock``, which its readers (a snapshot, the
ticker) take too.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable

from core.log import get_logger

Message = Callable[[], None]
_log = get_logger("orch.runner")


class MessageLoop:
    """``post`` messages, ``after`` timers; ``start(first)`` runs ``first`` and then the loop on
    a thread of its own until ``stop``. ``on_error`` is told of a message that raised (the
    loop goes on: a bug must not leave the run hanging)."""

    def __init__(
        self, lock: threading.RLock, turn_end: Message, on_error: Callable[[], None]
    ) -> None:
        self.lock, self._turn_end, self._on_error = lock, turn_end, on_error
        self._handling = False
        self._thread = threading.Thread(target=self._run, name="orch-scheduler", daemon=True)
        self._inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Message]] = []
        self._order = itertools.count()  # timers due at the same time fire in order
        self._first: Message | None = None
        self._stopped = threading.Event()

    def start(self, first: Message) -> None:
        self._first = first
        self._thread.start()

    def stop(self) -> None:
        """End the loop (called from a message: the thread may be asleep, it is woken)."""
        self._stopped.set()
        self._inbox.put(_noop)

    def post(self, message: Message) -> None:
        """Handle ``message`` now on this thread if the loop is free, else queue it.

        Handling it here saves a thread switch per step end (the difference between a few
        thousand and ten thousand python steps a second). A thread already inside the loop (a
        callback fired while handling another message) always queues.
        """
        if self.lock.acquire(blocking=False):
            try:
                if not self._handling:
                    self._handle(message)
                    return
            finally:
                self.lock.release()
        self._inbox.put(message)

    def after(self, delay: float, callback: Message) -> None:
        """Run ``callback`` on the loop's thread ``delay`` seconds from now (under the lock)."""
        entry = (time.monotonic() + delay, next(self._order), callback)
        heapq.heappush(self._timers, entry)
        if self._timers[0] is entry and threading.current_thread() is not self._thread:
            self._inbox.put(_noop)  # the thread sleeps until its earliest timer: wake it

    def _handle(self, message: Message | None) -> None:
        """One turn: the message, due timers, then ``turn_end``. Holds the lock."""
        self._handling = True
        try:
            if message is not None:
                message()
            while self._timers and self._timers[0][0] <= time.monotonic():
                heapq.heappop(self._timers)[2]()
            self._turn_end()
        except Exception:  # a bug here must not leave the run hanging
            try:
                _log.exception("scheduler error")
            except Exception:  # logging's import with no descriptor left: not this thread's end
                pass
            self._on_error()
        finally:
            self._handling = False

    def _run(self) -> None:
        with self.lock:
            # A turn at once: nothing may be left to wait for (every step skipped, or none
            # could start), and no message would ever arrive to end the run.
            self._handle(self._first)
        while not self._stopped.is_set():
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            try:
                message: Message | None = self._inbox.get(timeout=timeout)
            except queue.Empty:
                message = None
            with self.lock:
                self._handle(message)


def _noop() -> None:
    pass
