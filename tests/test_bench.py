"""The benchmarks run (tiny sizes, one pass) and measure what they claim: a correctness check.

No timing is asserted here; speed is judged by ``make bench`` ratios, not by the test suite.
"""

from __future__ import annotations

import importlib.util
import json
import operator
import shutil
import subprocess
import sys
from functools import reduce
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _bench_daemons() -> set[int]:
    """Run daemons of this checkout's bench (its work folders are under ROOT/.orch/bench-*)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"core.daemon" in argv and any(
            str(ROOT / ".orch" / "bench-").encode() in a for a in argv
        ):
            found.add(int(proc.name))
    return found


def test_quick_benchmarks_produce_every_figure(tmp_path):
    before = _bench_daemons()
    out = tmp_path / "r.json"
    result = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _bench_daemons() - before == set()  # the apps' runs are stopped, none left running
    results = json.loads(out.read_text())  # --out given: written even with --quick
    for figure in (
        "sweep.ratios.chain_vs_make.20",
        "sweep.ratios.fan-out_vs_make.20",
        "sweep.series.python/orch-tui.20",
        "scheduling.ratio_chain_vs_make",
        "scheduling.ratio_wide_vs_make",
        "scheduling.ratio_python_spawn_vs_make",  # the floors, in the same invocation
        "sweep.floor_ratios.python-spawn_vs_make.20",
        "sweep.series.python-cold/pyyaml.20",
        "log_capture.floor_capture_echo",
        "startup.python_msgspec",
        "python_steps.steps_per_second",
        "log_capture.ratio_vs_redirect",
        "startup.ratio_version_vs_python",
        "startup.validate_1000_steps",
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
        assert figure in result.stdout, figure  # in the printed table, and measured:
        value = reduce(operator.getitem, figure.split("."), results)
        if isinstance(value, dict):  # repeated measurements: min, median, max
            value = value["median"]
        assert isinstance(value, (int, float)) and value > 0, (figure, value)
    assert results["log_capture"]["lines_lost"] == 0
    # net of start-up: 0 when --quick's 10,000 lines take no longer than one (the noise)
    assert results["log_capture"]["ratio_floor_net_vs_redirect_stdout_to_file"] >= 0
    assert results["log_capture"]["byte_identical"] is True
    assert results["log_capture"]["ci_log_lines"] > results["log_capture"]["lines"]
    # every tool of the sweep ran at every size, and the plot was drawn beside the results
    assert "python_steps_per_second" in results["sweep"]  # None when t(20) <= t(1): noise
    assert "python_steps_per_second_cold" in results["sweep"]  # the recipe cache off
    sizes = {str(n) for n in results["sweep"]["sizes"]}
    contenders = ("chain/orch-tui", "chain/make", "fan-out/orch-tui", "python/orch-tui")
    for name in (*contenders, "chain-cold/orch-tui", "python-cold/orch-tui"):
        assert set(results["sweep"]["series"][name]) == sizes, name
    assert {row["target"] for row in results["targets"]} >= {"one-step run, whole process (s)"}
    # a chain's target beside the floor any Python runner meets, and the same on the printout
    chain = next(row for row in results["targets"] if row["target"] == "200-step chain / make")
    assert chain["floor"] == results["scheduling"]["ratio_python_spawn_vs_make"]
    assert "floor" in result.stdout
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "scaling.png").read_bytes().startswith(b"\x89PNG")


def test_quick_dask_benchmark_produces_its_figures(tmp_path):
    """``--only dask``: its own section (a LocalCluster of 2 workers), every ratio measured."""
    pytest.importorskip("distributed")
    out = tmp_path / "r.json"
    result = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--only", "dask", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dask = json.loads(out.read_text())["dask"]
    for figure in (
        "ratio_command_dask_vs_local",
        "ratio_per_step_dask_vs_local",
        "speedup_2_cpu_steps",
    ):
        assert f"dask.{figure}" in result.stdout, figure
        assert isinstance(dask[figure], float) and dask[figure] > 0, (figure, dask[figure])
    assert dask["overhead_ms_per_step"] >= 0
