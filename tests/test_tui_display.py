"""What the TUI draws, read back from its widgets around a real runner: the meter's scale, the
ctx inspector's numbers, the help at 80x24, the 80x24 layout and the footer on each screen.

Each test waits (polling with a deadline) for what a user would see, then reads the lines the
widget renders (``render_lines``: the strips the terminal gets), or the terminal's rows
(``screen_lines``: every screen drawn, a dialog over the steps).
"""

from __future__ import annotations

import os

import pytest
from rich.cells import cell_len
from textual.geometry import Region

from tests import tui_helpers
from tests.conftest import make_runner
from tests.tui_helpers import (
    SIZE,
    close_runner,
    footer_keys,
    footer_row,
    main_pane,
    screen_lines,
    selected,
    tree_label,
    until,
    until_status,
    write_module,
)

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


async def test_a_ctx_key_with_a_newline_or_of_300_characters_still_shows_its_value(orch, tmp_path):
    """Keys are any text a step chose. A key with a newline drew its first part alone (``├
    new``: the rest of the row, its value, lost below), and a 300-character key filled the
    row, its value past the pane's edge. Each is now one row: the newline shown as ``\\n``, a
    long key cut with an ellipsis before its value."""
    from tui.widgets import CtxInspector

    module = write_module(
        tmp_path,
        """
        def run(ctx):
            ctx["new\\nline"] = 6
            ctx["tab\\there"] = 7
            ctx["k" * 300] = 5
        """,
    )
    app, runner = orch(f"steps:\n  - {{name: fill, type: python, module: {module}}}\n")
    async with app.run_test(size=tui_helpers.SIZE) as pilot:
        await until_status(pilot, runner, "fill", "succeeded")
        inspector = app.query_one(CtxInspector)
        await until(pilot, lambda: len(inspector._key_nodes) == 3, what="the ctx keys")
        await pilot.pause()
        drawn = _drawn(inspector)
        assert "new\\nline: 6" in drawn, drawn
        assert "tab\\there: 7" in drawn, drawn
        long_row = next(line for line in drawn.splitlines() if "kkkk" in line)
        assert "…: 5" in long_row, long_row


# ------------------------------------------------------------------------------ 80x24
HELP_RECIPE = "steps:\n  - {name: build, type: shell, run: echo built}\n"


async def test_help_scrolls_to_its_last_key_at_80x24(orch):
    from tui.screens.help import HelpScreen

    app, runner = orch(HELP_RECIPE)
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "build", "succeeded")
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help")
        box = app.screen.query_one("#help-box")
        assert app.screen.region.contains_region(box.region)  # the box fits the screen
        assert box.max_scroll_y > 0  # what does not fit is below, to scroll to
        await pilot.press("end")
        await until(pilot, lambda: box.scroll_y == box.max_scroll_y, what="the help's end")
        body = app.screen.query_one("#help-body")  # the table of keys, down to "? this help"
        assert body.region.bottom <= box.scrollable_content_region.bottom  # its end in view


LONG_NAMES = """
steps:
  - name: serve-the-dashboard
    type: shell
    background: true
    run: echo serving; exec sleep 100
  - name: run-the-integration-tests
    type: shell
    depends_on: []
    run: echo testing; exec sleep 100
"""


async def test_the_first_frame_at_80x24_is_already_the_80x24_layout(orch):
    """The first frame drawn already has the 80x24 layout (no meter, no ctx): Textual sets the
    size classes as the screen takes its first Resize, after that frame, which showed the wide
    layout a moment and was restyled and drawn again as the first keys came."""
    from tui.widgets import CtxInspector, ResourceMeter

    app, runner = orch(LONG_NAMES)
    first: list[tuple[bool, bool]] = []  # the meter's and the ctx's display at the first frame
    display = app._display  # how the screen hands a frame to the terminal

    def frame(screen, renderable) -> None:
        if renderable is not None and not first:
            first.append(
                (screen.query_one(ResourceMeter).display, screen.query_one(CtxInspector).display)
            )
        display(screen, renderable)

    app._display = frame
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: first, what="a first frame")
        assert first == [(False, False)]


