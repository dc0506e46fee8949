"""Resource sampling: the system's load and each running step's CPU % and memory.

A shell step is a process (the leader of its process group) and whatever it started, so its
figures are those of the whole process tree. A Python step is a thread of the runner's own
process: it has a CPU figure of its own (from the thread's CPU time) but no memory of its own.

CPU percentages follow ``top``: 100 is one core busy, so a step may show more than 100 on a
multi-core machine. The system figure is the share of all cores (0-100). A process's figure is
the delta since the previous sample; the first time a process is seen it is its average over its
life so far (so a step shorter than the interval still gets a figure). A thread's first figure
is 0.0.

The runner calls :meth:`ResourceSampler.sample` from its own thread once per ``interval``;
sampling never raises and costs well under a millisecond per step. Tests and the TUI's snapshot
suite use :class:`FixedSampler`, which returns constant figures.

    >>> sampler = ResourceSampler()
    >>> event = sampler.sample({"build": StepTarget(pid=1234)})
    >>> event.steps.get("build")   # absent if the process has gone
    {'cpu': 97.5, 'rss': 10485760, 'procs': 1}
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec

from core.events import ResourcesSampled
from core.log import get_logger

if TYPE_CHECKING:
    import psutil

_log = get_logger("orch.resources")
_CPUS = os.cpu_count() or 1


class StepTarget(msgspec.Struct, frozen=True):
    """What to measure for one running step: a process tree, or a thread of this process."""

    pid: int | None = None
    thread_native_id: int | None = None


@runtime_checkable
class Sampler(Protocol):
    """What the runner needs from a sampler (the real one, or a fixed one in tests)."""

    interval: float

    def sample(self, steps: Mapping[str, StepTarget]) -> ResourcesSampled: ...

    def peaks(self) -> dict[str, dict[str, float | int | None]]: ...


def _peak_update(peaks: dict[str, dict], name: str, cpu: float, rss: int | None) -> None:
    entry = peaks.get(name)
    if entry is None:
        peaks[name] = {"peak_cpu": cpu, "peak_rss": rss}
        return
    if cpu > (entry["peak_cpu"] or 0.0):
        entry["peak_cpu"] = cpu
    if rss is not None and (entry["peak_rss"] is None or rss > entry["peak_rss"]):
        entry["peak_rss"] = rss


@functools.cache
def _psutil():
    """psutil, imported by the first sample of a process tree (a shell step), not with this
    module: its import, 15-25 ms holding the GIL, would stall a run's steps. The system's and a
    thread's figures are read from /proc (below): a run of python steps never imports it."""
    import psutil

    return psutil


_TICKS = os.sysconf("SC_CLK_TCK")


def _system_cpu_times() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, as psutil counts them (guest time is
    in user time already; idle and iowait are not busy)."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def _system_memory() -> tuple[float, int]:
    """(percent, bytes) of memory in use, as psutil.virtual_memory has them on Linux:
    used is total less available."""
    mems: dict[bytes, int] = {}
    with open("/proc/meminfo", "rb") as f:
        for line in f:
            key, value, *_ = line.split()
            mems[key] = int(value) * 1024
    total = mems[b"MemTotal:"]
    available = min(mems.get(b"MemAvailable:") or mems[b"MemFree:"], total)
    return round((total - available) / total * 100.0, 1), total - available


