"""A limit of the process that ran out (open files, processes), said in a line for the user.

``ulimit -n 16`` or a CI runner's low ``ulimit -u`` made a run's start fail deep inside (the
watchdog's pipe, a thread) with ``internal error: OSError: [Errno 24] Too many open files``:
this names what ran out, the limit, and how to raise it.
"""

from __future__ import annotations

import errno

try:  # now: with no descriptor left, not even this module's file could be opened later
    import resource
except ImportError:  # not on this platform
    resource = None  # type: ignore[assignment]

#: errors that are a limit running out, not a bug
LIMIT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})


def _soft(name: str) -> int | None:
    """The soft limit, or None (none, or not known here)."""
    if resource is None:
        return None
    try:
        soft = resource.getrlimit(getattr(resource, name))[0]
    except OSError:
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def limit_words(exc: BaseException) -> str | None:
    """What ran out, in words (``too many open files: ...``), or None if ``exc`` is not a
    limit running out. A thread that cannot be started (``RuntimeError: can't start new
    thread``) is the processes' limit, threads being counted with them."""
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return _processes()
    if not isinstance(exc, OSError) or exc.errno not in LIMIT_ERRNOS:
        return None
    if exc.errno == errno.EMFILE:
        soft = _soft("RLIMIT_NOFILE")
        limit = f" {soft} open at once (ulimit -n {soft})" if soft is not None else " (ulimit -n)"
        return (
            f"too many open files: this process may have{limit}; raise it (ulimit -n 4096) or"
            " lower --jobs"
        )
    if exc.errno == errno.ENFILE:
        return "the system's table of open files is full (ENFILE): close some programs"
    if exc.errno == errno.EAGAIN:
        return _processes()
    return "out of memory (ENOMEM) starting a process or thread"


def _processes() -> str:
    soft = _soft("RLIMIT_NPROC")
    limit = f" (ulimit -u {soft})" if soft is not None else ""
    return (
        f"cannot start another process or thread: too many for this user{limit}; raise the "
        "limit or lower --jobs"
    )