async def test_a_resize_to_the_size_the_app_has_lays_nothing_out_again(orch):
    """Terminals send Resizes of the size the app already has: two right after the first paint
    (the app's own and the driver's), tmux one on a client's attach. Textual laid the whole
    screen out and painted it again for each: 10-40 ms of the event loop in a big run, right
    where the first keys waited. Now they cost nothing; a real resize still lays it out."""
    from textual import events

    app, runner = orch(
        "steps:\n" + "".join(f"  - {{name: {n}, type: shell, run: echo {n}}}\n" for n in "ab")
    )
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: tree_label(app, "b").startswith("✓"), what="the run")
        await pilot.pause()
        screen, layouts = app.screen, []
        layout = screen._refresh_layout  # what each cost: the whole screen laid out

        def counted(size=None, scroll=False) -> None:
            layouts.append(size)
            layout(size, scroll)

        screen._refresh_layout = counted
        app.post_message(events.Resize(app.size, app.size))  # as the terminal's driver does
        await pilot.pause()
        await pilot.pause()
        assert layouts == []

        width, height = SIZE
        await pilot.resize_terminal(width + 20, height + 6)
        await until(pilot, lambda: len(screen_lines(app)) == height + 6, what="the new size")
        assert layouts
        assert any("✓ b" in line for line in screen_lines(app))


async def test_80x24_keeps_names_durations_and_bg_marks_and_stacks_a_pinned_log(orch):
    from tui.widgets import CtxInspector, LogPane, ResourceMeter, StepTree

    app, runner = orch(LONG_NAMES)
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "serve-the-dashboard", "ready")
        await until_status(pilot, runner, "run-the-integration-tests", "running")
        room = app.query_one(StepTree).scrollable_content_region.width
        for name in ("serve-the-dashboard", "run-the-integration-tests"):
            label = tree_label(app, name)
            assert cell_len(label) <= room, f"{label!r} cut to {room} columns"
        assert tree_label(app, "serve-the-dashboard").endswith(" 0.0s bg")
        # the meter and the ctx give their rows to the tree and the logs; c brings the ctx back
        assert not app.query_one(ResourceMeter).display
        ctx = app.query_one(CtxInspector)
        assert not ctx.display
        await pilot.press("c")
        await until(pilot, lambda: ctx.display and ctx.region.height > 0, what="the ctx shown")
        await pilot.press("c")

        await pilot.press("p")  # pin serve-the-dashboard's log; the main pane follows the tree
        pinned = app.query_one("#log-pinned", LogPane)
        await until(pilot, lambda: pinned.lines == ["serving"], what="the pinned log")
        await pilot.press("down")
        main = main_pane(app)
        await until(pilot, lambda: main.lines == ["testing"], what="the main log")
        assert pinned.region.x == main.region.x and pinned.region.width == main.region.width
        assert pinned.region.y >= main.region.bottom  # under the main pane, as wide


# ------------------------------------------------------------------------------ the footer
FAILED_AND_RUNNING = """
steps:
  - {name: broken, type: shell, run: echo about to fail; exit 3}
  - {name: sleeper, type: shell, cmd: sleep, args: ["100"], depends_on: []}
"""


async def test_the_help_and_the_quit_dialog_show_their_own_keys_not_the_steps_screen(orch):
    """Over the help and the quit dialog the footer says what their keys do (Escape closes the
    help; d, y, n answer the question), not the keys of the steps screen under them, which do
    nothing there."""
    from tui.screens.confirm_quit import ConfirmQuit
    from tui.screens.help import HelpScreen

    app, runner = orch(FAILED_AND_RUNNING, detachable=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "broken", "failed")
        await until_status(pilot, runner, "sleeper", "running")
        steps_footer = await footer_row(pilot)
        assert "Skip" in steps_footer and "Sessions" in steps_footer  # the steps screen's keys

        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help")
        row = await footer_row(pilot)
        assert "esc Close" in row
        for other in ("Skip", "Retry", "Sessions", "Quit", "Detach", "palette"):
            assert other not in row, f"{other!r} in the help's footer: {row!r}"
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="help closed")

        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmQuit), what="the question")
        row = await footer_row(pilot)
        for key in ("d Detach", "y Stop and quit", "n/esc Cancel"):
            assert key in row, f"{key!r} not in the quit dialog's footer: {row!r}"
        for other in ("Skip", "Retry", "Sessions", "Help", "palette"):
            assert other not in row, f"{other!r} in the quit dialog's footer: {row!r}"
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmQuit), what="no question")
        assert await footer_row(pilot) == steps_footer


