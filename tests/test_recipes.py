"""Every recipe shipped in recipes/ runs end to end, headless, as a user would run it.

The recipes are copied into a temporary workspace (with the project's scriptlets) so each run
has its own run directory; the demo's fixed port and the tmux example's socket are swapped for
free ones, and screen gets a private SCREENDIR, so the tests never touch the user's sessions.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
from pathlib import Path

import pytest

from tests.conftest import (
    ROOT,
    SCREEN,
    end_screen_sessions,
    free_port,
    needs_screen,
    needs_tmux,
    only_run_dir,
    read_state,
    run_cli,
    start_cli,
    wait_for,
)

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pyproject.toml").write_text("")
    shutil.copytree(ROOT / "scriptlets", tmp_path / "scriptlets")
    (tmp_path / "recipes").mkdir()
    screendir = tmp_path / "screens"
    screendir.mkdir(mode=0o700)
    monkeypatch.setenv("SCREENDIR", str(screendir))
    yield tmp_path
    if SCREEN:
        end_screen_sessions(str(screendir))


def _copy(workspace: Path, name: str, **replace: str) -> Path:
    text = (ROOT / "recipes" / name).read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    path = workspace / "recipes" / name
    path.write_text(text)
    return path


def test_every_shipped_recipe_validates():
    assert RECIPES, "no recipes shipped"
    for recipe in RECIPES:
        result = run_cli("validate", recipe, cwd=ROOT)
        assert result.returncode == 0, (recipe.name, result.stderr)


@pytest.mark.parametrize("jobs", [1, 2])
def test_parallel_example_runs_its_branches_and_joins(workspace: Path, jobs: int):
    recipe = _copy(workspace, "example_parallel.yaml")
    result = run_cli(recipe, "--no-ui", "--jobs", str(jobs), cwd=workspace)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = only_run_dir(workspace)
    steps = read_state(run_dir)["steps"]
    assert {s["status"] for s in steps.values()} == {"succeeded"}
    a, b, join = steps["fetch_a"], steps["fetch_b"], steps["combine"]
    overlapped = a["started"] < b["ended"] and b["started"] < a["ended"]
    assert overlapped == (jobs == 2)  # the two branches run at once only with two slots
    assert join["started"] >= max(a["ended"], b["ended"])
    assert "combine | both branches done" in result.stdout


def test_shell_and_ctx_example_exchanges_values(workspace: Path):
    recipe = _copy(workspace, "example_shell_ctx.yaml")
    result = run_cli(recipe, "--no-ui", cwd=workspace)
    assert result.returncode == 0, result.stdout + result.stderr
    ctx = json.loads((only_run_dir(workspace) / "ctx.json").read_text())
    entries = len(list(workspace.iterdir()))
    assert ctx["rows"] == [] and ctx["greeting"] == "hello"
    assert ctx["file_count"] >= entries - 1  # the count the shell step wrote back, as a number
    assert f"hello, the workspace has {ctx['file_count']} entries" in result.stdout


@needs_tmux
def test_tmux_example_creates_feeds_and_leaves_its_session(workspace: Path, tmux_socket: str):
    sock = tmux_socket  # its server is killed and its socket file removed afterwards
    recipe = _copy(workspace, "example_tmux_session.yaml", **{"orch-example": sock})
    import subprocess

    result = run_cli(recipe, "--no-ui", cwd=workspace)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wait_for_work | working 3" in result.stdout
    alive = subprocess.run(["tmux", "-L", sock, "has-session", "-t", "=orch_example"])
    assert alive.returncode == 0, "the session must outlive the run"
    listing = run_cli("sessions", "--backend", "tmux", "--socket", sock, cwd=workspace)
    assert listing.returncode == 0
    row = next(line for line in listing.stdout.splitlines() if "orch_example" in line)
    assert "detached" in row
    run_id = read_state(only_run_dir(workspace))["run_id"]
    assert run_id in row  # which run created it


@needs_screen
def test_demo_runs_headless_and_stops_its_background_steps(workspace: Path):
    port = free_port()
    recipe = _copy(workspace, "demo_screen_dash_ctx.yaml", **{"8050": str(port)})
    result = run_cli(recipe, "--no-ui", cwd=workspace, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    state = read_state(only_run_dir(workspace))
    steps = state["steps"]
    assert steps["monitor_and_plot"]["status"] == "stopped"
    assert steps["update_ctx_background"]["status"] == "stopped"
    assert all(s["status"] == "succeeded" for n, s in steps.items() if not s["background"])
    ctx = json.loads((only_run_dir(workspace) / "ctx.json").read_text())
    assert len(ctx["new_row"]) >= 1 and len(ctx["new_row"][0]) == 4  # [timestamp, r1, r2, r3]
    with socket.socket() as probe:  # Dash released its port
        probe.bind(("127.0.0.1", port))
    listing = run_cli("sessions", "--backend", "screen", cwd=workspace)
    assert "orch_demo" in listing.stdout and state["run_id"] in listing.stdout


@needs_screen
def test_demo_keep_alive_serves_until_ctrl_c(workspace: Path):
    port = free_port()
    recipe = _copy(workspace, "demo_screen_dash_ctx.yaml", **{"8050": str(port)})
    proc = start_cli(recipe, "--no-ui", "--keep-alive", cwd=workspace)
    try:
        run_dir_holder: list[Path] = []

        def announced() -> bool:
            runs = list((workspace / ".orch" / "runs").glob("*/state.json"))
            if not runs:
                return False
            run_dir_holder[:] = [runs[0].parent]
            return read_state(runs[0].parent)["steps"]["announce"]["status"] == "succeeded"

        wait_for(announced, timeout=60, message="the demo's foreground steps")
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # still serving after the foreground work is done
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
        steps = read_state(run_dir_holder[0])["steps"]
        assert steps["monitor_and_plot"]["status"] == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
