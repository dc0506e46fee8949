"""Shared helpers for the runner, CLI and process tests.

Everything here drives the real thing: recipes are written to ``tmp_path`` (with a
``pyproject.toml`` beside them, so ``tmp_path`` is the workspace root and Python step modules
written there import by their bare name), shell steps are real processes, and the command line
is run as a real ``orch-tui`` subprocess. Synchronisation is always a poll of something the
runner itself writes (state.json, events.jsonl, its in-memory state) with a deadline, never a
bare sleep.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
_SCRIPT = Path(sys.executable).parent / "orch-tui"
#: How the command line is started: the installed console script when there is one.
ORCH = [str(_SCRIPT)] if _SCRIPT.exists() else [PY, "-m", "tui.cli"]


# ------------------------------------------------------------------------------------ files
def write_recipe(tmp_path: Path, yaml_text: str, name: str = "recipe.yaml") -> Path:
    """Write a recipe (dedented) and a ``pyproject.toml`` so ``tmp_path`` is the workspace."""
    pyproject = tmp_path / "pyproject.toml"
    if not pyproject.exists():
        pyproject.write_text("[project]\nname = 'recipe-test-workspace'\nversion = '0'\n")
    path = tmp_path / name
    path.write_text(textwrap.dedent(yaml_text).lstrip("\n"))
    return path


def write_module(tmp_path: Path, source: str, prefix: str = "steps") -> str:
    """Write a Python step module into the workspace; return its (unique) module name.

    Names are unique per call because in-process runners share ``sys.modules`` and every test's
    workspace lands on ``sys.path``.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source).lstrip("\n"))
    return name


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def read_state(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / "state.json")


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "events.jsonl").read_bytes().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def event_index(events: list[dict[str, Any]], type_: str, step: str, **match: Any) -> int:
    """Position of the first event of ``type_`` for ``step`` (matching ``match``); fails if none."""
    for i, event in enumerate(events):
        if (
            event.get("type") == type_
            and event.get("step") == step
            and all(event.get(k) == v for k, v in match.items())
        ):
            return i
    raise AssertionError(f"no {type_} event for {step!r} {match or ''} in {events}")


