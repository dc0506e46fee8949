"""Delivers the runner's events: to events.jsonl first, then to its consumers, in order.

Publishing only appends to a deque, so a slow consumer (a terminal, a busy UI) never holds up
scheduling or a step's output reader. Two threads take it from there. The recorder wakes at most
every ``BATCH_SECONDS``, takes everything published meanwhile (waking it for each event would
cost a thread switch per event, which at thousands of steps a second is most of the runner's
time), appends it to events.jsonl and hands the batch to the dispatcher, which calls the
consumers. A consumer that blocks (a terminal nobody reads) holds up only the dispatcher: the
run's own record stays complete, and closing the bus still ends in bounded time. The file and
what consumers saw are the same sequence, numbered: ``publish`` gives each event its ``seq``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from core.events import Event
from core.log import get_logger

Subscriber = Callable[[Event], None]
_log = get_logger("orch.bus")
BATCH_SECONDS = 0.005


class EventBus:
    def __init__(self, sink: Callable[[list[Event]], None] | None = None) -> None:
        """``sink`` records a batch of events, in order (RunStore.append_events)."""
        self._events: deque[Event] = deque()  # published, not yet recorded
        self._publishing = threading.Lock()  # seq and the queue's order are the same
        self.seq = 0  # the last event's
        self._wake = threading.Event()
        self._batches: deque[list[Event]] = deque()  # recorded, not yet delivered
        self._batch_ready = threading.Event()
        self._recorded_all = False
        self._subscribers: list[Subscriber] = []
        self._sink = sink
        self._sink_failed = False
        self._closing = False
        self._closed_event = threading.Event()  # set with _closing: ends a batch's wait
        self._recorder = threading.Thread(target=self._record_loop, name="orch-events", daemon=True)
        self._dispatcher = threading.Thread(
            target=self._deliver_loop, name="orch-consumers", daemon=True
        )
        self._started = False

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._recorder.start()
            self._dispatcher.start()

    @property
    def closed(self) -> bool:
        """``close`` was called: what is published now is neither recorded nor delivered."""
        return self._closing

    def publish(self, event: Event) -> None:
        """Number the event (``seq``) and queue it: it must not change after this."""
        with self._publishing:
            self.seq = event.seq = self.seq + 1
            self._events.append(event)
        if not self._wake.is_set():
            self._wake.set()

    # -- the recorder: events.jsonl -------------------------------------------------------------
    def _record_loop(self) -> None:
        while True:
            self._wake.wait()
            # let a burst gather: one wake-up for all of it; cut short by close, which the end
            # of every run calls right after its last event (a sleep made each run wait it out)
            self._closed_event.wait(BATCH_SECONDS)
            self._wake.clear()
            batch = []
            while self._events:
                batch.append(self._events.popleft())
            if batch:
                self._record(batch)
                self._batches.append(batch)
            closing = self._closing and not self._events
            if closing:
                self._recorded_all = True
            if batch or closing:
                self._batch_ready.set()
            if closing:
                return

    def _record(self, batch: list[Event]) -> None:
        if self._sink is None:
            return
        try:
            self._sink(batch)
        except OSError as exc:  # a full disk: said once, and the run's consumers go on
            if not self._sink_failed:
                self._sink_failed = True
                _log.warning("cannot record events: %s", exc)
        except Exception:  # a full disk must not stop the run's consumers
            _log.exception("could not record %d events", len(batch))

    # -- the dispatcher: the consumers -----------------------------------------------------------
    def _deliver_loop(self) -> None:
        while True:
            self._batch_ready.wait()
            self._batch_ready.clear()
            while self._batches:
                for event in self._batches.popleft():
                    self._deliver(event)
            if self._recorded_all and not self._batches:
                return

    def _deliver(self, event: Event) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                _log.exception("event consumer %r failed on %s", callback, event.kind)

    def close(self, timeout: float | None = 10.0) -> None:
        """Record and deliver everything already published, then stop.

        Recording is waited for first: events.jsonl is complete after this returns, however
        slow a consumer is (unless the disk itself stalls for ``timeout``). Consumers get at
        most ``timeout`` more to take what is left.
        """
        if self._started:
            self._closing = True
            self._closed_event.set()
            self._wake.set()
            self._recorder.join(timeout)
            self._dispatcher.join(timeout)
