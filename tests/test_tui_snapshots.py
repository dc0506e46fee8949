"""SVG snapshots of the TUI (pytest-textual-snapshot), around a real runner and real steps.

What makes them repeatable:

- the runner and the app share a fixed clock, so every duration and the elapsed time read 0.0s;
- resources come from a ``FixedSampler`` sampled once (``resource_interval=3600``): the first
  sample is taken on the runner's first tick, while the recipe's first step (``checkout``) still
  waits for a ``go`` file that ``run_before`` writes only once that sample has reached the app.
  So the steps the snapshots select were never running when the sample was taken, and their
  meter reads "idle" every time, whatever the machine's speed;
- every log holds fixed text, and ``run_before`` waits until the runner and the app both show the
  expected statuses and the log pane its expected lines;
- animations are off; a snapshot that shows a time hint of the ctx inspector runs in UTC.

Regenerate with ``pytest tests/test_tui_snapshots.py --snapshot-update`` and look at the SVGs in
``tests/__snapshots__/test_tui_snapshots/`` before committing them.
"""

from __future__ import annotations

from pathlib import Path

from tests import tui_helpers
from tests.tui_helpers import (
    SIZE,
    main_pane,
    selected,
    until,
    until_status,
    write_module,
)

# fixtures (plain assignments, so the test functions' arguments do not shadow an import)
orch = tui_helpers.orch
utc = tui_helpers.utc

GATE = """
  - name: checkout
    type: shell
    run: |
      while [ ! -f go ]; do sleep 0.02; done
      echo "checked out rev 3f2a9c1 (main)"
"""


def _recipe(name: str, steps: str) -> str:
    return f"name: '{name}'\nsteps:{GATE}{steps}"


async def _open_gate(pilot, tmp_path: Path) -> None:
    """Wait for the one resource sample to reach the meter, then let the steps go."""
    from tui.widgets import ResourceMeter

    pilot.app.animation_level = "none"
    meter = pilot.app.query_one(ResourceMeter)
    await until(pilot, lambda: meter._last, what="the resource sample")
    (tmp_path / "go").write_text("")


async def _select(pilot, name: str, lines: list[str]) -> None:
    app = pilot.app
    while selected(app) != name:
        await pilot.press("down")
    pane = main_pane(app)
    await until(pilot, lambda: pane.step == name and pane.lines == lines, what=f"{name}'s log")


RUNNING = _recipe(
    "snapshot: running",
    """
  - name: serve-dashboard
    type: shell
    background: true
    run: |
      echo "serving on http://127.0.0.1:8000"
      exec sleep 100
  - name: integration-tests
    type: shell
    depends_on: [checkout]
    run: |
      echo "collected 12 items"
      echo "tests/test_api.py ....."
      exec sleep 100
  - name: publish-report
    type: shell
    run: echo "report written"
""",
)
SERVE_LOG = ["serving on http://127.0.0.1:8000"]
TESTS_LOG = ["collected 12 items", "tests/test_api.py ....."]


async def _running_state(pilot, tmp_path: Path) -> None:
    run = pilot.app.control
    await _open_gate(pilot, tmp_path)
    await until_status(pilot, run, "checkout", "succeeded")
    await until_status(pilot, run, "serve-dashboard", "ready")
    await until_status(pilot, run, "integration-tests", "running")
    await until_status(pilot, run, "publish-report", "pending")
    await _select(pilot, "integration-tests", TESTS_LOG)


def test_running_state(orch, tmp_path, snap_compare):
    app, runner = orch(RUNNING)
    assert snap_compare(
        app, terminal_size=SIZE, run_before=lambda pilot: _running_state(pilot, tmp_path)
    )


def test_running_state_80x24(orch, tmp_path, snap_compare):
    """80x24: the tree keeps names, durations and the bg mark; the meter and the ctx give way;
    a pinned log goes under the main one."""
    app, runner = orch(RUNNING)

    async def run_before(pilot) -> None:
        from tui.widgets import LogPane

        await _running_state(pilot, tmp_path)
        while selected(pilot.app) != "serve-dashboard":
            await pilot.press("up")
        await pilot.press("p")
        pinned = pilot.app.query_one("#log-pinned", LogPane)
        await until(pilot, lambda: pinned.lines == SERVE_LOG, what="the pinned log")
        await _select(pilot, "integration-tests", TESTS_LOG)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_failed_step_selected_with_its_log(orch, tmp_path, snap_compare):
    app, runner = orch(
        _recipe(
            "snapshot: failed",
            """
  - name: build
    type: shell
    run: |
      echo "compiling src/main.c"
      echo "src/main.c:3:10: fatal error: config.h: No such file or directory" >&2
      exit 2
  - name: package
    type: shell
    run: echo "packaged"
  - name: lint
    type: shell
    depends_on: [checkout]
    run: echo "lint found 0 problems"
""",
        )
    )

    async def run_before(pilot) -> None:
        await _open_gate(pilot, tmp_path)
        await until_status(pilot, runner, "build", "failed")
        await until_status(pilot, runner, "package", "blocked")
        await until_status(pilot, runner, "lint", "succeeded")
        await _select(
            pilot,
            "build",
            [
                "compiling src/main.c",
                "src/main.c:3:10: fatal error: config.h: No such file or directory",
            ],
        )

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


