"""Python steps: ``function(ctx, **params)`` called in a thread of the runner's process.

They share the live ctx object with no copying, which is the point of python steps. What they
print goes to their own log: sys.stdout and sys.stderr are replaced, for the run, by a router
that sends each thread's writes to the step that thread is running (other threads write to the
real streams as before).
"""

from __future__ import annotations

import gc
import io
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from core import stepmodules
from core.context import Context, ContextValueError
from core.executors.base import LaunchContext, OnExit, Outcome
from core.recipe import PythonStep, Step
from core.steplog import StepLog
from core.workers import Workers

if TYPE_CHECKING:
    import logging
    from types import FrameType, TracebackType


class _Router(io.TextIOBase):
    """A text stream that writes to the calling thread's step log, or to ``fallback``."""

    def __init__(self, fallback: TextIO, local: threading.local) -> None:
        self._fallback = fallback
        self._local = local

    def _sink(self) -> StepLog | None:
        sink = getattr(self._local, "sink", None)
        # a thread the step started may outlive it: then it writes where unrouted output goes
        return None if sink is None or sink.closed else sink

    def write(self, text: str) -> int:
        sink = self._sink()
        if sink is None:
            return self._fallback.write(text)
        sink.write_text(text)
        return len(text)

    def flush(self) -> None:
        if self._sink() is None:
            self._fallback.flush()

    def isatty(self) -> bool:
        return self._sink() is None and bool(getattr(self._fallback, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self._fallback.fileno()

    def __getattr__(self, name: str):  # errors, buffer, ...: whatever the real stream has
        return getattr(self._fallback, name)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        if self._sink() is not None:
            return "utf-8"
        return getattr(self._fallback, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True


_THREAD_START = threading.Thread.start

#: orch-tui's own code (core/, tui/): where a file's path starts with one of these
_ORCH_DIRS = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), package, "")
    for package in ("core", "tui")
)


def _orch_code(frame: FrameType) -> bool:
    return frame.f_code.co_filename.startswith(_ORCH_DIRS)


def _start_routed(thread: threading.Thread) -> None:
    """``Thread.start`` while the routers are installed: a thread that a step starts (a thread
    pool's worker, a progress bar's) writes to that step's log, as the step itself does. Its
    output went to the runner's terminal (or daemon.log), never to the log. Not a thread
    orch-tui starts on the step's thread (the scheduler run there on a ctx write starting a
    pool worker): it is the runner's, and outlives the step."""
    sink = getattr(OutputRouting._local, "sink", None)
    if sink is not None and not _orch_code(sys._getframe(1)):
        run = thread.run

        def run_routed() -> None:
            OutputRouting.bind(sink)
            run()

        thread.run = run_routed  # type: ignore[method-assign]
    _THREAD_START(thread)


class OutputRouting:
    """Installs the routers on sys.stdout/sys.stderr (and the threads a step starts inherit its
    log) once, for as many runners as are active."""

    _lock = threading.Lock()
    _users = 0
    _local = threading.local()
    _saved: tuple[TextIO, TextIO] | None = None

    @classmethod
    def acquire(cls) -> None:
        with cls._lock:
            if cls._users == 0:
                cls._saved = (sys.stdout, sys.stderr)
                sys.stdout = _Router(sys.stdout, cls._local)  # type: ignore[assignment]
                sys.stderr = _Router(sys.stderr, cls._local)  # type: ignore[assignment]
                threading.Thread.start = _start_routed  # type: ignore[method-assign]
            cls._users += 1

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._users -= 1
            if cls._users == 0 and cls._saved is not None:
                if isinstance(sys.stdout, _Router):
                    sys.stdout = cls._saved[0]
                if isinstance(sys.stderr, _Router):
                    sys.stderr = cls._saved[1]
                if threading.Thread.start is _start_routed:  # not another library's since
                    threading.Thread.start = _THREAD_START  # type: ignore[method-assign]
                cls._saved = None

    @classmethod
    def bind(cls, sink: StepLog | None) -> None:
        cls._local.sink = sink


