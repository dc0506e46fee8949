"""Leaving the TUI without ending the run: ``d``, the quit question's ``d``, a terminal that goes
away. The app on a real client of a real socket (Pilot), and ``orch-tui RECIPE`` in tmux."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.client import connect
from core.control import LocalControl
from tests import tui_helpers
from tests.conftest import TMUX, alive, end_run, make_runner, marked, read_state, wait_for
from tests.tui_helpers import SIZE, close_runner, footer_keys, until

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


# ---------------------------------------------------------------------------------- in tmux
needs_tmux = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


def _tmux(socket: str, *args: str) -> str:
    return subprocess.run(
        [TMUX or "tmux", "-L", socket, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=10,
        check=False,
    ).stdout


def _orch_in_tmux(socket: str, tmp_path, run_dir) -> None:
    """``orch-tui RECIPE`` in a new 80x24 tmux session ``t``, its exit status kept on screen."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(SLEEPER)
    argv = f"{sys.executable} -m tui.cli {recipe} --run-dir {run_dir}; echo EXITED $?; sleep 60"
    env = ["-e", "TERM=xterm-256color"]
    _tmux(
        socket,
        "new-session",
        "-d",
        "-x",
        "80",
        "-y",
        "24",
        "-s",
        "t",
        *env,
        "-c",
        str(tmp_path),
        argv,
    )


def _running(run_dir) -> bool:
    return read_state(run_dir)["steps"]["sleeper"]["status"] == "running"


@needs_tmux
def test_d_in_a_real_terminal_detaches_and_closing_one_leaves_the_run(tmp_path, tmux_socket):
    run_dir = tmp_path / "run"
    try:
        _orch_in_tmux(tmux_socket, tmp_path, run_dir)
        wait_for(lambda: _running(run_dir), 30, "sleeper running")
        wait_for(lambda: "sleeper" in _tmux(tmux_socket, "capture-pane", "-pJ", "-t", "t"), 20)
        steps = marked(run_dir)
        _tmux(tmux_socket, "send-keys", "-t", "t", "d")
        screen = wait_for(
            lambda: (
                (text := _tmux(tmux_socket, "capture-pane", "-pJ", "-t", "t"))
                and "EXITED" in text
                and text
            ),
            20,
            "orch-tui to exit",
        )
        run_id = read_state(run_dir)["run_id"]
        assert f"detached from run {run_id}; orch-tui attach {run_id} comes back" in screen
        assert "EXITED 0" in screen
        assert all(alive(p) for p in steps)

        # attach again from another terminal, then close that terminal: still running
        _tmux(tmux_socket, "kill-session", "-t", "t")
        argv = (
            f"{sys.executable} -c 'import sys; from pathlib import Path; "
            f'from tui.remote import run_attached; sys.exit(run_attached(Path("{run_dir}")))\''
        )
        _tmux(
            tmux_socket,
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "-s",
            "u",
            "-c",
            str(tmp_path),
            argv,
        )
        wait_for(lambda: "sleeper" in _tmux(tmux_socket, "capture-pane", "-pJ", "-t", "u"), 20)
        _tmux(tmux_socket, "kill-server")
        with connect(run_dir, client="test") as control:
            assert control.snapshot().steps["sleeper"].status == "running"
            assert all(alive(p) for p in steps)
            assert control.command("stop_run").ok
            assert control.wait(30) == 130
        assert os.path.exists(run_dir / "state.json")
    finally:
        end_run(run_dir)