async def _every_key_whole(pilot, keys: set[str]) -> None:
    """The footer offers ``keys`` (at least), and each key it shows is whole on the last row."""
    from textual.widgets._footer import FooterKey

    app = pilot.app
    await until(pilot, lambda: keys <= footer_keys(app), what=f"{keys} in the footer")
    row = await footer_row(pilot)
    for key in app.screen.query(FooterKey):
        shown = f"{key.key_display} {key.description}".strip()
        assert shown in row, f"{shown!r} cut from the footer at {app.size.width}: {row!r}"


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
async def test_every_key_the_footer_shows_fits_at_80_and_100_columns(orch, screendir, size):
    """The most keys the steps screen offers at once fit: a failed session step (skip, retry,
    attach) and the log pane focused during a search (follow, search, next match, wrap), with
    the app's own keys (quit, detach, help, pin, sessions). At 80 columns Textual's footer cut
    the last ones."""
    app, runner = orch(
        """
        steps:
          - {name: sess, type: session, action: send, session: orchtui-none, command: x}
        """,
        detachable=True,
    )
    async with app.run_test(size=size) as pilot:
        await until_status(pilot, runner, "sess", "failed")
        app_keys = {"q", "d", "question_mark", "p", "S"}
        await _every_key_whole(pilot, {"s", "r", "a", *app_keys})
        await pilot.press("tab")
        await _every_key_whole(pilot, {"end", "slash", "w", *app_keys})
        assert "n" not in footer_keys(app)  # no search: nothing to step through
        await pilot.press("slash", "x", "enter")
        await _every_key_whole(pilot, {"end", "slash", "n", "w", *app_keys})
        await pilot.press("shift+tab")  # the tree again: its keys and n, the search still on
        await _every_key_whole(pilot, {"s", "r", "a", "n", *app_keys})


# ------------------------------------------------------------------------------ the step tree
async def test_a_name_too_long_for_the_tree_is_cut_with_an_ellipsis_not_scrolled(orch):
    """At 80x24 a 120-character name is cut with … before its duration, in the tree's width:
    no horizontal scrollbar (it scrolled every row sideways, and cut the name without a mark)."""
    from tui.widgets import StepTree

    long = "build-" + "x" * 114
    app, runner = orch(
        f"""
        steps:
          - {{name: {long}, type: shell, run: echo hi}}
          - {{name: short, type: shell, run: echo hi}}
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "short", "succeeded")
        await pilot.pause()
        tree = app.query_one(StepTree)
        assert not tree.show_horizontal_scrollbar
        box = tree.region  # its rows, inside its border
        rows = [line[box.x : box.right].strip("│ ") for line in screen_lines(app)[2:4]]
        assert rows[0].startswith("✓ build-xxx") and rows[0].endswith("x… 0.0s"), rows[0]
        assert cell_len(rows[0]) <= tree.scrollable_content_region.width
        assert rows[1] == "✓ short 0.0s"


async def test_rows_that_change_out_of_view_show_their_new_state_when_scrolled_to(orch, tmp_path):
    """A run's rows change out of view without a repaint (Tree's repaint of a line left a dirty
    region per such row on the tree, thousands in a big run), and show their new state once
    scrolled to: here ``late`` ends while the tree shows the top, and is then seen ✓ at the end."""
    from tui.widgets import StepTree

    flag = tmp_path / "go"
    early = "\n".join(f"  - {{name: s{i}, type: shell, run: echo {i}}}" for i in range(60))
    app, runner = orch(
        f"steps:\n{early}\n  - name: late\n    type: shell\n"
        f"    run: while [ ! -f {flag} ]; do sleep 0.05; done\n"
    )
    async with app.run_test(size=SIZE) as pilot:
        tree = app.query_one(StepTree)
        await until_status(pilot, runner, "late", "running")
        await pilot.press("end")
        await until(pilot, lambda: any("▶ late" in line for line in screen_lines(app)))
        await pilot.press("home")
        await until(pilot, lambda: not any(" late" in line for line in screen_lines(app)))
        await until_status(pilot, runner, "s59", "succeeded")
        flag.touch()
        await until_status(pilot, runner, "late", "succeeded")
        await until(pilot, lambda: tree_label(app, "late").startswith("✓"), what="late's label")
        out_of_view = [
            r for r in tree._dirty_regions if not tree.outer_size.region.contains_region(r)
        ]
        assert not out_of_view
        await pilot.press("end")
        await until(pilot, lambda: any("✓ late" in line for line in screen_lines(app)))


async def test_a_name_too_long_for_the_log_title_is_whole_on_the_panes_top_rows(orch):
    """At 80x24 a long step name is cut in the tree and in the log pane's title (with how the
    step ended): the pane's top rows say both whole, and the log follows under them to its last
    line. A name the title holds takes no row."""
    long = "a_really_long_step_name_" * 3
    app, runner = orch(
        f"""
        steps:
          - {{name: {long}, type: shell, run: seq 1 50; exit 3}}
          - {{name: short, type: shell, run: echo hi, depends_on: []}}
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, long, "failed")
        await until_status(pilot, runner, "short", "succeeded")
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines and pane.lines[-1] == "50", what="the log")
        await pilot.pause()

        def rows() -> list[str]:
            """The pane's rows as drawn on screen, inside its border."""
            box = pane.scrollable_content_region
            return [line[box.x : box.right] for line in screen_lines(app)[box.y : box.bottom]]

        drawn = rows()
        rule = next((i for i, row in enumerate(drawn) if row.startswith("╌")), None)
        assert rule is not None, f"no rule under a head: {drawn[:3]}"
        head = "".join(drawn[:rule]).replace(" ", "")
        assert head == f"{long}·failed:exit3", drawn[: rule + 1]
        assert drawn[-1].strip() == "50" and drawn[rule + 1].strip() != "", drawn  # under it

        await pilot.press("down")  # short: its title holds its name, its log starts on top
        await until(pilot, lambda: pane.step == "short", what="short selected")
        await until(pilot, lambda: rows()[0].strip() == "hi", what="short's log on top")


