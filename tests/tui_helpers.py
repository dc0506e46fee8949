"""Shared helpers for the TUI tests (keys, snapshots, attach): a real runner in a real app.

Every app here wraps a real :class:`core.runner.Runner` (real shell processes, real Python step
modules) with a fixed clock and a :class:`core.resources.FixedSampler`, so what the screen shows
depends only on the recipe. Waiting is always a poll of a condition with a deadline, giving the
app's event loop a turn between polls (``pilot.pause``), never a bare sleep.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import alive, marked, write_module, write_recipe

FIXED_NOW = 1_700_000_000.0
SIZE = (120, 36)
SCREEN = shutil.which("screen")
needs_screen = pytest.mark.skipif(SCREEN is None, reason="GNU screen is not installed")

__all__ = [
    "FIXED_NOW",
    "SIZE",
    "fixed_clock",
    "needs_screen",
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


def build_app(tmp_path: Path, yaml_text: str, *, recipe_name: str = "recipe.yaml", **runner_kw):
    """(app, runner): the app on the runner's control (the app starts the runner as it mounts),
    with the fixed clock and sampler."""
    from core.control import LocalControl
    from core.recipe import load_recipe
    from core.runner import Runner
    from tui.app import make_app

    path = write_recipe(tmp_path, yaml_text, name=recipe_name)
    runner_kw.setdefault("run_dir", tmp_path / "run")
    runner_kw.setdefault("sampler", fixed_sampler())
    runner_kw.setdefault("resource_interval", 3600)
    runner = Runner(load_recipe(path), interactive=True, clock=fixed_clock, **runner_kw)
    app = make_app(LocalControl(runner), clock=fixed_clock, start=runner.start)
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
    """``orch(yaml_text, **runner_kw) -> (app, runner)``; runners are closed after the test."""
    runners: list[Any] = []

    def factory(yaml_text: str, **runner_kw: Any):
        app, runner = build_app(tmp_path, yaml_text, **runner_kw)
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


def main_pane(app):
    from tui.widgets import LogPane

    return app.query_one("#log-main", LogPane)


def step_pid(runner, name: str) -> int | None:
    execution = runner.runs[name].execution
    return execution.pid if execution is not None else None


# ---------------------------------------------------------------------------------- screen
def private_screendir() -> str:
    """A fresh 0700 SCREENDIR (short: it holds Unix sockets)."""
    directory = tempfile.mkdtemp(prefix="orchtui-", dir="/tmp")
    os.chmod(directory, 0o700)
    return directory


def screen_env(screendir: str) -> dict[str, str]:
    env = dict(os.environ)
    env["SCREENDIR"] = screendir
    return env


def end_screendir(screendir: str) -> None:
    """Quit every screen session in ``screendir``, kill what ignores that, remove the dir."""
    from tests.sessions_fixtures import end_screen_sessions

    end_screen_sessions(screendir)
    shutil.rmtree(screendir, ignore_errors=True)


def screen_session_pids(screendir: str, name: str) -> list[int]:
    """pids of the screen servers of sessions named exactly ``name`` in ``screendir``."""
    result = subprocess.run(
        [SCREEN or "screen", "-ls"],
        capture_output=True,
        text=True,
        env=screen_env(screendir),
        stdin=subprocess.DEVNULL,
        timeout=10,  # a server that stopped answering fails the test instead of hanging it
    )
    pids = []
    for line in result.stdout.splitlines():
        if not line.startswith("\t"):
            continue
        target = line.strip().split("\t", 1)[0]
        pid, _, session = target.partition(".")
        if pid.isdigit() and session == name and alive(int(pid)):
            pids.append(int(pid))
    return pids


@pytest.fixture
def screendir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private SCREENDIR for this test (in the environment); its sessions end afterwards."""
    if SCREEN is None:
        pytest.skip("GNU screen is not installed")
    directory = private_screendir()
    monkeypatch.setenv("SCREENDIR", directory)
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.delenv("STY", raising=False)
    bash = shutil.which("bash")
    if bash:
        monkeypatch.setenv("SHELL", bash)
    try:
        yield directory
    finally:
        end_screendir(directory)
