"""A terminal that does not read (``orch-tui r.yaml --no-ui | (sleep 45; cat)``, a FIFO nobody
opens for long) and a step that floods its output.

Once, the runner's memory grew by megabytes a second while stdout was blocked, events.jsonl
was cut short (no step or run finished) while state.json said succeeded, and the process never
ended. Now the run ends when its steps do and its files are complete whatever the terminal does;
the echo skips what the terminal cannot take (and says so); at exit a terminal that takes
nothing for ``ORCH_STDOUT_TIMEOUT`` seconds is given up on. events.jsonl carries the size and
line count of the output, not a second copy of it.
"""

from __future__ import annotations

import json
import os
import re
import select
import threading
import time

import psutil

from tests.conftest import (
    PY,
    kill_tree,
    make_runner,
    only_run_dir,
    read_state,
    run_recipe,
    start_cli,
    wait_for,
    write_recipe,
)

#: 100 MB of 4,000-character lines over a few seconds (the reporter keeps up with a fast reader).
FLOOD = r"""
import sys, time
line = b"x" * 4000 + b"\n"
for _ in range(100):
    sys.stdout.buffer.write(line * 250)
    sys.stdout.buffer.flush()
    time.sleep(0.03)
"""

RECIPE = """
steps:
  - {{name: flood, type: shell, cmd: {py}, args: [flood.py]}}
  - {{name: after, type: shell, run: "echo after the flood"}}
"""


def _start_blocked(tmp_path, env=None):
    """orch-tui --no-ui with stdout on a pipe that nobody reads (yet); (process, read end)."""
    (tmp_path / "flood.py").write_text(FLOOD)
    recipe = write_recipe(tmp_path, RECIPE.format(py=json.dumps(PY)))
    read_end, write_end = os.pipe()
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path, stdout=write_end, env=env)
    os.close(write_end)
    return proc, read_end


def _recorded(run_dir, *steps: str) -> bool:
    """events.jsonl holds the steps' ends and the run's (read while it is being written: only
    its complete lines)."""
    lines = (run_dir / "events.jsonl").read_bytes().split(b"\n")[:-1]
    kinds = {(e["type"], e.get("step")) for e in map(json.loads, lines)}
    return {*(("step_finished", step) for step in steps), ("run_finished", None)} <= kinds


def _run_recorded(run_dir) -> bool:
    return _recorded(run_dir, "flood", "after")


def _read_to_end(fd: int, timeout: float = 60) -> bytes:
    data = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return bytes(data)
            data += chunk
    raise AssertionError(f"no end of output after {timeout}s ({len(data)} bytes read)")


def test_blocked_stdout_the_run_ends_complete_and_memory_stays_bounded(tmp_path, faults):
    proc, read_end = _start_blocked(tmp_path)
    faults.tried("stdout blocked while a step prints 100 MB")
    try:
        me = psutil.Process(proc.pid)
        run_dir = wait_for(lambda: only_run_dir(tmp_path), 30, "the run directory")
        wait_for(lambda: (run_dir / "logs" / "flood.log").exists(), 30, "the flood")
        base = peak = me.memory_info().rss
        deadline = time.monotonic() + 60
        while not _run_recorded(run_dir):  # nobody reads stdout meanwhile
            assert time.monotonic() < deadline, "the run's end never reached events.jsonl"
            peak = max(peak, me.memory_info().rss)
            time.sleep(0.05)  # a sampling period, not synchronisation
        growth = (peak - base) / 2**20
        print(f"\nRSS with stdout blocked: {base / 2**20:.0f} -> {peak / 2**20:.0f} MiB")
        assert growth < 60, f"memory grew by {growth:.0f} MiB while stdout was blocked"
        # state.json is a snapshot coalesced apart from events.jsonl: it follows within moments
        status = wait_for(
            lambda: read_state(run_dir)["status"] != "running" and read_state(run_dir)["status"],
            30,
            "the final state.json",
        )
        assert status == "succeeded"
        assert (run_dir / "logs" / "flood.log").stat().st_size == 100 * 250 * 4001

        shown = _read_to_end(read_end).decode()  # the reader comes back (the cat after sleep)
        proc.wait(timeout=30)
    finally:
        os.close(read_end)
        kill_tree(proc)
    assert proc.returncode == 0
    assert re.search(
        r"flood \| … [\d,]+ bytes of output not shown \(terminal too slow; complete in "
        r"\S*logs/flood\.log\)",
        shown,
    ), shown[-3000:]
    # the status lines all came, and so did the word on what the step after printed meanwhile
    for line in ("flood succeeded", "after started", "after succeeded", "run succeeded"):
        assert line in shown, line
    assert "after | … 16 bytes of output not shown" in shown
    echoed = [line for line in shown.splitlines() if line.startswith("flood | x")]
    assert echoed and all(line == "flood | " + "x" * 4000 for line in echoed), "whole lines"
    (run_dir / "logs" / "flood.log").unlink()  # 100 MB: not worth keeping
    print(f"shown: {len(shown) / 1e6:.1f} MB of the 100 MB the step printed")
    faults.survived("stdout blocked while a step prints 100 MB")