async def test_a_head_that_comes_as_the_step_ends_keeps_the_logs_last_lines_in_view(orch, tmp_path):
    """A name the title holds while the step runs, but not once how it ended is beside it
    (`k`, a failure): the head's rows come then, and the following pane still shows the log's
    last line. They hid its last two lines, the pane saying "following", with no output left
    to come that would scroll it."""
    name = "a_step_name_of_twenty_six"
    flag = tmp_path / "fail-now"
    app, runner = orch(
        f"""
        steps:
          - name: {name}
            type: shell
            run: seq 1 50; while [ ! -e {flag} ]; do sleep 0.05; done; exit 3
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines and pane.lines[-1] == "50", what="the log")

        def last_row() -> str:
            box = pane.scrollable_content_region
            return screen_lines(app)[box.bottom - 1][box.x : box.right].strip()

        await until(pilot, lambda: last_row() == "50", what="50 on the pane's last row")
        assert not any(row.startswith("╌") for row in screen_lines(app)), "a head already"
        flag.touch()
        await until_status(pilot, runner, name, "failed")
        await until(
            pilot,
            lambda: any(f"{name}·failed" in row.replace(" ", "") for row in screen_lines(app)),
            what="the head with how it ended",
        )
        await pilot.pause()
        assert pane.follow and last_row() == "50", last_row()


# ------------------------------------------------------------------------------ the quit dialog
@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_the_quit_question_fits_without_wrapping_a_line(orch, size):
    """Each line of the question is whole on its row, at 80x24 and wider (its last line, the
    answers, wrapped at every width), and the box fits the screen."""
    from textual.widgets import Static

    from tui.screens.confirm_quit import ConfirmQuit

    app, runner = orch(FAILED_AND_RUNNING, detachable=True)
    async with app.run_test(size=size) as pilot:
        await until_status(pilot, runner, "sleeper", "running")
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmQuit), what="the question")
        await pilot.pause()
        box = app.screen.query_one("#quit-box")
        assert app.screen.region.contains_region(box.region)
        for text in box.query(Static):
            lines = str(text.render()).splitlines()
            assert text.size.height == len(lines), f"wrapped: {lines}"


async def test_the_quit_question_names_each_running_step_at_80x24(orch):
    """Two steps running, the first with a long name: the question's line names both, each
    cut with … (the first took the whole line: "2 steps still running:
    unit_tests_with_a_rather_long_na…", the second never said)."""
    from tui.screens.confirm_quit import ConfirmQuit

    first, second = "unit_tests_with_a_rather_long_name_for_the_tree", "integration_tests_too"
    app, runner = orch(
        f"""
        steps:
          - {{name: {first}, type: shell, depends_on: [], cmd: sleep, args: ["100"]}}
          - {{name: {second}, type: shell, depends_on: [], cmd: sleep, args: ["100"]}}
        """,
        detachable=True,
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, first, "running")
        await until_status(pilot, runner, second, "running")
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmQuit), what="the question")
        await pilot.pause()
        row = next(line for line in screen_lines(app) if "still running" in line)
        assert "unit_tests_with_a_r" in row and "integration_tests_t" in row, row
        await pilot.press("n")
        runner.stop_run(force=True)


