"""The command line: the dashboard without a run, over a run's ctx.json or rows it makes up.

Ctrl-C or SIGTERM stops the server as the runner's ``stop`` would, so the port is free and the
exit status is 0; a bad value or a port in use is one line on stderr and status 1.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .figure import DEFAULT_MAX_POINTS
from .server import orch_debug, run
from .source import CtxFileSource


def _demo_rows(count: int, n: int, spacing: float) -> list[list[float]]:
    """``count`` rows of ``n`` random walks, the last one now, ``spacing`` seconds apart."""
    import numpy as np

    if count <= 0:
        return []
    rng = np.random.default_rng()
    t = time.time() - spacing * np.arange(count - 1, -1, -1, dtype=np.float64)
    values = np.cumsum(rng.normal(0, 1, size=(count, n)), axis=0)
    return np.column_stack([t, values]).tolist()


def _demo_feeder(
    ctx: dict[str, Any], key: str, n: int, interval: float, stop: threading.Event
) -> None:
    """Append a row of ``n`` random walks to ``ctx[key]`` every ``interval`` seconds."""
    rows = ctx.setdefault(key, [])
    level = list(rows[-1][1:]) if rows else [0.0] * n
    level += [0.0] * (n - len(level))
    while not stop.wait(interval):
        level = [v + random.gauss(0, 1) for v in level[:n]]
        rows.append([time.time(), *level])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Live Dash plot of ctx[CTX_KEY] rows [timestamp, v1, ..., vn]: from the "
        "ctx.json of a run directory, or from rows it generates itself."
    )
    parser.add_argument("--port", type=int, default=8050, help="port (default: 8050)")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    parser.add_argument("--ctx_key", default="new_row", help="ctx key to plot (default: new_row)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument(
        "--run-dir",
        metavar="DIR",
        help="plot DIR/ctx.json of an orch-tui run, re-read when it changes",
    )
    src.add_argument(
        "--demo-rows",
        type=int,
        default=1000,
        metavar="N",
        help="without --run-dir: start with N generated rows (default: 1000), then add more",
    )
    parser.add_argument("--demo-n", type=int, default=3, help="values per demo row (default: 3)")
    parser.add_argument(
        "--demo-interval",
        type=float,
        default=0.2,
        metavar="SEC",
        help="seconds between new demo rows (default: 0.2)",
    )
    parser.add_argument(
        "--interval_ms", type=int, default=500, help="refresh period (default: 500)"
    )
    parser.add_argument(
        "--max_points",
        type=int,
        default=DEFAULT_MAX_POINTS,
        help=f"points per trace sent to the browser (default: {DEFAULT_MAX_POINTS})",
    )
    parser.add_argument(
        "--debug", action="store_true", help="log every HTTP request (default: $ORCH_DEBUG)"
    )
    parser.add_argument(
        "--no-token",
        action="store_true",
        help="no token in the address: any local user's browser gets in (the Host check stays)",
    )
    return parser


def _source(
    parser: argparse.ArgumentParser, args: argparse.Namespace, stop: threading.Event
) -> Any:
    """What to plot: the run directory's ctx.json, or demo rows that keep coming until ``stop``."""
    if args.run_dir:
        path = Path(args.run_dir)
        if path.is_dir():
            path = path / "ctx.json"
        elif not path.name.endswith(".json"):
            parser.error(f"--run-dir {args.run_dir}: no such directory")
        print(f"plotting ctx[{args.ctx_key!r}] from {path}", flush=True)
        return CtxFileSource(path)
    source = {args.ctx_key: _demo_rows(args.demo_rows, args.demo_n, args.demo_interval)}
    threading.Thread(
        target=_demo_feeder,
        args=(source, args.ctx_key, args.demo_n, args.demo_interval, stop),
        name="hello_dash-demo",
        daemon=True,
    ).start()
    return source


def _stop_on_signals() -> threading.Event:
    """An event Ctrl-C or SIGTERM sets: the server then stops as the runner's ``stop`` stops it
    (port freed, exit status 0, no traceback)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    return stop


def main(argv: list[str] | None = None) -> int:
    """``hello_dash.py [options]``: serve until Ctrl-C or SIGTERM; the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.demo_rows < 0 or args.demo_n < 1 or not args.demo_interval > 0:
        parser.error("--demo-rows must be >= 0, --demo-n >= 1 and --demo-interval > 0")

    debug = args.debug or orch_debug()
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s")
    stop = _stop_on_signals()
    try:
        run(
            _source(parser, args, stop),
            port=args.port,
            ctx_key=args.ctx_key,
            host=args.host,
            stop=stop,
            interval_ms=args.interval_ms,
            max_points=args.max_points,
            debug=debug,
            token=not args.no_token,
        )
    except (RuntimeError, ValueError, SystemExit) as exc:
        print(f"hello_dash: {exc}", file=sys.stderr)
        return 1
    return 0
