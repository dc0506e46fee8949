"""How each step type runs. Every execution reports its end once, through ``on_exit(Outcome)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended. ``error`` is a one-line reason for a failure."""

    exit_code: int | None = 0
    signal: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.signal is None and self.error is None


OnExit = Callable[[Outcome], None]


class Execution(Protocol):
    """One running attempt of a step."""

    pid: int | None  # process (group leader) of a shell step
    native_thread_id: int | None  # thread of a python step

    def start(self) -> None: ...

    def stop(self, sig: int) -> None:
        """Ask politely (SIGTERM/SIGINT to the group, or set ``stop``)."""

    def kill(self) -> None:
        """No more asking (SIGKILL to the group; a thread cannot be killed and is abandoned)."""
