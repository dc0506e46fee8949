"""What the TUI draws, read back from its widgets around a real runner: the ctx inspector's
numbers.

Each test waits (polling with a deadline) for what a user would see, then reads it.
"""

from __future__ import annotations

from tests import tui_helpers
from tests.tui_helpers import until, until_status, write_module

# fixtures (plain assignments, so the test functions' arguments do not shadow an import)
orch = tui_helpers.orch
utc = tui_helpers.utc


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
