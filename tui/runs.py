"""``orch-tui runs``, and how ``attach`` and ``ctl`` find a run: the runs of this workspace.

A run's folder is under ``.orch/runs/`` of the directory it was started in (or anywhere, with
``--run-dir``: then it is named by its folder). Whether a run is live is asked of its daemon (a
hello on its socket), never guessed from state.json: a daemon that died, even by SIGKILL, left
a state.json that says "running" and a socket file nobody listens on. Such a run is listed as
``died`` (core.recorded) and its socket file is removed, but only once connecting to it was
refused: a socket something listens on is never touched. A daemon that does not answer the hello
in time but whose socket accepts and whose process is there is busy (a python step holding the
interpreter in C code, or stopped), not over: it is live, and ``ctl`` waits for it.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from core.recorded import NotARun, RecordedRun
from core.rundir import DAEMON_LOG, SOCKET, STATE, RunDir, list_runs, runs_root
from core.text import clean, listed
from tui.cli import UsageError
from tui.format import format_duration, state_words

if TYPE_CHECKING:
    from core.control import RunControl
    from core.state import RunState

#: How long a daemon has to answer the hello before it is looked at closer (it may be busy).
HELLO_TIMEOUT = 2.0
#: How long ``ctl`` and ``attach`` wait for a busy daemon (live, but it did not answer in
#: HELLO_TIMEOUT), and for one that is not.
BUSY_PATIENCE = 30.0
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class RunRow:
    """One run as ``orch-tui runs`` lists it."""

    run_id: str
    path: Path
    recipe: str
    name: str
    status: str  # state.json's, or "died"
    started: float | None
    ended: float | None
    live: bool
    words: str = ""  # the status as the app's header says it ("waiting"), for the table

    @property
    def open(self) -> bool:
        """Over, its daemon still up: it waits for a retry, a skip or ``close`` (a run started
        without --exit-when-done), and stays until one comes."""
        return self.live and self.ended is not None

    def duration(self, now: float) -> float | None:
        if self.started is None:
            return None
        return (self.ended or now) - self.started

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "recipe": self.recipe,
            "name": self.name,
            "status": self.status,
            "started": self.started,
            "ended": self.ended,
            "duration": self.duration(now),
            "live": self.live,
            "open": self.open,
            "run_dir": str(self.path),
        }


# -- is a daemon there ---------------------------------------------------------------------------
class Probe(NamedTuple):
    """What ``probe`` found of a run's daemon."""

    live: bool  # it answered the hello, or it is busy
    gone: bool  # the run had a daemon and it is not there any more
    busy: bool = False  # live, but it did not answer the hello in HELLO_TIMEOUT


def probe(run_dir: RunDir) -> Probe:
    """Live, gone or busy (``Probe``) for a held run folder: live, its daemon answered the
    hello, or is busy: it did not answer in time, but its socket accepts and its process is
    there (a python step holding the interpreter in C code, or a stopped daemon: not over);
    gone, the run had a daemon and it is not there any more: its socket refused a connection
    (and so was removed), or is gone while its daemon.log is there (a daemon binds its socket
    before its run starts, and removes it only once the run's end is in state.json). Neither:
    no daemon (a headless run), or a socket something else listens on (left alone)."""
    from core.client import DaemonGone, ProtocolError, connect

    if not _socket_there(run_dir):
        return Probe(False, _in_folder(run_dir, DAEMON_LOG))
    try:
        connect(run_dir, client="runs", attach=False, timeout=HELLO_TIMEOUT).close()
    except ProtocolError:  # another orch-tui's daemon: live all the same
        return Probe(True, False)
    except DaemonGone:
        if busy(run_dir):
            return Probe(True, False, busy=True)
        return Probe(False, _remove_if_refused(run_dir))
    return Probe(True, False)


def busy(run_dir: RunDir) -> bool:
    """Whether the run's daemon is there though it does not answer: its socket accepts (a live
    daemon's does, however busy) and the process state.json names is running (not a zombie;
    a stopped one is running all the same). Before state.json, a socket that accepts is it."""
    from core.recorded import process_alive

    if _connect_error(run_dir) is not None:
        return False
    try:
        pid = run_dir.read_json(STATE).get("pid")
    except FileNotFoundError:
        return True  # just started: its socket is up before its first state.json
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(pid, int) and process_alive(pid)


