"""Which steps wait for which: what may start now, what a failure keeps from running, and what a
skipped step lets through.

The scheduler (core.runner) says what happened to a step (it is done, it failed, it was skipped
or retried); this keeps the queues of steps ready to start (in recipe order, background steps
apart: they do not count against ``--jobs``) and marks the steps a failure blocks, naming the
root failures (the steps that failed on their own), so the summary and the TUI can point at the
cause rather than at the nearest victim. Changed only on the scheduler's thread.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence

from core.graph import dependents_of, topological_order
from core.state import WAITING, Status
from core.steprun import StepRun

#: told of a status (or ``blocked_by``) this changed: the step, and why (for the user)
OnStatus = Callable[[StepRun, "str | None"], None]


class Dependencies:
    def __init__(
        self, runs: dict[str, StepRun], deps: Mapping[str, Sequence[str]], on_status: OnStatus
    ) -> None:
        self.runs = runs
        self._dependents = dependents_of(deps)
        self._topo = topological_order(deps)
        self._on_status = on_status
        self._ready: dict[bool, list[int]] = {False: [], True: []}  # background? -> indexes
        self._by_index = {run.step.index: run for run in runs.values()}

    def release_initial(self) -> None:
        """The run starts: queue what may start, let skipped steps with nothing to wait for
        pass their dependents on (in order: a chain of them is released in one pass)."""
        for name in self._topo:
            run = self.runs[name]
            if not self.satisfied(run):
                continue
            if run.state.status == Status.PENDING:
                self.push_ready(run)
            elif run.passing_through:
                self.satisfy(run)

    def satisfied(self, run: StepRun) -> bool:
        """Every dependency of the step is done (or lets it go on)."""
        return all(self.runs[d].satisfied for d in run.step.depends_on)

    def push_ready(self, run: StepRun) -> None:
        heapq.heappush(self._ready[run.step.background], run.step.index)

    def pop_ready(self, background: bool) -> StepRun | None:
        """The first queued step (in recipe order), or None."""
        queue = self._ready[background]
        return self._by_index[heapq.heappop(queue)] if queue else None

    def satisfy(self, run: StepRun) -> None:
        """The step lets its dependents go on: queue those whose dependencies are all met.

        A skipped dependent still waiting for its own dependencies is a pass-through: it lets
        its dependents go on in turn, now that it may (a loop, not recursion: a chain of
        thousands of skipped steps must not overflow the stack).
        """
        run.satisfied = True
        passing = [run]
        while passing:
            for name in self._dependents[passing.pop().step.name]:
                child = self.runs[name]
                if child.state.status == Status.PENDING:
                    if self.satisfied(child):
                        self.push_ready(child)
                elif child.passing_through and self.satisfied(child):
                    child.satisfied = True
                    self._pass_blocked_by(child, [])
                    passing.append(child)

    def recompute_blocking(self) -> None:
        """Mark every waiting step that cannot run because of a failure upstream, and un-mark
        (and queue) those that can again."""
        for name in self._topo:
            run = self.runs[name]
            if run.passing_through:  # skipped, waiting: what holds it up holds up its dependents
                self._pass_blocked_by(run, sorted(self._failed_roots(run)))
                continue
            if run.state.status not in WAITING or run.retry_due:
                continue
            roots = sorted(self._failed_roots(run))
            if roots:
                if run.state.status != Status.BLOCKED or roots != run.state.blocked_by:
                    run.state.status, run.state.blocked_by = Status.BLOCKED, roots
                    self._on_status(run, "blocked by " + ", ".join(roots))
            elif run.state.status == Status.BLOCKED:
                run.state.status, run.state.blocked_by = Status.PENDING, []
                self._on_status(run, None)
                if self.satisfied(run):
                    self.push_ready(run)

    def _pass_blocked_by(self, run: StepRun, roots: list[str]) -> None:
        """A skipped step still waiting for its dependencies: what holds it up (and so its
        dependents) changed."""
        if roots != run.state.blocked_by:
            run.state.blocked_by = roots
            self._on_status(run, None)

    def _failed_roots(self, run: StepRun) -> set[str]:
        """The root failures that keep ``run``'s dependencies from being done."""
        roots: set[str] = set()
        for dep in run.step.depends_on:
            parent = self.runs[dep]
            if parent.dead:
                roots.add(dep)
            elif parent.state.status == Status.BLOCKED or parent.passing_through:
                roots.update(parent.state.blocked_by)
        return roots