def only_run_dir(cwd: Path) -> Path:
    """The single run directory under ``cwd/.orch/runs``."""
    runs = sorted((cwd / ".orch" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ waiting
def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, message: str = "", interval: float = 0.02
) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that. Fails at the deadline.

    Exceptions from the predicate (a file not written yet, half-read JSON) count as "not yet".
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
        except (OSError, ValueError, KeyError, psutil.Error) as exc:
            value, last_exc = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            pytest.fail(f"timed out after {timeout}s waiting for {message or predicate}{detail}")
        time.sleep(interval)  # polling interval, not synchronisation


def read_pid(path: Path, timeout: float = 10.0) -> int:
    """A pid a step wrote to ``path`` (waits until the file holds a whole number)."""
    return wait_for(lambda: int(path.read_text().strip()), timeout, f"a pid in {path}")


# ------------------------------------------------------------------------------------ processes
def alive(pid: int) -> bool:
    """Running (a zombie counts as gone: it has already exited)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_gone(pids: Iterable[int], timeout: float = 5.0) -> None:
    pids = list(pids)
    wait_for(
        lambda: not [p for p in pids if alive(p)],
        timeout,
        f"processes {[p for p in pids if alive(p)]} to be gone",
    )


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def marked(run_dir: Path) -> list[int]:
    """Live processes carrying ``ORCH_RUN_DIR=<run_dir>`` (what the watchdog looks for)."""
    from core.watchdog import marked_pids

    return [p for p in marked_pids(str(run_dir.absolute())) if alive(p)]


def kill_tree(proc: subprocess.Popen, extra: Iterable[int] = ()) -> None:
    """Clean-up for a test's orch-tui subprocess: SIGKILL it, its group, what it started."""
    pids = set(extra)
    pids.update(descendants(proc.pid))
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            continue
        if pgid != os.getpgrp():
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass


# ------------------------------------------------------------------------------------ the CLI
def _cli_env(env: dict[str, str] | None) -> dict[str, str]:
    full = dict(os.environ)
    # A run started from a step of another run must not look like part of it; and colour is
    # left to orch-tui's own decision (stdout is a pipe here), not forced from outside.
    for name in ("ORCH_RUN_DIR", "ORCH_STEP", "ORCH_CTX_OUT", "FORCE_COLOR", "CLICOLOR_FORCE"):
        full.pop(name, None)
    if env:
        full.update(env)
    return full


def run_cli(
    *args: str | os.PathLike,
    cwd: Path,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``orch-tui ARGS`` to completion with stdout/stderr piped (so it runs headless)."""
    proc = subprocess.Popen(
        [*ORCH, *map(str, args)],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_cli_env(env),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        out, err = proc.communicate()
        pytest.fail(
            f"orch-tui {args} did not finish in {timeout}s:\n{out.decode()}\n{err.decode()}"
        )
    finally:
        kill_tree(proc)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    )


def start_cli(
    *args: str | os.PathLike, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``orch-tui ARGS`` in its own session (signals sent to it never reach pytest)."""
    return subprocess.Popen(
        [*ORCH, *map(str, args)],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_cli_env(env),
        start_new_session=True,
    )


# ------------------------------------------------------------------------------------ in-process
@dataclass
class Finished:
    code: int
    runner: Any
    run_dir: Path

    @property
    def state(self) -> dict[str, Any]:
        return read_state(self.run_dir)

    @property
    def steps(self) -> dict[str, dict[str, Any]]:
        return self.state["steps"]

    @property
    def ctx(self) -> dict[str, Any]:
        return read_json(self.run_dir / "ctx.json")

    @property
    def events(self) -> list[dict[str, Any]]:
        return read_events(self.run_dir)

    def log(self, step: str) -> bytes:
        return (self.run_dir / "logs" / f"{step}.log").read_bytes()


def make_runner(tmp_path: Path, yaml_text: str, **kwargs: Any):
    """A Runner for the recipe (not started), its run directory ``tmp_path/run``."""
    from core.recipe import load_recipe
    from core.runner import Runner

    recipe = load_recipe(write_recipe(tmp_path, yaml_text))
    kwargs.setdefault("run_dir", tmp_path / "run")
    return Runner(recipe, **kwargs)


def stop_runner(runner) -> None:
    """Clean-up: end a runner that a failed test left running, killing its steps."""
    if runner.finished:
        return
    runner.stop_run(signal.SIGTERM)
    runner.stop_run(signal.SIGKILL, force=True)
    runner.wait(10)


def run_recipe(tmp_path: Path, yaml_text: str, *, timeout: float = 20.0, **kwargs: Any) -> Finished:
    """Run a recipe in-process (headless semantics) to the end."""
    runner = make_runner(tmp_path, yaml_text, **kwargs)
    runner.start()
    try:
        code = runner.wait(timeout)
        assert code is not None, f"run did not finish in {timeout}s: {runner.state()}"
    finally:
        stop_runner(runner)
    return Finished(code, runner, runner.run_dir)


@pytest.fixture
def runners():
    """Runners registered here are stopped (steps killed) at the end of the test, pass or fail."""
    started: list[Any] = []
    yield started
    for runner in started:
        stop_runner(runner)


# ------------------------------------------------------------------------------------ timeouts
# pytest-timeout (method "signal", timeout_func_only false) arms ONE SIGALRM for a test's setup,
# call and teardown together, and cancels it as soon as any phase fails (its
# pytest_exception_interact hook, meant for pdb). So a teardown that hangs after a failed or
# timed-out test (a multiplexer command that never returns) would hang the whole suite. These
# two hooks close that gap: the alarm repeats every ``timeout`` seconds until pytest-timeout
# cancels it after the teardown, and a teardown starting with no alarm gets a fresh one.
_TIMEOUT_SETTINGS = pytest.StashKey[Any]()


@pytest.hookimpl(hookwrapper=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any):
    """Remember the test's timeout settings; make the SIGALRM repeat (each finaliser that hangs
    is interrupted in turn, not only the first)."""
    item.stash[_TIMEOUT_SETTINGS] = settings
    yield
    delay = signal.getitimer(signal.ITIMER_REAL)[0]
    if delay > 0 and callable(signal.getsignal(signal.SIGALRM)):
        signal.setitimer(signal.ITIMER_REAL, delay, settings.timeout)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item):
    """A teardown runs under a timeout even when the failure before it cancelled the alarm."""
    settings = item.stash.get(_TIMEOUT_SETTINGS, None)
    rearm = (
        settings is not None
        and settings.method == "signal"
        and not settings.func_only  # func_only: the teardown is deliberately not timed
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if rearm:
        item.config.hook.pytest_timeout_set_timer(item=item, settings=settings)
    yield
