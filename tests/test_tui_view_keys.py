"""The keys that change what the screen shows, not the run (README, "The screen"): ``c`` hides
and shows the ctx, ``n``/``N`` step through a log search's matches. A real runner in the real
app (``app.run_test``); every wait is a poll with a deadline."""

from __future__ import annotations

from tests import tui_helpers
from tests.tui_helpers import SIZE, main_pane, until, until_status

# fixtures (plain assignments, so the test functions' arguments do not shadow an import)
orch = tui_helpers.orch


async def test_c_hides_the_ctx_and_shows_it_again(orch):
    from tui.widgets import CtxInspector

    app, runner = orch(
        """
        ctx: {greeting: hello}
        steps:
          - {name: one, type: shell, run: echo one}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "one", "succeeded")
        ctx, pane = app.query_one(CtxInspector), main_pane(app)
        await until(pilot, lambda: ctx.region.height > 0, what="the ctx on screen")
        shown_height = pane.size.height

        await pilot.press("c")
        await until(pilot, lambda: ctx.region.height == 0, what="the ctx hidden")
        await until(pilot, lambda: pane.size.height > shown_height, what="the log taking its room")

        await pilot.press("c")
        await until(pilot, lambda: ctx.region.height > 0, what="the ctx shown again")
        await until(pilot, lambda: pane.size.height == shown_height, what="the log as before")


async def test_n_and_shift_n_step_through_the_matches_of_a_search(orch):
    from tui.screens.search import SearchPrompt

    app, runner = orch(
        """
        steps:
          - name: log
            type: shell
            run: printf 'a\\nhit 1\\nb\\nhit 2\\nc\\nhit 3\\nd\\n'
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "log", "succeeded")
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines[-1:] == ["d"], what="the whole log")
        await pilot.press("tab")
        assert app.focused is pane

        def matched() -> str | None:
            return pane.lines[pane._match] if pane._match is not None else None

        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.screen, SearchPrompt), what="the prompt")
        await pilot.press("h", "i", "t", "enter")
        await until(pilot, lambda: matched() == "hit 3", what="the last match first")
        # the search paused following, and says so (issue 10, item 7)
        assert str(pane.border_subtitle) == "/hit: 3 in view · paused · End to follow"
        # n goes up the log (towards older lines), N back down; each stops at the last match
        for key, expected in [
            ("n", "hit 2"),
            ("n", "hit 1"),
            ("n", "hit 1"),
            ("N", "hit 2"),
            ("N", "hit 3"),
            ("N", "hit 3"),
            ("n", "hit 2"),  # each step follows from where the one before stopped
        ]:
            await pilot.press(key)
            await until(pilot, lambda e=expected: matched() == e, what=f"{key} -> {expected}")

        await pilot.press("escape")  # clears the search
        await until(pilot, lambda: pane._match is None, what="the search cleared")
        assert "/hit" not in str(pane.border_subtitle)
