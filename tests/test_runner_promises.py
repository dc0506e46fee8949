"""README promises about running, checked end to end through the real ``orch-tui --no-ui``:
the default ``--jobs`` (the number of CPUs, background steps taking no slot), each step's peak
CPU and RSS in state.json, and a python step that ignores ``stop`` (recorded, abandoned, and the
run still ends)."""

from __future__ import annotations

import json
import os

from tests.conftest import (
    PY,
    kill_tree,
    only_run_dir,
    read_state,
    run_cli,
    start_cli,
    wait_for,
    write_module,
    write_recipe,
)


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end before a start at the same instant)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    return peak


def test_default_jobs_is_the_cpu_count_and_background_steps_take_no_slot(tmp_path):
    cpus = os.cpu_count() or 1
    hold = 'touch "started-$ORCH_STEP"; until [ -e release ]; do sleep 0.02; done'
    steps = [
        f"  - {{name: f{i}, type: shell, depends_on: [], run: '{hold}'}}\n" for i in range(cpus + 2)
    ]
    recipe = write_recipe(
        tmp_path,
        "steps:\n"
        "  - {name: bg, type: shell, background: true, ready: {delay: 0}, depends_on: [],"
        " run: 'exec sleep 100'}\n" + "".join(steps),
    )
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)  # no --jobs: the default
    try:
        # cpus foreground steps at once beside the running background step, which took no slot
        wait_for(lambda: len(list(tmp_path.glob("started-f*"))) >= cpus, 30, f"{cpus} steps")
        (tmp_path / "release").touch()
        out, err = proc.communicate(timeout=60)
    finally:
        kill_tree(proc)
    assert proc.returncode == 0, out.decode() + err.decode()
    state = read_state(only_run_dir(tmp_path))["steps"]
    assert state["bg"]["status"] == "stopped"
    foreground = [(s["started"], s["ended"]) for n, s in state.items() if n != "bg"]
    assert _max_overlap(foreground) == cpus  # never more than one per CPU
    assert all(
        state["bg"]["started"] < start and end < state["bg"]["ended"] for start, end in foreground
    )


HELD = 64 * 2**20


def test_peak_cpu_and_rss_of_a_step_are_in_state_json(tmp_path):
    """A step that holds 64 MiB and keeps a CPU busy until the sampler has seen it do both."""
    hog = (
        "import os\n"
        f"held = b'x' * {HELD}\n"
        "while not os.path.exists('release'):\n"
        "    sum(range(10_000))\n"
    )
    (tmp_path / "hog.py").write_text(hog)
    recipe = write_recipe(
        tmp_path,
        f"steps:\n  - {{name: hog, type: shell, cmd: {PY}, args: [hog.py]}}\n",
    )
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    try:

        def busy_sample() -> bool:
            events = (only_run_dir(tmp_path) / "events.jsonl").read_text().splitlines()
            samples = [json.loads(e) for e in events if '"resources"' in e]
            figures = [s["steps"].get("hog") or {} for s in samples]
            return any(f.get("cpu", 0) > 0 and (f.get("rss") or 0) >= HELD for f in figures)

        wait_for(busy_sample, 30, "a resource sample of the busy step")
        (tmp_path / "release").touch()
        out, err = proc.communicate(timeout=30)
    finally:
        kill_tree(proc)
    assert proc.returncode == 0, out.decode() + err.decode()
    hog_state = read_state(only_run_dir(tmp_path))["steps"]["hog"]
    assert hog_state["peak_cpu"] > 0
    assert hog_state["peak_rss"] >= HELD


def test_a_python_step_ignoring_stop_is_recorded_abandoned_and_the_run_ends(tmp_path):
    module = write_module(
        tmp_path,
        """
        import time

        def run(ctx, stop):
            while True:  # never looks at stop
                time.sleep(0.02)
        """,
    )
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: stubborn, type: python, module: {module}, timeout: 0.5, grace: 0.5}}
          - {{name: service, type: python, module: {module}, background: true, grace: 0.5,
              ready: {{delay: 0}}, depends_on: []}}
          - {{name: other, type: shell, run: echo other, depends_on: []}}
        """,
    )
    result = run_cli(recipe, "--no-ui", cwd=tmp_path, timeout=30)  # the run ends
    assert result.returncode == 1, result
    state = read_state(only_run_dir(tmp_path))
    abandoned = "did not stop within 0.5s; StepKilled raised in it"
    steps = state["steps"]
    assert steps["stubborn"]["status"] == "timed_out"
    assert steps["stubborn"]["reason"] == f"timed out after 0.5s; {abandoned}"
    assert steps["service"]["status"] == "stopped"
    assert steps["service"]["reason"].endswith(f"; {abandoned}")
    assert steps["other"]["status"] == "succeeded"
    assert (state["status"], state["exit_code"]) == ("failed", 1)
