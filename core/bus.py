"""Delivers the runner's events to its consumers, in order, on one thread of their own.

Publishing only enqueues, so a slow consumer (a terminal, a busy UI) never holds up scheduling
or a step's output reader. Every event is also appended to events.jsonl here, so the file and
what consumers saw are the same sequence.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from core.events import Event

Subscriber = Callable[[Event], None]
_log = logging.getLogger("orch.bus")
_STOP = object()


class EventBus:
    def __init__(self, sink: Callable[[dict], None] | None = None) -> None:
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._subscribers: list[Subscriber] = []
        self._sink = sink
        self._thread = threading.Thread(target=self._loop, name="orch-events", daemon=True)
        self._started = False

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def publish(self, event: Event) -> None:
        self._queue.put(event)

    def _loop(self) -> None:
        while True:
            event = self._queue.get()
            if event is _STOP:
                return
            assert isinstance(event, Event)
            if self._sink is not None:
                try:
                    self._sink(event.to_dict())
                except Exception:  # a full disk must not stop the run's consumers
                    _log.exception("could not record event %s", event.kind)
            for callback in list(self._subscribers):
                try:
                    callback(event)
                except Exception:
                    _log.exception("event consumer %r failed on %s", callback, event.kind)

    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver everything already published, then stop."""
        if self._started:
            self._queue.put(_STOP)
            self._thread.join(timeout)