WIDE_LOG = [
    "tests/test_api.py::test_upload FAILED",
    "E   AssertionError: expected status 201 from POST /api/v1/uploads/reports"
    "/2024/q3/summary.json, got 413 (Payload Too Large: limit 1048576 bytes)",
    "1 failed, 11 passed",
]


def test_long_lines_wrapped_80x24(orch, tmp_path, snap_compare):
    """w on the log pane: a line wider than the pane wraps onto the rows under it, and the
    border says the lines are wrapped."""
    lines = "\n".join(f"      echo '{line}'" for line in WIDE_LOG)
    app, runner = orch(
        _recipe("snapshot: wrapped", f"\n  - name: tests\n    type: shell\n    run: |\n{lines}\n")
    )

    async def run_before(pilot) -> None:
        await _open_gate(pilot, tmp_path)
        await until_status(pilot, runner, "tests", "succeeded")
        await _select(pilot, "tests", WIDE_LOG)
        pane = main_pane(pilot.app)
        await until(pilot, lambda: "w wraps" in str(pane.border_subtitle), what="the hint")
        await pilot.press("w")
        await until(pilot, lambda: str(pane.border_subtitle).endswith("wrapped"), what="wrap")

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def _ctx_app(orch, tmp_path: Path):
    module = write_module(
        tmp_path,
        """
        def run(ctx):
            ctx["service"] = {"host": "127.0.0.1", "port": 8000}
            ctx["greeting"] = "hello"
            ctx["ratio"] = 0.25
            ctx["updated"] = 1795980000.5
            for i in range(500):
                ctx.append("rows", [i, i * i])
            print("filled 500 rows")
        """,
    )
    app, _runner = orch(
        _recipe(
            "snapshot: ctx",
            f"""
  - name: fill
    type: python
    module: {module}
""",
        )
    )
    return app


async def _ctx_filled(pilot, tmp_path: Path):
    """The ctx inspector with every key shown and ``rows`` expanded."""
    from tui.widgets import CtxInspector

    await _open_gate(pilot, tmp_path)
    await until_status(pilot, pilot.app.control, "fill", "succeeded")
    await _select(pilot, "fill", ["filled 500 rows"])
    inspector = pilot.app.query_one(CtxInspector)
    await until(
        pilot,
        lambda: (
            "rows" in inspector._key_nodes
            and str(inspector._key_nodes["rows"].label) == "rows [500]"
        ),
        what="rows [500] in the inspector",
    )
    inspector._key_nodes["rows"].expand()
    await pilot.pause()
    return inspector


def test_ctx_inspector_keys(orch, tmp_path, snap_compare, utc):
    """Scalars as JSON prints them, an epoch time with its (UTC here) time, a long list's
    length and how many of its rows are left out."""
    app = _ctx_app(orch, tmp_path)
    assert snap_compare(
        app, terminal_size=SIZE, run_before=lambda pilot: _ctx_filled(pilot, tmp_path)
    )


def test_ctx_inspector_with_a_long_list(orch, tmp_path, snap_compare, utc):
    """The same inspector scrolled to the end: the list's last rows."""
    app = _ctx_app(orch, tmp_path)

    async def run_before(pilot) -> None:
        inspector = await _ctx_filled(pilot, tmp_path)
        last = inspector._key_nodes["rows"].children[-1]
        inspector.focus()
        inspector.move_cursor(last)  # as End would: the last row comes into view
        await until(
            pilot,
            lambda: inspector.scroll_y <= last.line < inspector.scroll_y + inspector.size.height,
            what="the last row on screen",
        )
        assert str(last.label) == "[499]: [499, 249001]"

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def _help_recipe():
    return _recipe(
        "snapshot: help",
        """
  - name: build
    type: shell
    run: echo "built"
""",
    )


async def _open_help(pilot, tmp_path: Path) -> None:
    from tui.screens.help import HelpScreen

    await _open_gate(pilot, tmp_path)
    await until_status(pilot, pilot.app.control, "build", "succeeded")
    await _select(pilot, "build", ["built"])
    await pilot.press("question_mark")
    await until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen), what="help")


def test_help_screen(orch, tmp_path, snap_compare):
    app, runner = orch(_help_recipe())
    assert snap_compare(
        app, terminal_size=SIZE, run_before=lambda pilot: _open_help(pilot, tmp_path)
    )


def test_help_screen_80x24_scrolled_to_the_end(orch, tmp_path, snap_compare):
    app, runner = orch(_help_recipe())

    async def run_before(pilot) -> None:
        await _open_help(pilot, tmp_path)
        box = pilot.app.screen.query_one("#help-box")
        await pilot.press("end")
        await until(
            pilot, lambda: box.max_scroll_y > 0 and box.scroll_y == box.max_scroll_y, what="end"
        )

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_quit_question_80x24(orch, tmp_path, snap_compare):
    """The question asked by q while steps run: every line whole, its own keys in the footer."""
    app, runner = orch(RUNNING)

    async def run_before(pilot) -> None:
        from tui.screens.confirm_quit import ConfirmQuit

        await _running_state(pilot, tmp_path)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmQuit), what="question")

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
