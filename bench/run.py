"""orch-tui benchmarks: every figure next to a baseline measured in the same invocation.

    python bench/run.py            # full sizes, medians of 5 runs, writes bench/results.json
    python bench/run.py --quick    # tiny sizes, one run: a correctness check (used by the tests)
    python bench/run.py --only scheduling log_capture
    python bench/run.py --only dask   # python steps on dask-local://2 against local ones

These machines are shared and noisy, so absolute seconds mean little: the ratio to make, doit,
go-task or a plain redirect, measured seconds apart, is what to compare between versions.
Peers that are not installed are reported as missing, not failed (``pip install doit
go-task-bin`` adds them).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ORCH = [sys.executable, "-m", "tui.cli"]
TRUE = shutil.which("true") or "/bin/true"  # the same external program for every tool

# -- floors: the least a program in this interpreter can do for the same work, timed as a whole
# command beside orch-tui and the peers, so a target below them is seen to be out of reach
#: N processes of argv[1], one after the other: spawn and wait, nothing else (no bookkeeping,
#: no output read). No runner written in Python can run a chain faster than this.
SPAWN_LOOP = (
    "import os, sys\n"
    "argv, env = [sys.argv[1]], dict(os.environ)\n"
    "for _ in range(int(sys.argv[2])):\n"
    "    os.waitpid(os.posix_spawn(argv[0], argv, env), 0)\n"
)
#: A step's output captured to its log and echoed, each line prefixed, to stdout, in one pass
#: as it arrives (no reading back): ``CAPTURE_ECHO LOG CMD...``. The least a Python program
#: does to keep a log and show it as a CI job's log.
CAPTURE_ECHO = (
    "import os, subprocess, sys\n"
    "log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n"
    "child = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE)\n"
    "pipe, prefix, held = child.stdout.fileno(), b'flood | ', b''\n"
    "while chunk := os.read(pipe, 1 << 20):\n"
    "    os.write(log, chunk)\n"
    "    data = held + chunk\n"
    "    cut = data.rfind(b'\\n') + 1\n"
    "    held = data[cut:]\n"
    "    if cut:\n"
    "        lines = prefix + data[: cut - 1].replace(b'\\n', b'\\n' + prefix) + b'\\n'\n"
    "        view = memoryview(lines)\n"
    "        while view:\n"
    "            view = view[os.write(1, view) :]\n"
    "if held:\n"
    "    os.write(1, prefix + held + b'\\n')\n"
    "sys.exit(child.wait())\n"
)
#: Parsing a recipe with PyYAML's C loader and nothing else: what a cold run (no cache of
#: compiled recipes) cannot avoid before it checks and runs anything.
YAML_ONLY = (
    "import sys, yaml\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    yaml.load(f, Loader=yaml.CSafeLoader)\n"
)


# ------------------------------------------------------------------------------------ helpers
def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _stats(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def _measure(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    return _stats([_timed(fn) for _ in range(repeat)])


def _run(argv: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, **kw)
    if result.returncode != 0:
        raise RuntimeError(f"{argv} failed ({result.returncode}): {result.stderr[-2000:]!r}")
    return result


def _env() -> dict[str, str]:
    """The children's environment: the project importable, and bytecode cached as a user's
    install has it (PYTHONDONTWRITEBYTECODE, set in some shells, would compile every module
    at every start and measure the compiler)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _fill_cache(cwd: Path, *recipes: str) -> None:
    """Each recipe in the cache of compiled recipes, as a user running it again has it: the
    figures are warm whatever the number of runs (the "-cold" ones turn the cache off)."""
    for recipe in recipes:
        _run([*ORCH, "validate", recipe], cwd, env=_env())


