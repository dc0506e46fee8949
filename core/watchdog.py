"""Nothing a run started outlives it, even when the runner itself is SIGKILLed.

Every step process gets ``ORCH_RUN_DIR`` in its environment and its own process group. Two
mechanisms use that:

* ``kill_leftovers`` (called by the runner at the end of a run) stops the recorded process
  groups and any process whose environment carries this run's marker: grandchildren that left
  the group with ``setsid``, double-forked daemons. Each process is signalled by pid and start
  time, never by a bare pid or group id found seconds earlier, which may be a stranger's now.
* A watchdog (``Watchdog.start``) lives in its own session with a pipe from the runner on its
  stdin. The runner tells it each process group it starts and ends. If the pipe closes while
  the runner has not stopped the watchdog (the runner died, however), this file runs as a
  script and does the same clean-up. This is PR_SET_PDEATHSIG's job done for the whole tree,
  not only the direct child, and it does not depend on which runner thread forked the step.

While the runner lives, the watchdog is ``cat`` copying the pipe to a nameless file in the run
folder, under ``sh``: Python starts only if the runner dies. A Python watchdog's own start
(~20 ms of CPU) took ~9 ms from every run's start on two cores. The script is stdlib only and
starts in a few milliseconds with ``-S``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the watchdog process itself imports no more than it uses: it starts faster
    import subprocess
    from collections.abc import Callable, Iterable, Iterator
    from collections.abc import Set as AbstractSet
    from pathlib import Path

#: seconds to wait for SIGKILLed processes to be gone: a restarted service must not meet the
#: last start's processes, and the end of a run comes after its processes' end
KILL_WAIT = 2.0


#: the environment variable that marks a run's processes (core.launch gives it to every step)
MARKER = "ORCH_RUN_DIR"


def _marker(run_dir: str) -> bytes:
    return MARKER.encode() + b"=" + os.fsencode(run_dir) + b"\x00"


def mark_this_process(run_dir: str) -> None:
    """The run's marker in this process's own environment, for a process that holds one run
    (the run daemon, a headless ``orch-tui``), once its watchdog runs (unmarked). A python step
    runs in this process: what it starts (``subprocess.Popen``, a process pool) inherits the
    marker, and is stopped at the end of the run, or by the watchdog, as a shell step's
    leftovers are. What must outlive the run is started with ``unmarked_environ``."""
    os.environ[MARKER] = run_dir


def unmarked_environ() -> dict[str, str] | None:
    """This process's environment without a run's marker, for a process that outlives the run
    (a session's screen or tmux server); None when it has none: inherited as it is."""
    if MARKER not in os.environ:
        return None
    env = dict(os.environ)
    del env[MARKER]
    return env


def marked_pids(run_dir: str) -> list[int]:
    """This user's processes whose environment says they belong to the run in ``run_dir``.

    Anyone can put the marker in their own processes' environment (a run folder's name is no
    secret), and root can read and signal them all: a process of another user is never taken
    for the run's, whatever it claims."""
    marker = _marker(run_dir)
    me, uid = os.getpid(), os.geteuid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if os.fstat(f.fileno()).st_uid != uid:
                    continue
                env = f.read()
        except OSError:
            continue
        if env.startswith(marker) or (b"\x00" + marker) in env:
            found.append(int(entry))
    return found


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (process group, start time) of every process that has not exited, but this one.

    The start time (clock ticks since boot) tells a process from a later one that got its pid.
    """
    me = os.getpid()
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and len(fields) > 19 and fields[0] != b"Z":  # a zombie is dead
            table[int(entry)] = (int(fields[2]), int(fields[19]))
    return table


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _members(groups: set[int], table: dict[int, tuple[int, int]]) -> dict[int, int]:
    """pid -> start time of the processes of ``table`` in ``groups``."""
    return {pid: start for pid, (pgid, start) in table.items() if pgid in groups}


def _marked(run_dir: str, table: dict[int, tuple[int, int]]) -> dict[int, int]:
    """pid -> start time of the processes of ``table`` carrying the run's marker.

    ``table`` must be read first: a process found in it, marked when looked at later, and
    still there with the same start time when signalled, was one process all along."""
    return {pid: table[pid][1] for pid in marked_pids(run_dir) if pid in table}


def _still_there(
    found: dict[int, int],
    groups: set[int],
    table: dict[int, tuple[int, int]],
    held_before: AbstractSet[int] = frozenset(),
) -> tuple[dict[int, int], set[int]]:
    """Which of ``found`` are still running (same pid, same start time), with the processes
    that joined their groups since; and the groups they hold. A group counts while one of
    ``found`` is in it. One that was held at the last look (``held_before``) still counts for
    what joined it meanwhile, a child forked just as its parent died of our signal (in no
    earlier table: it was left running after the run), unless a process now has the group's
    id as its pid: a group's id is its first member's pid, free again once that one is gone,
    and the group may be a stranger's now."""
    alive = {pid: start for pid, start in found.items() if table.get(pid, (0, -1))[1] == start}
    held = {table[pid][0] for pid in alive} & groups
    kept = held | {pgid for pgid in held_before if pgid not in table}
    return {**_members(kept, table), **alive}, held


def _send(pid: int, start: int, sig: int) -> None:
    """Signal ``pid`` only if it is still the process that started at ``start``: the pid of one
    that exited since the scan may be an unrelated process's now. The pidfd, opened before the
    check, pins the process the check saw, so nothing can take its place before the signal."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # no pidfd (Linux < 5.3, no descriptor left): check, then kill
        pidfd = None
    try:
        fields = _stat_fields(pid)
        if fields is None or len(fields) <= 19 or int(fields[19]) != start:
            return
        if pidfd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(pidfd, sig)
    except (ProcessLookupError, PermissionError):
        pass
    finally:
        if pidfd is not None:
            os.close(pidfd)


def kill_leftovers(run_dir: str, groups: list[int], grace: float) -> int:
    """SIGTERM the groups' members and the marked processes, wait up to ``grace``, SIGKILL what
    is left: each one only while it is still the process that was found (``_send``).

    Returns how many processes had to be signalled (0 when the run left nothing).
    """
    live = {g for g in groups if _group_exists(g)}
    if not live and not marked_pids(run_dir):
        return 0
    return _terminate(live, lambda table: _marked(run_dir, table), grace)


def stop_group(pgid: int, grace: float) -> int:
    """What is left of a step's process group once its leader has exited (a service about to
    be restarted): SIGTERM, up to ``grace``, SIGKILL, as ``kill_leftovers`` does. Blocks:
    called on a worker thread. Returns how many processes had to be signalled."""
    if not _group_exists(pgid):
        return 0
    return _terminate({pgid}, lambda table: {}, grace)


def _terminate(
    live: set[int], marked: Callable[[dict[int, tuple[int, int]]], dict[int, int]], grace: float
) -> int:
    """SIGTERM the members of the ``live`` groups and the ``marked`` processes, wait up to
    ``grace`` for them to go, SIGKILL the rest (and what joined them meanwhile), and wait up
    to ``KILL_WAIT`` for those to be gone."""
    table = _processes()  # before the markers are read: see ``_marked``
    found = {**_members(live, table), **marked(table)}
    held = {table[pid][0] for pid in found} & live
    signalled = set(found)
    for pid, start in found.items():
        _send(pid, start, signal.SIGTERM)
    deadline, killed = time.monotonic() + grace, False
    while found:
        if time.monotonic() >= deadline:
            if killed:
                break  # SIGKILLed KILL_WAIT ago and still there (stuck in the kernel)
            killed = True
            table = _processes()  # a last look: what was forked or marked meanwhile too
            still, held = _still_there(found, live, table, held)
            found = {**still, **marked(table)}
            signalled |= set(found)
            for pid, start in found.items():
                _send(pid, start, signal.SIGKILL)
            deadline = time.monotonic() + KILL_WAIT  # gone, not only told to go
        time.sleep(0.02)  # polling process death; there is no portable wait for non-children
        found, held = _still_there(found, live, _processes(), held)
    return len(signalled)


class Watchdog:
    """The runner's side of the watchdog pipe, and the process groups of the run's steps it was
    told of (``groups``: forgotten once gone, stopped with the marked processes at the end)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = str(run_dir)
        self.groups: set[int] = set()
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None
        self._pending: list[str] = []

    def start(self) -> None:
        """Start the watchdog: ``sh`` runs ``cat`` from the runner's pipe to a file with no name
        (``_copy_file``) until the pipe closes; then, unless ``stop`` killed it first, it runs this
        file with the copy on its stdin and the pipe on descriptor 3 (what ``cat`` could not copy:
        a full disk) for the clean-up. This file is opened now and handed down open: the
        clean-up may start days later, after the checkout or the venv was changed or removed.
        Without ``/bin/sh``, the watchdog is the clean-up itself, reading the pipe as it comes."""
        import subprocess

        script = _script_fd()
        copy = _copy_file(self.run_dir)
        read_fd, write_fd = os.pipe()
        common = {"stdin": read_fd, "stderr": subprocess.DEVNULL, "start_new_session": True}
        try:
            try:
                argv = [_NAME, "-c", _SHELL, sys.executable, f"/dev/fd/{script}", self.run_dir]
                self._proc = subprocess.Popen(
                    argv, executable="/bin/sh", stdout=copy, pass_fds=(script,), **common
                )
            except FileNotFoundError:  # no /bin/sh (a distroless image)
                argv = [sys.executable, "-S", "-I", f"/dev/fd/{script}", self.run_dir]
                self._proc = subprocess.Popen(
                    argv, stdout=subprocess.DEVNULL, pass_fds=(script,), **common
                )
        except OSError:
            os.close(write_fd)
            raise
        finally:
            for fd in (read_fd, copy, script):
                os.close(fd)
        self._fd = write_fd
        _PIPES.add(write_fd)  # closed in forked children (_close_pipes)

    def _send(self, line: str) -> None:
        self._pending.append(line)

    def flush(self) -> None:
        """Send what was queued. The runner calls this a few times a second, not per step:
        each write wakes the watchdog process, and a step spawned since the last flush is
        still found by its ORCH_RUN_DIR marker if the runner dies in between."""
        if self._fd is None or not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            os.write(self._fd, ("\n".join(lines) + "\n").encode())
        except OSError:
            pass

    def add(self, pgid: int, grace: float) -> None:
        self.groups.add(pgid)
        self._send(f"+ {pgid} {grace:g}")

    def own_folder(self, path: str) -> None:
        """A folder the run made for itself outside its run folder (a dask-local cluster's
        scratch, ``orch-dask-*`` in the temp folder), which the clean-up removes if the runner
        dies: sent at once, not at the next flush."""
        self._send(f"d {os.fsencode(path).hex()}")
        self.flush()

    def prune(self, running: set[int]) -> None:
        """Forget the process groups of ended steps that no longer exist: the kernel may give
        their ids to unrelated processes, which the end-of-run clean-up and the watchdog must
        never signal. Groups a step left members in are kept until those are gone."""
        for pgid in self.groups - running:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                self.groups.discard(pgid)
                self._send(f"- {pgid}")
            except PermissionError:
                pass

    def kill_leftovers(self, grace: float) -> int:
        """``kill_leftovers`` of the run's groups and marked processes."""
        return kill_leftovers(self.run_dir, sorted(self.groups), grace)

    def stop(self) -> None:
        """The run ended cleanly: the watchdog is killed (its ``sh`` and ``cat``) before the
        pipe closes, so its clean-up never starts. Not waited for: a thread reaps it."""
        self._pending = []
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)  # our child, not yet reaped: still ours
            except ProcessLookupError:
                pass
            import threading

            threading.Thread(
                target=self._proc.wait, name="orch-watchdog-reaper", daemon=True
            ).start()
        self._close_pipe()

    def hand_over(self) -> None:
        """The run ended but could not stop what its steps left (``kill_leftovers`` failed:
        no descriptor left to read /proc): the pipe is closed without killing the watchdog,
        whose clean-up, a process of its own, stops them as if the runner had died."""
        self.flush()  # the groups started since the last tick: found by their group too
        self._close_pipe()

    def _close_pipe(self) -> None:
        """Close the runner's end of the pipe: with ``stop``'s kill first, a clean end; without
        it, what the watchdog sees when the runner dies."""
        if self._fd is not None:
            _PIPES.discard(self._fd)
            os.close(self._fd)
            self._fd = None


