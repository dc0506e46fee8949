"""scriptlets/python/steps/ctx_row_updater.py: the API with a Context and a stop Event, a plain
dict, throughput at interval 0, the CLI (JSON rows, Ctrl-C) and the step in a real run.

No timing assertions: promptness is "the thread has ended within a deadline", rates are printed.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
import time

import pytest

from core.context import Context
from scriptlets.python.steps import ctx_row_updater
from tests.conftest import PY, ROOT, run_recipe, wait_for

SCRIPT = ROOT / "scriptlets" / "python" / "steps" / "ctx_row_updater.py"


class Background:
    """``ctx_row_updater.run`` in a thread, with its result or exception kept."""

    def __init__(self, ctx, **params) -> None:
        self.stop = threading.Event()
        self.result: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._go, args=(ctx,), kwargs=params, daemon=True)
        self.thread.start()

    def _go(self, ctx, **params) -> None:
        try:
            self.result = ctx_row_updater.run(ctx, stop=self.stop, **params)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def stop_and_join(self, timeout: float = 1.0) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"still running {timeout}s after stop was set"
        assert self.error is None, self.error


def check_rows(rows, n):
    assert rows
    for row in rows:
        assert len(row) == n + 1
        assert all(isinstance(v, float) for v in row)
        assert all(0.0 <= v < 1.0 for v in row[1:])
    stamps = [row[0] for row in rows]
    assert stamps == sorted(stamps), "timestamps must not go backwards"
    assert abs(stamps[-1] - time.time()) < 60


def test_appends_rows_to_a_context_until_stopped():
    ctx = Context()
    job = Background(ctx, key="new_row", n=2, interval_sec=0.01)
    wait_for(lambda: len(ctx.get("new_row", [])) >= 5, message="5 rows")
    job.stop_and_join()
    rows = ctx["new_row"]
    assert job.result == len(rows)
    check_rows(rows, 2)


def test_stop_ends_a_long_wait_at_once():
    """stop.wait(interval), not sleep: a 60 s interval still ends within the 1 s join."""
    ctx = Context()
    job = Background(ctx, key="k", n=1, interval_sec=60)
    wait_for(lambda: len(ctx.get("k", [])) == 1, message="the first row")
    job.stop_and_join(1.0)
    assert job.result == 1


def test_stop_ends_the_fast_loop():
    ctx = Context()
    job = Background(ctx, key="k", n=3, interval_sec=0)
    wait_for(lambda: len(ctx.get("k", [])) >= 2000, message="rows at interval 0")
    job.stop_and_join(1.0)
    assert job.result == len(ctx["k"])
    check_rows(ctx["k"][-100:], 3)


@pytest.mark.parametrize("interval", [0, 0.001])
def test_max_rows(interval):
    ctx = Context()
    assert ctx_row_updater.run(ctx, "k", n=4, interval_sec=interval, max_rows=7) == 7
    assert len(ctx["k"]) == 7
    check_rows(ctx["k"], 4)


def test_max_rows_zero_appends_nothing():
    ctx = Context()
    assert ctx_row_updater.run(ctx, "k", max_rows=0) == 0
    assert "k" not in ctx


def test_throughput_at_interval_zero():
    ctx = Context()
    start = time.perf_counter()
    count = ctx_row_updater.run(ctx, "fast", n=3, interval_sec=0, max_rows=50_000)
    elapsed = time.perf_counter() - start
    print(f"\nctx_row_updater into a Context: {count / elapsed:,.0f} rows/s ({elapsed:.3f} s)")
    assert count == 50_000
    assert len(ctx["fast"]) == 50_000
    check_rows(ctx["fast"][::1000], 3)


def test_plain_dict_keeps_existing_rows():
    ctx = {"k": [[1.0, 0.5]]}
    assert ctx_row_updater.run(ctx, "k", n=1, interval_sec=0, max_rows=3) == 3
    assert len(ctx["k"]) == 4 and ctx["k"][0] == [1.0, 0.5]
    check_rows(ctx["k"][1:], 1)
    fresh: dict = {}
    ctx_row_updater.run(fresh, "new", n=0, interval_sec=0, max_rows=2)
    assert [len(row) for row in fresh["new"]] == [1, 1]


def test_logs_what_it_does():
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    log = logging.Logger("test.ctx_row_updater")
    log.addHandler(Keep())
    ctx_row_updater.run({}, "k", n=2, interval_sec=0, max_rows=5, log=log)
    assert any("ctx['k']" in r and "as fast as possible" in r for r in records), records
    assert any("appended 5 rows" in r for r in records), records


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n": -1}, "n must be"),
        ({"n": 1.5}, "n must be"),
        ({"interval_sec": -1}, "interval_sec must be >= 0"),
        ({"interval_sec": "1"}, "interval_sec must be a number"),
        ({"max_rows": -3}, "max_rows"),
        ({"key": ""}, "key must be"),
    ],
)
def test_bad_parameters(params, match):
    kwargs = {"key": "k", "max_rows": 1, **params}
    with pytest.raises(ValueError, match=match):
        ctx_row_updater.run({}, **kwargs)


def test_a_key_holding_something_else_is_an_error():
    with pytest.raises(TypeError, match="not a list"):
        ctx_row_updater.run({"k": 3}, "k", max_rows=1)
    with pytest.raises(TypeError, match="not a list"):
        ctx_row_updater.run(Context({"k": 3}), "k", max_rows=1)


# ------------------------------------------------------------------------------------ CLI
def test_cli_prints_json_rows():
    result = subprocess.run(
        [PY, str(SCRIPT), "--key", "foo", "--n", "2", "--interval_sec", "0", "--max_rows", "3"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 3
    check_rows(rows, 2)


def test_cli_help():
    result = subprocess.run([PY, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "--interval_sec" in result.stdout and "--max_rows" in result.stdout


def test_cli_ctrl_c_exits_0_without_traceback():
    proc = subprocess.Popen(
        [PY, str(SCRIPT), "--key", "foo", "--n", "2", "--interval_sec", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        first = proc.stdout.readline()  # blocks until the first row is printed
        assert len(json.loads(first)) == 3
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    for line in out.splitlines():
        assert len(json.loads(line)) == 3


def test_cli_rejects_bad_values():
    result = subprocess.run(
        [PY, str(SCRIPT), "--n", "-2", "--max_rows", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "n must be" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------ in a run
def test_in_a_run_as_a_background_step(tmp_path):
    """The runner passes stop: the background step ends when the foreground ones are done."""
    done = run_recipe(
        tmp_path,
        """
        steps:
          - name: init
            type: python
            module: scriptlets.python.steps.ctx_init
            params: {keys: [new_row]}
          - name: feed
            type: python
            module: scriptlets.python.steps.ctx_row_updater
            background: true
            ready: {ctx: new_row}
            params: {key: new_row, n: 3, interval_sec: 0.01}
          - name: limited
            type: python
            module: scriptlets.python.steps.ctx_row_updater
            params: {key: other, n: 1, interval_sec: 0.01, max_rows: 25}
            output: appended
        """,
    )
    assert done.code == 0, done.steps
    assert done.steps["feed"]["status"] == "stopped"
    assert done.steps["limited"]["status"] == "succeeded"
    assert done.ctx["appended"] == 25
    assert len(done.ctx["other"]) == 25
    check_rows(done.ctx["new_row"], 3)
