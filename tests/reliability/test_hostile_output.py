"""Hostile output: huge lines, binary, escape sequences, \\r progress bars, odd pipe handling.

The log file must get every byte; nothing may hang; what people see (the plain headless
output, the TUI's log pane) must be text with no escape sequences or control characters and
lines of bounded length; and memory must not grow with what a step prints.

The steps run ``emit.py KIND``, which writes its bytes in irregular chunks (so escape sequences
and UTF-8 characters are split across reads) and the same bytes to ``expected-KIND.bin``.
"""

from __future__ import annotations

import json
import threading
import time
import unicodedata

import psutil

from tests import tui_helpers
from tests.conftest import (
    PY,
    assert_gone,
    kill_tree,
    marked,
    only_run_dir,
    read_pid,
    read_state,
    run_recipe,
    start_cli,
    wait_for,
    write_recipe,
)
from tests.tui_helpers import SIZE, main_pane, selected, send_key, until, until_status

orch = tui_helpers.orch  # fixture

EMIT = r"""
import os, random, sys

def kinds():
    huge = b"H" * 10_000_000  # a 10 MB line without a newline
    binary = (
        bytes(range(256)) * 64 + b"\n"
        + b"invalid utf-8: \xff\xfe \xc3\x28 \xa0\xa1 \xe2\x28\xa1 \xf0\x90\x28\xbc \xed\xa0\x80\n"
        + b"nul:" + b"\x00" * 1000 + b":end\n"
        + b"\t" * 5000 + b"tabs\n"
        + b"\x7f\x08\x08backspaces and del\n"
    )
    ansi = (
        b"\x1b[31mred\x1b[0m plain\n"
        b"\x1b]0;evil title\x07after-osc\n"
        b"\x1b]8;;http://example.com\x1b\\link\x1b]8;;\x1b\\ after-hyperlink\n"
        b"\x1b[2J\x1b[H\x1b[?1049h\x1bc\x1b[?25lscreen-wiping codes\n"
        b"\x1b[38;5;196mcolour256\x1b[0m \x1b[5Aup \x1b[10;10Hmoved\n"
        b"\x1bP1;2|device control\x1b\\after-dcs\n"
        b"c1 csi: \xc2\x9b31mC1\xc2\x9b0m raw: \x9b31mraw8bit\n"
        + b"\x1b]0;an OSC that is never terminated " + b"t" * 300_000 + b"\n"
        + b"after the long OSC\n"
        b"lone escape at the end \x1b"
        b"\x1b[38;5;"  # an unterminated CSI, then EOF
    )
    frames = b"".join(b"\rprogress %3d%%" % i for i in range(101))
    progress = (
        b"start\n" + frames + b"\n"
        + b"windows line\r\n"
        + b"\r\r\rcarriage returns first\n"
        + b"spinner " + b"".join(b"\r" + c for c in (b"|", b"/", b"-", b"\\") * 500) + b"\n"
        + b"done\n"
    )
    return {"huge": huge, "binary": binary, "ansi": ansi, "progress": progress}

kind = sys.argv[1]
data = kinds()[kind]
with open(f"expected-{kind}.bin", "wb") as f:
    f.write(data)
rng = random.Random(kind)
out = sys.stdout.buffer
i = 0
while i < len(data):
    n = rng.choice([1, 2, 3, 7, 100, 4096, 65536, 1 << 20])
    out.write(data[i : i + n])
    out.flush()
    i += n
"""

HOSTILE = """
jobs: 8
steps:
  - {{name: huge, type: shell, depends_on: [], cmd: {py}, args: [emit.py, huge]}}
  - {{name: binary, type: shell, depends_on: [], cmd: {py}, args: [emit.py, binary]}}
  - {{name: ansi, type: shell, depends_on: [], cmd: {py}, args: [emit.py, ansi]}}
  - {{name: progress, type: shell, depends_on: [], cmd: {py}, args: [emit.py, progress]}}
  - name: closes_early
    type: shell
    depends_on: []
    run: |
      echo "before closing stdout"
      exec >&- 2>&-
      until [ -f go ]; do sleep 0.02; done
      touch closes_early.finished
  - name: holder
    type: shell
    depends_on: []
    run: |
      ( echo $BASHPID > holder-child.pid
        while :; do echo "tick from a child that outlives the step"; sleep 0.05; done ) &
      echo "holder's own output"
"""