def test_stdout_never_read_orch_tui_gives_up_and_exits(tmp_path, faults):
    proc, read_end = _start_blocked(tmp_path, env={"ORCH_STDOUT_TIMEOUT": "1"})
    faults.tried("stdout never read at all")
    try:
        run_dir = wait_for(lambda: only_run_dir(tmp_path), 30, "the run directory")
        wait_for(lambda: proc.poll() is not None, 60, "orch-tui to give up on its stdout")
        err = proc.stderr.read().decode()
    finally:
        os.close(read_end)
        kill_tree(proc)
    assert proc.returncode == 0, err
    assert (
        "orch-tui: stdout is not being read: gave up on the rest of the output "
        f"(the run's files are complete in {run_dir})"
    ) in err
    assert "Traceback" not in err
    assert _run_recorded(run_dir)
    (run_dir / "logs" / "flood.log").unlink()
    faults.survived("stdout never read at all")


def test_a_consumer_that_blocks_does_not_cut_events_jsonl_short(tmp_path, runners, faults):
    """events.jsonl is the run's record, written apart from the consumers (the reporter, the
    TUI): one stuck in its handler gets a bounded wait at the end, the file gets everything."""
    runner = make_runner(
        tmp_path,
        """
        steps:
          - {name: first, type: shell, run: "echo first"}
          - {name: second, type: shell, run: "echo second"}
        """,
    )
    runners.append(runner)
    release = threading.Event()

    def stuck(event) -> None:  # like a write to a terminal nobody reads
        if event.kind == "step_finished":
            release.wait(60)

    runner.subscribe(stuck)
    faults.tried("an event consumer stuck in its handler")
    runner.start()
    try:
        wait_for(lambda: _recorded(runner.run_dir, "first", "second"), 30, "the whole record")
        assert runner.wait(30) == 0
    finally:
        release.set()
    faults.survived("an event consumer stuck in its handler")


def test_events_carry_the_size_of_the_output_not_a_copy(tmp_path, faults):
    faults.tried("events.jsonl beside a step printing 2,000,000 lines and one printing 100 MB")
    (tmp_path / "flood.py").write_text(FLOOD)
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: lines, type: shell, depends_on: [], run: "seq 2000000"}}
          - {{name: flood, type: shell, depends_on: [], cmd: {json.dumps(PY)}, args: [flood.py]}}
        """,
        timeout=60,
    )
    assert result.code == 0
    outputs = [e for e in result.events if e["type"] == "step_output"]
    assert outputs
    for event in outputs:
        assert len(event["lines"]) <= 20 and all(len(line) <= 500 for line in event["lines"])
    for name, lines in (("lines", 2_000_000), ("flood", 25_000)):
        last = [e for e in outputs if e["step"] == name][-1]
        log = result.run_dir / "logs" / f"{name}.log"
        assert (last["size"], last["lines_total"]) == (log.stat().st_size, lines)
    assert outputs[-1]["lines"]  # a glance at the newest lines is still there
    events_size = (result.run_dir / "events.jsonl").stat().st_size
    logs_size = sum(p.stat().st_size for p in (result.run_dir / "logs").iterdir())
    print(f"\nevents.jsonl {events_size / 1e3:.0f} KB beside {logs_size / 1e6:.0f} MB of logs")
    assert events_size < logs_size / 100
    (result.run_dir / "logs" / "flood.log").unlink()
    faults.survived("events.jsonl beside a step printing 2,000,000 lines and one printing 100 MB")