def _step_logger(name: str, sink: Any) -> logging.Logger:
    """The ``log`` a step asks for: a ``logging.Logger`` whose lines go to the step's log.
    ``logging`` is imported here, by the first step that asks, not by every run."""
    import logging

    class _LogHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                sink.write_text(self.format(record) + "\n")
            except Exception:
                self.handleError(record)

    handler = _LogHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.Logger(f"orch.step.{name}")
    logger.addHandler(handler)
    return logger


_signature_cache: dict[Callable[..., Any], frozenset[str]] = {}


def _named_parameters(fn: Callable[..., Any]) -> frozenset[str]:
    names = _signature_cache.get(fn)
    if names is None:
        import inspect  # here: a run without python steps never needs it (~5 ms of start-up)

        try:
            params = inspect.signature(fn).parameters.values()
            names = frozenset(
                p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            )
        except (TypeError, ValueError):
            names = frozenset()
        _signature_cache[fn] = names
    return names


def resolve(module: str, function: str, *, again: bool = False) -> Callable[..., Any]:
    """The step's function; ``again`` (a later attempt): from its module as its file is now
    (core.stepmodules)."""
    if again:
        return getattr(stepmodules.current_module(module), function)
    return getattr(stepmodules.import_module(module), function)


#: orch-tui's own code: core/ (the ctx's checks, a worker's recording ctx)
_CORE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_CONTEXT = _CORE + "context.py"


def _from_the_step(exc: BaseException) -> TracebackType | None:
    """The traceback from the step's own code down: its first frame, ``call_step``'s, is
    orch-tui's, and a user reading the log looks for their own file at the top. A value the
    ctx refuses (ContextValueError) ends at the step's line that wrote it: the ctx's own
    frames below it (five, eight on a worker) said nothing the error's line does not; so does
    any error the ctx itself raised (``ctx["totl"]``: a KeyError, ending in core/context.py),
    the exception's own or one it was raised from (``raise ValueError(...) from e``)."""
    tb = exc.__traceback__
    tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb
    if isinstance(exc, ContextValueError) or _raised_in_the_ctx(tb):
        _cut_core_tail(tb)
    seen, cause = {id(exc)}, exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:  # the chain traceback prints too
        seen.add(id(cause))
        if _raised_in_the_ctx(cause.__traceback__):
            _cut_core_tail(cause.__traceback__)
        cause = cause.__cause__ or cause.__context__
    return tb


def _cut_core_tail(tb: TracebackType | None) -> None:
    """End ``tb`` at its last frame outside orch-tui's core/ (in place)."""
    last, here = None, tb
    while here is not None:
        if not here.tb_frame.f_code.co_filename.startswith(_CORE):
            last = here
        here = here.tb_next
    if last is not None:
        last.tb_next = None


def _raised_in_the_ctx(tb: TracebackType | None) -> bool:
    """Whether the traceback's last frame is the ctx's (core/context.py)."""
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename == _CONTEXT


def call_step(
    step: PythonStep,
    ctx: Any,
    sink: Any,
    stop_event: Callable[[], threading.Event],
    *,
    again: bool = False,
) -> Outcome:
    """``function(ctx, **params)`` with ``stop`` and ``log`` when its signature names them, its
    return value stored in ``output``; how it ended as an Outcome. ``sink`` (``write_text``) takes
    the traceback and the log lines. Shared by the runner's threads and the Dask workers
    (core.executors.on_worker), so a step behaves alike wherever it runs. ``again``: a later
    attempt, which runs the module as it is on disk now (edited since: reloaded)."""
    try:
        fn = resolve(step.module or "", step.function, again=again)
        kwargs = dict(step.params)
        wanted = _named_parameters(fn)
        if "stop" in wanted:
            kwargs["stop"] = stop_event()
        if "log" in wanted:
            kwargs["log"] = _step_logger(step.name, sink)
        result = fn(ctx, **kwargs)
        return _store_output(step, ctx, result, sink)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 0:
            return Outcome(0)
        if isinstance(exc.code, int):
            return Outcome(code, error=f"exited with SystemExit({exc.code!r})")
        # sys.exit("message"): a failure the step expected and worded, no traceback
        sink.write_text(f"{exc.code}\n")
        return Outcome(code, error=_cut(_first_line(str(exc.code))) or "exited with SystemExit")
    except StepKilled:  # orch-tui ended it (Interruptible): a stop, not a failure to trace
        raise
    except BaseException as exc:
        import traceback  # only a failed step needs it

        sink.write_text("".join(traceback.format_exception(type(exc), exc, _from_the_step(exc))))
        reason = f"{type(exc).__name__}: {_first_line(str(exc))}".rstrip(": ")
        return Outcome(1, error=_cut(reason))