def _peak_rss_of(
    argv: list[str], cwd: Path, stdout: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of a child, from wait4's rusage; its stdout to /dev/null
    or to the file ``stdout`` (as a CI job's log); ``env`` over the children's environment."""
    out = open(stdout, "wb") if stdout is not None else subprocess.DEVNULL  # noqa: SIM115
    start = time.perf_counter()
    try:
        full = {**_env(), **(env or {})}
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.PIPE, env=full)
    finally:
        if stdout is not None:
            out.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {proc.stderr.read()[-2000:]!r}")
    return took, usage.ru_maxrss * 1024


# ------------------------------------------------------------------------------------ scheduling
def _chain_recipe(path: Path, n: int, *, wide: bool) -> None:
    lines = ["steps:"]
    for i in range(n):
        lines += [f"  - name: s{i}", "    type: shell", f"    cmd: {TRUE}"]
        if wide:
            lines.append("    depends_on: []")
    path.write_text("\n".join(lines) + "\n")


def _makefile(path: Path, n: int, *, wide: bool) -> None:
    names = " ".join(f"s{i}" for i in range(n))
    rules = [f"all: {names}", f".PHONY: all {names}"]
    for i in range(n):
        dep = "" if wide or i == 0 else f"s{i - 1}"
        rules.append(f"s{i}: {dep}\n\t@{TRUE}")
    path.write_text("\n".join(rules) + "\n")


def _dodo(path: Path, n: int) -> None:
    path.write_text(
        "DOIT_CONFIG = {'verbosity': 0}\n"
        f"def task_s():\n    for i in range({n}):\n"
        f"        yield {{'name': str(i), 'actions': [[{TRUE!r}]],"
        " 'task_dep': [f's:{i - 1}'] if i else [], 'uptodate': [False]}\n"
    )


def _taskfile(path: Path, n: int) -> None:
    lines = ["version: '3'", "tasks:"]
    for i in range(n):
        lines += [f"  s{i}:", "    silent: true", f"    cmds: [{TRUE}]"]
        if i:
            lines.append(f"    deps: [s{i - 1}]")
    path.write_text("\n".join(lines) + "\n")


def bench_scheduling(work: Path, n: int, repeat: int) -> dict:
    """``n`` chained and ``n`` independent ``true`` against make, doit and go-task, and the
    spawn floor (SPAWN_LOOP), whole commands taken in turns (each round runs every contender
    once) so the machine's drifting load falls on all alike."""
    (work / "pyproject.toml").write_text("")
    _chain_recipe(work / "chain.yaml", n, wide=False)
    _chain_recipe(work / "wide.yaml", n, wide=True)
    _makefile(work / "Makefile", n, wide=False)
    _makefile(work / "Makefile.wide", n, wide=True)
    _fill_cache(work, "chain.yaml", "wide.yaml")
    runs = work / "runs"

    def orch(recipe: str, jobs: str) -> Callable[[], None]:
        def go() -> None:
            shutil.rmtree(runs, ignore_errors=True)
            _run(
                [*ORCH, recipe, "--no-ui", "--jobs", jobs, "--run-dir", str(runs)], work, env=_env()
            )

        return go

    contenders: dict[str, Callable[[], object]] = {
        "make_j1": lambda: _run(["make", "-s", "-j1"], work),
        "orch_chain_j1": orch("chain.yaml", "1"),
        "python_spawn": lambda: _run([sys.executable, "-c", SPAWN_LOOP, TRUE, str(n)], work),
        "make_j2_wide": lambda: _run(["make", "-s", "-j2", "-f", "Makefile.wide"], work),
        "orch_wide_j2": orch("wide.yaml", "2"),
    }
    doit = _peer("doit")
    if doit:
        _dodo(work / "dodo.py", n)
        contenders["doit"] = lambda: _run([doit, "-f", "dodo.py", "--backend", "json"], work)
    task = _peer("task")
    if task:
        _taskfile(work / "Taskfile.yml", n)
        contenders["go_task"] = lambda: _run([task, f"s{n - 1}"], work)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, go in contenders.items():
            times[name].append(_timed(go))
    out: dict = {"steps": n, **{name: _stats(taken) for name, taken in times.items()}}
    ours, floor = out["orch_chain_j1"]["median"], out["python_spawn"]["median"]
    out["ratio_chain_vs_make"] = ours / out["make_j1"]["median"]
    out["ratio_chain_vs_python_spawn"] = ours / floor
    out["ratio_python_spawn_vs_make"] = floor / out["make_j1"]["median"]
    for peer in ("doit", "go_task"):
        if peer in out:
            out[f"ratio_chain_vs_{peer}"] = ours / out[peer]["median"]
            out[f"ratio_python_spawn_vs_{peer}"] = floor / out[peer]["median"]
    out["ratio_wide_vs_make"] = out["orch_wide_j2"]["median"] / out["make_j2_wide"]["median"]
    return out


def bench_python_steps(work: Path, n: int, repeat: int) -> dict:
    """No-op python steps per second in-process (the runner's overhead, no start-up) vs a loop."""
    from core.recipe import PythonStep, Recipe
    from core.runner import Runner

    steps = tuple(
        PythonStep(
            name=f"p{i}",
            index=i,
            line=i + 1,
            depends_on=(f"p{i - 1}",) if i else (),
            module="bench.noop",
            function="run",
        )
        for i in range(n)
    )
    recipe = Recipe(path=work / "py.yaml", workspace=ROOT, steps=steps)

    def go() -> None:
        run_dir = work / "pyruns"
        shutil.rmtree(run_dir, ignore_errors=True)
        code = Runner(recipe, run_dir=run_dir, jobs=1).run()
        assert code == 0, code

    from bench.noop import run as noop

    def loop() -> None:
        ctx: dict = {}
        for _ in range(n):
            noop(ctx)

    out = {"steps": n, "orch": _measure(go, repeat), "bare_loop": _measure(loop, repeat)}
    out["steps_per_second"] = n / out["orch"]["median"]
    return out


# ------------------------------------------------------------------------------------ log capture
def bench_log_capture(work: Path, lines: int, repeat: int) -> dict:
    """A step printing ``lines`` lines: the whole command against ``seq > file``, net of
    orch-tui's start-up (a one-step run, measured in the same turns), peak RSS, nothing lost."""
    (work / "pyproject.toml").write_text("")
    (work / "flood.yaml").write_text(
        f"steps:\n  - name: flood\n    type: shell\n    cmd: seq\n    args: ['{lines}']\n"
    )
    _chain_recipe(work / "one.yaml", 1, wide=False)
    runs = work / "floodruns"

    def redirect() -> None:
        with open(work / "seq.out", "wb") as f:
            subprocess.run(["seq", str(lines)], stdout=f, check=True)

    def orch(recipe: str, stdout: Path | None = None) -> tuple[float, int]:
        argv = [*ORCH, recipe, "--no-ui", "--run-dir", str(runs)]
        return _whole_run(argv, work, runs, stdout)

    # stdout /dev/null: the capture alone (orch-tui echoes nothing to the null device); stdout
    # a file, as a CI job's log: the capture and the echo of every line, prefixed
    times, peaks, starts, redirects, echoed, starts_echoed = [], [], [], [], [], []
    floors, floor_starts = [], []  # CAPTURE_ECHO of the same lines, and of one line
    ci_log = work / "ci.log"

    def floor(count: int) -> float:
        argv = [sys.executable, "-c", CAPTURE_ECHO, str(work / "floor.log"), "seq", str(count)]
        return _whole_run(argv, work, None, work / "floor-ci.log")[0]

    for _ in range(repeat):
        floors.append(floor(lines))
        floor_starts.append(floor(1))
        redirects.append(_timed(redirect))
        starts.append(orch("one.yaml")[0])
        took, rss = orch("flood.yaml")
        times.append(took)
        peaks.append(rss)
        starts_echoed.append(orch("one.yaml", ci_log)[0])
        took, rss = orch("flood.yaml", ci_log)
        echoed.append(took)
        peaks.append(rss)
    out = {"lines": lines, "redirect": _stats(redirects), "orch": _stats(times)}
    out["one_step_run"] = _stats(starts)
    out["orch_stdout_to_file"] = _stats(echoed)
    out["one_step_run_stdout_to_file"] = _stats(starts_echoed)
    net_echoed = out["orch_stdout_to_file"]["median"] - out["one_step_run_stdout_to_file"]["median"]
    out["ratio_net_vs_redirect_stdout_to_file"] = max(net_echoed, 0.0) / out["redirect"]["median"]
    out["floor_capture_echo"], out["floor_one_line"] = _stats(floors), _stats(floor_starts)
    net_floor = out["floor_capture_echo"]["median"] - out["floor_one_line"]["median"]
    out["ratio_floor_net_vs_redirect_stdout_to_file"] = (
        max(net_floor, 0.0) / out["redirect"]["median"]
    )
    step = json.loads((runs / "state.json").read_bytes())["steps"]["flood"]
    out["step_seconds"] = step["duration"]  # the run's own figure, labelled as such
    out["ratio_step_vs_redirect"] = step["duration"] / out["redirect"]["median"]
    got = (runs / "logs" / "flood.log").read_bytes()
    out["lines_lost"] = lines - got.count(b"\n")
    out["ci_log_lines"] = ci_log.read_bytes().count(b"\n")  # the echo: every line, and the rest
    out["byte_identical"] = got == (work / "seq.out").read_bytes()
    out["peak_rss_mb"] = max(peaks) / 2**20
    out["ratio_vs_redirect"] = out["orch"]["median"] / out["redirect"]["median"]
    net = out["orch"]["median"] - out["one_step_run"]["median"]
    out["ratio_net_vs_redirect"] = max(net, 0.0) / out["redirect"]["median"]
    return out


# ------------------------------------------------------------------------------------ start-up
def bench_startup(work: Path, big: int, repeat: int) -> dict:
    demo = ROOT / "recipes" / "demo_screen_dash_ctx.yaml"
    (work / "pyproject.toml").write_text("")
    _wide_echo_recipe(work / "validate.yaml", big)
    _fill_cache(work, "validate.yaml")
    out = {
        "python_pass": _measure(lambda: _run([sys.executable, "-c", "pass"], ROOT), repeat),
        # the interpreter and the schema library every run needs, imported as orch-tui imports
        # it (core/__init__.py: without typing_extensions): a one-step run's floor
        "python_msgspec": _measure(
            lambda: _run([sys.executable, "-c", "import core, msgspec"], ROOT), repeat
        ),
        "version": _measure(lambda: _run([*ORCH, "--version"], ROOT, env=_env()), repeat),
        "validate_demo": _measure(
            lambda: _run([*ORCH, "validate", str(demo)], ROOT, env=_env()), repeat
        ),
        # the whole command, a recipe of `big` shell steps (issue 15: at most 1 s for 10,000)
        f"validate_{big}_steps": _measure(
            lambda: _run([*ORCH, "validate", "validate.yaml"], work, env=_env()), repeat
        ),
    }
    out["ratio_version_vs_python"] = out["version"]["median"] / out["python_pass"]["median"]
    return out


# ------------------------------------------------------------------------------------ ctx
def bench_ctx(rows: int, repeat: int) -> dict:
    from core.context import Context

    threads_n, per_thread = 8, rows // 8

    def appends() -> None:
        ctx = Context({"rows": []})

        def writer(w: int) -> None:
            row = [float(w), 1.0, 2.0, 3.0]
            for _ in range(per_thread):
                ctx.append("rows", row)

        workers = [threading.Thread(target=writer, args=(w,)) for w in range(threads_n)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        assert len(ctx["rows"]) == threads_n * per_thread

    out: dict = {"rows": threads_n * per_thread, "append_8_threads": _measure(appends, repeat)}
    out["appends_per_second"] = out["rows"] / out["append_8_threads"]["median"]
    big = Context({"rows": [[time.time(), 0.1, 0.2, 0.3] for _ in range(rows)]})
    out["snapshot_json"] = _measure(big.to_json_bytes, repeat)
    out["snapshot_mb"] = len(big.to_json_bytes()) / 2**20
    return out


# ------------------------------------------------------------------------------------ Dash
def _dash_tick(make_figure, cache) -> bytes:
    """What one interval request costs the server: the figure, downsampled, as JSON."""
    import orjson

    figure = make_figure(cache, [1, 2, 3], max_points=2000)
    return orjson.dumps(figure, option=orjson.OPT_SERIALIZE_NUMPY)


def _dash_naive(rows: list[list[float]]) -> str:
    """The seed's approach: every row in a plain Scatter figure, serialised by plotly."""
    import plotly.graph_objects as go

    xs = [r[0] for r in rows]
    traces = [go.Scatter(x=xs, y=[r[c] for r in rows], mode="lines") for c in (1, 2, 3)]
    return go.Figure(traces).to_json()


def bench_dash(sizes: list[int], repeat: int) -> dict:

    from scriptlets.python.apps.dashboard.cache import ColumnCache
    from scriptlets.python.apps.dashboard.figure import make_figure

    out: dict = {}
    for n in sizes:
        t0 = time.time() - n * 0.01
        rows = [[t0 + i * 0.01, float(i % 97), float(i % 13), float(i % 7)] for i in range(n)]
        cache = ColumnCache()
        cache.add_rows(rows)
        tick = functools.partial(_dash_tick, make_figure, cache)
        naive = functools.partial(_dash_naive, rows)
        entry = {"tick": _measure(tick, repeat), "tick_bytes": len(tick())}
        entry["naive"] = _measure(naive, max(1, repeat // 2))
        entry["naive_bytes"] = len(naive())
        entry["ratio_time"] = entry["tick"]["median"] / entry["naive"]["median"]
        entry["ratio_bytes"] = entry["tick_bytes"] / entry["naive_bytes"]
        out[f"{n}_rows"] = entry
    return out


# ------------------------------------------------------------------------------------ TUI
def bench_tui(seconds: float) -> dict:
    """The app under run_test with a step printing as fast as it can."""
    import asyncio

    import psutil

    from core.control import LocalControl
    from core.recipe import load_recipe
    from core.resources import FixedSampler
    from core.runner import Runner
    from tui.app import make_app
    from tui.widgets import LogPane, StepTree

    with tempfile.TemporaryDirectory(prefix="bench-tui-", dir=ROOT / ".orch") as tmp:
        work = Path(tmp)
        (work / "pyproject.toml").write_text("")
        (work / "r.yaml").write_text(
            "steps:\n"
            "  - {name: flood, type: shell, cmd: seq, args: ['1000000000']}\n"
            "  - {name: quiet, type: shell, run: echo quiet, depends_on: []}\n"
        )
        runner = Runner(
            load_recipe(work / "r.yaml"),
            run_dir=work / "run",
            interactive=True,
            sampler=FixedSampler(),
            resource_interval=3600,
        )
        app = make_app(LocalControl(runner), start=runner.start)
        me = psutil.Process()
        result: dict = {}

        async def scenario() -> None:
            async with app.run_test(size=(120, 36)) as pilot:
                log = runner.run_dir / "logs" / "flood.log"
                while not log.exists() or log.stat().st_size < 1_000_000:
                    await pilot.pause(0.05)
                pane = app.query_one("#log-main", LogPane)
                tree = app.query_one(StepTree)
                latencies, lags = [], []
                first, t0 = _last_number(log), time.perf_counter()
                pane_first = _pane_number(pane)
                rss_peak = me.memory_info().rss
                while time.perf_counter() - t0 < seconds:
                    for key, target in (("down", "quiet"), ("up", "flood")):
                        start = time.perf_counter()
                        app.post_message(_key(key))
                        while tree.selected_step != target:
                            await asyncio.sleep(0.002)
                        latencies.append(time.perf_counter() - start)
                    await asyncio.sleep(0.1)
                    if pane.lines:  # how far the pane's last line is behind the file's
                        lags.append(_last_number(log) - _pane_number(pane))
                    rss_peak = max(rss_peak, me.memory_info().rss)
                took = time.perf_counter() - t0
                written = _last_number(log) - first
                shown = _pane_number(pane) - pane_first
                runner.stop_step("flood")
                await pilot.pause(0.5)
                result.update(
                    step_lines_per_second=written / took,
                    pane_lines_per_second=shown / took,
                    key_latency_ms_median=statistics.median(latencies) * 1000,
                    key_latency_ms_max=max(latencies) * 1000,
                    key_latency_ms_p90=sorted(latencies)[int(len(latencies) * 0.9)] * 1000,
                    pane_lag_lines_median=statistics.median(lags) if lags else None,
                    peak_rss_mb=rss_peak / 2**20,
                )
                log.unlink()

        try:
            asyncio.run(scenario())
        finally:
            runner.close()
            runner.wait(30)
        return result


def _pane_number(pane) -> int:
    """The last complete number the pane shows (seq's lines are their own line numbers)."""
    numbers = [int(line) for line in pane.lines[-3:] if line.isdigit()]
    return max(numbers, default=0)  # the last line may be a number cut short mid-write


def _key(key: str):
    from textual import events

    return events.Key(key, None)


def _last_number(path: Path) -> int:
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 64))
        tail = f.read().split(b"\n")[:-1]  # the last piece is an unfinished line
    for part in reversed(tail):
        if part.isdigit():
            return int(part)
    return 0


# ------------------------------------------------------------------------------------ TUI, big run
TMUX = shutil.which("tmux")
_SGR = re.compile(r"\x1b\[([0-9;]*)m")
_STEP = re.compile(r"│ \S s(\d+)\b")


def _wide_echo_recipe(path: Path, n: int) -> None:
    lines = ["steps:"]
    for i in range(n):
        lines += [f"  - name: s{i}", "    type: shell", f"    run: echo step {i}"]
        lines.append("    depends_on: []")
    path.write_text("\n".join(lines) + "\n")


def _backgrounds(line: str) -> tuple[str, list[str]]:
    """A captured line (``capture-pane -e``) as its text and each character's background."""
    text, backs, back = [], [], ""
    pos = 0
    for match in _SGR.finditer(line + "\x1b[m"):
        for ch in line[pos : match.start()]:
            text.append(ch)
            backs.append(back)
        pos = match.end()
        params = match.group(1).split(";") if match.group(1) else ["0"]
        i = 0
        while i < len(params):
            p = params[i]
            if p in ("0", "49"):
                back = ""
            elif p == "48":  # 48;5;N or 48;2;R;G;B
                width = 3 if params[i + 1 : i + 2] == ["5"] else 5
                back = ";".join(params[i : i + width])
                i += width - 1
            elif p in ("38", "58"):  # a foreground (or underline) colour: skip its arguments
                i += 2 if params[i + 1 : i + 2] == ["5"] else 4
            i += 1
    return "".join(text), backs


def _cursor_step(screen: str) -> int | None:
    """The step under the tree's cursor: the row whose name has a background of its own."""
    rows: list[tuple[int, str]] = []
    for line in screen.splitlines():
        text, backs = _backgrounds(line)
        match = _STEP.search(text)
        if match:
            rows.append((int(match.group(1)), backs[match.start(1)]))
    counts: dict[str, int] = {}
    for _, back in rows:
        counts[back] = counts.get(back, 0) + 1
    odd = [step for step, back in rows if counts[back] == 1]
    return odd[0] if len(rows) > 2 and len(odd) == 1 else None


class _ControlClient:
    """One tmux client attached in control mode (``tmux -C``) for the whole measurement, as a
    user's terminal is: a key and a look at the screen are a line each over its pipe. A
    ``tmux send-keys`` and a ``tmux capture-pane`` process per key and per poll (every 10 ms)
    measured the starting of tmux processes on a loaded 2-core machine as much as the app.
    It neither gets the pane's output (``no-output``) nor sizes the window (``ignore-size``)."""

    def __init__(self, tmux: list[str]) -> None:
        flags = ["-C", "attach-session", "-t", "bench", "-f", "no-output,ignore-size"]
        self.proc = subprocess.Popen(
            [*tmux, *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # a tmux that cannot: attach() falls back, quietly
            env=_env(),
        )

    @classmethod
    def attach(cls, tmux: list[str]) -> _ControlClient | None:
        """A client that answers, or None where this tmux has no client flags (before 3.2):
        the bench then starts a tmux process per command, as it used to."""
        client = cls(tmux)
        try:
            client.command("display-message -p ok")
        except RuntimeError:
            client.close()
            return None
        return client

    def command(self, line: str) -> str:
        """Run one tmux command; its output (between ``%begin`` and ``%end``)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        out: list[bytes] | None = None
        while raw := self.proc.stdout.readline():
            if raw.startswith(b"%begin "):
                out = []
            elif out is not None and raw.startswith((b"%end ", b"%error ")):
                text = b"".join(out).decode(errors="replace")
                if raw.startswith(b"%error "):
                    raise RuntimeError(f"tmux {line!r}: {text}")
                return text
            elif out is not None:
                out.append(raw)
            # else a notification between commands (%sessions-changed, ...): not ours
        raise RuntimeError(f"the tmux control client ended during {line!r}")

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _TmuxApp:
    """``orch-tui`` in a pane of a private tmux server, seen as the user sees it (capture-pane)."""

    def __init__(
        self, work: Path, argv: list[str], size: tuple[int, int], run_dir: Path | None
    ) -> None:
        self.run_dir = run_dir  # where the run daemon it starts runs (None: it starts none)
        self.socket = work / "tmux.sock"  # in the work folder: tmux leaves it behind
        self.tmux = [TMUX or "tmux", "-S", str(self.socket), "-f", "/dev/null"]
        root, cwd = shlex.quote(str(ROOT)), shlex.quote(str(work))
        command = f"cd {cwd} && PYTHONPATH={root} exec {shlex.join(argv)}"
        width, height = size
        self.started = time.perf_counter()
        new = ["new-session", "-d", "-s", "bench", "-x", str(width), "-y", str(height), command]
        subprocess.run([*self.tmux, *new], check=True, env=_env())  # the server's, its pane's
        shown = [*self.tmux, "display-message", "-p", "-t", "bench", "#{pane_pid}"]
        self.pid = int(subprocess.run(shown, capture_output=True, text=True).stdout)  # exec'd
        self.client = _ControlClient.attach(self.tmux)  # None: a tmux before 3.2

    def screen(self, *, styled: bool = False) -> str:
        command = ["capture-pane", "-p", "-t", "bench"] + (["-e"] if styled else [])
        if self.client is not None:
            return self.client.command(shlex.join(command))
        return subprocess.run([*self.tmux, *command], capture_output=True, text=True).stdout

    def keys(self, *keys: str) -> None:
        command = ["send-keys", "-t", "bench", *keys]
        if self.client is not None:
            self.client.command(shlex.join(command))
        else:
            subprocess.run([*self.tmux, *command], check=True)

    def wait_for(
        self, predicate: Callable[[str], bool], timeout: float, *, styled=False, every=0.005
    ) -> str:
        """Poll the screen until ``predicate(screen)``; return that screen."""
        deadline = time.perf_counter() + timeout
        while True:
            screen = self.screen(styled=styled)
            if predicate(screen):
                return screen
            if time.perf_counter() > deadline:
                raise RuntimeError(f"timed out; the screen was:\n{self.screen()}")
            time.sleep(every)

    def quit(self) -> None:
        """q (the run is over: no question), then wait for the app to leave."""
        self.keys("q")
        deadline = time.perf_counter() + 60
        has = [*self.tmux, "has-session", "-t", "bench"]
        while subprocess.run(has, capture_output=True).returncode == 0:
            if time.perf_counter() > deadline:
                raise RuntimeError("the app did not quit")
            time.sleep(0.05)

    def close(self) -> None:
        """Kill the server, wait until it and the app are gone, stop the run's daemon (the
        hung-up app only detached from it), remove its socket (tmux leaves it)."""
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)
        if self.client is not None:
            self.client.close()
        deadline = time.perf_counter() + 60
        alive = [*self.tmux, "list-sessions"]
        while subprocess.run(alive, capture_output=True).returncode == 0 or _alive(self.pid):
            if time.perf_counter() > deadline:
                raise RuntimeError("the tmux server or the app did not exit")
            time.sleep(0.05)
        self.socket.unlink(missing_ok=True)
        if self.run_dir is not None:
            _stop_daemon(self.run_dir)


def _daemon_pid(run_dir: Path, patience: float = 30.0) -> int | None:
    """The pid in the run's state.json, once it is there (an app seen painting can be ahead of
    its daemon's first write of it); None if no run was made in ``patience`` seconds."""
    deadline = time.perf_counter() + patience
    while True:
        try:
            return json.loads((run_dir / "state.json").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            if time.perf_counter() > deadline:
                return None
            time.sleep(0.05)


def _stop_daemon(run_dir: Path) -> None:
    """SIGTERM the run daemon of ``run_dir`` if it is still up, and wait until it is gone
    (left running, it outlived the bench, and the next turn removed its folder under it)."""
    pid = _daemon_pid(run_dir)
    if pid is None or not _alive(pid):
        return
    try:
        if "core.daemon" not in Path(f"/proc/{pid}/cmdline").read_text():
            return
    except OSError:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.perf_counter() + 60
    while _alive(pid):
        if time.perf_counter() > deadline:
            raise RuntimeError("the run daemon did not exit")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


def _tui_run(work: Path, recipe: str, n: int, run_dir: Path, *, keys: bool) -> dict:
    """Launch to "succeeded · n/n" in the header; with ``keys``, Down presses timed meanwhile
    (send-keys until the tree's cursor shows on the next row)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    app = _TmuxApp(
        work, [*ORCH, recipe, "--jobs", "2", "--run-dir", str(run_dir)], (120, 36), run_dir
    )
    done = f"succeeded · {n}/{n}"
    latencies: list[float] = []
    try:
        at = _cursor_step(app.wait_for(lambda s: _cursor_step(s) is not None, 120, styled=True))
        while True:
            screen = app.screen(styled=keys)
            if done in _SGR.sub("", screen):
                took = time.perf_counter() - app.started
                break
            if not keys:
                time.sleep(0.1)
                continue
            start = time.perf_counter()
            app.keys("Down")
            at = at + 1
            app.wait_for(lambda s, t=at: _cursor_step(s) == t, 120, styled=True, every=0.01)
            latencies.append(time.perf_counter() - start)
            time.sleep(0.1)
        app.quit()
    finally:
        app.close()
    return {"seconds": took, **(_latencies(latencies) if latencies else {})}


def _first_paint(
    work: Path, argv: list[str], run_dir: Path | None, *, daemon: bool = True
) -> float:
    """The whole command ``argv`` in a tmux pane, from its start to the step tree seen on
    screen, its cursor on the first step (``run_dir``: the run folder it makes, removed
    before; with ``daemon``, the run daemon it leaves there is stopped after)."""
    if run_dir is not None:
        shutil.rmtree(run_dir, ignore_errors=True)
    app = _TmuxApp(work, argv, (120, 36), run_dir if daemon else None)
    try:
        app.wait_for(lambda s: _cursor_step(s) == 0, 120, styled=True)
        return time.perf_counter() - app.started
    finally:
        app.close()  # SIGHUP: the app detaches; its run's daemon is stopped


def _latencies(seconds: list[float]) -> dict:
    seconds = sorted(seconds)
    return {
        "key_presses": len(seconds),
        "key_ms_median": statistics.median(seconds) * 1000,
        "key_ms_p99": seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))] * 1000,
        "key_ms_max": seconds[-1] * 1000,
    }


def _pilot_keys(work: Path, recipe: str, n: int) -> dict:
    """The same run in-process (run_test, the real runner): Down every 50 ms, timed until the
    tree's cursor moves. No terminal, no tmux: what the app itself adds to a key press."""
    import asyncio

    from core.control import LocalControl
    from core.recipe import load_recipe
    from core.runner import Runner
    from tui.app import make_app
    from tui.widgets import StepTree

    run_dir = work / "pilot-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    runner = Runner(load_recipe(work / recipe), run_dir=run_dir, interactive=True, jobs=2)
    app = make_app(LocalControl(runner), start=runner.start)
    latencies: list[float] = []

    async def scenario() -> None:
        async with app.run_test(size=(120, 36)):
            tree = app.query_one(StepTree)
            while app._counts.get("succeeded", 0) < n:
                target = list(tree._step_nodes)[tree.cursor_line + 1]
                start = time.perf_counter()
                app.post_message(_key("down"))
                while tree.selected_step != target:
                    await asyncio.sleep(0.001)
                latencies.append(time.perf_counter() - start)
                await asyncio.sleep(0.05)

    try:
        asyncio.run(scenario())
    finally:
        runner.close()
        runner.wait(30)
    return _latencies(latencies)


def bench_tui_big_run(work: Path, n: int, big: int, repeat: int) -> dict:
    """n independent ``echo`` steps, --jobs 2, in the app (a tmux pane, 120x36) and --no-ui,
    measured in turns (the machine's load drifts); key latency meanwhile; first paint of big."""
    if TMUX is None:
        return {"missing": "tmux"}
    (work / "pyproject.toml").write_text("")
    _wide_echo_recipe(work / "echo.yaml", n)
    _wide_echo_recipe(work / "big.yaml", big)
    runs = work / "echo-runs"

    def headless() -> None:
        shutil.rmtree(runs, ignore_errors=True)
        argv = [*ORCH, "echo.yaml", "--no-ui", "--jobs", "2", "--run-dir", str(runs)]
        _run(argv, work, env=_env())

    headless_times, tui_times = [], []
    for _ in range(repeat):
        headless_times.append(_timed(headless))
        tui_times.append(_tui_run(work, "echo.yaml", n, runs, keys=False)["seconds"])
    out: dict = {"steps": n, "headless": _stats(headless_times), "tui": _stats(tui_times)}
    out["ratio_tui_vs_headless"] = out["tui"]["median"] / out["headless"]["median"]
    with_keys = _tui_run(work, "echo.yaml", n, runs, keys=True)
    out["tui_with_keys_seconds"] = with_keys.pop("seconds")
    out.update(with_keys)
    out["in_process"] = _pilot_keys(work, "echo.yaml", n)
    argv = [*ORCH, "big.yaml", "--jobs", "2", "--run-dir", str(runs)]
    paints = [_first_paint(work, argv, runs) for _ in range(repeat)]
    out[f"first_paint_{big}_steps"] = _stats(paints)
    return out


# ------------------------------------------------------------------------------------ daemon
def _detach(work: Path, recipe: str, run_dir: Path, *extra: str) -> Path:
    """``orch-tui RECIPE --detach``: the run folder of the daemon it started."""
    shutil.rmtree(run_dir, ignore_errors=True)
    _run([*ORCH, recipe, "--detach", "--run-dir", str(run_dir), *extra], work, env=_env())
    return run_dir


def _events_to_a_client(work: Path, recipe: str, repeat: int) -> dict:
    """The same run headless and in a daemon with a client attached that takes every event:
    wall time, and the client's events per second."""
    from core.client import connect

    headless_argv = [*ORCH, recipe, "--no-ui", "--run-dir", str(work / "headless")]
    headless = _stats(
        [_whole_run(headless_argv, work, work / "headless")[0] for _ in range(repeat)]
    )
    shutil.rmtree(work / "headless", ignore_errors=True)
    times, rates = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        # not --exit-when-done: a short run could end, and its daemon go, before the client is in
        run_dir = _detach(work, recipe, work / "daemon-run")
        with connect(run_dir, client="bench") as control:
            seen = []
            control.subscribe(seen.append)
            control.wait(600)  # no step can run any more
            took = time.perf_counter() - start
            control.command("close")
            control.wait_gone(60)
        times.append(took)
        rates.append(len(seen) / took)
    attached = _stats(times)
    return {
        "headless": headless,
        "attached": attached,
        "events_per_second": statistics.median(rates),
        "ratio_attached_vs_headless": attached["median"] / headless["median"],
    }


def _round_trips(work: Path, n: int) -> dict:
    """Command round trips (a refused retry: the daemon asks the runner and answers) while
    ``n`` steps flood their logs."""
    from core.client import connect

    flood = "".join(
        f"  - {{name: f{i}, type: shell, run: 'yes flooding-the-log', depends_on: []}}\n"
        for i in range(n)
    )
    (work / "flood.yaml").write_text(f"jobs: {n}\nsteps:\n" + flood)
    run_dir = _detach(work, "flood.yaml", work / "flood-run")
    seconds: list[float] = []
    with connect(run_dir, client="bench") as control:
        while sum(s.status == "running" for s in control.snapshot().steps.values()) < n:
            time.sleep(0.01)
        for _ in range(500):
            start = time.perf_counter()
            control.command("retry", "f0")
            seconds.append(time.perf_counter() - start)
        control.command("stop_run")
        control.command("stop_run", force=True)
        control.wait_gone(60)
    seconds.sort()
    return {
        "round_trips": len(seconds),
        "ms_p50": statistics.median(seconds) * 1000,
        "ms_p99": seconds[int(len(seconds) * 0.99)] * 1000,
    }


#: The app in the process that holds the run (built, not started), as before the run daemon:
#: what an attached app's first paint is measured against.
IN_PROCESS_APP = """
import sys
from core.control import LocalControl
from core.recipe import load_recipe
from core.runner import Runner
from tui.app import make_app
runner = Runner(load_recipe(sys.argv[1]), run_dir=sys.argv[2], interactive=True)
make_app(LocalControl(runner)).run()
"""


def _attach_time(work: Path, recipe: str, repeat: int) -> dict:
    """First paint of the app on a finished run of ``recipe``, whole commands in a tmux pane
    as a user meets them: ``orch-tui attach RUN`` (its daemon still up), against the app in
    the process that loads the recipe and holds the run."""
    from core.client import connect

    run_dir = _detach(work, recipe, work / "attach-run")
    with connect(run_dir, attach=False) as control:
        control.wait(600)
    attach = [*ORCH, "attach", str(run_dir)]  # makes no run and no daemon: nothing to stop
    remote = [_first_paint(work, attach, None) for _ in range(repeat)]
    with connect(run_dir, attach=False) as control:
        control.command("close")
        control.wait_gone(60)
    local_run = work / "local-run"
    in_process = [sys.executable, "-c", IN_PROCESS_APP, recipe, str(local_run)]
    local = [_first_paint(work, in_process, local_run, daemon=False) for _ in range(repeat)]
    shutil.rmtree(local_run, ignore_errors=True)
    attached, in_process_stats = _stats(remote), _stats(local)
    return {
        "attached": attached,
        "in_process": in_process_stats,
        "ratio_attached_vs_in_process": attached["median"] / in_process_stats["median"],
    }


def bench_daemon(work: Path, n: int, flood: int, repeat: int) -> dict:
    """The run daemon: events to an attached client, command round trips under a log flood,
    attaching to a big run."""
    (work / "pyproject.toml").write_text("")
    _wide_echo_recipe(work / "wide-echo.yaml", n)
    return {
        "steps": n,
        "events": _events_to_a_client(work, "wide-echo.yaml", repeat),
        "command_round_trip": _round_trips(work, flood),
        "first_paint": _attach_time(work, "wide-echo.yaml", repeat)
        if TMUX
        else {"missing": "tmux"},
    }


# ------------------------------------------------------------------------------------ sweep
#: N = 1 is the start-up floor: a one-step run, and t(1) for python steps per second
SWEEP_SIZES = (1, 10, 100, 1_000, 5_000, 10_000)
QUICK_SWEEP_SIZES = (1, 5, 20)
#: a contender whose one run takes longer than this is not run at larger sizes
SWEEP_GIVE_UP_SECONDS = 120.0


def _python_recipe(path: Path, n: int) -> None:
    """``n`` chained no-op python steps (module ``noop_step`` next to the recipe)."""
    (path.parent / "noop_step.py").write_text("def run(ctx):\n    return None\n")
    lines = ["steps:"]
    for i in range(n):
        lines += [f"  - name: p{i}", "    type: python", "    module: noop_step"]
    path.write_text("\n".join(lines) + "\n")


def _wide_dodo(path: Path, n: int) -> None:
    path.write_text(
        "DOIT_CONFIG = {'verbosity': 0}\n"
        f"def task_s():\n    for i in range({n}):\n"
        f"        yield {{'name': str(i), 'actions': [[{TRUE!r}]], 'uptodate': [False]}}\n"
    )


def _wide_taskfile(path: Path, n: int) -> None:
    names = ", ".join(f"s{i}" for i in range(n))
    lines = ["version: '3'", "tasks:", "  all:", "    silent: true", f"    deps: [{names}]"]
    for i in range(n):
        lines += [f"  s{i}:", "    silent: true", f"    cmds: [{TRUE}]"]
    path.write_text("\n".join(lines) + "\n")


#: what a contender's environment adds: "-cold" scenarios load the recipe from its YAML each
#: time (the cache of compiled recipes off), the others as a user re-running meets it (warm)
COLD = {"ORCH_TUI_NO_CACHE": "1"}


def _sweep_contenders(work: Path, n: int) -> dict[str, tuple[list[str], Path | None]]:
    """Every (scenario, tool) of the sweep at size ``n``: its command, and the run folder to
    remove before each run (outside the timing)."""
    (work / "pyproject.toml").write_text("")
    _chain_recipe(work / "chain.yaml", n, wide=False)
    _chain_recipe(work / "wide.yaml", n, wide=True)
    _python_recipe(work / "py.yaml", n)
    _makefile(work / "Makefile", n, wide=False)
    _makefile(work / "Makefile.wide", n, wide=True)
    runs = work / "runs"

    def orch(recipe: str, jobs: str) -> tuple[list[str], Path]:
        return [*ORCH, recipe, "--no-ui", "--jobs", jobs, "--run-dir", str(runs)], runs

    found: dict[str, tuple[list[str], Path | None]] = {
        "chain/orch-tui": orch("chain.yaml", "1"),
        "chain/make": (["make", "-s", "-j1"], None),
        "fan-out/orch-tui": orch("wide.yaml", "2"),
        "fan-out/make": (["make", "-s", "-j2", "-f", "Makefile.wide"], None),
        "python/orch-tui": orch("py.yaml", "1"),
        "chain/python-spawn": ([sys.executable, "-c", SPAWN_LOOP, TRUE, str(n)], None),
    }
    if n <= 1_000:  # where loading counts: the one-step run, python steps/s
        found["chain-cold/orch-tui"] = orch("chain.yaml", "1")
        found["python-cold/orch-tui"] = orch("py.yaml", "1")
        found["python-cold/pyyaml"] = ([sys.executable, "-c", YAML_ONLY, "py.yaml"], None)
    doit = _peer("doit")
    if doit:
        _dodo(work / "dodo.py", n)
        _wide_dodo(work / "wide_dodo.py", n)
        found["chain/doit"] = ([doit, "-f", "dodo.py", "--backend", "json"], None)
        wide = [doit, "-f", "wide_dodo.py", "--backend", "json", "-n", "2", "-P", "thread"]
        found["fan-out/doit"] = (wide, None)
    task = _peer("task")
    if task:
        _taskfile(work / "Taskfile.yml", n)
        _wide_taskfile(work / "wide.yml", n)
        found["chain/go-task"] = ([task, f"s{n - 1}"], None)
        found["fan-out/go-task"] = ([task, "-t", "wide.yml", "--concurrency", "2", "all"], None)
    return found


def _peer(name: str) -> str | None:
    """A peer tool, from this venv first (the Makefile's bench target installs them there)."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def _whole_run(
    argv: list[str],
    cwd: Path,
    run_dir: Path | None,
    stdout: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[float, int]:
    """One whole process as a user meets it: wall time and peak RSS (its run folder, if any,
    removed before, not timed)."""
    if run_dir is not None:
        shutil.rmtree(run_dir, ignore_errors=True)
    return _peak_rss_of(argv, cwd, stdout, env)


def bench_sweep(work: Path, sizes: tuple[int, ...], repeat: int) -> dict:
    """Total time against N for each scenario and tool, whole processes, taken in turns (each
    round runs every contender once) so the machine's drifting load falls on all alike."""
    series: dict[str, dict[str, dict]] = {}
    given_up: set[str] = set()
    for n in sizes:
        folder = work / f"sweep-{n}"
        folder.mkdir()
        contenders = {k: v for k, v in _sweep_contenders(folder, n).items() if k not in given_up}
        _fill_cache(folder, "chain.yaml", "wide.yaml", "py.yaml")
        rounds = _sweep_rounds(n, repeat)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        rss: dict[str, int] = {}
        for _ in range(rounds):
            for name, (argv, run_dir) in contenders.items():
                env = COLD if name.split("/")[0].endswith("-cold") else None
                took, peak = _whole_run(argv, folder, run_dir, env=env)
                times[name].append(took)
                rss[name] = max(rss.get(name, 0), peak)
        for name, taken in times.items():
            entry = _stats(taken)
            entry["per_step_ms"] = entry["median"] / n * 1000
            entry["peak_rss_mb"] = rss[name] / 2**20
            series.setdefault(name, {})[str(n)] = entry
            if entry["min"] > SWEEP_GIVE_UP_SECONDS:
                given_up.add(name)
        shutil.rmtree(folder, ignore_errors=True)
    out = {"sizes": list(sizes), "series": series, "ratios": _sweep_ratios(series)}
    out["floor_ratios"] = _floor_ratios(series)
    for scenario in ("python", "python-cold"):
        key = "python_steps_per_second" + scenario[len("python") :].replace("-", "_")
        out[key] = _steps_per_second(series[f"{scenario}/orch-tui"], sizes)
    # the same formula for parsing the recipe alone: a ceiling for the cold figure
    out["pyyaml_steps_per_second"] = _steps_per_second(series["python-cold/pyyaml"], sizes)
    return out


def _sweep_rounds(n: int, repeat: int) -> int:
    """Rounds at size ``n``: more where a run is short, so the one-step run and
    ``(t(1000) - t(1)) / 999`` (two medians of ~0.1-0.2 s runs, a millisecond of noise
    moves it by hundreds of steps/s) are not a coin toss; fewer where a round takes minutes."""
    if n <= 100:
        return 2 * repeat + 1
    if n <= 1_000:
        return repeat + 2
    return max(1, min(repeat, 3))


def _steps_per_second(python: dict[str, dict], sizes: tuple[int, ...]) -> float | None:
    """Python steps per second as the whole command sees them: (t(1000) - t(1)) / 999."""
    big = "1000" if "1000" in python else str(max(sizes))  # the figure: t(1000)
    if "1" not in python or big == "1":
        return None
    extra = python[big]["median"] - python["1"]["median"]
    return (int(big) - 1) / extra if extra > 0 else None


def _ratios_of(
    series: dict[str, dict[str, dict]], tool: str, key: str, besides: tuple[str, ...] = ()
) -> dict[str, dict[str, float]]:
    """``tool``'s median over every other tool's in the same scenario, per N, each under
    ``key`` (formatted with its ``scenario`` and ``peer``); the tools ``besides`` left out."""
    ratios: dict[str, dict[str, float]] = {}
    for name, by_n in series.items():
        scenario, peer = name.split("/")
        ours = series.get(f"{scenario}/{tool}", {})
        if peer == tool or peer in besides:
            continue
        for n, entry in by_n.items():
            if n in ours:
                label = key.format(scenario=scenario, peer=peer)
                ratios.setdefault(label, {})[n] = ours[n]["median"] / entry["median"]
    return ratios


def _sweep_ratios(series: dict[str, dict[str, dict]]) -> dict[str, dict[str, float]]:
    """orch-tui's median over each peer's, per scenario and N (below 1: orch-tui is faster)."""
    return _ratios_of(series, "orch-tui", "{scenario}_vs_{peer}")


def _floor_ratios(series: dict[str, dict[str, dict]]) -> dict[str, dict[str, float]]:
    """The spawn floor's median over each peer's, per N: the ratio a runner written in
    Python would reach if its only cost were spawning and waiting (SPAWN_LOOP)."""
    return _ratios_of(series, "python-spawn", "python-spawn_vs_{peer}", besides=("orch-tui",))


def plot_sweep(sweep: dict, path: Path) -> Path | None:
    """bench/scaling.png: total time and time per step against N, log-log, a line per
    scenario and tool. None if matplotlib is missing (``make bench`` installs it)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (total, per_step) = plt.subplots(1, 2, figsize=(13, 5.5))
    styles = {"chain": "-", "fan-out": "--", "python": ":", "chain-cold": "-", "python-cold": ":"}
    colours = {
        "orch-tui": "C3",
        "make": "C0",
        "doit": "C2",
        "go-task": "C1",
        "python-spawn": "C7",  # the floors, in grey
        "pyyaml": "C7",
    }
    for name, by_n in sorted(sweep["series"].items()):
        scenario, tool = name.split("/")
        ns = sorted(int(n) for n in by_n)
        # a cold series (the recipe cache off) is drawn as its warm one, with hollow markers
        marker = {"marker": "o"} if "-cold" not in scenario else {"marker": "s", "mfc": "white"}
        style = {"linestyle": styles[scenario], "color": colours[tool], **marker}
        style["linewidth"] = 2.2 if tool == "orch-tui" else 1.3
        total.plot(ns, [by_n[str(n)]["median"] for n in ns], label=name, **style)
        per_step.plot(ns, [by_n[str(n)]["per_step_ms"] for n in ns], label=name, **style)
    total.set(xscale="log", yscale="log", xlabel="steps (N)", ylabel="whole command, s")
    total.set_title("total time (median, whole process)")
    per_step.set(xscale="log", yscale="log", xlabel="steps (N)", ylabel="ms per step")
    per_step.set_title("time per step (total / N)")
    for ax in (total, per_step):
        ax.grid(True, which="both", alpha=0.3)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    per_step.legend(fontsize=8, loc="upper right")
    fig.suptitle(
        "chain: N sequential `true` (--jobs 1, make -j1); fan-out: N independent `true` "
        "(--jobs 2, make -j2, doit -n 2, task --concurrency 2); python: N no-op python steps\n"
        "grey, the floors: python-spawn, a bare Python loop spawning and waiting for `true`; "
        "pyyaml, parsing the python steps' recipe with PyYAML's C loader and nothing else",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def sweep_table(sweep: dict) -> str:
    """The ratios as a markdown table (README): orch-tui's median over each peer's."""
    sizes = [str(n) for n in sweep["sizes"]]
    lines = [
        "| orch-tui ÷ peer | " + " | ".join(f"N={int(n):,}" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for key, by_n in sorted(sweep["ratios"].items()):
        cells = [f"{by_n[n]:.2f}" if n in by_n else "-" for n in sizes]
        lines.append(f"| {key.replace('_vs_', ' vs ')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ targets
def _get(results: dict, path: str):
    """``results`` at a dotted path (a median where the figure was repeated), or None."""
    value: object = results
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value["median"] if isinstance(value, dict) and "median" in value else value


#: issue 15's targets: (what, figure, limit, lower is better, peer figure[, floor figure]);
#: the floor is the same figure for the least a program in this interpreter can do for the same
#: work (SPAWN_LOOP, YAML_ONLY, a shell pipeline): a target beyond it is out of reach
TARGETS = (
    (
        "one-step run, whole process (s)",
        "sweep.series.chain/orch-tui.1",
        0.120,
        True,
        "sweep.series.chain/make.1",
        "startup.python_msgspec",
    ),
    (
        "the same, cold: recipe cache off (s)",
        "sweep.series.chain-cold/orch-tui.1",
        0.120,
        True,
        "sweep.series.chain/make.1",
        "startup.python_msgspec",
    ),
    ("--version (s)", "startup.version", 0.060, True, "startup.python_pass"),
    (
        "200-step chain / doit",
        "scheduling.ratio_chain_vs_doit",
        0.8,
        True,
        None,
        "scheduling.ratio_python_spawn_vs_doit",
    ),
    (
        "200-step chain / go-task",
        "scheduling.ratio_chain_vs_go_task",
        1.0,
        True,
        None,
        "scheduling.ratio_python_spawn_vs_go_task",
    ),
    (
        "200-step chain / make",
        "scheduling.ratio_chain_vs_make",
        2.5,
        True,
        None,
        "scheduling.ratio_python_spawn_vs_make",
    ),
    (
        "1,000-step chain / doit",
        "sweep.ratios.chain_vs_doit.1000",
        1.0,
        True,
        None,
        "sweep.floor_ratios.python-spawn_vs_doit.1000",
    ),
    (
        "5,000-step chain / doit",
        "sweep.ratios.chain_vs_doit.5000",
        1.0,
        True,
        None,
        "sweep.floor_ratios.python-spawn_vs_doit.5000",
    ),
    (
        "5,000-step chain / make",
        "sweep.ratios.chain_vs_make.5000",
        1.2,
        True,
        None,
        "sweep.floor_ratios.python-spawn_vs_make.5000",
    ),
    ("validate 10,000 steps (s)", "startup.validate_10000_steps", 1.0, True, None),
    ("python no-op steps/s, whole command", "sweep.python_steps_per_second", 15_000, False, None),
    (
        "the same, cold",
        "sweep.python_steps_per_second_cold",
        15_000,
        False,
        None,
        "sweep.pyyaml_steps_per_second",
    ),
    (
        "2,000,000 lines: capture / redirect, net of start-up",
        "log_capture.ratio_net_vs_redirect",
        1.5,
        True,
        None,
    ),
    (
        "the same, stdout a file: capture and echo / redirect",
        "log_capture.ratio_net_vs_redirect_stdout_to_file",
        1.5,
        True,
        None,
        "log_capture.ratio_floor_net_vs_redirect_stdout_to_file",
    ),
    ("2,000,000 lines: peak RSS (MB)", "log_capture.peak_rss_mb", 120, True, None),
    (
        "2,000 echo steps --jobs 2: TUI / headless",
        "tui_big_run.ratio_tui_vs_headless",
        1.3,
        True,
        None,
    ),
    ("key latency p99 during it, through tmux (ms)", "tui_big_run.key_ms_p99", 100, True, None),
    (
        "key latency p99 during it, in the app (ms)",
        "tui_big_run.in_process.key_ms_p99",
        100,
        True,
        None,
    ),
    ("10,000 steps open in the app (s)", "tui_big_run.first_paint_10000_steps", 1.5, True, None),
    (
        "RSS of a 10,000-step run (MB)",
        "sweep.series.chain/orch-tui.10000.peak_rss_mb",
        150,
        True,
        None,
    ),
    (
        "attached TUI first paint / in-process",
        "daemon.first_paint.ratio_attached_vs_in_process",
        1.3,
        True,
        None,
    ),
)


def targets(results: dict) -> list[dict]:
    """Each target with its figure from this invocation, the peer's, and whether it is met."""
    rows = []
    for what, path, limit, lower, peer, *floor in TARGETS:
        value = _get(results, path)
        if not isinstance(value, (int, float)):
            continue  # not measured in this invocation
        met = value <= limit if lower else value >= limit
        row = {"target": what, "value": value, "limit": limit, "reached": met}
        peer_value = _get(results, peer) if peer else None
        if isinstance(peer_value, (int, float)):
            row.update(peer=peer_value, ratio=value / peer_value)
        floor_value = _get(results, floor[0]) if floor else None
        if isinstance(floor_value, (int, float)):
            row["floor"] = floor_value
        rows.append(row)
    return rows


def _print_targets(rows: list[dict], quick: bool) -> None:
    if quick:
        print("\n(--quick: tiny sizes; the targets' limits are for the full sizes)")
    print(f"\n{'target':<54}{'figure':>10}{'limit':>10}{'peer':>10}{'floor':>10}  reached")
    for row in rows:
        peer = f"{row['peer']:>10.3g}" if "peer" in row else " " * 10
        floor = f"{row['floor']:>10.3g}" if "floor" in row else " " * 10
        mark = "yes" if row["reached"] else "NO"
        print(f"{row['target']:<54}{row['value']:>10.3g}{row['limit']:>10.3g}{peer}{floor}  {mark}")


# ------------------------------------------------------------------------------------ dask
CPU_STEP = """
def spin(ctx, n):
    total = 0
    for i in range(n):  # pure Python: holds the GIL throughout
        total += i * i
    return total
"""


def _dask_recipe(work: Path, name: str, steps: list[str]) -> Path:
    (work / "bench_cpu.py").write_text(CPU_STEP)
    path = work / name
    path.write_text("steps:\n" + "".join(f"  - {step}\n" for step in steps))
    return path


def _in_process(recipe_path: Path, run_dir: Path, cluster: object | None) -> Callable[[], None]:
    """One run of the recipe in this process, on ``cluster`` if given."""
    from core.recipe import load_recipe
    from core.runner import Runner

    recipe = load_recipe(recipe_path)

    def go() -> None:
        shutil.rmtree(run_dir, ignore_errors=True)
        runner = Runner(recipe, run_dir=run_dir, jobs=len(recipe.steps), cluster=cluster)
        assert runner.run() == 0

    return go


def bench_dask(work: Path, n: int, spin: int, repeat: int) -> dict:
    """Python steps on ``dask-local://2`` against the same steps in the runner: the whole
    command (the cluster's start included) and the cost per step of ``n`` chained no-op steps,
    and the speed-up of 2 CPU-bound pure-Python steps on 2 workers (2 threads here: the GIL
    makes them take turns)."""
    from core.cluster import Cluster, parse_executor

    (work / "pyproject.toml").write_text("")
    noop = [
        f"{{name: p{i}, type: python, module: bench_cpu, function: spin, params: {{n: 1}}}}"
        for i in range(n)
    ]
    chain = _dask_recipe(work, "dask-chain.yaml", noop)
    cpu = [
        f"{{name: c{i}, type: python, module: bench_cpu, function: spin, params: {{n: {spin}}}, "
        "depends_on: []}"
        for i in range(2)
    ]
    wide = _dask_recipe(work, "dask-cpu.yaml", cpu)

    def command(*extra: str) -> Callable[[], None]:
        def go() -> None:
            shutil.rmtree(work / "dask-cli", ignore_errors=True)
            _run([*ORCH, chain.name, "--no-ui", "--run-dir", "dask-cli", *extra], work, env=_env())

        return go

    out: dict = {"steps": n, "spin": spin}
    out["command_local"] = _measure(command(), repeat)
    out["command_dask"] = _measure(command("--executor", "dask-local://2"), repeat)

    class KeptOpen(Cluster):
        """Shared by the in-process runs (each closes its cluster at its end): its start is
        measured by the whole command, not here."""

        def close(self) -> None:
            pass

    cluster = KeptOpen.start(parse_executor("dask-local://2"))
    try:
        runs = work / "dask-runs"
        local, remote = (_in_process(chain, runs, c) for c in (None, cluster))
        out["chain_local"], out["chain_dask"] = _measure(local, repeat), _measure(remote, repeat)
        local, remote = (_in_process(wide, runs, c) for c in (None, cluster))
        out["cpu_local"], out["cpu_dask"] = _measure(local, repeat), _measure(remote, repeat)
    finally:
        Cluster.close(cluster)
    out["ratio_command_dask_vs_local"] = (
        out["command_dask"]["median"] / out["command_local"]["median"]
    )
    extra = out["chain_dask"]["median"] - out["chain_local"]["median"]
    out["overhead_ms_per_step"] = max(extra, 0.0) / n * 1000
    out["ratio_per_step_dask_vs_local"] = out["chain_dask"]["median"] / out["chain_local"]["median"]
    out["speedup_2_cpu_steps"] = out["cpu_local"]["median"] / out["cpu_dask"]["median"]
    return out


# ------------------------------------------------------------------------------------ main
BENCHES = (
    "sweep",
    "scheduling",
    "python_steps",
    "log_capture",
    "startup",
    "ctx",
    "dash",
    "tui",
    "tui_big_run",
    "daemon",
    "dask",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run")
    parser.add_argument("--only", nargs="+", choices=BENCHES)
    parser.add_argument(
        "--out",
        type=Path,
        help="results file (default bench/results.json; with --quick: none unless given)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    repeat = 1 if quick else 5
    chosen = args.only or BENCHES
    results: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()}}
    # Runs go where a user's would (under the project, .orch/): on some machines /tmp is a
    # much slower file system for creating files, which would measure the machine, not us.
    # Made private (0700, whatever the umask) as orch-tui makes it, or refused if it is not.
    from core.privatedir import PrivateDir

    PrivateDir.open(ROOT / ".orch", below=ROOT).close()
    with tempfile.TemporaryDirectory(prefix="bench-", dir=ROOT / ".orch") as tmp:
        work = Path(tmp)
        # the bench's own cache of compiled recipes (its first run of a recipe fills it), not
        # the user's
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")
        if "sweep" in chosen:
            sizes = QUICK_SWEEP_SIZES if quick else SWEEP_SIZES
            results["sweep"] = bench_sweep(work, sizes, repeat)
        if "scheduling" in chosen:
            results["scheduling"] = bench_scheduling(work, 10 if quick else 200, repeat)
        if "python_steps" in chosen:
            results["python_steps"] = bench_python_steps(work, 50 if quick else 1000, repeat)
        if "log_capture" in chosen:
            results["log_capture"] = bench_log_capture(work, 10_000 if quick else 2_000_000, repeat)
        if "startup" in chosen:
            results["startup"] = bench_startup(work, 1_000 if quick else 10_000, repeat)
        if "ctx" in chosen:
            results["ctx"] = bench_ctx(8_000 if quick else 1_000_000, 1 if quick else 3)
        if "dash" in chosen:
            sizes = [10_000] if quick else [10_000, 100_000, 1_000_000]
            results["dash"] = bench_dash(sizes, 1 if quick else 5)
        if "tui" in chosen:
            results["tui"] = bench_tui(0.5 if quick else 5.0)
        if "tui_big_run" in chosen:
            sizes = (50, 200) if quick else (2_000, 10_000)
            results["tui_big_run"] = bench_tui_big_run(work, *sizes, repeat)
        if "daemon" in chosen:
            results["daemon"] = bench_daemon(
                work, 50 if quick else 2_000, 5 if quick else 50, repeat
            )
        if "dask" in chosen and importlib.util.find_spec("distributed") is None:
            results["dask"] = {"missing": "distributed (pip install orch-tui[dask])"}
        elif "dask" in chosen:
            results["dask"] = bench_dask(
                work, 20 if quick else 200, 100_000 if quick else 10_000_000, repeat
            )
    results["targets"] = targets(results)
    _print_table(results)
    _print_targets(results["targets"], quick)
    out = args.out or (None if quick else ROOT / "bench" / "results.json")
    if out is not None:  # quick figures never replace the real ones by default
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {out}")
    if "sweep" in results:
        print("\n" + sweep_table(results["sweep"]))
        plot = out.with_name("scaling.png") if out is not None else None
        if plot is not None and plot_sweep(results["sweep"], plot) is None:
            print("matplotlib is not installed: no plot (make bench installs it)")
        elif plot is not None:
            print(f"wrote {plot}")
    return 0


def _print_table(results: dict) -> None:
    print(f"{'benchmark':<44}{'median':>10}{'min':>10}{'max':>10}")
    for group, data in results.items():
        _print_group(group, data)


def _print_group(prefix: str, data: dict | list) -> None:
    if isinstance(data, list):  # the targets: printed as their own table
        return
    for name, value in data.items():
        label = f"{prefix}.{name}"
        if isinstance(value, dict) and "median" in value:
            print(f"{label:<44}{value['median']:>10.4f}{value['min']:>10.4f}{value['max']:>10.4f}")
        elif isinstance(value, dict):
            _print_group(label, value)
        else:
            shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
            print(f"  {label:<42}{shown:>20}")


if __name__ == "__main__":
    sys.exit(main())
