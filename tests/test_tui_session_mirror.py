"""The session mirror: selecting a screen or tmux session in the tree shows its window now.

Real sessions (a private SCREENDIR, a private tmux ``-L`` socket) created by a real run in the
real app; text is typed into them from outside, as a user attached elsewhere would, and each test
waits (a deadline, never a bare sleep) for what the user would see in the pane.
"""

from __future__ import annotations

import uuid

from rich.color import Color

from tests import tui_helpers
from tests.conftest import end_run, needs_screen, needs_tmux, only_run_dir, write_recipe
from tests.tui_helpers import TmuxApp, main_pane, select_session, until, until_status

orch = tui_helpers.orch  # a fixture (a plain assignment: the tests' arguments do not shadow it)


def _mirror(app):
    from tui.widgets import SessionMirror

    return app.query_one(SessionMirror)


def _shown_rows(widget) -> list[str]:
    """The rows the widget draws now (what the terminal shows inside its border)."""
    return [widget.render_line(y).text for y in range(widget.scrollable_content_region.height)]


def _recipe(session: str, *extra: str) -> str:
    fields = ", ".join([f"session: {session}", "log: true", *extra])
    return f"""
        steps:
          - {{name: sess, type: session, action: create, {fields}}}
        """


async def _open_session(pilot, runner, session: str):
    """Wait for the session step, select the session's node; the mirror, shown."""
    await until_status(pilot, runner, "sess", "succeeded", timeout=20)
    mirror = _mirror(pilot.app)
    assert not mirror.display, "a step is selected: no mirror"
    await select_session(pilot, session)
    await until(pilot, lambda: mirror.display and mirror.polling, what="the mirror shown")
    return mirror


@needs_screen
async def test_the_mirror_shows_a_screen_session_now_above_its_log(orch, screendir):
    from core.sessions import get_backend

    session = f"orchtui-m-{uuid.uuid4().hex[:8]}"
    app, runner = orch(_recipe(session))
    async with app.run_test(size=(220, 60)) as pilot:
        mirror = await _open_session(pilot, runner, session)
        get_backend("screen").send(session, "echo mirrored-$((6 * 7))")
        await until(
            pilot, lambda: "mirrored-42" in [r.strip() for r in _shown_rows(mirror)], 5, "output"
        )
        # the log is the scrollback, under the mirror
        log = main_pane(app)
        assert log.step == f"session {session}"
        await until(pilot, lambda: "mirrored-42" in log.lines, 10, "the output in the log")
        assert mirror.region.bottom <= log.region.y
        assert mirror.region.height >= 4 and log.region.height >= 10


@needs_tmux
async def test_the_mirror_keeps_tmux_colours_and_says_when_the_session_ended(orch, tmux_socket):
    from core.sessions import get_backend

    session = f"orchtui-m-{uuid.uuid4().hex[:8]}"
    app, runner = orch(_recipe(session, "backend: tmux", f"socket: {tmux_socket}"))
    async with app.run_test(size=(80, 24)) as pilot:
        mirror = await _open_session(pilot, runner, session)
        tmux = get_backend("tmux", socket=tmux_socket)
        tmux.send(session, "printf '\\033[31m%s\\033[0m plain\\n' RED-$((6 * 7))")

        def output_row():
            for y in range(mirror.scrollable_content_region.height):
                row = list(mirror.render_line(y))
                if any(segment.text.startswith("RED-42") for segment in row):
                    return row
            return None

        row = await until(pilot, output_row, 5, "the red output in the mirror")
        colours = {s.text.strip(): s.style.color for s in row if s.text.strip()}
        assert colours["RED-42"] == Color.parse("color(1)")  # the terminal's red, as sent
        assert colours["plain"] != colours["RED-42"]
        assert mirror.region.height >= 4 and main_pane(app).region.height >= 4  # 80x24: both

        tmux.kill(session)
        await until(pilot, lambda: "has ended" in mirror.note, 5, "the end of the session")
        assert not mirror.polling
        assert f"session {session} has ended" in _shown_rows(mirror)[0]
        assert mirror.border_subtitle == "ended"


