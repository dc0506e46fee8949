"""StepKilled (core.executors.python.Interruptible): raised in a python step's thread that
ignored ``stop`` past its grace, and never let out of ``Interruptible.call`` onto the thread
that goes on to other work (the runner's pool thread, a Dask worker's)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from core.context import Context
from core.executors import python
from core.executors.base import Outcome
from core.executors.python import Interruptible, OutputRouting, StepKilled, call_step
from core.recipe import PythonStep
from core.workers import Workers
from tests.conftest import write_module


@pytest.fixture
def anywhere(monkeypatch):
    """``interrupt`` sends as soon as asked, as if the step's own code always ran: it looks
    first, and a step that returns between its look and the send gets it as it returns."""
    monkeypatch.setattr(python, "_in_its_own_code", lambda ident: True)


def test_a_stepkilled_landing_as_the_step_returns_stays_in_call(anywhere, monkeypatch):
    """The kill comes after the step returned, before ``_disarm`` took its lock: the async
    exception fires as ``_disarm`` starts, outside its own ``try``. It escaped ``call`` (the
    review's stress harness: 4 runs of 7), leaving ``_calling`` set and the runner's pool
    thread dead, the step never ending. Made certain here: the kill is sent just before
    ``_disarm`` runs. (Not with sys.settrace: an async exception sent from a trace function
    to its own thread made CPython 3.11 spin at the next call's start, a hang in CI.)"""
    thread = Interruptible()
    disarm, sent = Interruptible._disarm, []

    def killed_as_disarm_starts(self: Interruptible) -> None:
        if not sent:
            sent.append(True)
            self.interrupt()  # fires at the next instruction checked: the call just below
        disarm(self)

    monkeypatch.setattr(Interruptible, "_disarm", killed_as_disarm_starts)
    outcome = thread.call(lambda: Outcome(0))
    assert sent, "the step returned without entering _disarm"
    assert outcome.exit_code == 0, "the step had returned: its outcome stands"
    assert thread.call(lambda: Outcome(3)).exit_code == 3, "the next call was not disarmed"


def test_repeated_kills_never_escape_call(anywhere):
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


class _Sink:
    """What a step's output is written to (a StepLog, a worker's Publisher): kept here."""

    closed = False

    def __init__(self) -> None:
        self.text: list[str] = []

    def write_text(self, text: str) -> None:
        self.text.append(text)


@contextmanager
def _routing() -> Iterator[_Sink]:
    """The routers installed as for a run, this thread running a step whose log is the sink
    (in the test itself: pytest puts its own sys.stdout back after the fixtures)."""
    sink = _Sink()
    OutputRouting.acquire()
    OutputRouting.bind(sink)
    try:
        yield sink
    finally:
        OutputRouting.bind(None)
        OutputRouting.release()


def test_a_thread_orch_tui_starts_on_a_steps_thread_does_not_print_to_its_log(capsys):
    """The scheduler runs on a step's thread (a ctx write it watches) and may start a pool
    worker there: the runner's thread, which outlived the step and printed into its log; a
    thread the step's own code starts still does."""
    printed = threading.Event()
    with _routing() as log:
        Workers("orch-test").submit(lambda: (print("runner-line"), printed.set()))
        assert printed.wait(10)
        mine = threading.Thread(target=lambda: print("step-line"))
        mine.start()
        mine.join()
    assert "".join(log.text) == "step-line\n"
    assert "runner-line" in capsys.readouterr().out


def test_releasing_the_routers_keeps_another_librarys_later_thread_start_patch():
    """A library patching ``Thread.start`` after the run started keeps its patch when the run
    ends; it was put back to what it was when orch-tui was imported."""
    original = threading.Thread.start
    OutputRouting.acquire()
    routed = threading.Thread.start

    def theirs(thread: threading.Thread) -> None:
        routed(thread)

    threading.Thread.start = theirs  # type: ignore[method-assign]
    try:
        OutputRouting.release()
        assert threading.Thread.start is theirs
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]


def test_a_kill_waits_for_the_step_to_leave_orch_tuis_code(tmp_path, monkeypatch):
    """A step killed while in orch-tui's code it called (here a ctx write, whose listeners,
    the scheduler's, take their time) gets StepKilled once back in its own: the write is
    whole, every listener told. It was raised in the listener, which the other listeners
    never heard of (the scheduler's: a step waiting for the key never started; or its lock
    left held, and the run hung)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    module = write_module(
        tmp_path, "def run(ctx):\n    ctx['k'] = 1\n    while True:\n        pass\n"
    )
    ctx, heard = Context(), []
    entered, released = threading.Event(), threading.Event()

    def slow(key: str) -> None:
        entered.set()
        released.wait(10)

    ctx.add_listener(slow)
    ctx.add_listener(heard.append)
    thread, sink = Interruptible(), _Sink()
    step = PythonStep(name="spin", module=module)
    outcomes: list[Outcome] = []
    runs = threading.Thread(
        target=lambda: outcomes.append(thread.call(lambda: call_step(step, ctx, sink, None))),
        daemon=True,
    )
    runs.start()
    try:
        assert entered.wait(10)
        thread.interrupt()
        released.set()
        runs.join(10)
        assert not runs.is_alive(), "the step was never killed"
        assert heard == ["k"]
        assert [(o.exit_code, o.error) for o in outcomes] == [(None, "killed")]
    finally:
        released.set()


def test_a_killed_step_leaves_no_traceback_in_its_log(tmp_path, monkeypatch):
    """A step orch-tui ended with StepKilled (it ignored ``stop`` past its grace) was written
    up as a crash: ``Traceback ... core.executors.python.StepKilled`` in its log, which a run
    on Dask echoed (its worker's output arrives before the log is closed; locally it came too
    late to be written), and its outcome a failure with exit code 1. It is a stop: the
    reason says so ("StepKilled raised in it"), the log has nothing of it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    module = write_module(tmp_path, "def run(ctx):\n    while True:\n        pass\n")
    thread, sink = Interruptible(), _Sink()
    step = PythonStep(name="spin", module=module)
    outcomes: list[Outcome] = []
    runs = threading.Thread(
        target=lambda: outcomes.append(thread.call(lambda: call_step(step, Context(), sink, None))),
        daemon=True,
    )
    runs.start()
    try:
        while not runs.join(0.01) and runs.is_alive():
            thread.interrupt()  # until the step's own code runs (not orch-tui's, resolving it)
        assert [(o.exit_code, o.error) for o in outcomes] == [(None, "killed")]
        assert sink.text == []
    finally:
        runs.join(10)