KINDS = ("huge", "binary", "ansi", "progress")


def _write_hostile(tmp_path):
    (tmp_path / "emit.py").write_text(EMIT)
    return write_recipe(tmp_path, HOSTILE.format(py=json.dumps(PY)))


def _c0_c1(text: str) -> set[str]:
    """Control characters that a terminal may act on (C0 but tab, DEL, C1)."""
    return {c for c in text if unicodedata.category(c) == "Cc" and c != "\t"}


def test_hostile_output_headless_logs_complete_and_plain_output_clean(tmp_path, faults):
    recipe = _write_hostile(tmp_path)
    out_path = tmp_path / "headless.out"
    started = time.monotonic()
    with out_path.open("wb") as out:
        proc = start_cli(recipe, "--no-ui", cwd=tmp_path, stdout=out)
    pids: list[int] = []
    try:
        faults.tried("hostile output (10 MB line, binary, ANSI, \\r, pipe games)", 6)
        pids = [read_pid(tmp_path / "holder-child.pid")]
        run_dir = wait_for(lambda: only_run_dir(tmp_path))
        # the step that closed its stdout is still running: EOF is not the end of a step
        wait_for(lambda: read_state(run_dir)["steps"]["huge"]["status"] == "succeeded", 15)
        assert read_state(run_dir)["steps"]["closes_early"]["status"] == "running"
        assert (run_dir / "logs" / "closes_early.log").read_bytes() == b"before closing stdout\n"
        # the holder's step is over although its child holds (and writes to) the pipe
        wait_for(lambda: read_state(run_dir)["steps"]["holder"]["status"] == "succeeded", 5)
        (tmp_path / "go").touch()
        _, err = proc.communicate(timeout=20)
        took = time.monotonic() - started
        assert proc.returncode == 0, err.decode()
        assert took < 20, f"took {took:.1f}s"
        assert (tmp_path / "closes_early.finished").exists()
        assert_gone(pids, timeout=2)
        assert marked(run_dir) == []

        for kind in KINDS:  # byte for byte
            expected = (tmp_path / f"expected-{kind}.bin").read_bytes()
            assert (run_dir / "logs" / f"{kind}.log").read_bytes() == expected, kind
        holder_log = (run_dir / "logs" / "holder.log").read_bytes()
        assert holder_log.startswith(b"holder's own output\n") or b"holder's own output\n" in (
            holder_log
        )

        shown = out_path.read_bytes()
        assert b"\x1b" not in shown, "raw escape codes in the plain headless output"
        assert b"\r" not in shown and b"\x00" not in shown
        text = shown.decode("utf-8")  # valid UTF-8, whatever the steps printed
        assert not _c0_c1(text.replace("\n", "")), sorted(_c0_c1(text.replace("\n", "")))
        assert "progress | progress 100%" in text
        assert "ansi | red plain" in text
        assert "ansi | after the long OSC" in text
        assert text.count("H") >= 10_000_000, "the 10 MB line is echoed (in pieces)"
        print(f"\nheadless run {took:.1f}s, {len(shown) / 1e6:.1f} MB of plain output")
        faults.survived("hostile output (10 MB line, binary, ANSI, \\r, pipe games)", 6)
    finally:
        kill_tree(proc, pids)


async def test_hostile_output_shown_sanely_in_the_tui(tmp_path, orch, faults):
    recipe = _write_hostile(tmp_path)
    app, runner = orch(recipe.read_text())
    faults.tried("hostile output in the TUI", 6)
    (tmp_path / "go").touch()
    async with app.run_test(size=SIZE) as pilot:
        for kind in KINDS:
            await until_status(pilot, runner, kind, "succeeded", timeout=15)
        await until_status(pilot, runner, "closes_early", "succeeded", timeout=10)
        await until_status(pilot, runner, "holder", "succeeded", timeout=10)
        pane = main_pane(app)
        seen: dict[str, list[str]] = {}
        order = ["huge", "binary", "ansi", "progress", "closes_early", "holder"]
        for i, name in enumerate(order):
            if i:
                send_key(app, "down")
            await until(pilot, lambda n=name: selected(app) == n and pane.step == n, 10, name)
            await until(pilot, lambda: pane.lines, 5, f"{name}'s lines")
            seen[name] = list(pane.lines)
        longest = 0
        for name, lines in seen.items():
            for line in lines:
                assert "\x1b" not in line, (name, line[:80])
                assert not _c0_c1(line), (name, sorted(_c0_c1(line)), line[:80])
                longest = max(longest, len(line))
        print(f"\nlongest line in the pane: {longest} characters")
        assert longest <= 8 * 4096, "a displayed line is bounded (the log keeps all of it)"
        assert seen["huge"] and set(seen["huge"][-1]) == {"H"}, "the 10 MB line shows (cut)"
        assert "progress 100%" in seen["progress"]
        assert "windows line" in seen["progress"]
        assert "carriage returns first" in seen["progress"]
        assert "red plain" in seen["ansi"]
        assert "after-osc" in seen["ansi"]
        assert "after the long OSC" in seen["ansi"]
        # 5000 tabs: cut to the display limit (4096 bytes), then expanded; never the raw tabs
        assert any(line and set(line) == {" "} for line in seen["binary"])
        assert "backspaces and del" in seen["binary"]
        assert seen["closes_early"] == ["before closing stdout"]
        assert "holder's own output" in seen["holder"]
    faults.survived("hostile output in the TUI", 6)


