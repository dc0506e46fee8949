"""How each step type runs: an executor per type, each in its own module, chosen by the step's
``type`` from ``EXECUTORS`` (as core.sessions picks a multiplexer backend by name). Every
execution reports its end once, through ``on_exit(Outcome)``.
"""

from core.executors.base import (
    Execution,
    ExecutorFactory,
    LaunchContext,
    OnExit,
    Outcome,
)
from core.executors.python import PythonExecution
from core.executors.session import SessionExecution
from core.executors.shell import ShellExecution

#: step type -> the factory of its executions
EXECUTORS: dict[str, ExecutorFactory] = {
    "python": PythonExecution.create,
    "shell": ShellExecution.create,
    "session": SessionExecution.create,
}

__all__ = [
    "EXECUTORS",
    "Execution",
    "ExecutorFactory",
    "LaunchContext",
    "OnExit",
    "Outcome",
]
