"""Loggers that import :mod:`logging` when they first log.

A run logs nothing unless something goes wrong or --debug is on, and ``logging`` (with
traceback, string and weakref) is ~8 ms of a one-step run's ~120 ms: so core's modules take
their logger from :func:`get_logger`, and ``orch-tui`` hands the set-up of a quiet run to
:func:`configure_on_first_use`, run just before the first message (or the first look at a
level once something has imported ``logging``). Every message still goes through ``logging``,
to the same handlers, as with ``logging.getLogger``.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

#: logging.DEBUG, for isEnabledFor without importing logging
DEBUG = 10
#: logging.WARNING: the level of a root logger nobody has configured (and of a quiet run)
_WARNING = 30
_INFO = 20

_pending: Callable[[], None] | None = None


def configure_on_first_use(setup: Callable[[], None]) -> None:
    """Run ``setup`` (a ``logging.basicConfig``) when a logger of ours first needs ``logging``;
    at once when something has imported it already (its own messages need the set-up too)."""
    global _pending
    _pending = setup
    if "logging" in sys.modules:
        _real("")


def _real(name: str) -> logging.Logger:
    global _pending
    import logging

    setup, _pending = _pending, None
    if setup is not None:
        setup()
    return logging.getLogger(name)


class LazyLogger:
    """The part of :class:`logging.Logger` core uses, importing ``logging`` at the first call;
    the logger found then is kept (the runner asks ``isEnabledFor`` for every event)."""

    __slots__ = ("name", "_logger")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def _get(self) -> logging.Logger:
        if self._logger is None or _pending is not None:  # a set-up handed over since: run it
            self._logger = _real(self.name)
        return self._logger

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 (logging's name)
        """Without ``logging`` imported nobody has configured it: the root's default, WARNING.
        The runner asks this for every event, so a quiet run must not import it here."""
        if self._logger is None and "logging" not in sys.modules:
            return level >= _WARNING
        return self._get().isEnabledFor(level)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(DEBUG):
            self._get().debug(msg, *args, stacklevel=2, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(_INFO):
            self._get().info(msg, *args, stacklevel=2, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._get().warning(msg, *args, stacklevel=2, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._get().error(msg, *args, stacklevel=2, **kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._get().exception(msg, *args, stacklevel=2, **kwargs)


def get_logger(name: str) -> LazyLogger:
    """``logging.getLogger(name)``, without importing ``logging`` until it logs."""
    return LazyLogger(name)


#: the format of the lines libraries log with --debug (the root logger's): plain, not
#: ``orch-tui ...``, which says orch-tui said them
PLAIN_FORMAT = "%(levelname)s %(name)s: %(message)s"


def configure(stream: Any, formatter: logging.Formatter, *, level: int, debug: bool) -> None:
    """orch-tui's own log lines (its loggers are all ``orch.*``) to ``stream``, formatted by
    ``formatter``, from ``level`` up; the root logger, which every library's logger ends in,
    only with ``debug`` (then at DEBUG, in ``PLAIN_FORMAT``).

    Not the root for orch-tui's lines: a python step runs in the runner's process, and the
    logging of the libraries it calls (``logging.getLogger("mylib").warning(...)``) ended in
    the root's handler, which wrote ``orch-tui WARNING mylib: ...`` into the step's log as if
    orch-tui said it. Left alone, the root has no handler and a library's warning is printed
    as Python prints it anywhere (its message, on stderr: the step's log). Called again (the
    TUI's --debug log moved to a file), it replaces what it set up before."""
    import logging

    orch = logging.getLogger("orch")
    root = logging.getLogger()
    for logger in (orch, root):
        for old in logger.handlers[:]:
            if getattr(old, "_orch_tui", False):
                logger.removeHandler(old)
                before = old.stream
                standard = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
                if isinstance(before, io.IOBase) and before not in standard:
                    before.close()  # a file of ours (the debug log): the handler's close
                    # leaves its stream open; a standard stream or _Stderr stays
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler._orch_tui = True  # type: ignore[attr-defined]
    orch.addHandler(handler)
    orch.setLevel(DEBUG if debug else level)
    orch.propagate = False
    if debug:  # stderr as it is when a line comes: a python step's is its log
        plain = logging.StreamHandler(_Stderr() if stream is sys.stderr else stream)
        plain.setFormatter(logging.Formatter(PLAIN_FORMAT))
        plain._orch_tui = True  # type: ignore[attr-defined]
        root.addHandler(plain)
        root.setLevel(DEBUG)


class _Stderr:
    """``sys.stderr`` when written to, not when a handler was made: in a python step's thread,
    its log (core.executors.python.OutputRouting)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def say_where_a_crash_is() -> None:
    """A crash of the interpreter (a segfault in a C extension, an abort: a python step's
    module as the recipe is checked, the step as it runs) takes orch-tui with it: Python's
    fault handler then writes the crashing thread's stack, the module's file and line in it,
    to stderr (a headless run's or the command's terminal, the daemon's daemon.log) instead of
    nothing at all ("Segmentation fault", exit 139, and a daemon.log left empty)."""
    import faulthandler

    try:
        faulthandler.enable(file=2, all_threads=False)
    except (OSError, ValueError):  # no stderr at all: nowhere to say it
        pass
