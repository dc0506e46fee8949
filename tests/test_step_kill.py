"""StepKilled (core.executors.python.Interruptible): raised in a python step's thread that
ignored ``stop`` past its grace, and never let out of ``Interruptible.call`` onto the thread
that goes on to other work (the runner's pool thread, a Dask worker's)."""

from __future__ import annotations

import sys
import threading

from core.executors.base import Outcome
from core.executors.python import Interruptible, StepKilled


def test_a_stepkilled_landing_as_the_step_returns_stays_in_call():
    """The kill comes after the step returned, before ``_disarm`` took its lock: the async
    exception fires at ``_disarm``'s first instruction. It escaped ``call`` (the review's
    stress harness: 4 runs of 7), leaving ``_calling`` set and the runner's pool thread dead,
    the step never ending. Made certain here: the kill is sent as ``_disarm`` is entered."""
    thread = Interruptible()
    sent: list[bool] = []

    def kill_as_disarm_starts(frame, event, arg):
        if event == "call" and frame.f_code is Interruptible._disarm.__code__ and not sent:
            sent.append(True)
            thread.interrupt()  # fires at the next instruction checked: here, or _disarm's
        return None

    sys.settrace(kill_as_disarm_starts)
    try:
        outcome = thread.call(lambda: Outcome(0))
    finally:
        sys.settrace(None)
    assert sent, "the step returned without entering _disarm"
    assert outcome.exit_code == 0, "the step had returned: its outcome stands"
    assert thread.call(lambda: Outcome(3)).exit_code == 3, "the next call was not disarmed"


def test_repeated_kills_never_escape_call():
    """The stress harness, bounded by calls: one thread calls a short step over and over while
    another interrupts as fast as it can; no StepKilled may reach the caller."""
    thread = Interruptible()
    escaped: list[BaseException] = []
    done = threading.Event()

    def calls() -> None:
        try:
            for _ in range(20_000):
                try:
                    thread.call(lambda: Outcome(sum(range(50)) and 0))
                except StepKilled as exc:
                    escaped.append(exc)
                    thread._calling = None  # as the harness did: go on counting
        finally:
            done.set()

    def hammer() -> None:
        while not done.is_set():
            thread.interrupt()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=calls), threading.Thread(target=hammer)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    assert escaped == []
