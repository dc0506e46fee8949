"""The order the run's end stops its steps in: dependents first.

Ending a run (Ctrl-C, SIGTERM, ``stop-run``, ``q``, the foreground steps done) stops a step
only once every step still running that needs it, depending on it directly or through others,
has ended: a web server before the database it talks to, the tests before the service they
test, as ``docker compose down`` and process-compose stop a stack. Signalled all at once, the
database went first and the web server logged connection errors on its way down, or a test
failed for a reason that was not its own.

Only the run's end waits so: a step the user stops, or a timeout, is stopped at once. Each
step still gets its own grace then SIGKILL once its turn comes, so the wait is bounded (by the
graces along the longest chain of running steps), and a second Ctrl-C (``stop-run --force``)
kills every step at once, whatever its turn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from core.steprun import StepRun

Stop = Callable[[], None]


class StopOrder:
    """The stops the run's end asked for and has not made yet (the scheduler's thread only)."""

    def __init__(self, runs: Mapping[str, StepRun]) -> None:
        self._runs = runs
        self._waiting: dict[str, Stop] = {}

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def add(self, run: StepRun, stop: Stop) -> None:
        """Stop ``run`` with ``stop`` in its turn (``due`` says when)."""
        self._waiting[run.step.name] = stop

    def clear(self) -> None:
        """Every step is being killed at once: no turn to wait for."""
        self._waiting.clear()

    def due(self) -> list[Stop]:
        """The stops to make now, taken out: those of the steps no step still running or
        being stopped depends on. A step that ended meanwhile is dropped. While one waits,
        one at least is due: the graph has no cycles."""
        runs, waiting = self._runs, self._waiting
        for name in [name for name in waiting if runs[name].execution is None]:
            del waiting[name]
        if not waiting:
            return []
        needed = self._needed(
            run
            for run in runs.values()
            if run.execution is not None and (run.stop_as is not None or run.step.name in waiting)
        )
        return [waiting.pop(name) for name in list(waiting) if name not in needed]

    def _needed(self, holders) -> set[str]:
        """Every step the ``holders`` depend on, directly or through others."""
        runs = self._runs
        needed: set[str] = set()
        todo = [name for run in holders for name in run.step.depends_on]
        while todo:
            name = todo.pop()
            if name not in needed and name in runs:
                needed.add(name)
                todo.extend(runs[name].step.depends_on)
        return needed