def _thread_cpu_seconds(tid: int) -> float | None:
    """User + system CPU seconds of this process's thread ``tid``; None once it has ended."""
    try:
        with open(f"/proc/self/task/{tid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _ppid_map() -> dict[int, int]:
    """{pid: parent pid} of every process, read once per sample (not once per step)."""
    psutil = _psutil()
    fast = getattr(psutil, "_ppid_map", None)  # what Process.children() itself uses
    if fast is not None:
        with contextlib.suppress(Exception):
            return fast()
    result: dict[int, int] = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        if ppid is not None:
            result[proc.pid] = ppid
    return result


class ResourceSampler:
    """Sampling of the system and of threads of this process (/proc), of process trees
    (psutil).

    ``sample`` is meant to be called from one thread; ``peaks`` may be read from any.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._procs: dict[int, psutil.Process] = {}  # kept so cpu_percent(None) has a baseline
        self._cpu_times: tuple[int, int] | None = None  # (busy, total) at the previous sample
        with contextlib.suppress(OSError):
            self._cpu_times = _system_cpu_times()
        self._thread_times: dict[int, tuple[float, float]] = {}  # native id -> (cpu s, wall s)
        self._peaks: dict[str, dict[str, float | int | None]] = {}
        self._lock = threading.Lock()

    # -- public ---------------------------------------------------------------------------------
    def sample(self, steps: Mapping[str, StepTarget]) -> ResourcesSampled:
        """One sample of the system and of ``steps``; steps whose process has gone are left out."""
        figures: dict[str, dict[str, float | int | None]] = {}
        try:
            figures.update(self._sample_trees(steps))
        except Exception:  # never let sampling break a run
            _log.debug("process sampling failed", exc_info=True)
        try:
            figures.update(self._sample_threads(steps))
        except Exception:
            _log.debug("thread sampling failed", exc_info=True)
        cpu = mem_percent = 0.0
        mem_used = 0
        with contextlib.suppress(Exception):  # no descriptor left (steps took them): next time
            cpu = self._system_cpu()
        with contextlib.suppress(Exception):
            mem_percent, mem_used = _system_memory()
        with self._lock:
            for name, fig in figures.items():
                _peak_update(self._peaks, name, float(fig["cpu"] or 0.0), fig["rss"])  # type: ignore[arg-type]
        return ResourcesSampled(
            cpu_percent=cpu, mem_percent=mem_percent, mem_used=mem_used, steps=figures
        )

    def peaks(self) -> dict[str, dict[str, float | int | None]]:
        """{step: {"peak_cpu": float, "peak_rss": int | None}} over every sample so far."""
        with self._lock:
            return {name: dict(entry) for name, entry in self._peaks.items()}

    def _system_cpu(self) -> float:
        """The share of all cores busy since the previous sample (since the sampler was made,
        for the first)."""
        busy, total = _system_cpu_times()
        before, self._cpu_times = self._cpu_times, (busy, total)
        if before is None or total <= before[1]:
            return 0.0
        return round(min(100.0, max(0.0, (busy - before[0]) / (total - before[1]) * 100.0)), 1)

    # -- process trees ----------------------------------------------------------------------------
    def _sample_trees(self, steps: Mapping[str, StepTarget]) -> dict[str, dict]:
        roots = {name: t.pid for name, t in steps.items() if t.pid is not None}
        if not roots:
            self._procs.clear()
            return {}
        children: dict[int, list[int]] = {}
        for pid, ppid in _ppid_map().items():
            children.setdefault(ppid, []).append(pid)
        seen: dict[int, psutil.Process] = {}
        measured: dict[int, tuple[float, int] | None] = {}
        result: dict[str, dict] = {}
        for name, root in roots.items():
            cpu = 0.0
            rss = 0
            procs = 0
            root_alive = False
            stack = [root]
            visited: set[int] = set()
            while stack:
                pid = stack.pop()
                if pid in visited:  # pid reuse while the map was read can make a cycle
                    continue
                visited.add(pid)
                if pid not in measured:
                    measured[pid] = self._measure(pid, seen)
                figures = measured[pid]
                if figures is None:
                    if pid == root:
                        break  # the step's own process is gone: nothing of it to show
                    continue  # a vanished child: its children are orphans now, skip them
                if pid == root:
                    root_alive = True
                cpu += figures[0]
                rss += figures[1]
                procs += 1
                stack.extend(children.get(pid, ()))
            if root_alive:
                result[name] = {"cpu": round(cpu, 1), "rss": rss, "procs": procs}
        self._procs = seen  # forget processes that are gone or no longer asked for
        return result

    def _measure(self, pid: int, seen: dict[int, psutil.Process]) -> tuple[float, int] | None:
        """(CPU %, RSS) of one process, or None if it is gone or out of reach."""
        proc = self._procs.get(pid)
        try:
            new = proc is None or not proc.is_running()  # not seen before, or the pid was reused
            if new:
                proc = _psutil().Process(pid)
            assert proc is not None
            with proc.oneshot():
                cpu = proc.cpu_percent(None)  # a delta since the previous sample; 0.0 if new
                rss = proc.memory_info().rss
                if new:  # no baseline yet: its average over its life so far, so short steps
                    times = proc.cpu_times()  # get a figure too
                    age = time.time() - proc.create_time()
                    if age > 0.05:
                        cpu = min((times.user + times.system) / age * 100.0, 100.0 * _CPUS)
        except _psutil().Error:  # gone, a zombie, out of reach
            return None
        except (OSError, ValueError):
            return None
        seen[pid] = proc
        return cpu, rss

    # -- threads of this process ------------------------------------------------------------------
    def _sample_threads(self, steps: Mapping[str, StepTarget]) -> dict[str, dict]:
        wanted: dict[str, int] = {
            name: t.thread_native_id
            for name, t in steps.items()
            if t.pid is None and t.thread_native_id is not None
        }
        if not wanted:
            self._thread_times.clear()
            return {}
        now = time.monotonic()
        previous = self._thread_times
        current: dict[int, tuple[float, float]] = {}
        result: dict[str, dict] = {}
        for name, tid in wanted.items():
            cpu_time = _thread_cpu_seconds(tid)
            if cpu_time is None:
                continue  # the thread has ended
            current[tid] = (cpu_time, now)
            before = previous.get(tid)
            cpu = 0.0
            if before is not None and now > before[1]:
                cpu = max(0.0, (cpu_time - before[0]) / (now - before[1]) * 100.0)
            result[name] = {"cpu": round(cpu, 1), "rss": None, "procs": None}
        self._thread_times = current
        return result


class FixedSampler:
    """A deterministic sampler: the same figures every time, for tests and TUI snapshots.

    Every step asked about gets ``step_cpu`` and ``step_rss`` (``None`` RSS for thread targets),
    unless ``per_step`` gives it figures of its own, as ``{"cpu": ..., "rss": ...}``.
    """

    def __init__(
        self,
        *,
        cpu_percent: float = 12.5,
        mem_percent: float = 42.0,
        mem_used: int = 3 * 1024**3,
        step_cpu: float = 5.0,
        step_rss: int = 64 * 1024**2,
        per_step: Mapping[str, Mapping[str, float | int | None]] | None = None,
        ts: float | None = None,
        interval: float = 1.0,
    ) -> None:
        self.interval = interval
        self.cpu_percent = cpu_percent
        self.mem_percent = mem_percent
        self.mem_used = mem_used
        self.step_cpu = step_cpu
        self.step_rss = step_rss
        self.per_step = {k: dict(v) for k, v in (per_step or {}).items()}
        self.ts = ts
        self._peaks: dict[str, dict[str, float | int | None]] = {}

    def sample(self, steps: Mapping[str, StepTarget]) -> ResourcesSampled:
        figures: dict[str, dict[str, float | int | None]] = {}
        for name, target in steps.items():
            fixed = self.per_step.get(name, {})
            rss = fixed.get("rss", self.step_rss if target.pid is not None else None)
            cpu = float(fixed.get("cpu", self.step_cpu) or 0.0)
            procs = 1 if target.pid is not None else None
            figures[name] = {"cpu": cpu, "rss": rss, "procs": procs}
            _peak_update(self._peaks, name, cpu, rss)  # type: ignore[arg-type]
        kwargs = {} if self.ts is None else {"ts": self.ts}
        return ResourcesSampled(
            cpu_percent=self.cpu_percent,
            mem_percent=self.mem_percent,
            mem_used=self.mem_used,
            steps=figures,
            **kwargs,
        )

    def peaks(self) -> dict[str, dict[str, float | int | None]]:
        return {name: dict(entry) for name, entry in self._peaks.items()}
