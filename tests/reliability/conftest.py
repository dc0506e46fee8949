"""Helpers for the fault-injection suite (tests/reliability).

Everything here drives real processes; waiting is a poll of a condition with a deadline
(``tests.conftest.wait_for``), never a bare sleep. ``faults`` tallies the faults each test
injects so the run ends with the figures the issue asks for (tried, survived, lost).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import ORCH, _cli_env, alive

#: kind -> [tried, survived, lost]
FAULTS: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])


class FaultTally:
    """``faults.tried(kind)`` before injecting, ``faults.survived(kind)`` once checked."""

    def tried(self, kind: str, n: int = 1) -> None:
        FAULTS[kind][0] += n

    def survived(self, kind: str, n: int = 1) -> None:
        FAULTS[kind][1] += n

    def lost(self, kind: str, n: int = 1) -> None:
        FAULTS[kind][2] += n


@pytest.fixture
def faults() -> FaultTally:
    return FaultTally()


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # pragma: no cover - report
    if not FAULTS:
        return
    terminalreporter.section("reliability: faults injected")
    total = [0, 0, 0]
    for kind in sorted(FAULTS):
        tried, survived, lost = FAULTS[kind]
        total = [total[0] + tried, total[1] + survived, total[2] + lost]
        terminalreporter.write_line(
            f"{kind:<52} tried {tried:>5}  survived {survived:>5}  lost {lost}"
        )
    terminalreporter.write_line(
        f"{'total':<52} tried {total[0]:>5}  survived {total[1]:>5}  lost {total[2]}"
    )


def start_orch(*args, cwd: Path, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """``orch-tui ARGS`` in its own session; stdout/stderr piped unless given."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [*ORCH, *map(str, args)],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        env=_cli_env(env),
        start_new_session=True,
        **popen,
    )


def kill_pids(pids) -> None:
    """Clean-up of processes a test knows about (their groups too, when they lead one)."""
    for pid in set(pids):
        if not alive(pid):
            continue
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def send_key(app, key: str) -> None:
    """A key press as the terminal driver delivers it (``Pilot.press`` without its wait for
    the whole process to go idle, which never happens while steps flood their pipes)."""
    from textual import events

    event = events.Key(key, None)
    event.set_sender(app)
    app._driver.send_message(event)
