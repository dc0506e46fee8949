"""The keys that change what the screen shows, not the run (README, "The screen"): ``c`` hides
and shows the ctx, ``n``/``N`` step through a log search's matches. A real runner in the real
app (``app.run_test``); every wait is a poll with a deadline."""

from __future__ import annotations

from tests import tui_helpers
from tests.tui_helpers import SIZE, main_pane, screen_lines, until, until_status

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


def _shown(pane) -> list[str]:
    """The pane's rows as drawn now, trailing blanks dropped."""
    return [pane.render_line(y).text.rstrip() for y in range(pane.scrollable_content_region.height)]


def _footer_keys(app) -> set[str]:
    """The keys the footer offers now."""
    return {
        binding.key
        for _, binding, enabled, _ in app.screen.active_bindings.values()
        if binding.show and enabled
    }


async def test_w_wraps_long_lines_the_border_saying_when_they_are_cut(orch):
    """A line wider than the pane is cut at its edge; the border says so and how to see it
    whole. ``w`` (from the tree or the pane) wraps the lines, and again cuts them, the line
    on top staying on top."""
    long = "long " + "x" * 150 + " END"
    app, runner = orch(
        f"""
        steps:
          - name: log
            type: shell
            run: |
              for i in $(seq 1 60); do echo "line $i"; done
              echo '{long}'
              echo last
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "log", "succeeded")
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines[-1:] == ["last"], what="the whole log")
        width = pane.scrollable_content_region.width
        await until(pilot, lambda: _shown(pane)[-1] == "last", what="the end shown")
        assert long[:width] in _shown(pane) and "END" not in "".join(_shown(pane))
        assert str(pane.border_subtitle) == "following · w wraps"

        await pilot.press("w")  # the tree has the focus: w reaches the log all the same
        await until(pilot, lambda: pane.wrap, what="the lines wrapped")
        rows = _shown(pane)
        assert rows[-1] == "last"
        first = next(i for i, row in enumerate(rows) if row.startswith("long "))
        assert len(rows) - first > 3  # it takes rows...
        assert "".join(rows[first:-1]) == long  # ...the whole of it, row after row
        assert str(pane.border_subtitle) == "following · wrapped"
        assert pane.max_scroll_x == 0  # nothing to scroll sideways

        await pilot.press("tab")
        assert app.focused is pane
        assert {"w", "end", "slash"} <= _footer_keys(app) and "n" not in _footer_keys(app)
        await pilot.press("home")
        await until(pilot, lambda: _shown(pane)[0] == "line 1", what="the top")
        await pilot.press("pagedown")
        await until(pilot, lambda: _shown(pane)[0] != "line 1", what="a page down")
        top = _shown(pane)[0]
        await pilot.press("w")
        await until(pilot, lambda: not pane.wrap, what="the lines cut again")
        await until(pilot, lambda: _shown(pane)[0] == top, what="the same line on top")
        assert str(pane.border_subtitle) == "paused · End to follow · w wraps"


async def test_w_wraps_wide_characters_whole_at_the_rows_edges(orch):
    """A wide (CJK) character that would cross a wrapped row's edge starts the next row: cut
    in two it was drawn as two blanks, and lost. One line or the other breaks mid-character,
    whatever the pane's width (their wide characters start one cell apart). An emoji with a
    variation selector is one character of two cells as Rich draws it, though its two code
    points measured one: rows counted that way lost the line's end."""
    cjk = "".join(chr(0x4E00 + i) for i in range(60))
    lines = [f"a{cjk}END", f"ab{cjk}END", f"h{'❤️' * 40}END"]
    app, runner = orch(
        f"""
        steps:
          - name: log
            type: shell
            run: printf '%s\\n' {" ".join(lines)}
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "log", "succeeded")
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines == lines, what="the whole log")
        await pilot.press("w")
        await until(pilot, lambda: pane.wrap, what="the lines wrapped")
        rows = _shown(pane)
        for line in lines:
            first = next(i for i, row in enumerate(rows) if row.startswith(line[:2]))
            last = next(i for i, row in enumerate(rows) if i >= first and row.endswith("END"))
            assert "".join(rows[first : last + 1]) == line


async def test_a_following_pane_keeps_its_last_line_above_the_sideways_scrollbar(orch):
    """The first line wider than the pane brings the sideways scrollbar, on the pane's bottom
    row, when the screen next lays it out. Under load that came after the pane had scrolled to
    its end, and the step's last line stayed hidden under the scrollbar. ``batch_update``
    holds the layout back while the pane loads and scrolls: the same order, every time."""
    app, runner = orch(
        """
        steps:
          - name: log
            type: shell
            run: for i in $(seq 1 60); do echo "line $i"; done
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "log", "succeeded")
        pane = main_pane(app)
        await until(pilot, lambda: _shown(pane)[-1:] == ["line 60"], what="the end shown")
        with pane.path.open("a") as log:
            log.write("long " + "x" * 150 + " END\nlast\n")
        with app.batch_update():
            pane.poll()
            await pilot.pause()  # the pane scrolled to its end, the scrollbar not yet shown
        await until(pilot, lambda: pane.show_horizontal_scrollbar, what="the scrollbar")
        await pilot.pause()
        assert _shown(pane)[-1] == "last" and pane.follow


async def test_the_w_hint_survives_a_narrow_border_with_a_long_log(orch):
    """At 80 columns the log pane's border holds ~45 cells. With a log too long to load
    whole (its earlier lines said), following or paused, the w hint is drawn whole: the footer
    does not show w while the tree has the focus (where the app opens)."""
    app, runner = orch(
        """
        steps:
          - name: log
            type: shell
            run: |
              seq 1 2000000
              echo "long $(printf 'x%.0s' $(seq 1 150)) END"
              echo last
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "log", "succeeded", timeout=30)
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines[-1:] == ["last"], what="the whole log")

        def border() -> str:
            return _bottom_border(app, pane)

        await until(pilot, lambda: "following" in border(), what="the border drawn")
        assert "following · w wraps · earlier lines on disk" in border()  # whole, uncut
        await pilot.press("tab", "pageup")
        await until(pilot, lambda: "paused" in border(), what="paused")
        assert "End to follow" in border() and "w wraps" in border()


def _bottom_border(app, pane) -> str:
    """The pane's bottom border, as drawn."""
    region = pane.region
    return screen_lines(app)[region.bottom - 1][region.x : region.right]


async def test_the_log_border_says_whole_words_beside_a_wide_tree_at_80x24(orch):
    """A step name of 22 characters widens the tree at 80 columns: the log pane's border
    holds 37 cells. It read "following · w wraps · earlier lines …" (and, paused, "paused ·
    End to follow · w wraps · e…"): now it says it shorter, or leaves out the least useful
    part, and every word is whole."""
    app, runner = orch(
        """
        steps:
          - name: the_step_with_the_logs
            type: shell
            run: |
              seq 1 200000
              echo "long $(printf 'x%.0s' $(seq 1 150)) END"
              echo last
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "the_step_with_the_logs", "succeeded", timeout=30)
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines[-1:] == ["last"], what="the whole log")

        def border() -> str:
            return _bottom_border(app, pane).strip("╰─╯ ")  # without its line and corners

        await until(pilot, lambda: "following" in border(), what="the border drawn")
        assert pane.outer_size.width == 43
        assert border() == "following · w wraps · earlier on disk"
        await pilot.press("tab", "pageup")
        await until(pilot, lambda: "paused" in border(), what="paused")
        assert border() == "paused · End to follow · w wraps"
