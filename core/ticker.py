"""The run's coalesced events: what changes too often to be an event each time.

A few times a second (``TICK``), on a thread of its own and under the runner's lock: a
``StepOutput`` for each step that wrote something (naming its log, the first time the file
exists), a ``CtxChanged`` for the keys written, the watchdog told which process groups are
gone; and every ``interval`` a resource sample, taken on a worker thread (a stalled /proc must
not hold up the rest, nor the saving it triggers), with the steps' grown peaks put in their
state. The runner asks for the same flushes at a step's end and at the run's, so nothing a step
wrote is said after the event that ends it.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import msgspec

from core import events as ev
from core.resources import Sampler, StepTarget

if TYPE_CHECKING:
    from core.runner import Runner
    from core.steprun import StepRun

TICK = 0.1  # output and ctx events are coalesced to this period


class Ticker:
    """The periodic work of ``runner``'s run (it works on the runner's state, under its lock)."""

    def __init__(self, runner: Runner, sampler: Sampler | None, interval: float) -> None:
        self.runner, self.sampler, self.interval = runner, sampler, interval
        self._stopped = threading.Event()
        self._sampling = threading.Event()  # a sample is being taken, on a worker thread
        # the steps started whose process may still run or whose log may still grow, by name:
        # a tick looks at these, not at every step of the run (5,000 steps, ten ticks a second)
        self._live: dict[str, StepRun] = {}

    def start(self) -> None:
        threading.Thread(target=self._loop, name="orch-ticker", daemon=True).start()

    def stop(self) -> None:
        """No tick, and no sample, after this (the run is over)."""
        self._stopped.set()

    # -- flushes (under the runner's lock) --------------------------------------------------------
    def started(self, run: StepRun) -> None:
        """A step's attempt has its log: the ticks follow it until it is over (``_flush_live``)."""
        self._live[run.step.name] = run
        self.note_log(run)

    def live(self) -> list[StepRun]:
        """The steps whose output may not all have been said yet."""
        return list(self._live.values())

    def note_log(self, run: StepRun) -> str | None:
        """state.json names the log once its file exists (a python step's: once it printed);
        the name, the first time."""
        if run.state.log is None and run.steplog is not None and run.steplog.created:
            run.state.log = self.runner.rundir.log_name(run.step.name)
            return run.state.log
        return None

    def flush_output(self, run: StepRun) -> None:
        """A StepOutput for what the step wrote since the last one."""
        steplog = run.steplog
        if steplog is None:
            return
        log = self.note_log(run)
        new = steplog.take_new()
        if new is None and log is None:
            return
        size, lines, total = new or (steplog.size, [], steplog.lines_total)
        runner = self.runner
        if log is not None:
            runner.store.state_changed()
        name = run.step.name
        runner.emit(
            ev.StepOutput(
                step=name, size=size, lines=lines, lines_total=total, log=log, ts=runner.clock()
            )
        )

    def flush_ctx(self) -> None:
        """A CtxChanged for the keys written since the last one."""
        runner = self.runner
        ctx, state = runner.ctx, runner.run_state
        if ctx.version != state.ctx_version:
            changed = ctx.changed_since(state.ctx_version)
            version = state.ctx_version = ctx.version
            runner.emit(ev.CtxChanged(keys=changed, version=version, ts=runner.clock()))
            runner.store.ctx_changed()

    # -- the thread -------------------------------------------------------------------------------
    def _loop(self) -> None:
        runner = self.runner
        next_sample = time.monotonic()
        while not self._stopped.wait(TICK):
            with runner.lock:
                if self._stopped.is_set():
                    return
                self._flush_live()
                if runner.watchdog.groups:
                    runner.watchdog.prune(self._running_groups())
                runner.watchdog.flush()
                self.flush_ctx()
                # no step runs: nothing to sample, nothing appended while an idle app is open
                targets = self._sample_targets() if self.sampler else None
            if targets and time.monotonic() >= next_sample and not self._sampling.is_set():
                next_sample = time.monotonic() + self.interval
                self._sampling.set()
                runner.workers.submit(self._sample, targets)

    def _flush_live(self) -> None:
        """A StepOutput for each live step that wrote; the ones that are over (ended, their log
        closed and all of it said) are no longer followed."""
        for name, run in list(self._live.items()):
            steplog = run.steplog
            closed = steplog is None or steplog.closed  # first: nothing is written after it
            if steplog is not None and steplog.dirty:
                self.flush_output(run)
            elif closed and run.execution is None:
                del self._live[name]

    def _running_groups(self) -> set[int]:
        return {
            r.execution.pid
            for r in self._live.values()
            if r.execution is not None and r.execution.pid is not None
        }

    def _sample_targets(self) -> dict[str, StepTarget]:
        return {
            name: StepTarget(pid=run.execution.pid, thread_native_id=run.execution.native_thread_id)
            for name, run in self._live.items()
            if run.execution is not None
        }

    def _sample(self, targets: dict[str, StepTarget]) -> None:
        assert self.sampler is not None
        runner = self.runner
        try:
            sample = self.sampler.sample(targets)
            peaks = self.sampler.peaks()
            with runner.lock:
                if self._stopped.is_set() or runner.run_state.ended is not None:
                    return  # taken as the run ended: no sample after its end
                grown = {}
                for name, peak in peaks.items():
                    state = runner.runs[name].state
                    figures = (peak.get("peak_cpu"), peak.get("peak_rss"))
                    if figures != (state.peak_cpu, state.peak_rss):
                        state.peak_cpu, state.peak_rss = grown[name] = figures  # type: ignore[assignment]
                runner.emit(msgspec.structs.replace(sample, peaks=grown))
                if grown:
                    runner.store.state_changed()
        finally:
            self._sampling.clear()
