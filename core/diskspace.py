"""A run folder whose disk fills up: said once, what is lost counted, state.json kept.

The steps' logs are what fill a disk (a step printing a million lines); state.json and
ctx.json are small beside them, yet a run whose state.json stays at its first save is listed
as ``died`` and ``ctl wait`` says 130, whatever the run's own exit code. So a run holds a
little space back (``RESERVE``, a file of its folder made at its start), and the first write
that finds the disk full (``ENOSPC``, or the user's quota: ``EDQUOT``) trips the run into
"disk full": the reserve is given back, for state.json and ctx.json alone, and from then on
nothing else of the run is written there: the steps' logs end where they are (what they
would have written is counted, not written later behind a hole) and events.jsonl stops. One
message says it, naming what was being written and what is lost.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.rundir import RESERVE  # the file holding the space back, while the run goes on

if TYPE_CHECKING:
    from core.privatedir import PrivateDir

#: held back beyond twice the first state.json and ctx.json (an atomic save writes the new
#: file beside the old one; the state grows a little as steps end)
RESERVE_BASE = 64 * 1024
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_is_full(exc: BaseException) -> bool:
    """Whether ``exc`` is the disk (or the user's quota) being full."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


class DiskSpace:
    """One run folder's space: the reserve, and whether the disk was found full (``full``).

    Thread-safe: a step's output thread, the event recorder and the store's flusher may each
    be the first to find the disk full; ``trip`` says it once."""

    def __init__(self, folder: PrivateDir) -> None:
        self.folder = folder
        self.full = False
        self.error: OSError | None = None
        self._lock = threading.Lock()
        self._reserved = False
        #: told once, with what was being written and the error, when the disk is found full
        self.on_full: Callable[[str, OSError], None] | None = None

    def reserve(self, size: int) -> None:
        """Hold ``size`` bytes back (best effort: a disk without the room, or a file system
        that cannot allocate ahead, gets no reserve)."""
        try:
            fd = self.folder.create(RESERVE)
        except OSError:  # one there already (not ours to take), or no room for a file
            return
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:  # no room even for it, or a file system that cannot: no reserve
            os.close(fd)
            self._unlink()
            return
        os.close(fd)
        self._reserved = True

    def trip(self, exc: BaseException, what: str) -> bool:
        """``exc`` met writing ``what`` (``logs/x.log``, ``state.json``): if it is the disk
        being full, enter "disk full" (once: the reserve freed, ``on_full`` told) and return
        True; another error returns False."""
        if not disk_is_full(exc):
            return False
        assert isinstance(exc, OSError)
        with self._lock:
            if self.full:
                return True
            self.error = exc  # first: a log that sees ``full`` takes it as its error
            self.full = True
            self.release()
            callback = self.on_full
        if callback is not None:
            callback(what, exc)
        return True

    def release(self) -> None:
        """Give the reserve back (the disk is full, or the run is over)."""
        if self._reserved:
            self._reserved = False
            self._unlink()

    def _unlink(self) -> None:
        try:
            self.folder.unlink(RESERVE)
        except OSError:
            pass
