"""How each step type runs: an executor per type, each in its own module, chosen by the step's
``type`` from ``EXECUTORS`` (as core.sessions picks a multiplexer backend by name), or on the
run's Dask cluster (``executor_for``). Every execution reports its end once, through
``on_exit(Outcome)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from core.recipe import Step

#: step type -> the factory of its executions
EXECUTORS: dict[str, ExecutorFactory] = {
    "python": PythonExecution.create,
    "shell": ShellExecution.create,
    "session": SessionExecution.create,
}


def executor_for(step: Step, context: LaunchContext) -> ExecutorFactory:
    """The factory of ``step``'s executions: on the cluster when the run has one and the step
    runs there (``where:``), else by its type. core.executors.dask is imported only then."""
    if context.cluster is not None and step.on_cluster:
        from core.executors.dask import DaskExecution

        return DaskExecution.create
    return EXECUTORS[step.type]


__all__ = [
    "EXECUTORS",
    "Execution",
    "ExecutorFactory",
    "executor_for",
    "LaunchContext",
    "OnExit",
    "Outcome",
]