#: The write ends of the live watchdogs' pipes, closed in a child this process forks without
#: exec (a python step's multiprocessing worker): one that kept it would keep the watchdog from
#: ever seeing the runner die. (A spawned step never has them: they are close-on-exec.)
_PIPES: set[int] = set()


def _close_pipes() -> None:
    for fd in _PIPES:
        try:
            os.close(fd)
        except OSError:
            pass
    _PIPES.clear()


os.register_at_fork(after_in_child=_close_pipes)  # once a process: it has no undo


def _script_fd() -> int:
    """This file, open, at a descriptor the shell's ``3<&0`` cannot overwrite (10 or above)."""
    import fcntl

    fd = os.open(os.path.abspath(__file__), os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    finally:
        os.close(fd)


#: What ``ps`` calls the watchdog's sh (its argv[0]).
_NAME = "orch-tui-watchdog"
#: The watchdog while the runner lives ($0: python, $1: this file, open, $2: the run folder): the
#: pipe's lines copied to stdout (the nameless file) until it closes, then the clean-up reading
#: them from the start of that file (/proc/self/fd/1 opens it anew), and the pipe's rest on 3.
_SHELL = 'cat; exec "$0" -S -I "$1" "$2" 3<&0 </proc/self/fd/1 >/dev/null'


def _copy_file(run_dir: str) -> int:
    """A file with no name in the run folder (ours, private), open for reading and writing:
    where the watchdog keeps what the runner told it. Nothing to delete afterwards."""
    try:
        return os.open(run_dir, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:  # a file system without O_TMPFILE: a new file, its name removed at once
        path = os.path.join(run_dir, f".watchdog.{os.getpid()}.{time.monotonic_ns()}")
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.unlink(path)
        return fd


def _watch(run_dir: str) -> None:
    """Body of the clean-up, run once the runner is gone: its lines, copied (stdin) then the
    pipe's rest (3), tell which process groups to stop with the run's marked processes."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)
    folders: list[bytes] = []
    groups = _told((_read_all(0), _read_all(3)), folders)
    grace = min(max(groups.values(), default=2.0), 10.0)
    kill_leftovers(run_dir, list(groups), grace)
    for folder in folders:  # once what could write there is gone
        remove_scratch(os.fsdecode(folder))
    remove_reserve(run_dir)


#: core.rundir.RESERVE (this script is stdlib only): the space a run held back for its state
RESERVE = ".space-reserve"


def remove_reserve(run_dir: str) -> None:
    """The space the dead runner held back for its state.json (core.diskspace), given back:
    only a regular file of this user's (never through a link: unlink does not follow one)."""
    import stat

    path = os.path.join(run_dir, RESERVE)
    try:
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid():
            os.unlink(path)
    except OSError:
        pass


#: what a folder the clean-up removes is named like (core.cluster's scratch)
SCRATCH_PREFIX = "orch-dask-"


def remove_scratch(path: str) -> bool:
    """Remove ``path``, a scratch folder a run made (``Watchdog.own_folder``), only if it is
    still one: a folder (not a link), this user's, named ``orch-dask-*``. Nothing in it is
    followed (``shutil.rmtree`` works through descriptors, never through a link). Returns
    whether it was removed."""
    import shutil
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return False
    mine = stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
    if not mine or not os.path.basename(path).startswith(SCRATCH_PREFIX):
        return False
    shutil.rmtree(path, ignore_errors=True)
    return not os.path.lexists(path)


def _told(
    streams: Iterable[Iterable[bytes]], folders: list[bytes] | None = None
) -> dict[int, float]:
    """The process groups (and their grace) the runner's lines leave: the copy's, then the
    pipe's rest; the folders it made for itself go to ``folders``. A line the copy ends in the
    middle of (a full disk: what cat read, it could not write) is not finished by the pipe's
    first bytes."""
    groups: dict[int, float] = {}
    for stream in streams:
        buf = b""
        for data in stream:
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                _apply(line, groups, folders)
    return groups


def _apply(line: bytes, groups: dict[int, float], folders: list[bytes] | None = None) -> None:
    """One line of the runner's: ``+ PGID GRACE``, ``- PGID`` or ``d HEXPATH`` (a folder of
    the run's). A garbled one is passed over: the clean-up must still stop what it can (the
    marked processes at least)."""
    op, _, rest = line.partition(b" ")
    try:
        if op == b"+":
            pgid, grace = rest.split()
            groups[int(pgid)] = float(grace)
        elif op == b"-":
            groups.pop(int(rest), None)
        elif op == b"d" and folders is not None:
            folders.append(bytes.fromhex(rest.decode("ascii")))
    except ValueError:  # UnicodeDecodeError is one
        pass


def _read_all(fd: int) -> Iterator[bytes]:
    """What ``fd`` holds, to its end (nothing if it was not given)."""
    while True:
        try:
            data = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:  # EBADF: not given
            return
        if not data:
            return
        yield data


if __name__ == "__main__":
    _watch(sys.argv[1])
