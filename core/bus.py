"""Delivers the runner's events to its consumers, in order, on one thread of their own.

Publishing only appends to a deque, so a slow consumer (a terminal, a busy UI) never holds up
scheduling or a step's output reader. The delivery thread wakes at most every ``BATCH_SECONDS``
and takes everything published meanwhile: waking it for each event would cost a thread switch
per event, which at thousands of steps a second is most of the runner's time. Every event is
also appended to events.jsonl here, so the file and what consumers saw are the same sequence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from core.events import Event

Subscriber = Callable[[Event], None]
_log = logging.getLogger("orch.bus")
BATCH_SECONDS = 0.005


class EventBus:
    def __init__(self, sink: Callable[[dict], None] | None = None) -> None:
        self._events: deque[Event] = deque()
        self._wake = threading.Event()
        self._subscribers: list[Subscriber] = []
        self._sink = sink
        self._sink_failed = False
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="orch-events", daemon=True)
        self._started = False

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    @property
    def closed(self) -> bool:
        """``close`` was called: what is published now is not delivered."""
        return self._closing

    def publish(self, event: Event) -> None:
        self._events.append(event)
        if not self._wake.is_set():
            self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            if not self._closing:
                time.sleep(BATCH_SECONDS)  # let a burst gather: one wake-up for all of it
            self._wake.clear()
            while self._events:
                self._deliver(self._events.popleft())
            if self._closing and not self._events:
                return

    def _deliver(self, event: Event) -> None:
        if self._sink is not None:
            try:
                self._sink(event.to_dict())
            except OSError as exc:  # a full disk: said once, and the run's consumers go on
                if not self._sink_failed:
                    self._sink_failed = True
                    _log.warning("cannot record events: %s", exc)
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
            self._closing = True
            self._wake.set()
            self._thread.join(timeout)