def _peak_rss_during(fn) -> tuple[int, int]:
    """(RSS before, peak RSS while ``fn`` runs) of this process, sampled every 5 ms."""
    me = psutil.Process()
    before = me.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.wait(0.005):  # a sampling period, not synchronisation
            peak[0] = max(peak[0], me.memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return before, peak[0]


def test_memory_stays_bounded_while_steps_print_200_mb(tmp_path, faults):
    # warm up: imports, thread pools, the first run's allocations
    warm = tmp_path / "warm"
    warm.mkdir()
    run_recipe(
        warm,
        """
        steps:
          - {name: warm, type: shell, run: "head -c 1000000 /dev/zero | tr '\\\\0' x; echo"}
        """,
    )
    result = {}

    def run():
        result["r"] = run_recipe(
            tmp_path,
            """
            jobs: 2
            steps:
              - name: lines
                type: shell
                depends_on: []
                run: "yes 'a line of output, printed as fast as it goes' | head -c 200000000"
              - name: one_line
                type: shell
                depends_on: []
                run: "head -c 200000000 /dev/zero | tr '\\\\0' 'x'"
            """,
            timeout=60,
            run_dir=tmp_path / "big",
        )

    faults.tried("steps printing 200 MB (lines, and one line)", 2)
    before, peak = _peak_rss_during(run)
    finished = result["r"]
    assert finished.code == 0, finished.steps
    logs = finished.run_dir / "logs"
    sizes = {p.name: p.stat().st_size for p in logs.iterdir()}
    growth = (peak - before) / 2**20
    print(
        f"\nlogs {sizes}; RSS {before / 2**20:.0f} MiB -> peak {peak / 2**20:.0f} MiB (+{growth:.0f})"
    )
    assert sizes == {"lines.log": 200_000_000, "one_line.log": 200_000_000}
    assert growth < 100, f"memory grew by {growth:.0f} MiB"
    for path in logs.iterdir():
        path.unlink()  # 400 MB: not worth keeping in pytest's tmp dirs
    faults.survived("steps printing 200 MB (lines, and one line)", 2)


def test_headless_reporter_memory_bounded_on_a_200_mb_line(tmp_path, faults):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - {name: one_line, type: shell, run: "head -c 200000000 /dev/zero | tr '\\\\0' 'x'"}
        """,
    )
    faults.tried("headless reporter echoing a 200 MB line")
    with open("/dev/null", "wb") as devnull:
        proc = start_cli(recipe, "--no-ui", cwd=tmp_path, stdout=devnull)
    try:
        me = psutil.Process(proc.pid)
        run_dir = wait_for(lambda: only_run_dir(tmp_path))
        wait_for(lambda: (run_dir / "logs" / "one_line.log").exists())
        base = peak = me.memory_info().rss
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                peak = max(peak, me.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.005)  # a sampling period, not synchronisation
        proc.wait(timeout=5)
        assert proc.returncode == 0
        growth = (peak - base) / 2**20
        print(f"\norch-tui RSS {base / 2**20:.0f} -> peak {peak / 2**20:.0f} MiB (+{growth:.0f})")
        assert growth < 100, f"the headless runner grew by {growth:.0f} MiB"
        (run_dir / "logs" / "one_line.log").unlink()
        faults.survived("headless reporter echoing a 200 MB line")
    finally:
        kill_tree(proc)
