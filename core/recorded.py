"""A run as its directory recorded it: ``RecordedRun``, the read-only ``RunControl``.

``orch-tui attach`` and ``orch-tui ctl`` on a run whose daemon is not there (the run is over, or
it was a headless run) read its folder instead: the state from state.json, the ctx from
ctx.json, the logs from logs/. Nothing can change such a run, so every command is refused
(``READ_ONLY``) and no event ever comes.

A run whose state.json still says it is going (pending or running) while its process is gone
(the daemon was killed, even by SIGKILL, or the machine went down) is shown as the runner shows
an interrupted run, never as running: its status ``interrupted``, exit code 130, and each step
that was pending or running ``cancelled`` (a blocked one stays blocked) with the reason ``DIED`` ("interrupted (the daemon is
gone)"), ended when the run last wrote state.json or events.jsonl (a step's output is an event,
while state.json is rewritten only when a status changes: a run that printed for minutes after
its last change did not end minutes early). ``died`` says so (``orch-tui runs`` lists such a
run as ``died``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from core.context import Context
from core.control import CtxValue, Reply
from core.rundir import CTX, EVENTS, STATE, RunDir
from core.state import ACTIVE, RunState, RunStatus, Status

if TYPE_CHECKING:
    from core.events import Event

READ_ONLY = "the run is over (read-only)"
DIED = "interrupted (the daemon is gone)"
#: The exit code of a run that ended without its runner saying how: as an interrupted run's.
DIED_EXIT_CODE = 130
#: How often ``wait`` looks at state.json again while the run's own process still writes it.
WAIT_POLL_SECONDS = 0.2
#: The run's status while it is going (state.json says so until the runner writes its end).
GOING = frozenset({RunStatus.PENDING, RunStatus.RUNNING})


class NotARun(Exception):
    """The folder holds no readable state.json: the one-line message says which and why."""


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` is running (anyone's). A zombie is not: it has exited, and
    only waits for a parent to reap it (a daemon's parent is init, which in a container may
    never do so)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc to read: ask the kernel the plain way
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, another user's
        return True
    return data[data.rfind(b")") + 2 :][:1] not in (b"Z", b"X")  # after "pid (comm) "


class RecordedRun:
    """``RunControl`` over a run's folder, read-only (see the module's docstring).

    ``daemon_gone``: the caller found the run's daemon socket refusing connections, so the run
    is over even if a process with its pid exists (pids are reused). Otherwise a run that says
    it is going counts as died only once its process is gone: a headless run still going is
    shown as it is, running."""

    read_only = True
    #: read from the folder because the run's daemon, live, did not answer in time (ctl
    #: status says so instead of "not live"); set by whoever opened it
    busy = False

    def __init__(self, run_dir: RunDir, *, daemon_gone: bool = False) -> None:
        self.run_dir = run_dir
        self._daemon_gone = daemon_gone
        self._ctx: Context | None = None
        self._state, self.died = self._read_state()
        steps = self._state.steps
        run_dir.name_logs(lambda: sorted(steps, key=lambda n: steps[n].index))

    @classmethod
    def open(cls, path: Path, *, daemon_gone: bool = False) -> RecordedRun:
        """The run in folder ``path``, held open for reading until ``close``."""
        try:
            run_dir = RunDir.open(path)
        except OSError as exc:
            raise NotARun(f"cannot read the run folder {path}: {exc.strerror or exc}") from None
        try:
            return cls(run_dir, daemon_gone=daemon_gone)
        except BaseException:
            run_dir.close()
            raise

    def close(self) -> None:
        self.run_dir.close()

    def __enter__(self) -> RecordedRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def run_id(self) -> str:
        return self._state.run_id

    @property
    def state(self) -> RunState:
        """The recorded state itself, for a reader that only looks (``orch-tui runs``: a copy
        of each past run's 10,000 steps was a fifth of its time); ``snapshot`` to change it."""
        return self._state

    # -- RunControl -----------------------------------------------------------------------------
    def snapshot(self) -> RunState:
        return self._state.copy()

    def subscribe(
        self,
        callback: Callable[[Event], None],
        on_resync: Callable[[RunState], None] | None = None,
    ) -> None:
        """Nothing happens to a recorded run: no event ever comes."""

    def command(self, name: str, step: str | None = None, **args: Any) -> Reply:
        return Reply(False, READ_ONLY)

    def ctx_keys(self) -> dict[str, int]:
        return self._context().key_versions()

    def ctx_value(self, key: str, tail: int | None = None) -> CtxValue:
        version, value, length = self._context().view(key, tail)
        return CtxValue(version, value, length)

    def wait(self, timeout: float | None = None) -> int | None:
        """The run's exit code. A run still going (a headless one, read from its folder) is
        waited for by reading state.json again until it has one or its process is gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._state.exit_code is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(WAIT_POLL_SECONDS)  # another process writes the file: nothing to wait on
            self._state, self.died = self._read_state()
        return self._state.exit_code

    def refresh(self) -> RunState:
        """state.json read again (a run still going, headless, writes it as it goes)."""
        self._state, self.died = self._read_state()
        return self._state.copy()

    # -- the files ------------------------------------------------------------------------------
    def _read_state(self) -> tuple[RunState, bool]:
        """state.json, and whether the run died (then shown as interrupted: module docstring)."""
        folder = self.run_dir.folder
        assert folder is not None, "not an opened run folder"
        try:
            state = RunState.from_json(folder.read(STATE))
            written = _last_written(folder.fd)
        except FileNotFoundError:
            raise NotARun(f"{self.run_dir.path} is not a run folder (no {STATE})") from None
        except OSError as exc:
            raise NotARun(f"cannot read {self.run_dir.state}: {exc.strerror or exc}") from None
        except msgspec.DecodeError as exc:
            raise NotARun(f"{self.run_dir.state} is not a run's state: {exc}") from None
        if state.status not in GOING or not (self._daemon_gone or not process_alive(state.pid)):
            return state, False
        _as_died(state, written)
        return state, True

    def _context(self) -> Context:
        """ctx.json, read once (a run that has not saved one yet has an empty ctx)."""
        if self._ctx is None:
            try:
                data = self.run_dir.read_json(CTX)
            except FileNotFoundError:
                data = {}
            except (OSError, ValueError) as exc:
                raise NotARun(f"cannot read {self.run_dir.ctx}: {exc}") from None
            self._ctx = Context(data if isinstance(data, dict) else {})
        return self._ctx


def _last_written(folder: int) -> float:
    """When the run last wrote state.json or events.jsonl (the later): when it was last alive."""
    state = os.stat(STATE, dir_fd=folder, follow_symlinks=False).st_mtime
    try:
        return max(state, os.stat(EVENTS, dir_fd=folder, follow_symlinks=False).st_mtime)
    except FileNotFoundError:
        return state


def _as_died(state: RunState, ended: float) -> None:
    """What the runner would have recorded had it been interrupted at ``ended``."""
    state.status, state.exit_code, state.closing = RunStatus.INTERRUPTED, DIED_EXIT_CODE, True
    state.ended = ended
    for name, step in state.steps.items():
        if step.status in ACTIVE:
            duration = ended - step.started if step.started is not None else None
            state.steps[name] = msgspec.structs.replace(
                step, status=Status.CANCELLED, reason=DIED, ended=ended, duration=duration
            )
        elif step.status == Status.PENDING:  # a blocked one stays blocked, as the runner's
            state.steps[name] = msgspec.structs.replace(step, status=Status.CANCELLED, reason=DIED)