def _socket_there(run_dir: RunDir) -> bool:
    return _in_folder(run_dir, SOCKET, stat.S_ISSOCK)


def _in_folder(run_dir: RunDir, name: str, kind: Callable[[int], bool] = stat.S_ISREG) -> bool:
    """Whether the run folder holds a ``name`` of that kind (a link is not followed)."""
    assert run_dir.folder is not None
    try:
        info = os.stat(name, dir_fd=run_dir.folder.fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return kind(info.st_mode)


def daemon_listens(run_dir: RunDir) -> bool:
    """Whether a daemon listens on the held run folder's socket (a live daemon's accepts, even
    when it is too busy to answer a hello). Nothing is sent and nothing removed: ``clean
    --dry-run`` asks it of a folder with no state.json yet, a run that has just started."""
    return _socket_there(run_dir) and _connect_error(run_dir) is None


def _connect_error(run_dir: RunDir) -> OSError | None:
    """What connecting to the run's socket raised; None when it accepted (then closed), or its
    queue is full: something listens there, a daemon too busy to take what was asked of it
    (a connect that waits for room waited for ever on a stopped daemon: never blocks here)."""
    flags = socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
    with socket.socket(socket.AF_UNIX, flags) as sock:
        try:
            sock.connect(run_dir.socket_address())
        except BlockingIOError:
            return None
        except OSError as exc:
            return exc
    return None


def _remove_if_refused(run_dir: RunDir) -> bool:
    """Remove the run's socket file if connecting to it is refused (nobody listens on it): a
    live daemon's socket accepts, even when the daemon is too busy to answer."""
    assert run_dir.folder is not None
    error = _connect_error(run_dir)
    if error is None:
        return False
    if not isinstance(error, ConnectionRefusedError):
        return error.errno == errno.ENOENT  # removed meanwhile: gone all the same
    if _socket_there(run_dir):
        try:
            run_dir.folder.unlink(SOCKET)
        except FileNotFoundError:
            pass
    return True


# -- the workspace's runs ------------------------------------------------------------------------
def workspace_runs(cwd: Path) -> list[RunRow]:
    """The runs under ``cwd``'s runs folder, newest (by start) first; folders without a
    readable state.json (not a run, or one starting this very moment) are passed over."""
    rows = []
    for run_dir in list_runs(runs_root(cwd)):
        row = _row(run_dir)
        if row is not None:
            rows.append(row)
    rows.sort(key=lambda row: (row.started or 0.0, row.run_id), reverse=True)
    return rows


def _row(run_dir: RunDir) -> RunRow | None:
    live, gone, _ = probe(run_dir)
    try:
        recorded = RecordedRun(run_dir, daemon_gone=gone)
    except NotARun:
        if not live:
            return None
        state, died = _daemon_state(run_dir), False  # just started: no state.json yet
    else:
        state, died = recorded.state, recorded.died
    if state is None:
        return None
    return RunRow(
        run_id=state.run_id or run_dir.path.name,
        path=run_dir.path,
        recipe=state.recipe,
        name=state.name,
        status="died" if died else str(state.status),
        started=state.started,
        ended=state.ended,
        live=live,
        words="died" if died else state_words(state, final=not live or state.closing)[0],
    )


def _daemon_state(run_dir: RunDir) -> RunState | None:
    """The run's state as its daemon has it (None if it went away meanwhile)."""
    from core.client import DaemonGone, ProtocolError, connect

    try:
        with connect(run_dir, client="runs", timeout=HELLO_TIMEOUT) as control:
            return control.snapshot()
    except (DaemonGone, ProtocolError):
        return None


def find_run(run: str | None, cwd: Path, *, or_newest: bool = False) -> Path:
    """The folder of RUN (a run id of this workspace, a unique beginning of one or its last
    part alone, or a run folder); without one, the
    newest live run of the workspace, or with ``or_newest`` (a reader's command), when none is
    live, the newest run, said on stderr: ``--detach --exit-when-done`` then ``ctl wait`` must
    not fail because the run was quicker than the script."""
    if run is None:
        rows = workspace_runs(cwd)
        for newer, row in enumerate(rows):
            if row.live:
                if newer:  # the user may have meant the newest: say which run this is
                    _say_newer(row, rows[0])
                return row.path
        if or_newest and rows:
            print(f"orch-tui: no live run; run {rows[0].path.name}, the newest", file=sys.stderr)
            return rows[0].path
        raise UsageError("no live run in this workspace (orch-tui runs lists its runs)")
    by_id = runs_root(cwd) / run
    if os.sep not in run and by_id.is_dir():
        return by_id
    if Path(run).is_dir():
        return Path(run)
    matches = _ids_matching(run, runs_root(cwd)) if run and os.sep not in run else []
    if len(matches) == 1:
        return runs_root(cwd) / matches[0]
    if matches:
        raise UsageError(f"run {run} is ambiguous: {listed(matches, AMBIGUOUS_SHOWN)}")
    raise UsageError(f"no run {run} in {runs_root(cwd)} (orch-tui runs lists them)")


#: How many of the runs an ambiguous RUN matches its error names.
AMBIGUOUS_SHOWN = 5


def _ids_matching(given: str, root: Path) -> list[str]:
    """The run ids under ``root`` (this workspace's only) that ``given`` begins, or whose last
    part it is (``3f9c`` of ``20261129-141502-3f9c``: the part that tells apart the runs of a
    day), newest first: a user types what ``runs`` shows, not a whole id."""
    ids = (run_dir.path.name for run_dir in list_runs(root))
    return sorted(
        (i for i in ids if i.startswith(given) or i.rpartition("-")[2] == given), reverse=True
    )


def _say_newer(live: RunRow, newest: RunRow) -> None:
    """On stderr: the run taken is not the newest, which is not live (over, or running
    ``--no-ui``: in its own process, no daemon to reach)."""
    why = "runs --no-ui, without a daemon" if newest.status == "running" else "is not live"
    print(
        f"orch-tui: run {live.path.name}, the newest live one ({newest.path.name}, newer, {why})",
        file=sys.stderr,
    )


def open_run(path: Path, *, client: str, reader: bool = True) -> RunControl:
    """The run in ``path``: its daemon's ``RemoteControl`` when it is live, else the run read
    back from its folder (``RecordedRun``, read-only). A busy daemon is waited for, up to
    BUSY_PATIENCE; if it still does not answer, a ``reader`` (a command that only reads) reads
    the folder, saying so, and a command that changes the run is refused: the run is not over.
    Errors are UsageErrors, one line."""
    from core.client import DaemonGone, ProtocolError, connect

    found = probe_folder(path)
    if found.live:
        try:
            return connect(path, client=client, timeout=patience(found, path))
        except ProtocolError as exc:
            raise UsageError(f"run {path.name}: {exc}") from None
        except DaemonGone:  # it ended meanwhile (its folder has the whole run now), or busy
            if _still_busy(path):
                said = f"run {path.name}: its daemon is there but did not answer in time"
                if not reader:
                    raise UsageError(f"{said} (busy, or stopped): try again") from None
                print(f"orch-tui: {said}: read from its folder", file=sys.stderr)
                recorded = open_recorded(path, daemon_gone=False)
                recorded.busy = True
                return recorded
    return open_recorded(path, daemon_gone=found.gone)


def patience(found: Probe, path: Path) -> float:
    """How long to wait for the daemon ``probe`` found to answer (``connect``'s timeout):
    longer for a busy one, which is said on stderr."""
    if not found.busy:
        return CONNECT_TIMEOUT
    print(
        f"orch-tui: run {path.name}: its daemon is busy (it did not answer in "
        f"{HELLO_TIMEOUT:g}s): waiting for it, {BUSY_PATIENCE:g}s at most",
        file=sys.stderr,
    )
    return BUSY_PATIENCE


def _still_busy(path: Path) -> bool:
    try:
        with RunDir.open(path) as run_dir:
            return busy(run_dir)
    except OSError:
        return False


def probe_folder(path: Path) -> Probe:
    """``probe`` of the run folder ``path``."""
    try:
        with RunDir.open(path) as run_dir:
            return probe(run_dir)
    except OSError as exc:
        raise UsageError(f"cannot read the run folder {path}: {exc.strerror or exc}") from None


def open_recorded(path: Path, *, daemon_gone: bool) -> RecordedRun:
    try:
        return RecordedRun.open(path, daemon_gone=daemon_gone)
    except NotARun as exc:
        raise UsageError(str(exc)) from None


# -- orch-tui runs -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "This workspace's runs, newest first: id, recipe, status, start, duration, and "
        "whether its run daemon is live."
    )
    parser.add_argument("--json", action="store_true", help="a JSON list of objects")


