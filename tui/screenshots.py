"""``make screenshots``: real screenshots of the app running a recipe, as SVG and PNG.

The app runs the recipe for real (screen session, ctx updater, Dash server) under Textual's
headless driver; the SVGs are Textual's own screenshots and the PNGs are those SVGs rendered by
Chromium, so what the README shows is what a terminal shows.

    python -m tui.screenshots [--recipe recipes/demo_screen_dash_ctx.yaml] [--out screenshots]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Headless Chromium on a machine with no network: without the background-networking flags
#: it keeps trying to reach its services at every start.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def _wait(pilot, predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not reach the expected state")
        await pilot.pause(0.1)


async def capture(recipe_path: Path, out: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    from core.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    written: list[Path] = []
    for n, (width, height) in enumerate(sizes):
        written += await _capture_size(recipe, out, width, height, extras=n == 0)
    return written


async def _capture_size(recipe, out: Path, width: int, height: int, *, extras: bool) -> list[Path]:
    """Run the recipe in the app at one terminal size; save the main view (and help, sessions)."""
    from core.control import LocalControl
    from core.resources import ResourceSampler
    from core.runner import Runner
    from core.state import Status
    from tui.app import make_app
    from tui.widgets import CtxInspector, LogPane, StepTree

    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="orch-shots-") as tmp, _private_sessions(tmp):
        runner = Runner(
            recipe, run_dir=Path(tmp) / "run", interactive=True, sampler=ResourceSampler()
        )
        app = make_app(LocalControl(runner), start=runner.start)

        def settled() -> bool:
            steps = runner.state()["steps"].values()
            return all(s["status"] not in (Status.PENDING, Status.RUNNING) for s in steps)

        names = [s.name for s in recipe.steps]
        background = [s.name for s in recipe.steps if s.background]
        target = background[0] if background else names[-1]
        pinned = background[-1] if len(background) > 1 else None
        try:
            async with app.run_test(size=(width, height)) as pilot:
                app.animation_level = "none"
                await _wait(pilot, settled, 60)
                await pilot.pause(2.5)  # let the sparklines and the ctx fill a little
                tree = app.query_one(StepTree)
                if pinned is not None:  # show the split: one log pinned beside the other
                    for _ in range(names.index(pinned)):
                        await pilot.press("down")
                    await pilot.press("p")
                    await pilot.press("home")
                for _ in range(names.index(target)):
                    await pilot.press("down")
                await _wait(pilot, lambda: tree.selected_step == target)
                ctx_view = app.query_one(CtxInspector)
                for key in list(runner.ctx)[:1]:
                    ctx_view.expand_key(key)
                await _wait(pilot, lambda: bool(app.query_one("#log-main", LogPane).lines), 10)
                written.append(_save(app, out, f"orch-tui-{width}x{height}"))
                if extras:
                    await pilot.press("question_mark")
                    await pilot.pause(0.3)
                    written.append(_save(app, out, "orch-tui-help"))
                    await pilot.press("escape")
                    await pilot.press("S")
                    await pilot.pause(2.0)
                    written.append(_save(app, out, "orch-tui-sessions"))
                    await pilot.press("escape")
        finally:
            if not runner.finished:
                runner.close()
                runner.wait(30)
    return written


@contextlib.contextmanager
def _private_sessions(tmp: str) -> Iterator[None]:
    """The recipe's screen and tmux sessions on a SCREENDIR and tmux socket of their own,
    ended afterwards: a session outlives its run by design, but these are the screenshots',
    not the user's (they were left running, and in the user's own session list)."""
    screendir = Path(tmp) / "screens"
    screendir.mkdir(mode=0o700)
    saved = {key: os.environ.get(key) for key in ("SCREENDIR", "TMUX_TMPDIR")}
    os.environ["SCREENDIR"] = os.environ["TMUX_TMPDIR"] = str(screendir)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        env = {**os.environ, "SCREENDIR": str(screendir), "TMUX_TMPDIR": str(screendir)}
        for socket in screendir.iterdir():
            pid = socket.name.split(".", 1)[0]
            if socket.is_socket() and pid.isdigit():  # a screen session: <pid>.<name>
                _quiet([shutil.which("screen") or "screen", "-S", socket.name, "-X", "quit"], env)
                if socket.exists():  # it did not quit (a quit session removes its socket)
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(int(pid), signal.SIGKILL)
        _quiet([shutil.which("tmux") or "tmux", "kill-server"], env)


def _quiet(argv: list[str], env: dict[str, str]) -> None:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(argv, env=env, capture_output=True, timeout=10, check=False)


def _save(app, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    svg = app.export_screenshot(title="orch-tui")
    path = out / f"{name}.svg"
    path.write_text(svg, encoding="utf-8")
    return path


def to_png(svg: Path) -> Path | None:
    """Render an SVG with Chromium (headless) at its own size; None if Chromium is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    text = svg.read_text(encoding="utf-8")
    match = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', text)
    width, height = (
        (int(float(match.group(1))), int(float(match.group(2)))) if match else (1200, 800)
    )
    png = svg.with_suffix(".png")
    with tempfile.TemporaryDirectory(prefix="orch-chromium-") as profile:
        html = Path(profile) / "page.html"
        html.write_text(
            f"<html><body style='margin:0;background:#0c0c0c'>{text}</body></html>",
            encoding="utf-8",
        )
        subprocess.run(
            [
                chromium,
                *CHROMIUM_ARGS,
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png}",
                html.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the README screenshots.")
    parser.add_argument(
        "--recipe", type=Path, default=ROOT / "recipes" / "demo_screen_dash_ctx.yaml"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    args = parser.parse_args(argv)
    svgs = asyncio.run(capture(args.recipe, args.out, [(120, 36), (80, 24), (200, 60)]))
    for svg in svgs:
        png = to_png(svg)
        print(
            f"wrote {svg.relative_to(ROOT) if svg.is_relative_to(ROOT) else svg}"
            + (f" and {png.name}" if png else " (no chromium: no PNG)")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