def _store_output(step: PythonStep, ctx: Any, result: Any, sink: Any) -> Outcome:
    """The return value into ``ctx[output]``. A value the ctx cannot hold (a set, a numpy
    array) fails the step with the one line that says why: its traceback would show orch-tui's
    frames only, the step's function having already returned."""
    if step.output:
        try:
            ctx[step.output] = result
        except ContextValueError as exc:
            message = f"output: {_utf8(str(exc))}"
            sink.write_text(message + "\n")
            return Outcome(1, error=message)
    return Outcome(0)


#: The most of a message a step's reason keeps: it is shown in one line (the app's log title,
#: the summary's note) and stored in state.json and each of its events; the log has it whole.
REASON_MAX = 300


def _first_line(message: str) -> str:
    lines = _utf8(message).strip().splitlines()
    return lines[0] if lines else ""


def _cut(reason: str) -> str:
    """At most ``REASON_MAX`` characters: an exception quoting a 100,000-element array made a
    700 KB reason, printed three times over."""
    return reason if len(reason) <= REASON_MAX else reason[: REASON_MAX - 1] + "…"


def _utf8(text: str) -> str:
    """``text`` as UTF-8 can hold it: a lone surrogate (a file name that is not UTF-8, decoded
    by os.fsdecode) becomes U+FFFD, as the log shows it. state.json and the events carry the
    error as the step's reason, and no JSON encoder takes a surrogate: the whole save failed."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate no byte decodes to ("\ud800"): "?"
        return text.encode("utf-8", "replace").decode("utf-8")


class StepKilled(BaseException):
    """Raised inside a python step that ignored ``stop`` past its grace: a BaseException, so
    the step's own ``except Exception`` lets it through."""


def _raise_in(ident: int, exc: type[BaseException] | None) -> None:
    """``exc`` raised in the thread ``ident`` at its next Python instruction (None: one not
    raised yet is dropped). A thread blocked in C (a long numpy call) gets it on its return."""
    import ctypes  # here: only a step that ignores its stop gets this far

    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
    set_async_exc(ident, ctypes.py_object(exc) if exc is not None else ctypes.py_object())


class Interruptible:
    """The thread that runs a step, in which ``interrupt`` raises StepKilled while the step
    runs, never after: the thread goes on to other work (the runner's next step, a Dask
    worker's next task)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calling: int | None = None  # the thread's ident while it runs the step
        self._sent = False  # interrupted: only then is a StepKilled not raised yet dropped
        self._trying = False  # a thread tries to interrupt it again soon (interrupt)

    def call(self, step: Callable[[], Outcome]) -> Outcome:
        """``step()``, or the killed Outcome if StepKilled ended it. The StepKilled (one a call)
        may land anywhere between ``_calling`` set and ``_disarm`` done: in the step, as it
        returns, or at ``_disarm``'s first instruction, outside its own ``try``; caught there too,
        or it escaped onto the runner's pool thread, whose step then never ended."""
        outcome = Outcome(None, error="killed")
        try:
            try:
                with self._lock:
                    self._calling = threading.get_ident()
                outcome = step()
            except StepKilled:  # in the step, or as its own code was returning: it has ended
                pass
            finally:
                self._disarm()
        except StepKilled:  # at _disarm's first instruction: no other can come (interrupt)
            self._disarm()
        return outcome

    def _disarm(self) -> None:
        """No more interrupting; a StepKilled not raised yet is dropped (one raised meanwhile,
        in here, is caught and the dropping done again). A step never interrupted costs no
        call into the interpreter (nor ctypes' import: 2.5 ms of a run's start-up)."""
        while True:
            try:
                with self._lock:
                    self._calling = None
                    if self._sent:
                        self._sent = False
                        _raise_in(threading.get_ident(), None)
                return
            except StepKilled:
                continue

    def interrupt(self) -> None:
        """StepKilled raised in the step's thread when it runs the step's own code: not in
        orch-tui's that the step called (a ctx write, the scheduler run inline on a key it
        watches, a log line), which it would leave half done, its lock held (the run hung).
        Tried again every KILL_RETRY seconds, by a thread of its own, until then (at most
        KILL_TRIES times: a step still in orch-tui's code after that is left running)."""
        with self._lock:
            if self._done_with() or self._trying or self._send():
                return
            self._trying = True
        threading.Thread(target=self._keep_trying, name="orch-kill", daemon=True).start()

    def _keep_trying(self) -> None:
        try:
            for _ in range(KILL_TRIES):
                time.sleep(KILL_RETRY)
                with self._lock:
                    if self._done_with() or self._send():
                        return
        finally:
            self._trying = False

    def _done_with(self) -> bool:
        """Nothing to interrupt: no step running, or StepKilled sent to it already (once a
        call: a second, landing in ``call``'s handling of the first, would escape)."""
        return self._calling is None or self._sent

    def _send(self) -> bool:
        """StepKilled raised if the step's own code runs; False if not now. Holds the lock."""
        assert self._calling is not None
        if not _in_its_own_code(self._calling):
            return False
        self._sent = True
        _raise_in(self._calling, StepKilled)
        return True