def cmd_runs(args: argparse.Namespace) -> int:
    import json

    cwd = Path.cwd()
    rows = workspace_runs(cwd)
    now = time.time()
    if args.json:
        print(json.dumps([row.to_dict(now) for row in rows], indent=2))
    elif not rows:
        print(f"no runs in {os.path.relpath(runs_root(cwd))}")
    else:
        from tui.stdout import print_table, terminal_width

        width = terminal_width()
        table = [_cells(row, now, cwd, short=width is not None) for row in rows]
        print_table(RUNS_HEADER, table if width is None else _fitted(table, width))
        _say_open([row for row in rows if row.open])
    return 0


def _say_open(rows: list[RunRow]) -> None:
    """On stderr, under the table: the runs that are over but whose daemons are still up (a
    terminal closed under a finished run's app leaves it so), and how to end one; else they
    pile up unnoticed, each a daemon."""
    if rows:
        print(still_open([row.path.name for row in rows]), file=sys.stderr)


def still_open(run_ids: list[str]) -> str:
    """What ``runs`` and ``ctl wait`` say of runs over but kept open (no --exit-when-done)."""
    first = run_ids[0]
    if len(run_ids) == 1:
        said = f"run {first} is over, its daemon still up for retry or skip"
    else:
        said = f"{len(run_ids)} runs are over (LIVE open), their daemons still up for retry or skip"
    return (
        f"orch-tui: {said}: orch-tui ctl {first} close ends {'it' if len(run_ids) == 1 else 'one'}"
    )


