"""Nothing a run started outlives it, even when the runner itself is SIGKILLed.

Every step process gets ``ORCH_RUN_DIR`` in its environment and its own process group. Two
mechanisms use that:

* ``kill_leftovers`` (called by the runner at the end of a run) stops the recorded process
  groups and any process whose environment carries this run's marker: grandchildren that left
  the group with ``setsid``, double-forked daemons.
* A watchdog process (this file run as a script, started by ``Watchdog.start``) lives in its own
  session with a pipe from the runner on its stdin. The runner tells it each process group it
  starts and ends. If the pipe closes without ``done`` (the runner died, however), the watchdog
  does the same clean-up. This is PR_SET_PDEATHSIG's job done for the whole tree, not only the
  direct child, and it does not depend on which runner thread forked the step.

Stdlib only and importable as a plain script, so it starts in a few milliseconds with ``-S``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _marker(run_dir: str) -> bytes:
    return b"ORCH_RUN_DIR=" + os.fsencode(run_dir) + b"\x00"


def marked_pids(run_dir: str) -> list[int]:
    """Processes whose environment says they belong to the run in ``run_dir``."""
    marker = _marker(run_dir)
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if env.startswith(marker) or (b"\x00" + marker) in env:
            found.append(int(entry))
    return found


def _running_pgids() -> set[int]:
    """Process groups with at least one member that is not a zombie (one pass over /proc)."""
    groups: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[0] != b"Z":
            groups.add(int(fields[2]))
    return groups


def _live_groups(groups: list[int]) -> list[int]:
    """The groups that still have a running member.

    ``killpg(g, 0)`` answers most of them without reading /proc; it also succeeds while a group
    holds only zombies (exited, not yet reaped by an init that reaps slowly or never), so the
    groups it does not rule out are checked against one scan of /proc.
    """
    candidates = []
    for pgid in groups:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        candidates.append(pgid)
    if not candidates:
        return []
    running = _running_pgids()
    return [g for g in candidates if g in running]


def _alive_pid(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _signal_all(groups: list[int], pids: list[int], sig: int) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_leftovers(run_dir: str, groups: list[int], grace: float) -> int:
    """SIGTERM the groups and marked processes, wait up to ``grace``, SIGKILL what is left.

    Returns how many processes/groups had to be signalled (0 when the run left nothing).
    """
    pids = marked_pids(run_dir)
    groups = _live_groups(groups)
    if not groups and not pids:
        return 0
    _signal_all(groups, pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _live_groups(groups) and not any(_alive_pid(p) for p in pids):
            return len(groups) + len(pids)
        time.sleep(0.02)  # polling process death; there is no portable wait for non-children
    _signal_all(groups, pids + marked_pids(run_dir), signal.SIGKILL)
    return len(groups) + len(pids)


class Watchdog:
    """The runner's side of the watchdog pipe."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = str(run_dir)
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None
        self._pending: list[str] = []

    def start(self) -> None:
        read_fd, write_fd = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-S", "-I", os.path.abspath(__file__), self.run_dir],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        self._fd = write_fd

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
        self._send(f"+ {pgid} {grace:g}")

    def remove(self, pgid: int) -> None:
        self._send(f"- {pgid}")

    def stop(self) -> None:
        """The run ended cleanly: the watchdog exits without touching anything."""
        self._pending = ["done"]
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def _watch(run_dir: str) -> None:
    """Body of the watchdog process."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)
    groups: dict[int, float] = {}
    buf = b""
    while True:
        try:
            data = os.read(0, 4096)
        except InterruptedError:
            continue
        if not data:
            break
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            op, _, rest = line.partition(b" ")
            if op == b"done":
                return
            if op == b"+":
                pgid, grace = rest.split()
                groups[int(pgid)] = float(grace)
            elif op == b"-":
                groups.pop(int(rest), None)
    grace = min(max(groups.values(), default=2.0), 10.0)
    kill_leftovers(run_dir, list(groups), grace)


if __name__ == "__main__":
    _watch(sys.argv[1])
