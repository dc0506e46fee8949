"""The TUI under load: 50 steps flooding their logs at once, and a resource sampler that hangs.

A key press must still move the selection promptly (timings are printed; the test asserts only
that it happens), and a sampler that takes seconds per sample (psutil on a machine with many
processes, a stalled /proc read) must not hold up the UI, nor what the UI shows of the run:
key presses are handled and the ctx inspector keeps counting rows *while a sample is stuck*.
"""

from __future__ import annotations

import re
import threading
import time

from core.recipe import load_recipe
from core.resources import ResourceSampler
from core.runner import Runner
from tests.conftest import read_state, write_module, write_recipe
from tests.tui_helpers import (
    SIZE,
    build_app,
    close_runner,
    main_pane,
    selected,
    send_key,
    tree_label,
    until,
)

# Each step prints bursts of 100 lines ten times a second (1,000 lines/s, 50,000 lines/s for
# the 50): a flood for the UI, yet bounded, so the steps alone do not saturate a 2-CPU machine
# (then any UI starves, whatever it does: that measures the machine, not orch-tui).
FLOOD_STEP = """\
  - name: flood{i:02d}
    type: shell
    depends_on: []
    run: |
      while [ ! -f stop ]; do
        printf 'flood{i:02d} line %s of a quick burst, with some padding to make it longer\\n' {{1..100}}
        sleep 0.1
      done
"""


def _flood_recipe(n: int, extra: str = "") -> str:
    return f"jobs: {n + 5}\nsteps:\n" + "".join(FLOOD_STEP.format(i=i) for i in range(n)) + extra


async def _move_and_time(app, pilot, moves: int) -> list[float]:
    """Press down (then up at the bottom) ``moves`` times; the time each took to show."""
    from tui.widgets import StepTree

    tree = app.query_one(StepTree)
    names = list(tree._step_nodes)
    timings = []
    key = "down"
    for _ in range(moves):
        before = selected(app)
        index = names.index(before)
        if index == len(names) - 1:
            key = "up"
        elif index == 0:
            key = "down"
        target = names[index + (1 if key == "down" else -1)]
        t0 = time.perf_counter()
        send_key(app, key)
        await until(pilot, lambda t=target: selected(app) == t, 10, f"{target} selected")
        timings.append(time.perf_counter() - t0)
    return timings


async def test_fifty_flooding_steps_at_once_the_ui_stays_responsive(tmp_path, faults):
    app, runner = build_app(tmp_path, _flood_recipe(50))
    try:
        async with app.run_test(size=SIZE) as pilot:
            names = [f"flood{i:02d}" for i in range(50)]
            await until(
                pilot,
                lambda: all(app._run.steps[n].status == "running" for n in names),
                20,
                "all 50 steps running (as the tree shows them)",
            )
            faults.tried("50 steps flooding their logs at once (TUI)")
            await until(
                pilot,
                lambda: (
                    sum((runner.run_dir / "logs" / f"{n}.log").stat().st_size for n in names)
                    > 5_000_000
                ),
                20,
                "5 MB of output",
            )
            timings = await _move_and_time(app, pilot, 12)
            pane = main_pane(app)
            await until(pilot, lambda: pane.step == selected(app) and pane.lines, 10, "its log")
            total = sum((runner.run_dir / "logs" / f"{n}.log").stat().st_size for n in names)
            timings.sort()
            print(
                f"\n50 steps, {total / 1e6:.0f} MB of logs; {len(timings)} key presses: median "
                f"{timings[len(timings) // 2] * 1000:.0f} ms, max {timings[-1] * 1000:.0f} ms"
            )
            assert len(timings) == 12  # every press moved the selection
            assert all(runner.state()["steps"][n]["status"] == "running" for n in names)
            (tmp_path / "stop").touch()
            await until(
                pilot,
                lambda: all(runner.state()["steps"][n]["status"] == "succeeded" for n in names),
                20,
                "the floods to end",
            )
            faults.survived("50 steps flooding their logs at once (TUI)")
    finally:
        close_runner(runner)
        for log in (runner.run_dir / "logs").iterdir():
            log.unlink()


class SlowSampler(ResourceSampler):
    """The real sampler, but every sample hangs 2 s first (a stalled /proc, a huge machine)."""

    def __init__(self) -> None:
        super().__init__()
        self.windows: list[list[float]] = []  # [start, end] of each sample (end 0 while in it)
        self.lock = threading.Lock()

    def sample(self, steps):
        window = [time.monotonic(), 0.0]
        with self.lock:
            self.windows.append(window)
        time.sleep(2.0)  # the injected fault, not synchronisation
        try:
            return super().sample(steps)
        finally:
            window[1] = time.monotonic()

    def stuck_since(self) -> float | None:
        """When the sample in progress started, or None if none is."""
        with self.lock:
            for start, end in self.windows:
                if end == 0.0:
                    return start
        return None


