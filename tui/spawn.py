"""Starting a run daemon (core.daemon) and its start handshake, for ``orch-tui RECIPE`` on a
terminal and ``--detach``.

The daemon is started in a new session (no terminal: closing ours does not reach it), with
stdin, stdout and stderr on /dev/null, and the write end of a pipe on which it says, in one
line, that the run is up (its id, folder, socket, pid) or why it could not start.
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


def start_daemon(options: dict[str, Any]) -> Started:
    """Start a run daemon with ``options`` (core.daemon.DaemonArgs without the pipe) and wait
    for its handshake. Raises StartFailed."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        args = orjson.dumps({**options, "handshake_fd": write_end}).decode()
        daemon = subprocess.Popen(
            [sys.executable, "-P", "-m", "core.daemon", args],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(write_end,),
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        line = _read_line(pipe.fileno())
    where = options.get("run_dir") or "the run's folder"
    if not line:
        if daemon.poll() is None:  # it took too long: not left to run unseen
            daemon.terminate()
        raise StartFailed(f"the run daemon did not start; see {where}/daemon.log", 1)
    try:
        answer = orjson.loads(line)
        if answer["ok"]:
            return Started(answer["run_id"], Path(answer["run_dir"]), int(answer["pid"]))
        raise StartFailed(str(answer["error"]), int(answer.get("code", 1)))
    except (ValueError, KeyError, TypeError):
        raise StartFailed(
            f"the run daemon said what orch-tui cannot read: {line[:200]!r}", 1
        ) from None


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
