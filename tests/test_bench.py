"""The benchmarks run (tiny sizes, one pass) and measure what they claim: a correctness check.

No timing is asserted here; speed is judged by ``make bench`` ratios, not by the test suite.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from tests.conftest import ROOT


def test_quick_benchmarks_produce_every_figure(tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--out", str(tmp_path / "r.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for figure in (
        "scheduling.ratio_chain_vs_make",
        "scheduling.ratio_wide_vs_make",
        "python_steps.steps_per_second",
        "log_capture.ratio_vs_redirect",
        "startup.ratio_version_vs_python",
        "ctx.appends_per_second",
        "dash.10000_rows.tick_bytes",
        "tui.pane_lines_per_second",
        "tui.key_latency_ms_max",
        *(  # the app in a tmux pane: measured only where tmux is installed
            ("tui_big_run.ratio_tui_vs_headless", "tui_big_run.first_paint_200_steps")
            if shutil.which("tmux")
            else ()
        ),
    ):
        assert figure in out, figure
    lost = next(line for line in out.splitlines() if "log_capture.lines_lost" in line)
    assert lost.split()[-1] == "0"
    identical = next(line for line in out.splitlines() if "log_capture.byte_identical" in line)
    assert identical.split()[-1] == "True"
    assert not (tmp_path / "r.json").exists() or json.loads((tmp_path / "r.json").read_text())
