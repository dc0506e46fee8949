"""``g``: go to a step by a part of its name, in a big run, at 80x24.

A 2,000-step run had no way to a step by its name: up/down, Home/End and f/F only (``/``
searches the selected step's log). The app runs headless around a real runner (tests.tui_helpers)
and, for the run attached over its daemon, as the real ``orch-tui attach`` in tmux.
"""

from __future__ import annotations

from textual import events

from tests import tui_helpers
from tests.conftest import start_detached, wait_for, write_recipe
from tests.tui_helpers import TmuxApp, main_pane, screen_lines, selected, until, until_status

orch = tui_helpers.orch

KINDS = ("fetch", "build", "test", "deploy", "lint")
COUNT = 2000


def _name(i: int) -> str:
    return f"{KINDS[i % len(KINDS)]}_{i:04d}"


def big_recipe(count: int = COUNT) -> str:
    """``gate`` fails at once; every other step waits for it (blocked): 2,000 rows, none run."""
    rows = [f"  - {{name: {_name(i)}, type: shell, run: 'true', depends_on: [gate]}}"
            for i in range(1, count)]  # fmt: skip
    return "steps:\n  - {name: gate, type: shell, run: 'echo gated; exit 3'}\n" + "\n".join(rows)


def _prompt(app):
    from tui.screens.goto import GotoPrompt

    screen = app.screen
    return screen if isinstance(screen, GotoPrompt) else None


def _border(app) -> str:
    """What the prompt's border says, as plain text."""
    from rich.text import Text

    return Text.from_markup(str(app.screen.query_one("#goto-input").border_subtitle)).plain


async def _type(pilot, text: str) -> None:
    await pilot.press(*text)


def _burst(app, text: str) -> None:
    """Keys as the terminal delivers a burst of them: all queued before the app handles one."""
    for char in text:
        event = events.Key(char, char)
        event.set_sender(app)
        app._driver.send_message(event)


def _row_shown(app, name: str) -> bool:
    """The step's row is on the terminal in the tree, above the prompt (not under it)."""
    lines = screen_lines(app)
    prompt_top = next((i for i, line in enumerate(lines) if "go to step" in line), len(lines))
    return any(f" {name} " in line.split("││")[0] for line in lines[2:prompt_top])  # the tree


async def test_g_goes_to_a_step_by_a_part_of_its_name_in_a_2000_step_run_at_80x24(orch):
    app, runner = orch(big_recipe())
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await until_status(pilot, runner, "gate", "failed")
        tree = app.query_one("#steps")
        pane = main_pane(app)
        assert selected(app) == "gate"

        await pilot.press("g")
        await until(pilot, lambda: _prompt(app), what="the prompt")
        await _type(pilot, "DEPLOY_14")  # any case; the first match from the selected step
        await until(pilot, lambda: selected(app) == "deploy_1403", what="deploy_1403")
        assert _border(app) == "1/20"
        # the tree and the log follow as the user types, the row in view above the prompt
        await until(pilot, lambda: pane.step == "deploy_1403", what="its log, the prompt open")
        assert _prompt(app) and _row_shown(app, "deploy_1403")

        for key, wanted, count in (
            ("down", "deploy_1408", "2/20"),
            ("up", "deploy_1403", "1/20"),
            ("up", "deploy_1498", "20/20"),  # around: the last match
            ("down", "deploy_1403", "1/20"),
        ):
            await pilot.press(key)
            await until(pilot, lambda w=wanted: selected(app) == w, what=f"{key} to {wanted}")
            assert _border(app) == count and _row_shown(app, wanted)

        await pilot.press("enter")  # kept; the focus is the tree's again
        await until(pilot, lambda: not _prompt(app), what="the prompt to close")
        assert selected(app) == "deploy_1403" and app.focused is tree
        await until(pilot, lambda: pane.step == "deploy_1403")

        await pilot.press("g")  # again: it holds the text; Enter goes on to the next match
        await until(pilot, lambda: _prompt(app), what="the prompt")
        assert app.screen.query_one("#goto-input").value == "DEPLOY_14"
        await pilot.press("enter")
        await until(pilot, lambda: selected(app) == "deploy_1408" and not _prompt(app))

        await pilot.press("g")  # typing replaces the text it holds; Escape goes back
        await until(pilot, lambda: _prompt(app), what="the prompt")
        await _type(pilot, "lint_19")
        await until(pilot, lambda: selected(app) == "lint_1904", what="lint_1904")
        await pilot.press("escape")
        await until(pilot, lambda: not _prompt(app) and selected(app) == "deploy_1408")
        await until(pilot, lambda: pane.step == "deploy_1408", what="its log back")

        await pilot.press("g")  # no match: nothing moves, and it says so
        await until(pilot, lambda: _prompt(app), what="the prompt")
        await _type(pilot, "xyz")
        await until(pilot, lambda: "no step name contains 'xyz'" in _border(app))
        assert selected(app) == "deploy_1408"
        await pilot.press("enter")
        await until(pilot, lambda: not _prompt(app) and app._notifications, what="a notice")
        assert [n.message for n in app._notifications] == ["no step name contains 'xyz'"]
        assert selected(app) == "deploy_1408"

        await pilot.press("g")  # around the tree from the selected step: the first one
        await until(pilot, lambda: _prompt(app), what="the prompt")
        assert _border(app) == "no step name contains 'xyz'"  # the text kept, found nowhere
        await _type(pilot, "gat")
        await until(pilot, lambda: selected(app) == "gate", what="around to gate")
        await pilot.press("enter")


async def test_keys_typed_right_behind_g_reach_its_prompt(orch):
    """``g`` and a name typed in one burst (or while the app is busy): the keys queued behind
    ``g`` went to the tree, which had the focus as they were queued: the prompt got none."""
    app, runner = orch(big_recipe(200))
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "gate", "failed")
        _burst(app, "gtest_0142")
        await until(pilot, lambda: selected(app) == "test_0142", what="test_0142")
        assert app.screen.query_one("#goto-input").value == "test_0142"


async def test_g_from_the_log_pane_keeps_the_focus_there(orch):
    app, runner = orch(big_recipe(20))
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "gate", "failed")
        pane = main_pane(app)
        await pilot.press("tab")
        assert app.focused is pane
        await pilot.press("g")
        await until(pilot, lambda: _prompt(app), what="the prompt")
        await _type(pilot, "lint_0014")
        await pilot.press("enter")
        await until(pilot, lambda: not _prompt(app) and pane.step == "lint_0014")
        assert app.focused is pane


def test_g_in_a_2000_step_run_attached_over_its_daemon(tmp_path, daemons, tmux_socket):
    """The real ``orch-tui attach`` at 80x24 (the app a client of the run's daemon): ``g`` and
    a name, typed in one burst, select the step and show its log."""
    daemon = start_detached(write_recipe(tmp_path, big_recipe()), cwd=tmp_path)
    daemons.append(daemon)
    app = TmuxApp(tmux_socket, ["attach"], tmp_path)
    app.shows("✗ gate", "gated")
    app.keys("g", *"build_1996")
    screen = app.shows("go to step", "1/1", "build_1996 ─")  # the log pane's title
    assert "✗ gate" not in screen  # the tree scrolled to it
    app.keys("Enter")
    wait_for(lambda: "go to step" not in app.screen(), 10, "the prompt to close")
    assert "build_1996 ─" in app.screen()
    app.keys("d")
    wait_for(lambda: not app.running(), 10, "the app to leave on d")
