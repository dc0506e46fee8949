"""Starting a run daemon (core.daemon) and its start handshake, for ``orch-tui RECIPE`` on a
terminal and ``--detach``.

The daemon is started in a new session (no terminal: closing ours does not reach it), with
stdin, stdout and stderr on /dev/null, and the write end of a pipe on which it says, in one
line, that the run is up (its id, folder, socket, pid) or why it could not start.

It is started before the command line has checked the recipe (``launch``), so that its start
and its own load of the recipe overlap the command line's (they were one after the other: half
of a 10,000-step app's first paint). Until it reads the run's options on a second pipe it
makes nothing: a recipe or an option the command line refuses ends it (``Launch.cancel``).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from core.watchdog import unmarked_environ

#: How long the daemon may take to say it is up (a recipe of 10,000 steps loads in seconds).
START_TIMEOUT = 30.0


class StartFailed(Exception):
    """The daemon did not start the run: ``code`` is the exit code, the message one line."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Started:
    run_id: str
    run_dir: Path
    pid: int


class Launch:
    """A run daemon started on a recipe, waiting for the run's options (``start``) or to be
    called off (``cancel``)."""

    def __init__(self, recipe: str) -> None:
        handshake_r, handshake_w = os.pipe2(os.O_CLOEXEC)
        options_r, options_w = os.pipe2(os.O_CLOEXEC)
        try:
            args = {"recipe": recipe, "handshake_fd": handshake_w, "options_fd": options_r}
            self._daemon = subprocess.Popen(
                [sys.executable, "-P", "-m", "core.daemon", orjson.dumps(args).decode()],
                # a run of its own, started from a step of another (`orch-tui R --detach` in
                # a step): not that run's to stop as it ends
                env=unmarked_environ(),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(handshake_w, options_r),
            )
        except BaseException:
            os.close(handshake_r)
            os.close(options_w)
            raise
        finally:
            os.close(handshake_w)
            os.close(options_r)
        self.recipe = recipe
        self._handshake = handshake_r
        self._options = options_w
        self._waiting = True  # neither started nor called off yet

    def start(self, options: dict[str, Any]) -> Started:
        """The run's ``options`` (core.daemon.DaemonArgs) to the daemon, and its handshake.
        Raises StartFailed."""
        self._waiting = False
        try:  # all of it, beyond a pipe's buffer too (a long --only): the daemon reads it
            with open(self._options, "wb") as pipe:
                pipe.write(orjson.dumps(options))
        except OSError:
            pass  # it is gone already: its handshake (or none) says why
        with os.fdopen(self._handshake, "rb") as pipe:
            line = _read_line(pipe.fileno())
        if not line:
            how = self.ended(2.0)
            if how is None:  # it took too long: not left to run unseen
                self._daemon.terminate()
            where = options.get("run_dir") or _folder_of(self._daemon.pid)
            see = (
                f"see {os.path.relpath(where)}/daemon.log"
                if where is not None
                else f"it made no run folder: orch-tui {self.recipe} --no-ui shows what happens"
            )
            said = "did not start in time" if how is None else f"died as it started ({how})"
            raise StartFailed(f"the run daemon {said}; {see}", 1)
        try:
            answer = orjson.loads(line)
            if answer["ok"]:
                return Started(answer["run_id"], Path(answer["run_dir"]), int(answer["pid"]))
            raise StartFailed(str(answer["error"]), int(answer.get("code", 1)))
        except (ValueError, KeyError, TypeError):
            raise StartFailed(
                f"the run daemon said what orch-tui cannot read: {line[:200]!r}", 1
            ) from None

    def wait_exit(self, timeout: float) -> bool:
        """Wait for the daemon (this process's child) to exit, and reap it; False if it did
        not within ``timeout``."""
        try:
            self._daemon.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def ended(self, timeout: float) -> str | None:
        """How the daemon (this process's child) ended, ``killed by SIGSEGV`` or ``exit 3``,
        once it has (waiting up to ``timeout``); None while it runs. A daemon that crashed
        (a python step's segfault takes it down) is told apart from one that was killed."""
        from tui.format import signal_name

        try:
            code = self._daemon.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return f"killed by {signal_name(-code)}" if code < 0 else f"exit {code}"

    def cancel(self) -> None:
        """No run after all: the daemon, which has made nothing yet, is killed and reaped.
        Nothing once the run was started."""
        if not self._waiting:
            return
        self._waiting = False
        os.close(self._options)
        os.close(self._handshake)
        self._daemon.kill()
        self._daemon.wait()


def _folder_of(pid: int) -> str | None:
    """The run folder the daemon ``pid`` made under this directory's runs, if it made one:
    its run id ends in its pid (core.rundir.new_run_id); the newest such, as it just started."""
    from core.rundir import runs_root

    root = runs_root(Path.cwd())
    try:
        names = sorted(n for n in os.listdir(root) if n.endswith(f"-{pid & 0xFFFF:04x}"))
    except OSError:
        return None
    return str(root / names[-1]) if names else None


def _read_line(fd: int) -> bytes:
    """The handshake's line (b"" when the daemon closed the pipe without one or took longer
    than START_TIMEOUT)."""
    data = b""
    deadline = time.monotonic() + START_TIMEOUT
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b""
        chunk = os.read(fd, 65536)
        if not chunk:
            return b""
        data += chunk
    return data.split(b"\n", 1)[0]