@needs_tmux
async def test_the_mirror_asks_for_copies_only_while_it_is_shown(orch, tmux_socket):
    from tui.widgets.session_mirror import POLL_SECONDS

    session = f"orchtui-m-{uuid.uuid4().hex[:8]}"
    app, runner = orch(_recipe(session, "backend: tmux", f"socket: {tmux_socket}"))
    async with app.run_test(size=(120, 36)) as pilot:
        mirror = await _open_session(pilot, runner, session)
        await until(pilot, lambda: mirror.captures >= 3, 5, "copies while shown")
        ticks: list[None] = []  # a clock in the app's loop: intervals that passed
        app.set_interval(POLL_SECONDS, lambda: ticks.append(None))

        async def no_copies_for_three_intervals() -> None:
            before, ticks[:] = mirror.captures, []
            await until(pilot, lambda: len(ticks) >= 3, 5, "three polling intervals")
            assert mirror.captures == before

        await pilot.press("home")  # a step: the mirror hides
        await until(pilot, lambda: not mirror.display, what="the mirror hidden")
        assert not mirror.polling
        await no_copies_for_three_intervals()

        await select_session(pilot, session)  # shown again: copies again
        started = mirror.captures
        await until(pilot, lambda: mirror.captures >= started + 2, 5, "copies again")

        await pilot.press("question_mark")  # the help on top: the mirror is not seen
        await until(pilot, lambda: app.screen is not mirror.screen, what="the help")
        await no_copies_for_three_intervals()


@needs_tmux
def test_the_mirror_of_an_attached_app_shows_a_tmux_window(tmp_path, tmux_socket):
    """``orch-tui RECIPE`` on a terminal: the app is a client of the run daemon, so the mirror
    is the first thing in its process to use tmux (no step ran here): it shows the window."""
    from core.sessions import get_backend

    recipe = write_recipe(
        tmp_path,
        "steps:\n  - {name: sess, type: session, action: create, session: mirrored, "
        f"backend: tmux, socket: {tmux_socket}}}\n",  # no log: only the mirror shows the window
    )
    app = TmuxApp(tmux_socket, [str(recipe)], tmp_path)
    try:
        app.shows("✓ sess", "mirrored")
        app.keys("Down", "Down")  # the Sessions group, then the session
        app.shows("the window now")
        get_backend("tmux", socket=tmux_socket).send("mirrored", "echo mirrored-$((6 * 7))")
        app.shows("mirrored-42")
    finally:
        end_run(only_run_dir(tmp_path))


async def test_a_session_a_step_killed_leaves_the_tree(orch, tmux_socket):
    """``action: kill`` ends a session the run made: the tree's Sessions group drops it (an
    app attached later never lists it). It stayed, as if it could be watched or attached."""
    kept, killed = (f"k{uuid.uuid4().hex[:8]}" for _ in range(2))
    where = f"backend: tmux, socket: {tmux_socket}"
    app, runner = orch(
        f"""
        steps:
          - {{name: mk, type: session, action: create, session: {killed}, {where}}}
          - {{name: mk2, type: session, action: create, session: {kept}, {where}}}
          - {{name: rm, type: session, action: kill, session: {killed}, {where}}}
        """
    )
    async with app.run_test(size=tui_helpers.SIZE) as pilot:
        await until_status(pilot, runner, "rm", "succeeded", timeout=20)
        await until(
            pilot,
            lambda: not any(f"▣ {killed}" in row for row in tui_helpers.screen_lines(app)),
            what="the killed session gone from the tree",
        )
        assert any(f"▣ {kept} tmux" in row for row in tui_helpers.screen_lines(app))


@needs_tmux
async def test_the_mirror_keeps_the_windows_bottom_in_view_after_the_terminal_shrinks(
    orch, tmux_socket
):
    """A terminal made large, then small again (80x24), while a session's window is shown:
    the pane's shorter view keeps the window's bottom rows (what was just printed) in view.
    It kept the top rows instead, so the pane "the window now" showed old output while new
    lines went on arriving below it, out of sight."""
    from core.sessions import get_backend

    session = f"orchtui-m-{uuid.uuid4().hex[:8]}"
    app, runner = orch(_recipe(session, "backend: tmux", f"socket: {tmux_socket}"))
    async with app.run_test(size=(200, 50)) as pilot:
        mirror = await _open_session(pilot, runner, session)
        tmux = get_backend("tmux", socket=tmux_socket)
        tmux.send(session, "clear; for i in $(seq 1 30); do echo row-$i; done")
        await until(
            pilot, lambda: any("row-30" in line.plain for line in mirror.lines), 5, "the rows"
        )
        assert any("row-30" in row for row in _shown_rows(mirror)), "all of the window shown"

        await pilot.resize_terminal(80, 24)
        tmux.send(session, "echo newest-$((6 * 7))")
        await until(pilot, lambda: any("newest-42" in line.plain for line in mirror.lines))
        await pilot.pause()
        assert mirror.scrollable_content_region.height < len(mirror.lines), "a shorter view"
        assert any("newest-42" in row for row in _shown_rows(mirror))

        # scrolled up by the user: new text does not pull the view down again
        mirror.scroll_home(animate=False, immediate=True)
        tmux.send(session, "echo later-$((6 * 7))")
        await until(pilot, lambda: any("later-42" in line.plain for line in mirror.lines))
        await pilot.pause()
        assert mirror.scroll_y == 0 and not any("later-42" in row for row in _shown_rows(mirror))


