"""One place knows the run directory's layout: which file is where, and what each is called.

```
<cwd>/.orch/runs/<run-id>/   the default run directory (``runs_root``), or --run-dir
    state.json               the run's state (core.state), replaced atomically
    ctx.json                 the ctx, replaced atomically
    events.jsonl             one event a line (core.events)
    logs/<step>.log          each step's output (``log_file``: the step's own name, made safe)
    ctx_out/<log>.<n>.env    a shell step's ORCH_CTX_OUT for attempt n
    sessions/<name>.log      a session step's log (``log: true``)
    debug.log                --debug's log while the TUI has the terminal
    daemon.sock              the run daemon's socket while it lives (core.server)
    daemon.log               the run daemon's own stdout and stderr
```

A ``RunDir`` is that layout for one folder. The run that writes it makes it with ``create``,
private and held open (core.privatedir: no other user can plant a link in it or swap it), and
writes through the held folders; a reader (``--resume-from``, ``orch-tui runs``) ``open``s one,
held too, and reads through it.
"""

from __future__ import annotations

import os
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from core.privatedir import HeldFile, PrivateDir, PrivateDirError

ORCH_FOLDER = ".orch"
RUNS_FOLDER = "runs"
STATE = "state.json"
CTX = "ctx.json"
EVENTS = "events.jsonl"
LOGS = "logs"
CTX_OUT = "ctx_out"
SESSIONS = "sessions"
DEBUG_LOG = "debug.log"
SOCKET = "daemon.sock"
DAEMON_LOG = "daemon.log"
#: space held back for state.json and ctx.json while the run goes on (core.diskspace)
RESERVE = ".space-reserve"

#: What a file name cannot hold (or would turn into a path): '/', NUL and control characters.
_UNFIT = re.compile("[/\x00-\x1f\x7f-\x9f]")
#: File systems allow 255 bytes a name: room for "-N" and ".log" (a step name may be 512 bytes).
MAX_LOG_NAME_BYTES = 200


def orch_folder(workspace: Path) -> Path:
    """The folder of everything orch-tui keeps in a workspace (what ``orch-tui clean`` removes)."""
    return workspace / ORCH_FOLDER


def runs_root(cwd: Path) -> Path:
    """Where runs started in ``cwd`` go by default, one folder each."""
    return orch_folder(cwd) / RUNS_FOLDER


def new_run_id() -> str:
    """Sortable and readable: 20261125-081502-3f9c."""
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid() & 0xFFFF:04x}"


def log_name(step: str, taken: set[str]) -> str:
    """A file name for a step's log: the step's own name, in whatever script it is written,
    with only what a file name cannot hold replaced ('/', NUL and other control characters,
    leading dots that would hide it), cut to ``MAX_LOG_NAME_BYTES`` of UTF-8, and unique
    within the run even where the file system folds case or Unicode forms (``taken`` holds
    the folded names already given)."""
    base = _UNFIT.sub("_", step).lstrip(".") or "step"
    name, n = _cut(base, MAX_LOG_NAME_BYTES), 1
    while _folded(name) in taken:
        n += 1
        suffix = f"-{n}"
        name = _cut(base, MAX_LOG_NAME_BYTES - len(suffix)) + suffix
    taken.add(_folded(name))
    return name + ".log"


def _cut(text: str, limit: int) -> str:
    """``text`` shortened to at most ``limit`` bytes of UTF-8, never inside a character."""
    return text.encode()[:limit].decode("utf-8", "ignore")