ROWS = """
def rows(ctx, stop):
    i = 0
    while not stop.wait(0.02):
        ctx.append("rows", i)
        i += 1
"""


def _rows_shown(app) -> int:
    """The row count the ctx inspector shows for ``rows`` (``rows [1,234]``), or -1."""
    from tui.widgets import CtxInspector

    node = app.query_one(CtxInspector)._key_nodes.get("rows")
    if node is None:
        return -1
    match = re.search(r"\[([\d,]+)\]", str(node.label))
    return int(match.group(1).replace(",", "")) if match else -1


async def test_a_hanging_resource_sampler_does_not_block_the_ui(tmp_path, faults):
    from core.control import LocalControl
    from tui.app import make_app

    module = write_module(tmp_path, ROWS)
    extra = f"  - {{name: rows, type: python, depends_on: [], module: {module}, function: rows}}\n"
    recipe = load_recipe(write_recipe(tmp_path, _flood_recipe(10, extra)))
    sampler = SlowSampler()
    runner = Runner(
        recipe,
        run_dir=tmp_path / "run",
        interactive=True,
        sampler=sampler,
        resource_interval=0.1,
    )
    app = make_app(LocalControl(runner), start=runner.start)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: _rows_shown(app) > 0, 10, "the ctx inspector's rows")
            faults.tried("resource sampler hanging 2 s per sample (TUI)")
            proven = None
            for _attempt in range(4):  # a sample window is 2 s; prove it within one
                stuck = await until(pilot, sampler.stuck_since, 10, "a sample in progress")
                if time.monotonic() - stuck > 0.5:
                    await until(pilot, lambda s=stuck: sampler.stuck_since() != s, 5, "next one")
                    continue
                shown_before = _rows_shown(app)
                timings = await _move_and_time(app, pilot, 4)
                await until(
                    pilot,
                    lambda b=shown_before: _rows_shown(app) > b,
                    1.2,
                    "the ctx inspector to count new rows while the sampler is stuck",
                )
                if sampler.stuck_since() == stuck:  # still inside the same stuck sample
                    proven = (time.monotonic() - stuck, timings, _rows_shown(app) - shown_before)
                    break
            assert proven is not None, "could not act within one stuck sample"
            inside, timings, rows = proven
            print(
                f"\nwithin {inside:.2f}s of a 2 s sample: 4 key presses "
                f"(max {max(timings) * 1000:.0f} ms) and {rows} new rows shown"
            )
            faults.survived("resource sampler hanging 2 s per sample (TUI)")
            (tmp_path / "stop").touch()
    finally:
        (tmp_path / "stop").touch()
        close_runner(runner)


def _wide_echo_recipe(n: int) -> str:
    steps = "".join(
        f"  - {{name: s{i}, type: shell, run: echo step {i}, depends_on: []}}\n" for i in range(n)
    )
    return "jobs: 2\nsteps:\n" + steps


async def test_two_thousand_steps_end_in_the_tree_as_in_state_json(tmp_path):
    """Every row ends as state.json says, the header counts them all, keys move the selection
    during the run, and the app never takes the run's whole state again while it goes (a copy
    of every step, under the runner's lock, once per tick, was what made a 2,000-step run 20
    times slower in the app): it follows the events. ``bench/run.py --only tui_big_run``
    measures the speed."""
    from tui.format import format_duration, status_icon

    n = 2000
    app, runner = build_app(tmp_path, _wide_echo_recipe(n))
    whole_state_reads = []
    snapshot = runner.snapshot

    def counted_snapshot():
        if threading.current_thread() is threading.main_thread():  # the app's thread
            whole_state_reads.append(time.monotonic())
        return snapshot()

    runner.snapshot = counted_snapshot
    try:
        async with app.run_test(size=SIZE) as pilot:
            mounted = len(whole_state_reads)
            timings = await _move_and_time(app, pilot, 5)
            await until(
                pilot,
                lambda: app._run_state() == ("succeeded", ""),
                300,
                f"the header to show all {n} steps succeeded",
            )
            assert len(whole_state_reads) == mounted  # not once more after the app started
            header = app.query_one("#header").render().plain
            assert f"succeeded · {n}/{n}" in header
            runner.snapshot = snapshot
            await until(
                pilot,
                lambda: all(
                    s["status"] == "succeeded" for s in read_state(runner.run_dir)["steps"].values()
                ),
                30,
                "state.json to show every step succeeded",
            )
            steps = read_state(runner.run_dir)["steps"]
            for name, step in steps.items():
                expected = (
                    f"{status_icon(step['status'])} {name} {format_duration(step['duration'])}"
                )
                assert tree_label(app, name) == expected
            print(f"\n{n} steps; 5 key presses during the run, max {max(timings) * 1000:.0f} ms")
    finally:
        runner.snapshot = snapshot
        close_runner(runner)
