"""One thread that copies every shell step's output to its log and notices each step's exit.

A reader thread per step made fifty flooding steps fifty threads fighting over the GIL, and the
TUI lost: keys took seconds. Here one selector watches every step's pipe and a pidfd per
process. A step counts as ended when its process has exited and its pipe reached EOF, or
``DRAIN_SECONDS`` after the exit if something it started still holds the pipe; that output is
still copied until EOF (or until the run's clean-up stops the holder).
"""

from __future__ import annotations

import os
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable

import msgspec

from core.log import get_logger
from core.steplog import StepLog

CHUNK = 1 << 20
DRAIN_SECONDS = 0.2
_log = get_logger("orch.reactor")


class Watch(msgspec.Struct, eq=False):
    """One step attempt's pipe and process, as the reactor sees them."""

    fd: int
    pid: int
    log: StepLog
    on_exit: Callable[[], None]  # called once, on the reactor thread, when the step ended
    pidfd: int | None = None
    eof: bool = False
    exited: bool = False
    ended: bool = False
    deadline: float | None = None


class OutputReactor:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._requests: deque[Callable[[], None]] = deque()
        self._draining: set[Watch] = set()
        self._thread = threading.Thread(target=self._loop, name="orch-output", daemon=True)
        self._started = False
        self._start_lock = threading.Lock()

    def watch(self, fd: int, pid: int, log: StepLog, on_exit: Callable[[], None]) -> None:
        """Start copying ``fd`` to ``log``; ``on_exit`` runs when the step has ended."""
        item = Watch(fd=fd, pid=pid, log=log, on_exit=on_exit)
        try:
            item.pidfd = os.pidfd_open(pid)
        except OSError:  # no pidfd (Linux < 5.3): a thread waits for the exit instead
            threading.Thread(target=self._wait_pid, args=(item,), daemon=True).start()
        if threading.get_ident() == self._thread.ident:
            self._register(item)  # a step started by another's end, on this thread: no wake-up
        else:
            self._call(lambda: self._register(item))
        with self._start_lock:
            if not self._started:
                self._started = True
                self._thread.start()

    def _call(self, request: Callable[[], None]) -> None:
        self._requests.append(request)
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # the wake pipe is full: the loop is awake anyway
            pass

    def _wait_pid(self, item: Watch) -> None:
        try:
            os.waitid(os.P_PID, item.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        self._call(lambda: self._exited(item))

    def _register(self, item: Watch) -> None:
        self._selector.register(item.fd, selectors.EVENT_READ, ("out", item))
        if item.pidfd is not None:
            self._selector.register(item.pidfd, selectors.EVENT_READ, ("exit", item))

    # -- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            timeout = None
            if self._draining:
                soonest = min(w.deadline or 0.0 for w in self._draining)
                timeout = max(0.0, soonest - time.monotonic())
            for key, _ in self._selector.select(timeout):
                try:
                    self._ready(key)
                except Exception:  # one step's trouble must not stop every other step's output
                    _log.exception("output reactor")
            now = time.monotonic()
            for item in [w for w in self._draining if (w.deadline or 0.0) <= now]:
                self._end(item)

    def _ready(self, key: selectors.SelectorKey) -> None:
        if key.data is None:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            while self._requests:
                self._requests.popleft()()
            return
        kind, item = key.data
        if kind == "exit":
            self._selector.unregister(item.pidfd)
            os.close(item.pidfd)
            item.pidfd = None
            self._exited(item)
            return
        try:
            data = os.read(item.fd, CHUNK)
        except OSError:
            data = b""
        if data:
            item.log.write(data)
            return
        self._selector.unregister(item.fd)
        os.close(item.fd)
        item.eof = True
        if item.exited:
            self._end(item)
        if item.ended:
            item.log.close()

    def _exited(self, item: Watch) -> None:
        item.exited = True
        if item.eof:
            self._end(item)
            item.log.close()
        else:  # read what is in the pipe, wait a little for EOF
            item.deadline = time.monotonic() + DRAIN_SECONDS
            self._draining.add(item)

    def _end(self, item: Watch) -> None:
        self._draining.discard(item)
        if item.ended:
            return
        item.ended = True
        try:
            item.on_exit()
        except Exception:
            _log.exception("step end handler")