#: how often, and how many times, a kill is tried again while the step is in orch-tui's code
KILL_RETRY = 0.002
KILL_TRIES = 5000


def _frame_of(ident: int) -> FrameType | None:
    """Thread ``ident``'s innermost frame, read with the collector off. CPython 3.11 may
    collect inside ``sys._current_frames``, which holds the interpreter's lock on its threads
    meanwhile, and a finalizer waiting for that lock hangs the process (python/cpython#106883,
    fixed in 3.12 the same way): the run hung as ``k`` killed a runaway python step."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return sys._current_frames().get(ident)
    finally:
        if enabled:
            gc.enable()


def _in_its_own_code(ident: int) -> bool:
    """Whether the thread ``ident`` runs a step's own code: from its innermost frame out to
    ``call_step``'s (which called the step's function), no frame of orch-tui's."""
    frame = _frame_of(ident)
    while frame is not None and frame.f_code is not call_step.__code__:
        if _orch_code(frame):
            return False
        frame = frame.f_back
    return frame is not None


class PythonExecution:
    """One attempt of a python step."""

    pid = None
    kill_abandons = True

    def __init__(
        self,
        step: Step,
        ctx: Context,
        log: StepLog,
        workers: Workers,
        on_exit: OnExit,
        attempt: int = 1,
    ) -> None:
        self.step = step
        self.attempt = attempt
        self.ctx = ctx
        self.log = log
        self.workers = workers
        self.on_exit = on_exit
        self._stop_event: threading.Event | None = None  # made only when asked for: it is not free
        self._stopping = False
        self.native_thread_id: int | None = None
        self._thread = Interruptible()

    @classmethod
    def create(
        cls, step: Step, log: StepLog, attempt: int, context: LaunchContext, on_exit: OnExit
    ) -> PythonExecution:
        return cls(step, context.ctx, log, context.workers, on_exit, attempt)

    def start(self) -> None:
        self.workers.submit(self._run)

    def _run(self) -> None:
        self.native_thread_id = threading.get_native_id()
        OutputRouting.bind(self.log)
        try:
            outcome = self._call()
        finally:
            OutputRouting.bind(None)
        self.workers.chain_next()
        self.on_exit(outcome)

    def _call(self) -> Outcome:
        return self._thread.call(
            lambda: call_step(
                self.step, self.ctx, self.log, lambda: self.stop_event, again=self.attempt > 1
            )
        )

    @property
    def stop_event(self) -> threading.Event:
        if self._stop_event is None:
            self._stop_event = threading.Event()
            if self._stopping:
                self._stop_event.set()
        return self._stop_event

    def stop(self, sig: int) -> None:
        self._stopping = True
        self.stop_event.set()

    def kill(self) -> None:
        """A thread cannot be killed: StepKilled is raised in it (a loop that never looks at
        ``stop`` ends, and its CPU with it), and the runner does not wait for it to end."""
        self.stop(0)
        self._thread.interrupt()