RUNS_HEADER = ("RUN", "RECIPE", "STATUS", "STARTED", "DURATION", "LIVE")
RECIPE_COLUMN = 1


def _cells(row: RunRow, now: float, cwd: Path, *, short: bool = False) -> tuple[str, ...]:
    """``short``: the start without the year and seconds (on a terminal: 8 columns back)."""
    duration = row.duration(now)
    when = "%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S"
    started = time.strftime(when, time.localtime(row.started)) if row.started else ""
    return (
        clean(row.run_id),
        clean(_shown_path(row.recipe, cwd)),
        row.words or row.status,
        started,
        format_duration(duration) if duration is not None else "",
        "open" if row.open else "yes" if row.live else "no",
    )


def _fitted(table: list[tuple[str, ...]], width: int) -> list[tuple[str, ...]]:
    """The rows with the recipe cut from the left (its file name is the end worth keeping), so
    that a row fits in ``width`` columns (the recipe keeps at least its header's width)."""
    from tui.cells import cell_len, crop_left

    others = sum(
        max(cell_len(cells[i]) for cells in [RUNS_HEADER, *table])
        for i in range(len(RUNS_HEADER))
        if i != RECIPE_COLUMN
    )
    room = max(width - others - 2 * (len(RUNS_HEADER) - 1), len(RUNS_HEADER[RECIPE_COLUMN]))
    return [
        (*cells[:RECIPE_COLUMN], crop_left(cells[RECIPE_COLUMN], room), *cells[RECIPE_COLUMN + 1 :])
        for cells in table
    ]


def _shown_path(path: str, cwd: Path) -> str:
    """A path under the cwd relative to it (shorter), any other as it is."""
    try:
        return str(Path(path).relative_to(cwd))
    except ValueError:
        return path