async def test_two_tmux_servers_sessions_of_one_name_are_both_in_the_tree(orch, tmux_tmpdir):
    """A tmux session ``api`` on two ``-L`` servers: two rows in the tree, each saying its
    socket, each mirroring its own window. The tree kept one row for both (sessions were told
    apart by backend and name only): the other server's session could not be watched."""
    app, runner = orch(
        """
        steps:
          - {name: a, type: session, backend: tmux, socket: one, action: create, session: api,
             command: "echo on-$((1 + 0))-socket"}
          - {name: b, type: session, backend: tmux, socket: two, action: create, session: api,
             command: "echo on-$((1 + 1))-socket"}
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "b", "succeeded", timeout=20)
        rows = tui_helpers.screen_lines(app)
        assert any("▣ api tmux -L one" in row for row in rows), rows
        assert any("▣ api tmux -L two" in row for row in rows), rows
        mirror = _mirror(app)
        for socket, text in (("one", "on-1-socket"), ("two", "on-2-socket")):
            await select_session(pilot, "api", socket)
            await until(
                pilot, lambda t=text: t in [r.strip() for r in _shown_rows(mirror)], 5, text
            )


async def test_a_sessions_row_is_whole_at_80_columns(orch, tmux_tmpdir):
    """At 80x24 the tree widens for a session's row as for a step's name (up to half the
    screen): the row says the session's tmux socket whole. The tree's width counted the steps'
    names only: with short ones the row was cut, `▣ lab_shell tmux -L …`, and the socket,
    shown nowhere else at that size, could not be read."""
    app, runner = orch(
        """
        steps:
          - {name: mk, type: session, backend: tmux, socket: labsock, action: create,
             session: lab_shell}
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "mk", "succeeded", timeout=20)
        await until(
            pilot,
            lambda: any("▣ lab_shell tmux -L labsock " in r for r in tui_helpers.screen_lines(app)),
            what=f"the session's row whole: {tui_helpers.screen_lines(app)[:8]}",
        )


@needs_tmux
async def test_a_session_killed_from_outside_is_marked_ended_in_the_tree(orch, tmux_socket):
    """A session ended from outside (``tmux kill-session`` in another terminal) while the app
    shows it: its tree row's mark is hollow (□, the row dimmed) and `a` is no longer offered.
    The row stayed a live session's, `a` offered, though the mirror above said the session
    had ended. Made again and selected again, it is a live row again."""
    from core.sessions import get_backend

    session = f"orchtui-m-{uuid.uuid4().hex[:8]}"
    app, runner = orch(_recipe(session, "backend: tmux", f"socket: {tmux_socket}"))
    async with app.run_test(size=(80, 24)) as pilot:
        mirror = await _open_session(pilot, runner, session)
        await until(pilot, lambda: "a" in tui_helpers.footer_keys(app), what="a offered")

        def row(mark: str) -> bool:
            """The session's row in the tree has this mark (its name is cut at 80 columns)."""
            return any(f"{mark} {session[:12]}" in r for r in tui_helpers.screen_lines(app))

        tmux = get_backend("tmux", socket=tmux_socket)
        tmux.kill(session)
        await until(pilot, lambda: "has ended" in mirror.note, 5, "the mirror says it ended")
        await until(pilot, lambda: row("□") and not row("▣"), 5, "the row's hollow mark")
        await until(pilot, lambda: "a" not in tui_helpers.footer_keys(app), what="a not offered")

        tmux.create(session)
        await pilot.press("up")
        await select_session(pilot, session)
        await until(pilot, lambda: row("▣") and not row("□"), 5, "a live row again")
        await until(pilot, lambda: "a" in tui_helpers.footer_keys(app), what="a offered again")
