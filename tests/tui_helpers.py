"""Shared helpers for the TUI tests (keys, snapshots, attach): a real runner in a real app.

Every app here wraps a real :class:`core.runner.Runner` (real shell processes, real Python step
modules) with a fixed clock and a :class:`core.resources.FixedSampler`, so what the screen shows
depends only on the recipe. Waiting is always a poll of a condition with a deadline, giving the
app's event loop a turn between polls (``pilot.pause``), never a bare sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import marked, write_module, write_recipe

FIXED_NOW = 1_700_000_000.0
SIZE = (120, 36)

__all__ = [
    "FIXED_NOW",
    "SIZE",
    "fixed_clock",
    "write_module",
    "write_recipe",
]


@pytest.fixture
def utc() -> Iterator[None]:
    """Local time is UTC for this test (the ctx inspector shows epoch numbers in local time)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def fixed_clock() -> float:
    """The runner's and the app's clock: every duration on screen reads 0.0s."""
    return FIXED_NOW


def fixed_sampler():
    from core.resources import FixedSampler

    return FixedSampler(ts=FIXED_NOW)


def build_app(
    tmp_path: Path,
    yaml_text: str,
    *,
    recipe_name: str = "recipe.yaml",
    detachable: bool = False,
    clock: Callable[[], float] = fixed_clock,
    **runner_kw,
):
    """(app, runner): the app on the runner's control (the app starts the runner as it mounts),
    with the fixed clock (or ``clock``, for both) and sampler. ``detachable``: the app offers
    ``d`` as it does on a run daemon (pressing it only ends the app: the runner is this
    process's)."""
    from core.control import LocalControl
    from core.recipe import load_recipe
    from core.runner import Runner
    from tui.app import make_app

    path = write_recipe(tmp_path, yaml_text, name=recipe_name)
    runner_kw.setdefault("run_dir", tmp_path / "run")
    runner_kw.setdefault("sampler", fixed_sampler())
    runner_kw.setdefault("resource_interval", 3600)
    runner = Runner(load_recipe(path), interactive=True, clock=clock, **runner_kw)
    app = make_app(LocalControl(runner), clock=clock, start=runner.start, detachable=detachable)
    return app, runner


def close_runner(runner) -> None:
    """End a runner the way quitting the app does; kill whatever is left if that fails."""
    if runner.started_at is None:
        return
    if not runner.finished:
        runner.close()
        if runner.wait(30) is None:
            runner.stop_run(signal.SIGKILL, force=True)
            runner.wait(10)
    assert runner.finished, "the runner did not finish"
    left = marked(runner.run_dir)
    assert not left, f"processes of the run left behind: {left}"


@pytest.fixture
def orch(tmp_path: Path) -> Iterator[Callable[..., tuple[Any, Any]]]:
    """``orch(yaml_text, detachable=False, **runner_kw) -> (app, runner)``; runners are closed
    after the test."""
    runners: list[Any] = []

    def factory(yaml_text: str, **kw: Any):
        app, runner = build_app(tmp_path, yaml_text, **kw)
        runners.append(runner)
        return app, runner

    yield factory
    for runner in runners:
        close_runner(runner)


# ---------------------------------------------------------------------------------- waiting
async def until(pilot, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Give the app turns until ``predicate()`` is truthy (returned); fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what or predicate}")
        await pilot.pause(0.02)  # a polling interval: the event loop runs meanwhile


def status(run, name: str) -> str:
    """The step's status as the run reports it (``run``: the runner, or the app's control)."""
    return run.snapshot().steps[name].status


async def until_status(pilot, runner, name: str, *statuses: str, timeout: float = 10.0) -> str:
    """Wait until the runner reports ``name`` in one of ``statuses`` AND the tree shows it."""
    await until(
        pilot,
        lambda: status(runner, name) in statuses,
        timeout,
        f"{name} to be {'/'.join(statuses)} (it is {status(runner, name)})",
    )
    app = pilot.app
    # the app drains the runner's events 15 times a second: wait for the tree to catch up
    await until(
        pilot,
        lambda: app._run.steps[name].status in statuses,
        timeout,
        f"the app to show {name} as {'/'.join(statuses)}",
    )
    return status(runner, name)


def tree_label(app, name: str) -> str:
    from tui.widgets import StepTree

    return app.query_one(StepTree).label_of(name).plain


def selected(app) -> str | None:
    from tui.widgets import StepTree

    return app.query_one(StepTree).selected_step


async def select_session(pilot, name: str, socket: str | None = None) -> None:
    """Move down the tree to the session node ``name`` (under the steps); with ``socket``,
    the one on that tmux server."""
    from tui.widgets import StepTree

    tree = pilot.app.query_one(StepTree)
    for _ in range(len(tree._step_nodes) + len(tree._session_nodes) + 1):
        data = tree.selected or {}
        wanted = data.get("name") == name and socket in (None, data.get("socket"))
        if data.get("kind") == "session" and wanted:
            return
        await pilot.press("down")
    pytest.fail(f"no session node {name} in the tree")


