"""Leaving the TUI without ending the run: ``d``, the quit question's ``d``, a terminal that goes
away. The app on a real client of a real socket (Pilot), and ``orch-tui RECIPE`` in tmux."""

from __future__ import annotations

import os

import pytest

from core.client import connect
from core.control import LocalControl
from tests import tui_helpers
from tests.conftest import (
    alive,
    end_run,
    make_runner,
    marked,
    read_state,
    wait_for,
    write_recipe,
)
from tests.tui_helpers import SIZE, TmuxApp, close_runner, footer_keys, send_key, until

# a fixture (a plain assignment, so the test functions' arguments do not shadow an import)
orch = tui_helpers.orch

SLEEPER = """
steps:
  - {name: sleeper, type: shell, cmd: sleep, args: ["100"]}
"""


@pytest.fixture
def served(tmp_path):
    """(runner, client): an interactive run served on its socket, started, and a client of it."""
    from core.server import RunServer

    runner = make_runner(tmp_path, SLEEPER, interactive=True)
    server = RunServer(LocalControl(runner), runner.rundir, run_id=runner.run_id)
    server.start()
    runner.start()
    control = connect(tmp_path / "run", client="tui")
    try:
        yield runner, control
    finally:
        control.close()
        close_runner(runner)
        server.close(str(runner.status), runner.exit_code)
        runner.rundir.close()


@pytest.mark.parametrize("keys", [("d",), ("q", "d")])
async def test_d_detaches_and_the_run_goes_on(served, keys):
    from tui.app import make_app
    from tui.screens.confirm_quit import ConfirmQuit

    runner, control = served
    app = make_app(control, detachable=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app._run.steps["sleeper"].status == "running", 10, "running")
        await until(pilot, lambda: "d" in footer_keys(app), what="d in the footer")
        for key in keys:
            if key == "d" and keys[0] == "q":
                await until(pilot, lambda: isinstance(app.screen, ConfirmQuit), what="the question")
                assert "d detach" in str(app.screen.query("Static").last().render())
            await pilot.press(key)
        await until(pilot, lambda: not app.is_running, 10, "the app to exit")
    assert app.detached
    assert runner.snapshot().steps["sleeper"].status == "running"
    assert not runner.finished


async def test_keys_typed_after_d_open_nothing_over_the_leaving_app(served):
    """`d` then `?` (typed fast, or pasted): the app leaves, with no screen opened over it as it
    goes. A help screen pushed as the app exited was composed no more and crashed it with a
    traceback (seen 2 in 3 times in tmux)."""
    from tui.app import make_app

    runner, control = served
    app = make_app(control, detachable=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app._run.steps["sleeper"].status == "running", 10, "running")
        for key in ("d", "question_mark", "S", "slash", "g"):  # in the queue before d is handled
            send_key(app, key)
        await until(pilot, lambda: not app.is_running, 10, "the app to exit")
        assert app.screen_stack[-1] is app.screen_stack[0], app.screen_stack
    assert app.detached and app.return_value == app.DETACHED
    assert runner.snapshot().steps["sleeper"].status == "running"


async def test_an_in_process_run_offers_no_detach(orch):
    from tui.screens.confirm_quit import ConfirmQuit

    app, runner = orch(SLEEPER)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app._run.steps["sleeper"].status == "running", 10, "running")
        await until(pilot, lambda: "q" in footer_keys(app), what="the footer")
        assert "d" not in footer_keys(app)
        await pilot.press("d")
        assert app.is_running and not app.detached
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmQuit), what="the question")
        assert "detach" not in str(app.screen.query("Static").last().render())
        await pilot.press("d")  # not an answer here
        assert isinstance(app.screen, ConfirmQuit) and app.is_running
        await pilot.press("n")
    assert runner.snapshot().steps["sleeper"].status == "running"


def test_quitting_waits_for_an_end_longer_than_its_patience_and_says_how_the_run_ended(
    tmp_path, monkeypatch, capsys
):
    """The app quit (`y`) while a step takes its grace: the command line waits for the run's
    end however long the graces take (``q`` kills them meanwhile), then says how it ended.
    Past CLOSE_TIMEOUT (60 s, after the app's own 60 s) it printed ``orch-tui: None; see
    .../daemon.log``, exit 1, while the daemon was still ending the run (130 a moment later)."""
    from core.server import RunServer
    from tui import remote

    monkeypatch.setattr(remote, "CLOSE_TIMEOUT", 0.2)  # the patience for the daemon's exit
    up = tmp_path / "up"
    runner = make_runner(
        tmp_path,
        f"""
        steps:
          - name: slow
            type: shell
            grace: 2
            run: "trap '' TERM; touch {up}; while true; do sleep 0.05; done"
        """,
        interactive=True,
    )
    server = RunServer(LocalControl(runner), runner.rundir, run_id=runner.run_id)
    server.start()
    runner.start()
    control = connect(tmp_path / "run", client="tui")
    try:
        wait_for(up.exists, 10, "the step to start")
        assert remote._end_run(control) == 130
        assert capsys.readouterr().out == (
            f"orch-tui: run {runner.run_id} interrupted; logs in {os.path.relpath(runner.run_dir)}\n"
        )
    finally:
        control.close()
        close_runner(runner)
        server.close(str(runner.status), runner.exit_code)
        runner.rundir.close()


# ---------------------------------------------------------------------------------- in tmux
def _running(run_dir) -> bool:
    return read_state(run_dir)["steps"]["sleeper"]["status"] == "running"


def test_d_in_a_real_terminal_detaches_and_closing_one_leaves_the_run(tmp_path, tmux_socket):
    run_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path, SLEEPER)
    try:
        app = TmuxApp(tmux_socket, [str(recipe), "--run-dir", str(run_dir)], tmp_path)
        wait_for(lambda: _running(run_dir), 30, "sleeper running")
        app.shows("sleeper")
        steps = marked(run_dir)
        app.keys("d")
        assert app.exited() == 0
        run_id = read_state(run_dir)["run_id"]
        assert f"detached from run {run_id}; orch-tui attach {run_id} comes back" in app.printed()
        assert all(alive(p) for p in steps)

        # attach again from another terminal, then close that terminal: still running
        app.close_terminal()
        again = TmuxApp(tmux_socket, ["attach", str(run_dir)], tmp_path)
        again.shows("sleeper")
        again.close_terminal()
        with connect(run_dir, client="test") as control:
            assert control.snapshot().steps["sleeper"].status == "running"
            assert all(alive(p) for p in steps)
            assert control.command("stop_run").ok
            assert control.wait(30) == 130
        assert os.path.exists(run_dir / "state.json")
    finally:
        end_run(run_dir)
