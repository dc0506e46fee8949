"""Append rows ``[timestamp, r1, ..., rn]`` to a ctx list until told to stop: live demo data.

``timestamp`` is ``time.time()`` (seconds since the epoch, a float) and each ``r`` a random float
in [0, 1). Rows go through ``ctx.append`` (one row per interval) or, at ``interval_sec: 0``, through
``ctx.extend`` in batches, which sustains well over 10,000 rows/s into a ``core.context.Context``.

Recipe (a background step: it runs until the run stops it, or until ``max_rows``)::

    - name: update_ctx_background
      type: python
      module: scriptlets.python.steps.ctx_row_updater
      background: true
      ready: {ctx: new_row}
      params:
        key: new_row
        n: 3
        interval_sec: 1

CLI (prints each row as JSON as it is made, until Ctrl-C or ``--max_rows``)::

    python scriptlets/python/steps/ctx_row_updater.py --key foo --n 2 --interval_sec 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any

#: Rows per ``ctx.extend`` call at interval 0: big enough to amortise the lock and the change
#: notification, small enough that readers see data arrive continuously and ``stop`` is noticed.
BATCH_ROWS = 1000


def make_row(n: int, rand: Callable[[], float] = random.random) -> list[float]:
    """One row: the current time and ``n`` random floats."""
    return [time.time(), *[rand() for _ in range(n)]]


def _writers(ctx: Any, key: str) -> tuple[Callable[[list], Any], Callable[[list], Any]]:
    """``(append_row, extend_rows)`` for ``ctx[key]``.

    A ``Context`` (anything with ``append(key, row)``/``extend(key, rows)``) is written through
    those methods, so the write is locked, checked and versioned. A plain mapping gets a list at
    ``key`` (created when missing) that is appended to in place.
    """
    append = getattr(ctx, "append", None)
    extend = getattr(ctx, "extend", None)
    if callable(append) and callable(extend):
        return (lambda row: append(key, row)), (lambda rows: extend(key, rows))
    if not isinstance(ctx, MutableMapping):
        raise TypeError(f"ctx must be a Context or a dict, not {type(ctx).__name__}")
    target = ctx.setdefault(key, [])
    if not isinstance(target, list):
        raise TypeError(f"ctx[{key!r}] holds a {type(target).__name__}, not a list: cannot append")
    return target.append, target.extend


def run(
    ctx: Any,
    key: str,
    n: int = 3,
    interval_sec: float = 1.0,
    stop: threading.Event | None = None,
    max_rows: int | None = None,
    log: logging.Logger | None = None,
) -> int:
    """Append rows to ``ctx[key]`` until ``stop`` is set or ``max_rows`` rows were added.

    ``interval_sec`` > 0: one row every ``interval_sec`` seconds (on a fixed schedule, so the
    rate does not drift with the time each append takes). ``interval_sec`` == 0: as fast as
    possible, in batches of ``BATCH_ROWS``. Waiting is ``stop.wait``, so setting ``stop`` ends the
    step at once, not at the end of the interval. Returns the number of rows appended.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty string, got {key!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a whole number >= 0, got {n!r}")
    if isinstance(interval_sec, bool) or not isinstance(interval_sec, (int, float)):
        raise ValueError(f"interval_sec must be a number of seconds, got {interval_sec!r}")
    if not interval_sec >= 0:  # also rejects NaN
        raise ValueError(f"interval_sec must be >= 0, got {interval_sec!r}")
    if max_rows is not None and (
        isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 0
    ):
        raise ValueError(f"max_rows must be a whole number >= 0 or null, got {max_rows!r}")

    stop = stop if stop is not None else threading.Event()
    append, extend = _writers(ctx, key)
    limit = max_rows if max_rows is not None else float("inf")
    if log:
        every = "as fast as possible" if interval_sec == 0 else f"every {interval_sec:g} s"
        upto = f", up to {max_rows} rows" if max_rows is not None else ""
        log.info("appending rows of %d values to ctx[%r] %s%s", n, key, every, upto)

    count = 0
    rand = random.random
    now = time.time
    if interval_sec == 0:
        while count < limit and not stop.is_set():
            size = int(min(BATCH_ROWS, limit - count))
            extend([[now(), *[rand() for _ in range(n)]] for _ in range(size)])
            count += size
    else:
        next_at = time.monotonic()
        while count < limit and not stop.is_set():
            append(make_row(n, rand))
            count += 1
            if count >= limit:
                break
            next_at += interval_sec
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (a suspended machine, a slow ctx): do not burst to catch up
                next_at, delay = time.monotonic(), 0
            if stop.wait(delay):
                break
    if log:
        log.info("appended %d rows to ctx[%r]", count, key)
    return count


class _EchoCtx:
    """The CLI's ctx: prints each row as a JSON line instead of keeping it (memory stays flat)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def append(self, key: str, row: list[float]) -> None:
        self.stream.write(json.dumps(row) + "\n")
        self.stream.flush()

    def extend(self, key: str, rows: list[list[float]]) -> None:
        self.stream.write("".join(json.dumps(row) + "\n" for row in rows))
        self.stream.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print rows [timestamp, r1, ..., rn] as JSON lines, as a recipe step would "
        "append them to ctx[KEY], until Ctrl-C (or --max_rows)."
    )
    parser.add_argument("--key", default="new_row", help="ctx key (default: new_row)")
    parser.add_argument("--n", type=int, default=3, help="random values per row (default: 3)")
    parser.add_argument(
        "--interval_sec",
        type=float,
        default=1.0,
        help="seconds between rows; 0 = as fast as possible (default: 1)",
    )
    parser.add_argument("--max_rows", type=int, default=None, help="stop after this many rows")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        run(
            _EchoCtx(sys.stdout),
            args.key,
            n=args.n,
            interval_sec=args.interval_sec,
            stop=stop,
            max_rows=args.max_rows,
        )
    except ValueError as exc:
        parser.error(str(exc))
    except BrokenPipeError:  # e.g. piped into `head`: the reader is gone, which is fine
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
