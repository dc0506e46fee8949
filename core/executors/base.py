"""What every executor is: an ``Execution`` (one running attempt of a step) that reports its end
once, through ``on_exit(Outcome)``, made by the factory its step type registers (core.executors).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import msgspec

if TYPE_CHECKING:
    from core.cluster import Cluster
    from core.context import Context
    from core.launch import Launcher
    from core.reactor import OutputReactor
    from core.recipe import Step
    from core.steplog import StepLog
    from core.workers import Workers


class Outcome(msgspec.Struct, frozen=True):
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
    kill_abandons: bool  # kill() cannot end it (a thread): the runner gives up on it

    def start(self) -> None: ...

    def stop(self, sig: int) -> None:
        """Ask politely (SIGTERM/SIGINT to the group, or set ``stop``)."""

    def kill(self) -> None:
        """No more asking (SIGKILL to the group; a thread cannot be killed: ``kill_abandons``)."""


class LaunchContext(msgspec.Struct, frozen=True):
    """What an executor needs of the run to start an attempt: the shared ctx, the worker
    threads, the output reactor, how processes are launched (environment, cwd, ORCH_*
    variables, ORCH_CTX_OUT: core.launch), and the run's Dask cluster if it has one."""

    ctx: Context
    workers: Workers
    reactor: OutputReactor
    launcher: Launcher
    cluster: Cluster | None = None


class ExecutorFactory(Protocol):
    """Makes (does not start) the Execution of a step's ``attempt``, its output to ``log``."""

    def __call__(
        self, step: Step, log: StepLog, attempt: int, context: LaunchContext, on_exit: OnExit
    ) -> Execution: ...
