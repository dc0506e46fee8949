"""What the TUI draws, read back from its widgets around a real runner: the meter's scale and
the ctx inspector's numbers.

Each test waits (polling with a deadline) for what a user would see, then reads the lines the
widget renders (``render_lines``: the strips the terminal gets).
"""

from __future__ import annotations

import os

from textual.geometry import Region

from tests import tui_helpers
from tests.tui_helpers import selected, until, until_status, write_module

# fixtures (plain assignments, so the test functions' arguments do not shadow an import)
orch = tui_helpers.orch
utc = tui_helpers.utc


def _drawn(widget) -> str:
    """The text the widget draws now, its lines joined by newlines."""
    width, height = widget.size
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, width, height)))


async def _select(pilot, name: str) -> None:
    names = list(pilot.app.query_one("#steps")._step_nodes)
    while selected(pilot.app) != name:
        key = "down" if names.index(selected(pilot.app)) < names.index(name) else "up"
        await pilot.press(key)


# ------------------------------------------------------------------------------ resource meter
async def test_meter_bars_are_shares_of_the_machine_not_of_their_own_range(orch):
    """3 % CPU and memory draw the lowest bar; a step using every core a full block; a step that
    never ran draws nothing and reads idle."""
    from core.resources import FixedSampler
    from tui.widgets import ResourceMeter

    every_core = 100.0 * (os.cpu_count() or 1)
    sampler = FixedSampler(
        cpu_percent=3.0, mem_percent=3.0, per_step={"spin": {"cpu": every_core, "rss": 2**20}}
    )
    app, runner = orch(
        """
        steps:
          - {name: spin, type: shell, cmd: sleep, args: ["100"]}
          - {name: later, type: shell, run: "true"}
        """,
        sampler=sampler,
        resource_interval=0.05,
    )
    async with app.run_test(size=tui_helpers.SIZE) as pilot:
        await until_status(pilot, runner, "spin", "running")
        meter = app.query_one(ResourceMeter)
        await until(
            pilot,
            lambda: len(meter._step_cpu.get("spin", ())) >= 3,
            what="three samples of spin",
        )
        cpu, mem, step = (meter.query_one(f"#{row}-spark") for row in ("cpu", "mem", "step"))
        for row in (cpu, mem):
            drawn = _drawn(row)
            assert set(drawn) <= {"▁", " "} and "▁" in drawn, f"3 % drawn as {drawn!r}"
        assert selected(app) == "spin"
        await until(pilot, lambda: "█" in _drawn(step), what="spin's bars")
        assert set(_drawn(step).strip()) == {"█"}

        await _select(pilot, "later")
        await until(pilot, lambda: meter.step == "later", what="the meter on later")
        assert _drawn(step).strip() == ""
        assert _drawn(meter.query_one("#step-value")).strip() == "idle"


# ------------------------------------------------------------------------------ ctx numbers
async def test_ctx_numbers_keep_every_digit_and_epoch_times_show_their_date(orch, tmp_path, utc):
    from tui.widgets import CtxInspector

    module = write_module(
        tmp_path,
        """
        def run(ctx):
            ctx["updated"] = 1795980000.5
            ctx["bytes"] = 123456789012345
            ctx["ratio"] = 0.1234567890123
            for i in range(30):
                ctx.append("samples", [1795980000.0 + i, i / 4])
        """,
    )
    app, runner = orch(f"steps:\n  - {{name: fill, type: python, module: {module}}}\n")
    async with app.run_test(size=tui_helpers.SIZE) as pilot:
        await until_status(pilot, runner, "fill", "succeeded")
        inspector = app.query_one(CtxInspector)
        nodes = inspector._key_nodes
        await until(pilot, lambda: "samples" in nodes, what="the ctx keys")
        assert str(nodes["updated"].label) == "updated: 1795980000.5  (2026-11-29 19:20:00)"
        assert str(nodes["bytes"].label) == "bytes: 123456789012345"  # beyond 2100: no date
        assert str(nodes["ratio"].label) == "ratio: 0.1234567890123"
        rows = nodes["samples"].children
        assert str(rows[-1].label) == "[29]: [1795980029.0 (2026-11-29 19:20:29), 7.25]"