async def test_the_sessions_screen_draws_its_keys_as_compact_as_the_steps_screen(orch, screendir):
    """The sessions screen (S) has the steps screen's footer: at 80 columns its keys drawn
    compact, each whole, and no palette key taking their room (Textual's footer there ended
    in ``^p palette`` past 80 columns of padded keys)."""
    from tui.screens.sessions import SessionsScreen

    app, runner = orch("steps:\n  - {name: one, type: shell, run: echo hi}\n")
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "one", "succeeded")
        await pilot.press("S")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen), what="sessions")
        await _every_key_whole(pilot, {"a", "escape", "f5", "q", "question_mark"})
        row = await footer_row(pilot)
        assert "palette" not in row
        assert "a Attach esc Back f5 Refresh" in row  # compact: one space between keys


async def test_the_sessions_screen_fits_80_columns_with_the_run_id_whole(
    orch, screendir, tmux_tmpdir
):
    """At 80x24 the run id was cut (the table ran past the screen's edge): now every row fits,
    the run id whole, and the cut goes to the longest free text, the session name, with an
    ellipsis. Wider, the name is whole again."""
    import uuid

    from tui.screens.sessions import SessionsScreen

    session = f"orchtui-a-long-session-name-{uuid.uuid4().hex[:8]}"
    app, runner = orch(
        f"steps:\n  - {{name: s, type: session, action: create, session: {session}}}\n"
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "s", "succeeded", timeout=20)
        await pilot.press("S")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen), what="sessions")

        def row() -> str | None:
            return next((line for line in screen_lines(app) if runner.run_id in line), None)

        line = await until(pilot, row, 15, "the session's row, its run id whole")
        assert line.rstrip().endswith(runner.run_id), line
        cut = next(word for word in line.split() if word.endswith("…"))
        assert session.startswith(cut[:-1]) and len(cut) > len("name"), line
        assert cell_len(line.rstrip()) <= 80
        table = app.screen.query_one("#sessions-table")
        assert table.virtual_size.width <= table.size.width  # no sideways scroll
        await pilot.resize_terminal(120, 24)
        await until(pilot, lambda: session in (row() or ""), what="the name whole at 120")


async def test_the_sessions_screen_says_the_selected_cut_name_whole(orch, screendir, tmux_tmpdir):
    """At 80x24, names that differ past the column's width were cut alike (``sess-4…`` for
    sess-40 to sess-49): the user could not tell which row to attach to. The line under the
    table says the selected row's name whole, and follows the cursor."""
    import uuid

    from tui.screens.sessions import SessionsScreen

    stem = "a-64-character-session-name-at-the-limit-of-names-"
    names = [f"{stem}{uuid.uuid4().hex[: 64 - len(stem) - 1]}{i}" for i in range(2)]
    steps = "".join(
        f"  - {{name: s{i}, type: session, action: create, session: {name}, depends_on: []}}\n"
        for i, name in enumerate(names)
    )
    app, runner = orch(f"steps:\n{steps}")
    async with app.run_test(size=(80, 24)) as pilot:
        for step in ("s0", "s1"):
            await until_status(pilot, runner, step, "succeeded", timeout=20)
        await pilot.press("S")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen), what="sessions")

        def rows() -> list[str] | None:
            found = [line for line in screen_lines(app) if runner.run_id in line]
            return found if len(found) == 2 else None

        shown = await until(pilot, rows, 15, "both rows")
        assert not any(name in row for row in shown for name in names), "the names cut"

        def note() -> str:
            return screen_lines(app)[-2]

        first = await until(pilot, lambda: next((n for n in names if n in note()), None), 5)
        await pilot.press("down")
        await until(pilot, lambda: next(n for n in names if n != first) in note(), 5, "follows")
        assert "2 sessions" in note() and cell_len(note().rstrip()) <= 80


