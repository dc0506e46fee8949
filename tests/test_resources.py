"""ResourceSampler against real processes and threads (no mocks), and FixedSampler."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from core.events import ResourcesSampled
from core.resources import FixedSampler, ResourceSampler, Sampler, StepTarget

BUSY = "while True: pass"
# A grandchild that holds ~50 MB (touched, so it is resident) and a parent that starts it.
HOG = (
    "import time\n"
    "b = bytearray(50 * 1024 * 1024)\n"
    "for i in range(0, len(b), 4096): b[i] = 1\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)
TREE = (
    "import subprocess, sys, time\n"
    f"child = subprocess.Popen([sys.executable, '-c', {HOG!r}], stdout=subprocess.PIPE)\n"
    "child.stdout.readline()\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def _poll(sampler: ResourceSampler, steps: dict, check, timeout: float = 10.0):
    """Sample every 0.1 s until ``check(event)`` holds; return that event (or fail)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = sampler.sample(steps)
        if check(last):
            return last
        time.sleep(0.1)
    pytest.fail(f"condition not met within {timeout}s; last sample: {last}")


@pytest.fixture
def spawn():
    procs: list[subprocess.Popen] = []

    def start(code: str, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", code], **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        try:
            family = [*psutil.Process(proc.pid).children(recursive=True)]
        except psutil.Error:
            family = []
        proc.kill()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        for child in family:
            with contextlib.suppress(psutil.Error):
                child.kill()


def test_busy_child_shows_cpu(spawn):
    proc = spawn(BUSY)
    sampler = ResourceSampler(interval=0.1)
    steps = {"busy": StepTarget(pid=proc.pid)}
    event = _poll(sampler, steps, lambda e: e.steps.get("busy", {}).get("cpu", 0) > 20)
    assert isinstance(event, ResourcesSampled)
    assert event.steps["busy"]["rss"] > 0
    assert event.steps["busy"]["procs"] == 1
    assert 0 <= event.cpu_percent <= 100
    assert 0 < event.mem_percent <= 100
    assert event.mem_used > 0


def test_tree_rss_includes_grandchild(spawn):
    parent = spawn(TREE, stdout=subprocess.PIPE)
    assert parent.stdout is not None
    assert parent.stdout.readline().strip() == b"ready"  # the grandchild holds its 50 MB now
    sampler = ResourceSampler(interval=0.1)
    parent_alone = psutil.Process(parent.pid).memory_info().rss
    event = _poll(
        sampler,
        {"tree": StepTarget(pid=parent.pid)},
        lambda e: e.steps.get("tree", {}).get("rss", 0) > parent_alone + 40 * 1024 * 1024,
    )
    assert event.steps["tree"]["procs"] >= 2


def test_thread_cpu_by_native_id():
    stop = threading.Event()
    ids: list[int] = []

    def spin() -> None:
        ids.append(threading.get_native_id())
        while not stop.is_set():
            pass

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        while not ids:
            time.sleep(0.01)
        sampler = ResourceSampler(interval=0.1)
        steps = {"py": StepTarget(thread_native_id=ids[0])}
        event = _poll(sampler, steps, lambda e: e.steps.get("py", {}).get("cpu", 0) > 20)
        assert event.steps["py"]["rss"] is None
    finally:
        stop.set()
        thread.join(5)


def test_system_and_thread_figures_without_psutil():
    """A sample of python steps (threads) gives the system's figures and the thread's without
    importing psutil (its import stalled the run's steps): a fresh interpreter, so nothing else
    imported it first. Its memory figures are psutil's, read the same way."""
    code = (
        "import sys, threading\n"
        "from core.resources import ResourceSampler, StepTarget\n"
        "sampler = ResourceSampler()\n"
        "event = sampler.sample({'py': StepTarget(thread_native_id=threading.get_native_id())})\n"
        "print(event.steps['py']['cpu'], event.cpu_percent, event.mem_percent, event.mem_used)\n"
        "print('psutil' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split("\n")
    thread_cpu, cpu, mem_percent, mem_used = (float(x) for x in out[0].split())
    assert out[1] == "False"
    assert thread_cpu >= 0.0 and 0.0 <= cpu <= 100.0
    memory = psutil.virtual_memory()
    assert abs(mem_percent - memory.percent) < 5.0
    assert abs(mem_used - memory.used) < 0.05 * memory.total


def test_vanished_pid_does_not_raise(spawn):
    proc = spawn("pass")
    proc.wait(10)
    sampler = ResourceSampler()
    steps = {
        "gone": StepTarget(pid=proc.pid),
        "never": StepTarget(pid=2**22 + 12345),
        "no-thread": StepTarget(thread_native_id=2**30),
        "nothing": StepTarget(),
    }
    for _ in range(3):
        event = sampler.sample(steps)
        assert event.steps == {}


def test_process_vanishing_between_samples(spawn):
    proc = spawn(BUSY)
    sampler = ResourceSampler()
    steps = {"busy": StepTarget(pid=proc.pid)}
    assert "busy" in sampler.sample(steps).steps
    proc.kill()
    proc.wait(5)
    assert "busy" not in sampler.sample(steps).steps
    assert "busy" in sampler.peaks()  # peaks outlive the process


def test_peaks_keep_the_max(spawn):
    proc = spawn(BUSY)
    sampler = ResourceSampler(interval=0.1)
    steps = {"busy": StepTarget(pid=proc.pid)}
    _poll(sampler, steps, lambda e: e.steps.get("busy", {}).get("cpu", 0) > 20)
    high = sampler.peaks()["busy"]
    assert high["peak_cpu"] > 20
    assert high["peak_rss"] > 0
    proc.send_signal(signal.SIGSTOP)  # now idle: later samples are ~0 %
    try:
        _poll(sampler, steps, lambda e: e.steps.get("busy", {}).get("cpu", 100) < 5)
        assert sampler.peaks()["busy"]["peak_cpu"] >= high["peak_cpu"]
        assert sampler.peaks()["busy"]["peak_rss"] >= high["peak_rss"]
    finally:
        proc.send_signal(signal.SIGCONT)


def test_sampling_many_steps_covers_them_all(spawn):
    """Fifty steps in one sample (the cost is printed; timing belongs to bench/, not here)."""
    procs = [spawn("import time; time.sleep(60)") for _ in range(50)]
    sampler = ResourceSampler()
    steps = {f"s{i}": StepTarget(pid=p.pid) for i, p in enumerate(procs)}
    sampler.sample(steps)
    best = min(_timed(sampler, steps) for _ in range(3))
    print(f"a sample of 50 steps took {best * 1000:.1f} ms")
    sample = sampler.sample(steps)
    assert len(sample.steps) == 50
    assert all(figures["rss"] > 0 for figures in sample.steps.values())


def _timed(sampler: ResourceSampler, steps: dict) -> float:
    started = time.perf_counter()
    sampler.sample(steps)
    return time.perf_counter() - started


def test_fixed_sampler_is_deterministic():
    sampler = FixedSampler(
        cpu_percent=10.0, step_cpu=3.0, step_rss=1000, per_step={"b": {"cpu": 50.0}}, ts=0.0
    )
    assert isinstance(sampler, Sampler)
    assert isinstance(ResourceSampler(), Sampler)
    steps = {"a": StepTarget(pid=1), "b": StepTarget(pid=2), "t": StepTarget(thread_native_id=3)}
    first, second = sampler.sample(steps), sampler.sample(steps)
    assert first == second
    assert first.ts == 0.0 and first.cpu_percent == 10.0
    assert first.steps["a"] == {"cpu": 3.0, "rss": 1000, "procs": 1}
    assert first.steps["b"]["cpu"] == 50.0
    assert first.steps["t"]["rss"] is None
    assert sampler.peaks()["b"] == {"peak_cpu": 50.0, "peak_rss": 1000}
