"""``orch-tui attach [RUN]``: the TUI on a run that is already going, or on a past one.

A live run's daemon is its own process: the app attaches to it (core.client) and leaving the
app leaves the run going. A run that is over (or whose daemon died) is opened from its folder,
read-only (core.recorded): its tree, logs, ctx and how it ended in the header, and ``q`` just
quits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tui.cli import UsageError
from tui.runs import find_run, open_recorded, patience, probe_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Open the TUI on a run: a live one (default: the newest live run of this workspace), "
        "or, read-only, one that is over."
    )
    parser.add_argument(
        "run",
        nargs="?",
        metavar="RUN",
        help="a run id (or a unique beginning of one, or its last part: 3f9c) or a run folder",
    )


def cmd_attach(args: argparse.Namespace) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("attach needs a terminal (orch-tui ctl [RUN] status works without one)")
    path = find_run(args.run, Path.cwd())
    found = probe_folder(path)
    if found.live:
        from tui.remote import run_attached

        return run_attached(path, timeout=patience(found, path))
    with open_recorded(path, daemon_gone=found.gone) as recorded:
        from tui.app import make_app

        make_app(recorded).run()
    return 0