def _folded(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


class RunDir:
    """One run's folder: where each of its files is, and, once ``create``d or ``open``ed, the
    folder held open (``folder``; a created one holds ``logs_folder`` and ``ctx_out_folder``
    too).

    Log file names depend on every step's name (they are made unique within the run): the run
    gives them with ``name_logs``, in recipe order, and a reader does the same from the run's
    state to find the same files."""

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.abspath(path))
        self.folder: PrivateDir | None = None
        self.logs_folder: PrivateDir | None = None
        self.ctx_out_folder: PrivateDir | None = None
        self._log_files: dict[str, str] = {}
        self._log_order: Callable[[], Iterable[str]] | None = None  # named at the first ask
        self._naming = threading.Lock()

    @classmethod
    def create(cls, path: Path | None, cwd: Path, run_id: str) -> RunDir:
        """The run's folder, made private and held: ``path``, or ``runs_root(cwd)/run_id``
        (with .orch and .orch/runs this user's own too). Raises PrivateDirError when a folder
        is not private to this user, OSError when it cannot be made."""
        if path is not None:
            run_dir = cls(path)
            run_dir.folder = PrivateDir.open(run_dir.path)
        else:
            run_dir = cls._fresh(runs_root(cwd), cwd, run_id)
        try:
            run_dir.logs_folder = run_dir.folder.subdir(LOGS)
            run_dir.ctx_out_folder = run_dir.folder.subdir(CTX_OUT)
        except BaseException:
            run_dir.close()
            raise
        return run_dir

    @classmethod
    def _fresh(cls, root: Path, cwd: Path, run_id: str) -> RunDir:
        """A new folder under ``root`` named ``run_id``, or ``run_id-2``, ``-3``... when that
        is taken: never one that was there, another run's. Ids are a second and 16 bits of a
        pid: runs started in the same second in containers (orch-tui pid 1 in each) on one
        workspace took the same id, and wrote into one folder."""
        with PrivateDir.open(root, below=cwd) as runs:
            name, n = run_id, 1
            while True:
                try:
                    folder = runs.new_subdir(name)
                except FileExistsError:
                    n += 1
                    name = f"{run_id}-{n}"
                    continue
                run_dir = cls(root / name)
                run_dir.folder = folder
                return run_dir

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """An existing run's folder, held for reading (it and its parent must be safe)."""
        run_dir = cls(path)
        run_dir.folder = PrivateDir.open(run_dir.path, below=run_dir.path.parent, create=False)
        return run_dir

    def close(self) -> None:
        for folder in (self.ctx_out_folder, self.logs_folder, self.folder):
            if folder is not None:
                folder.close()

    def discard(self, *, folder_too: bool) -> None:
        """Remove what a run that could not start made here (its first files, its empty
        sub-folders), then close; with ``folder_too`` the run folder itself, once empty (one
        orch-tui made, not a --run-dir the user gave). Only these names, never a link's
        target: a file a step or anyone else left is left, and keeps the folder."""
        assert self.folder is not None
        for name in (STATE, CTX, EVENTS, SOCKET, DAEMON_LOG, DEBUG_LOG, RESERVE):
            try:
                self.folder.unlink(name)
            except OSError:
                pass
        for name in (LOGS, CTX_OUT):  # through the held folder, not by a path
            try:
                os.rmdir(name, dir_fd=self.folder.fd)
            except OSError:
                pass
        self.close()
        if folder_too:
            try:
                os.rmdir(self.path)
            except OSError:
                pass

    def removed(self) -> bool:
        """The held folder was deleted under the run (``rm -r``): its link count is 0. Nothing
        can reach the run any more, not its socket, not ``runs``. A renamed folder is not."""
        if self.folder is None:
            return False
        try:
            return os.fstat(self.folder.fd).st_nlink == 0
        except OSError:
            return False

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- where things are ---------------------------------------------------------------------
    @property
    def state(self) -> Path:
        return self.path / STATE

    @property
    def ctx(self) -> Path:
        return self.path / CTX

    @property
    def events(self) -> Path:
        return self.path / EVENTS

    @property
    def logs(self) -> Path:
        return self.path / LOGS

    @property
    def debug_log(self) -> Path:
        return self.path / DEBUG_LOG

    @property
    def socket(self) -> Path:
        """The run daemon's socket (its real path: often too long to bind or connect to, see
        ``socket_address``)."""
        return self.path / SOCKET

    def socket_address(self) -> str:
        """The socket's address through the held folder's descriptor: AF_UNIX paths are cut at
        107 bytes, and a run folder deep in a workspace is longer than that; this one is short,
        and it is the held folder's socket whatever was done to the path."""
        assert self.folder is not None, "not an opened run folder"
        return f"/proc/self/fd/{self.folder.fd}/{SOCKET}"

    @property
    def daemon_log(self) -> Path:
        return self.path / DAEMON_LOG

    def name_logs(self, steps: Callable[[], Iterable[str]]) -> None:
        """Give each step its log file name: ``steps()`` in recipe order (the first of two
        that fold to the same name keeps it), called when a name is first asked for. A reader
        that never asks (``orch-tui runs``, sixty past runs of 10,000 steps) spent half its
        time naming logs it did not read."""
        self._log_order, self._log_files = steps, {}

    def log_file(self, step: str) -> str:
        """The step's log file name in logs/."""
        if self._log_order is not None:
            with self._naming:  # one thread names them; another asking meanwhile waits
                if (order := self._log_order) is not None:
                    taken: set[str] = set()
                    self._log_files = {name: log_name(name, taken) for name in order()}
                    self._log_order = None
        name = self._log_files.get(step)
        return name if name is not None else log_name(step, set())

    def log_name(self, step: str) -> str:
        """The step's log relative to the run's folder, as state.json names it."""
        return f"{LOGS}/{self.log_file(step)}"

    def log(self, step: str) -> Path:
        return self.logs / self.log_file(step)

    def session_log(self, session: str) -> Path:
        """Where a session step with ``log: true`` has its session log."""
        return self.path / SESSIONS / f"{session}.log"

    # -- the writer's files (held) ------------------------------------------------------------
    def new_ctx_out(self, step: str, attempt: int) -> HeldFile:
        """An attempt's ORCH_CTX_OUT: a new name in the run's own ctx_out folder (0700: only
        this user's processes can make a file there), which the step creates if it has
        something to say; read back through the held folder, never through a link, whatever
        became of the path. Nothing is made for it up front: that was a new inode and two
        system calls per step on the path from one step's end to the next one's start, for
        the few steps that write one. The name is new: attempts only count up within a
        run, and the run folder is new."""
        assert self.ctx_out_folder is not None, "not a created run folder"
        return HeldFile(self.ctx_out_folder, f"{self.log_file(step)}.{attempt}.env")

    def open_daemon_log(self) -> int:
        """daemon.log open for appending (0600, never through a link): the daemon's fd 1 and 2."""
        assert self.folder is not None, "not an opened run folder"
        return self.folder.append(DAEMON_LOG)

    # -- a reader's ---------------------------------------------------------------------------
    def read_log(self, step: str, offset: int, limit: int) -> tuple[bytes, int]:
        """Up to ``limit`` bytes of the step's log from ``offset``, and the log's size now
        (b"", 0 while there is no log yet). Read through the held folder, never through a
        link."""
        assert self.folder is not None, "not an opened run folder"
        name = f"{LOGS}/{self.log_file(step)}"
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=self.folder.fd)
        except FileNotFoundError:
            return b"", 0
        try:
            size = os.fstat(fd).st_size
            return os.pread(fd, max(0, min(limit, size - offset)), offset), size
        finally:
            os.close(fd)

    def read_json(self, name: str) -> Any:
        """``name`` (STATE or CTX) parsed, read through the held folder."""
        import json  # here: a run itself never reads its files back

        assert self.folder is not None, "not an opened run folder"
        return json.loads(self.folder.read(name))


def create_problem(exc: OSError, path: Path | None) -> str:
    """Why a run's folder (``path``, or the default under the cwd) could not be made, in a
    line for the user: another user's folder on the way, or one that cannot be made."""
    if isinstance(exc, PrivateDirError):
        return (
            f"{exc}: another user could take over the run's files there; "
            "give --run-dir a folder of yours"
        )
    where = exc.filename or path or runs_root(Path())
    return f"cannot make the run's folder {where}: {exc.strerror or exc}"


def list_runs(root: Path) -> Iterator[RunDir]:
    """The run folders under ``root`` that are safe to read (this user's own folders, not
    links), each held open while the caller looks at it; none when ``root`` is missing or not
    safe (core.privatedir: another user's run is not ours to read)."""
    try:
        folder = PrivateDir.open(root, below=root, create=False)
    except OSError:  # not there, or not safe
        return
    with folder:
        base = Path(os.path.realpath(folder.path))
        for name in folder.names():
            run_dir = RunDir(base / name)
            try:
                run_dir.folder = folder.subdir(name, create=False)
            except OSError:
                continue
            with run_dir:
                yield run_dir