# ------------------------------------------------------------------------------ the run's notes
async def test_what_the_run_said_before_the_app_attached_is_shown(tmp_path):
    """The app on a run daemon attaches once the run has started: what the runner said as it
    started (a `where: cluster` step running locally, the run a resume took its ctx from) was
    in the snapshot the app began from, not among the events it gets, and never shown."""
    from core.client import connect
    from core.control import LocalControl
    from core.server import RunServer
    from tui.app import make_app

    runner = make_runner(
        tmp_path,
        """
        steps:
          - {name: far, type: shell, where: cluster, cmd: sleep, args: ["100"]}
        """,
        interactive=True,
    )
    server = RunServer(LocalControl(runner), runner.rundir, run_id=runner.run_id)
    server.start()
    runner.start()
    control = connect(tmp_path / "run", client="tui")
    try:
        app = make_app(control, detachable=True)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(
                pilot,
                lambda: any("runs locally" in row for row in screen_lines(app)),
                what="the run's warning on screen",
            )
    finally:
        control.close()
        close_runner(runner)
        server.close(str(runner.status), runner.exit_code)
        runner.rundir.close()


async def test_a_run_that_said_many_things_shows_the_newest_few_and_a_count(tmp_path):
    """A past run (or a live one attached to) that kept many messages covered the panes with a
    toast for each, fifty at most: the newest three are shown, and how many came before and
    where to read them."""
    import json

    from core.recorded import RecordedRun
    from tests.conftest import only_run_dir, run_cli, write_recipe
    from tui.app import make_app

    recipe = write_recipe(tmp_path, "steps:\n  - {name: one, type: shell, run: 'true'}\n")
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 0
    run_dir = only_run_dir(tmp_path)
    state = json.loads((run_dir / "state.json").read_text())
    state["messages"] = [
        {"level": "warning", "text": f"said number {n}", "step": None, "ts": 1.0, "seq": n}
        for n in range(1, 11)
    ]
    (run_dir / "state.json").write_text(json.dumps(state))

    with RecordedRun.open(run_dir) as recorded:
        app = make_app(recorded)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(pilot, lambda: app._notifications, what="the toasts")
            await pilot.pause()
            shown = [n.message for n in app._notifications]
    assert shown == [
        f"7 earlier messages: orch-tui ctl {run_dir.name} events",
        "said number 8",
        "said number 9",
        "said number 10",
    ]


async def test_the_app_runs_with_no_color_set(orch, monkeypatch):
    """``NO_COLOR=1`` (a convention many users set in their shell) crashed the app at its
    first frame: an empty log pane's "no output yet" line was a segment without a style, on
    which Textual's monochrome filter failed (``'NoneType' object has no attribute 'color'``).
    With it set, the app draws, the empty pane says why, and the screens open."""
    monkeypatch.setenv("NO_COLOR", "1")
    app, runner = orch(
        """
        steps:
          - {name: quiet, type: shell, run: sleep 30}
          - {name: talks, type: shell, run: echo hello, depends_on: []}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "quiet", "running")
        await until(
            pilot, lambda: "waiting for output" in "\n".join(screen_lines(app)), what="hint"
        )
        for key in ("question_mark", "escape", "g", "escape", "c", "c"):
            await pilot.press(key)
            await pilot.pause()
        assert "quiet" in "\n".join(screen_lines(app))


async def test_the_header_keeps_the_runs_state_when_its_counts_fill_the_line():
    """The header cuts a recipe name too long for the line, never the run's state after it;
    but when the counts alone were as wide as the line (a 2,000-step run's four-digit counts
    of seven kinds at 80 columns), the name was not cut at all and the state fell off."""
    from textual.app import App

    from tui.widgets.run_header import RunHeader

    class HeaderApp(App[None]):
        def compose(self):
            yield RunHeader(id="header")

    app = HeaderApp()
    async with app.run_test(size=(80, 3)) as pilot:
        header = app.query_one(RunHeader)
        counts = {s: 1000 for s in ("failed", "timed_out", "blocked", "cancelled", "running")}
        header.show(
            recipe="a nightly pipeline whose recipe has a long and descriptive name",
            run_state="waiting",
            hint="r retries",
            counts={**counts, "succeeded": 1000},
            total=6000,
            elapsed=3725.0,
        )
        await pilot.pause()
        line = screen_lines(app)[0]
        assert "waiting" in line and "r retries" in line, line