def send_key(app, key: str) -> None:
    """A key press as the terminal driver delivers it: what ``Pilot.press`` sends, without its
    wait for the whole *process* to go idle (with a step flooding a pipe that this process
    drains, that wait always runs to its one-second cap and would be all a test measures)."""
    from textual import events

    event = events.Key(key, None)
    event.set_sender(app)
    app._driver.send_message(event)


def main_pane(app):
    from tui.widgets import LogPane

    return app.query_one("#log-main", LogPane)


def step_pid(runner, name: str) -> int | None:
    execution = runner.runs[name].execution
    return execution.pid if execution is not None else None


class TmuxApp:
    """``orch-tui ARGS`` in a detached tmux session of its own server (``socket``: the
    ``tmux_socket`` fixture's, killed after the test), at ``size``: a real terminal to read
    (``screen``) and type at (``keys``), as a user in tmux would. The pane stays once the
    program has exited (remain-on-exit), so what it ``printed`` last and how it ``exited`` can be
    read; the test's server goes with its fixture."""

    def __init__(
        self,
        socket: str,
        args: list[str],
        cwd: Path,
        size: tuple[int, int] = (80, 24),
        session: str = "app",
    ):
        import shlex

        from tests.conftest import ORCH

        self.socket, self.session = socket, session
        width, height = size
        command = shlex.join([*ORCH, *args])
        self._tmux("start-server", ";", "set-option", "-g", "remain-on-exit", "on", ";",
                   "new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height),
                   "-c", str(cwd), command)  # fmt: skip

    def _tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        from tests.conftest import MULTIPLEXER_TIMEOUT

        return subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=MULTIPLEXER_TIMEOUT,
        )

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.session).stdout

    def printed(self) -> str:
        """All the terminal holds, scrolled-off lines too, wrapped lines joined: what the
        program printed once it left its full screen."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", self.session).stdout

    def rows(self) -> list[str]:
        """All the terminal holds, scrolled-off lines too, one item a terminal row: a line
        too wide for the terminal is two rows here (``printed`` joins them)."""
        return self._tmux("capture-pane", "-p", "-S", "-", "-t", self.session).stdout.splitlines()

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.session, *keys)

    def shows(self, *texts: str, timeout: float = 20.0) -> str:
        """Wait until the screen shows every one of ``texts``; the screen."""
        from tests.conftest import wait_for

        wait_for(lambda: all(t in self.screen() for t in texts), timeout, f"{texts} on screen")
        return self.screen()

    def _pane(self, format_: str) -> str:
        """A tmux format (``#{pane_dead}``) of the app's pane; empty once the session is gone."""
        return self._tmux("display-message", "-p", "-t", self.session, format_).stdout.strip()

    def modes(self) -> dict[str, str]:
        """The terminal modes a full-screen program sets and must undo when it leaves, as tmux
        holds them (kept once the program has exited): 1 on, 0 off."""
        names = ("alternate_on", "mouse_any_flag")
        values = self._pane(" ".join(f"#{{{name}}}" for name in names)).split()
        return dict(zip(names, values, strict=True))

    def running(self) -> bool:
        """The program has not exited."""
        return self._pane("#{pane_dead}") == "0"

    def exited(self, timeout: float = 20.0) -> int:
        """Wait until the program has exited; its exit status. (tmux sees the terminal closed a
        moment before the status comes: ``running`` may be False before this returns.)"""
        from tests.conftest import wait_for

        status = wait_for(self._exit_status, timeout, "the exit status")
        return int(status)

    def _exit_status(self) -> str | None:
        """tmux's record of the exit status, or the kernel's: now and then tmux leaves its pane's
        program unreaped (a zombie, seen here under load) and never fills pane_dead_status; a
        zombie's /proc/PID/stat still holds the status waitpid would return (field 52)."""
        status = self._pane("#{pane_dead_status}")
        if status or self._pane("#{pane_dead}") != "1":
            return status or None
        pid = self._pane("#{pane_pid}")
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            return None
        return str(os.waitstatus_to_exitcode(int(fields[49])))

    def close_terminal(self) -> None:
        """The terminal goes away under the program (SIGHUP), as a closed ssh connection; wait
        until the program (and whatever it started in the terminal) has gone with it."""
        from tests.conftest import assert_gone, descendants

        shell = int(self._pane("#{pane_pid}") or 0)
        programs = [shell, *descendants(shell)] if shell else []
        self._tmux("kill-session", "-t", self.session)
        assert_gone(programs, 10)


def footer_keys(app) -> set[str]:
    """The keys the footer offers now."""
    from textual.widgets._footer import FooterKey

    return {key.key for key in app.screen.query(FooterKey)}


async def footer_row(pilot) -> str:
    """The terminal's last row, once the footer of the screen on top has its keys."""
    from textual.widgets._footer import FooterKey

    app = pilot.app
    await until(pilot, lambda: app.screen.query(FooterKey), what="the keys in the footer")
    await pilot.pause()  # drawn
    return screen_lines(app)[-1]


def screen_lines(app) -> list[str]:
    """The terminal's rows as the user sees them now, as plain text: the current screen drawn
    over those under it (a dialog over the steps), what ``export_screenshot`` draws."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True)
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text().splitlines()
