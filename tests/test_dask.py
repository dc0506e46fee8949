"""Python steps on a Dask cluster (issue 16): real LocalClusters (``--executor dask-local://N``,
worker processes) and a real ``dask scheduler`` with ``dask worker`` processes, started once for
the module (``scheduler``)."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    ROOT,
    User,
    assert_gone,
    descendants,
    free_port,
    kill_tree,
    read_json,
    read_state,
    run_cli,
    start_cli,
    start_detached,
    stop_runner,
    wait_for,
    write_module,
    write_recipe,
)

pytest.importorskip("distributed")

DASK = Path(sys.executable).with_name("dask")


def _worker_env() -> dict[str, str]:
    """The workers' environment: without the test's PYTHONPATH (a module only the runner sees)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "PYTHONPATH"))}
    env["DASK_DISTRIBUTED__WORKER__DAEMON"] = "False"
    return env


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """``dask://127.0.0.1:PORT``: a scheduler and two one-thread workers, as subprocesses."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=_worker_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [DASK, "worker", address, "--nthreads", "1", "--no-dashboard"],
                    env=_worker_env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield f"dask://127.0.0.1:{port}"
    finally:
        for proc in procs:
            kill_tree(proc)


def _open(url: str, recipe_path: Path):
    from core.cluster import open_cluster
    from core.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    return recipe, open_cluster(url, recipe)


def _run(
    tmp_path: Path,
    yaml_text: str,
    url: str,
    timeout: float = 60.0,
    on_workers: Callable[[], object] | None = None,
):
    """Run the recipe in-process on the cluster at ``url`` (``on_workers`` run on each worker
    first); the finished runner."""
    from core.runner import Runner

    recipe, cluster = _open(url, write_recipe(tmp_path, yaml_text))
    if on_workers is not None:
        cluster.client.run(on_workers)
    runner = Runner(recipe, run_dir=tmp_path / "run", cluster=cluster)
    try:
        runner.start()
        assert runner.wait(timeout) is not None, "the run did not end"
    finally:
        stop_runner(runner)
    return runner


def _statuses(run_dir: Path) -> dict[str, str]:
    return {name: s["status"] for name, s in read_state(run_dir)["steps"].items()}


# ------------------------------------------------------------------ same results as locally
DEMO_STYLE = """
name: demo style
ctx: {greeting: hello}
steps:
  - name: init
    type: python
    module: scriptlets.python.steps.ctx_init
    params: {keys: [new_row]}
  - name: rows
    type: python
    module: scriptlets.python.steps.ctx_row_updater
    params: {key: new_row, n: 2, interval_sec: 0, max_rows: 2500}
    output: appended
  - name: report
    type: shell
    expose: [greeting, appended]
    run: |
      echo "$greeting $appended"
      echo '{"reported": true}' > "$ORCH_CTX_OUT"
"""


@pytest.mark.parametrize("recipe", ["example_shell_ctx.yaml", "demo_style.yaml"])
def test_recipes_give_the_same_ctx_and_statuses_on_dask_local(tmp_path: Path, recipe: str):
    path = ROOT / "recipes" / recipe
    if recipe == "demo_style.yaml":
        path = write_recipe(tmp_path, DEMO_STYLE, "demo_style.yaml")
    results = {}
    for where, extra in (("local", []), ("dask", ["--executor", "dask-local://2"])):
        run_dir = tmp_path / where
        proc = run_cli(path, "--no-ui", "--run-dir", run_dir, *extra, cwd=tmp_path, timeout=90)
        assert proc.returncode == 0, proc.stderr
        ctx = read_json(run_dir / "ctx.json")
        if "new_row" in ctx:  # random rows: their number and shape are what must agree
            ctx["new_row"] = [len(row) for row in ctx["new_row"]]
        results[where] = (ctx, _statuses(run_dir))
    assert results["dask"] == results["local"]
    assert (
        "on Dask worker tls://127.0.0.1:" in (tmp_path / "dask" / "logs" / "init.log").read_text()
    )


# ------------------------------------------------------------------ where it runs
def test_two_cpu_bound_steps_run_side_by_side_in_worker_processes(tmp_path: Path, scheduler: str):
    """Two CPU-bound pure-Python steps: in two worker processes (not this one), at the same time
    (their intervals overlap; in one process the GIL would make them take turns). ``where:
    local`` keeps a step in the runner."""
    mod = write_module(
        tmp_path,
        """
def work(ctx, key):
    import os, time
    start = time.time()
    n = 0
    for i in range(3_000_000):
        n += i
    ctx[key] = [os.getpid(), start, time.time()]
""",
    )
    runner = _run(
        tmp_path,
        f"""
    steps:
      - {{name: one, type: python, module: {mod}, function: work, params: {{key: one}}}}
      - {{name: two, type: python, module: {mod}, function: work, params: {{key: two}},
          depends_on: []}}
      - {{name: here, type: python, module: {mod}, function: work, params: {{key: here}},
          where: local}}
    """,
        scheduler,
    )
    assert runner.exit_code == 0
    (pid1, start1, end1), (pid2, start2, end2) = runner.ctx["one"], runner.ctx["two"]
    assert os.getpid() not in (pid1, pid2)
    assert pid1 != pid2  # two worker processes
    assert max(start1, start2) < min(end1, end2)  # ran at the same time
    assert runner.ctx["here"][0] == os.getpid()


# ------------------------------------------------------------------ output, stop, conflicts
def _start(tmp_path: Path, yaml_text: str, url: str):
    from core.runner import Runner

    recipe, cluster = _open(url, write_recipe(tmp_path, yaml_text))
    runner = Runner(recipe, run_dir=tmp_path / "run", cluster=cluster)
    runner.start()
    return runner


def test_printed_lines_arrive_in_order_while_the_step_runs_and_stop_ends_it(
    tmp_path: Path, scheduler: str
):
    """10,000 lines are in the log, in order, while the step still runs (it then waits for
    ``stop``); stopping it sets its ``stop`` at once (grace 60 s: no waiting that out)."""
    mod = write_module(
        tmp_path,
        """
def talk(ctx, stop):
    for i in range(10_000):
        print(f"line {i}")
    stop.wait(120)
    print("stopped")
""",
    )
    runner = _start(
        tmp_path,
        f"steps:\n  - {{name: talk, type: python, module: {mod}, function: talk, grace: 60}}",
        scheduler,
    )
    log = tmp_path / "run" / "logs" / "talk.log"
    expected = [f"line {i}" for i in range(10_000)]
    try:
        wait_for(lambda: log.exists() and "line 9999\n" in log.read_text(), 30, "all the lines")
        assert runner.snapshot().steps["talk"].status == "running"
        assert log.read_text().splitlines()[1:] == expected  # after "on Dask worker ..."
        runner.stop_step("talk")
        assert runner.wait(30) is not None
    finally:
        stop_runner(runner)
    assert log.read_text().splitlines()[1:] == [*expected, "stopped"]
    assert runner.snapshot().steps["talk"].status == "cancelled"  # as a local step stopped


def test_two_parallel_steps_setting_one_key_fail_the_later_and_appends_commute(
    tmp_path: Path, scheduler: str
):
    mod = write_module(
        tmp_path,
        f"""
import pathlib, time
FLAG = pathlib.Path({str(tmp_path / "first-done")!r})

def first(ctx):
    ctx["k"] = "first"
    ctx.append("rows", "first")
    FLAG.write_text("x")

def second(ctx):
    while not FLAG.exists():
        time.sleep(0.01)
    time.sleep(0.5)  # the first one's writes have reached the runner by now
    ctx.append("rows", "second")
    ctx["k"] = "second"
""",
    )
    runner = _run(
        tmp_path,
        f"""
    ctx: {{rows: []}}
    steps:
      - {{name: first, type: python, module: {mod}, function: first}}
      - {{name: second, type: python, module: {mod}, function: second, depends_on: []}}
    """,
        scheduler,
    )
    steps = runner.snapshot().steps
    assert steps["first"].status == "succeeded"
    assert steps["second"].status == "failed"
    assert steps["second"].reason == "ctx conflict on 'k'"
    assert runner.ctx["k"] == "first"
    assert sorted(runner.ctx["rows"]) == ["first", "second"]


def test_reads_ships_only_those_keys(tmp_path: Path, scheduler: str):
    mod = write_module(tmp_path, "def keys(ctx):\n    return sorted(ctx)\n")
    runner = _run(
        tmp_path,
        f"""
    ctx: {{a: 1, b: 2, c: 3}}
    steps:
      - {{name: some, type: python, module: {mod}, function: keys, reads: [a, c, nope],
          output: some}}
      - {{name: all, type: python, module: {mod}, function: keys, output: all}}
    """,
        scheduler,
    )
    assert runner.ctx["some"] == ["a", "c"]
    assert runner.ctx["all"] == ["a", "b", "c", "some"]


def test_numpy_values_a_step_writes_on_a_worker_reach_the_runs_ctx(tmp_path: Path, scheduler: str):
    """A mean computed with numpy on a worker is an ``np.float64``: the ctx takes it, so its
    write (and the line printed before it) must come back to the run as locally. Once, the
    batch holding it could not be sent: the step failed "not JSON serializable", its output
    lost."""
    mod = write_module(
        tmp_path,
        """
        import numpy as np

        def mean(ctx):
            print("computing")
            ctx["mean"] = np.mean(np.array(ctx["data"]))
            ctx.append("rows", [np.str_("a"), np.float64(0.5)])
            return np.float64(2.0)
        """,
    )
    _run(
        tmp_path,
        f"""
    ctx: {{data: [1.0, 2.0, 3.0, 4.0]}}
    steps:
      - {{name: mean, type: python, module: {mod}, function: mean, output: out}}
    """,
        scheduler,
    )
    assert _statuses(tmp_path / "run") == {"mean": "succeeded"}
    saved = json.loads((tmp_path / "run" / "ctx.json").read_bytes())
    assert {k: saved[k] for k in ("mean", "rows", "out")} == {
        "mean": 2.5,
        "rows": [["a", 0.5]],
        "out": 2.0,
    }
    assert "computing\n" in (tmp_path / "run" / "logs" / "mean.log").read_text()


# ------------------------------------------------------------------ a worker lost, leftovers
def _ours(pids: list[int]) -> list[int]:
    """Processes other than multiprocessing's resource tracker."""
    out = []
    for pid in pids:
        try:
            if "resource_tracker" not in " ".join(psutil.Process(pid).cmdline()):
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_a_python_step_ignoring_stop_on_a_worker_is_interrupted_and_frees_it(tmp_path: Path):
    """A runaway loop on a one-thread worker, stopped by its timeout: after its grace the
    worker interrupts it (StepKilled, as at home), so the next step gets the worker. It held
    the worker for good: the next step waited forever."""
    mod = write_module(
        tmp_path,
        """
def spin(ctx):
    n = 0
    while True:
        n += 1

def after(ctx):
    return "ran"
""",
    )
    runner = _run(
        tmp_path,
        f"""
    steps:
      - {{name: spin, type: python, module: {mod}, function: spin, timeout: 0.5, grace: 0.3,
          continue_on_error: true}}
      - {{name: after, type: python, module: {mod}, function: after, output: after}}
    """,
        "dask-local://1",
        timeout=30,
    )
    assert _statuses(tmp_path / "run") == {"spin": "timed_out", "after": "succeeded"}
    assert runner.ctx["after"] == "ran"


def test_a_python_service_on_a_worker_is_ready_by_its_port(tmp_path: Path):
    """A python service serving on a worker, ``ready: {port}``: the listener is the worker's
    process, the step's own. Only the runner's pid counted for a python step, and the service
    was never ready there (r17-review)."""
    port = free_port()
    mod = write_module(
        tmp_path,
        """
import socket

def serve(ctx, port, stop):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        stop.wait()

def after(ctx):
    return "ran"
""",
    )
    runner = _run(
        tmp_path,
        f"""
    steps:
      - {{name: web, type: python, module: {mod}, function: serve, params: {{port: {port}}},
          background: true, ready: {{port: {port}, timeout: 20}}}}
      - {{name: after, type: python, module: {mod}, function: after, output: after}}
    """,
        "dask-local://2",
        timeout=60,
    )
    statuses = _statuses(tmp_path / "run")
    assert statuses["after"] == "succeeded", read_state(tmp_path / "run")["steps"]["web"]
    assert runner.ctx["after"] == "ran"


def test_a_step_on_a_worker_ends_without_waiting_for_its_stop_watcher(tmp_path: Path):
    """Each step's task waited for its stop watcher's poll of the scheduler to end (STOP_POLL,
    1 s) before it returned: 5 trivial python steps took 5 s instead of 0.4. With the poll
    made an hour long on the workers, the run ends (python and ``where: cluster`` steps)."""
    from core.executors import on_worker

    mod = write_module(tmp_path, "def one(ctx):\n    return 1\n")
    runner = _run(
        tmp_path,
        f"""
    steps:
      - {{name: first, type: python, module: {mod}, function: one, output: first}}
      - {{name: second, type: python, module: {mod}, function: one, output: second}}
      - {{name: shell, type: shell, where: cluster, cmd: "true"}}
    """,
        "dask-local://1",
        on_workers=functools.partial(setattr, on_worker, "STOP_POLL", 3600.0),
    )
    assert _statuses(tmp_path / "run") == {n: "succeeded" for n in ("first", "second", "shell")}
    assert (runner.ctx["first"], runner.ctx["second"]) == (1, 1)


def test_sigint_to_a_dask_local_runs_group_stops_it_without_the_workers_tracebacks(tmp_path: Path):
    """Ctrl-C at the terminal (or a cancelled CI job's SIGINT) reaches the whole process group:
    the LocalCluster's workers too, which printed 25-40 lines of tracebacks (KeyboardInterrupt,
    CommClosedError) over the run's summary. The runner stops them itself; they ignore it. A
    ``where: cluster`` shell step's process still gets SIGINT as at home (neither blocked nor
    ignored)."""
    mod = write_module(
        tmp_path,
        """
from pathlib import Path

def spin(ctx):
    Path("spinning").touch()
    while True:
        pass
""",
    )
    recipe = write_recipe(
        tmp_path,
        f"""
    steps:
      - {{name: sigs, type: shell, where: cluster,
          run: "exec grep -E '^Sig(Blk|Ign)' /proc/self/status > sigs"}}
      - {{name: spin, type: python, module: {mod}, function: spin, grace: 1}}
    """,
    )
    proc = start_cli(recipe, "--no-ui", "--executor", "dask-local://1", cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "spinning").exists(), 60, "the step to spin")
        started = descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        text = (out + err).decode()
        assert proc.returncode == 130, text
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
        assert_gone(started, 30)
    finally:
        kill_tree(proc)
    sigint = 1 << (signal.SIGINT - 1)
    masks = dict(line.split(":") for line in (tmp_path / "sigs").read_text().splitlines())
    assert {name: int(mask, 16) & sigint for name, mask in masks.items()} == {
        "SigBlk": 0,
        "SigIgn": 0,
    }


def test_a_worker_killed_mid_step_fails_it_once_and_nothing_is_left_behind(tmp_path: Path):
    mod = write_module(
        tmp_path,
        """
import os

def victim(ctx, stop):
    ctx["pid"] = os.getpid()
    stop.wait(120)
""",
    )
    threads_before = {t.name for t in threading.enumerate()}
    other = set(descendants(os.getpid()))  # another test's scheduler and workers
    runner = _start(
        tmp_path,
        f"steps:\n  - {{name: victim, type: python, module: {mod}, function: victim}}",
        "dask-local://1",
    )
    try:
        pid = wait_for(lambda: runner.ctx.get("pid"), 30, "the step's ctx write")
        assert pid in descendants(os.getpid())  # a worker process of the LocalCluster
        os.kill(pid, signal.SIGKILL)
        assert runner.wait(60) is not None
    finally:
        stop_runner(runner)
    step = runner.snapshot().steps["victim"]
    assert (step.status, step.reason, step.attempts) == ("failed", "worker lost", 1)
    # the worker the nanny started after the kill too; the interpreter's multiprocessing
    # resource tracker (Python's, one per process) stays until this process ends
    wait_for(
        lambda: not _ours([p for p in descendants(os.getpid()) if p not in other]),
        10,
        "the cluster's processes to go",
    )

    def left() -> set[str]:
        """Threads of the run still there: what stays is Dask's module-wide pool for blocking
        work, and the runner's idle daemon pool (core.workers), as after any run. The run's
        scheduler thread ends just after the run does (it may be handing over its lock)."""
        names = {t.name for t in threading.enumerate() if t.is_alive()} - threads_before
        return {n for n in names if not n.startswith(("Dask-Offload", "orch-worker-"))}

    wait_for(lambda: not left(), 10, "the run's threads to end")
    assert left() == set()


# ------------------------------------------------------------------ exit 2 before anything runs
def test_an_unreachable_scheduler_is_exit_2_before_anything_runs(tmp_path: Path):
    mod = write_module(tmp_path, "def run(ctx):\n    pass\n")
    recipe = write_recipe(tmp_path, f"steps:\n  - {{name: a, type: python, module: {mod}}}\n")
    url = f"dask://127.0.0.1:{free_port()}"
    proc = run_cli(
        recipe,
        "--no-ui",
        "--executor",
        url,
        cwd=tmp_path,
        env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"},
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"orch-tui: cannot reach the Dask scheduler at {url}: ")
    assert len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / ".orch").exists()


def test_a_step_module_the_workers_cannot_import_is_exit_2(tmp_path: Path, scheduler: str):
    """The module is on the runner's PYTHONPATH only, not the workers'."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "only_here_k16.py").write_text("def run(ctx):\n    pass\n")
    recipe = write_recipe(tmp_path, "steps:\n  - {name: a, type: python, module: only_here_k16}\n")
    proc = run_cli(
        recipe, "--no-ui", "--executor", scheduler, cwd=tmp_path, env={"PYTHONPATH": str(elsewhere)}
    )
    assert proc.returncode == 2, proc.stderr
    assert "step 'a': cannot import only_here_k16: ModuleNotFoundError" in proc.stderr
    assert not (tmp_path / ".orch").exists()


def test_version_skew_between_here_and_a_worker_is_exit_2(tmp_path: Path):
    """A worker that says it has another cloudpickle (a preload changes what it reports)."""
    (tmp_path / "skew_k16.py").write_text(
        "import distributed.node as node\n"
        "real = node.get_versions\n"
        "def fake(packages=None):\n"
        "    out = real(packages)\n"
        "    out['packages']['cloudpickle'] = '0.0.1'\n"
        "    return out\n"
        "node.get_versions = fake\n"
    )
    port = free_port()
    env = {**_worker_env(), "PYTHONPATH": str(tmp_path)}
    common = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            start_new_session=True,
            **common,
        )
    ]
    try:
        procs.append(
            subprocess.Popen(
                [DASK, "worker", f"tcp://127.0.0.1:{port}", "--preload", "skew_k16"],
                start_new_session=True,
                **common,
            )
        )
        mod = write_module(tmp_path, "def run(ctx):\n    pass\n")
        recipe = write_recipe(tmp_path, f"steps:\n  - {{name: a, type: python, module: {mod}}}\n")
        proc = run_cli(
            recipe, "--no-ui", "--executor", f"dask://127.0.0.1:{port}", cwd=tmp_path, timeout=60
        )
    finally:
        for p in procs:
            kill_tree(p)
    assert proc.returncode == 2, proc.stderr
    assert "version skew" in proc.stderr and "cloudpickle" in proc.stderr
    assert "here, 0.0.1 on worker tcp://" in proc.stderr


def test_validate_warns_about_unordered_steps_setting_the_same_output(tmp_path: Path):
    mod = write_module(tmp_path, "def run(ctx):\n    return 1\n")
    recipe = write_recipe(
        tmp_path,
        f"""
    steps:
      - {{name: a, type: python, module: {mod}, output: k}}
      - {{name: b, type: python, module: {mod}, output: k, depends_on: []}}
      - {{name: c, type: python, module: {mod}, output: k, depends_on: [a, b]}}
    """,
    )
    proc = run_cli("validate", recipe, cwd=tmp_path)
    assert proc.returncode == 0
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1  # c waits for both
    assert "step 'b': output 'k' is also set by step 'a'" in warnings[0]


# ------------------------------------------------------------------ shell steps on the cluster
SHELL_ON_CLUSTER = r"""
ctx: {greeting: hello}
steps:
  - name: talk
    type: shell
    where: cluster
    expose: [greeting]
    run: |
      test ! -e "$ORCH_CTX_OUT" || exit 9
      echo "$greeting from $ORCH_STEP"
      echo oops >&2
      ps -o args= -p $PPID > parent
      echo "{\"pid\": $$, \"ppid\": $PPID, \"cwd\": \"$PWD\"}" > "$ORCH_CTX_OUT"
  - {name: literal, type: shell, where: cluster, cmd: echo, args: ['$HOME', 'a  b'],
     depends_on: []}
  - {name: fails, type: shell, where: cluster, cmd: sh, args: [-c, 'echo bye; exit 3'],
     depends_on: []}
  - {name: here, type: shell, run: 'echo "{\"here_ppid\": $PPID}" > "$ORCH_CTX_OUT"',
     depends_on: []}
"""


def test_a_shell_step_on_the_cluster_runs_in_a_worker_child_with_its_output_and_ctx_out(
    tmp_path: Path,
):
    """Its process is a worker's child (the runner's own shell steps are the runner's), its
    output and exit code are as at home, no shell unless ``run:``, and what it writes to
    ORCH_CTX_OUT (absent until the step makes it, as at home) reaches the ctx."""
    runner = _run(tmp_path, SHELL_ON_CLUSTER, "dask-local://2")
    steps = runner.snapshot().steps
    assert {n: s.status for n, s in steps.items()} == {
        "talk": "succeeded",
        "literal": "succeeded",
        "fails": "failed",
        "here": "succeeded",
    }
    assert (steps["fails"].exit_code, steps["fails"].reason) == (3, "exit code 3")
    assert "no executor" not in (tmp_path / "run" / "events.jsonl").read_text()
    logs = tmp_path / "run" / "logs"
    first, *rest = (logs / "talk.log").read_text().splitlines()
    assert first.startswith("orch-tui: on Dask worker tls://127.0.0.1:")
    assert rest == ["hello from talk", "oops"]
    assert f", pid {runner.ctx['pid']} on " in first  # the step's own process
    assert (logs / "literal.log").read_text().splitlines()[1:] == ["$HOME a  b"]
    assert (logs / "fails.log").read_text().splitlines()[1:] == ["bye"]
    assert runner.ctx["cwd"] == str(tmp_path)  # the recipe's folder, as at home
    assert runner.ctx["here_ppid"] == os.getpid()  # a local shell step: the runner's child
    assert runner.ctx["ppid"] != os.getpid()
    assert "multiprocessing" in (tmp_path / "parent").read_text()  # a LocalCluster worker


def _pids_file(tmp_path: Path) -> Path:
    return tmp_path / "pids"


def test_stopping_a_shell_step_on_the_cluster_kills_its_group_there(tmp_path: Path):
    """``stop``: SIGTERM to the group on the worker, SIGKILL after ``grace`` (this one ignores
    SIGTERM, and so does the child it started); ``timeout`` stops one the same way. Nothing is
    left of either."""
    pids = _pids_file(tmp_path)
    runner = _start(
        tmp_path,
        f"""
    steps:
      - name: stubborn
        type: shell
        where: cluster
        grace: 1
        run: |
          trap '' TERM
          sleep 300 &
          echo "$$ $!" > {pids}
          wait
      - {{name: slow, type: shell, where: cluster, cmd: sleep, args: ['300'], timeout: 1,
         depends_on: []}}
    """,
        "dask-local://2",
    )
    try:
        group = wait_for(lambda: pids.exists() and pids.read_text().split(), 30, "the pids")
        assert int(group[0]) in descendants(os.getpid())  # a worker's child, on this machine
        runner.stop_step("stubborn")
        assert runner.wait(60) is not None
    finally:
        stop_runner(runner)
    steps = runner.snapshot().steps
    assert (steps["stubborn"].status, steps["stubborn"].signal) == ("cancelled", signal.SIGKILL)
    assert (steps["slow"].status, steps["slow"].signal) == ("timed_out", signal.SIGTERM)
    assert_gone([int(p) for p in group])


# ------------------------------------------------------------------ a detached run
def test_a_detached_run_runs_its_steps_on_the_cluster_and_leaves_nothing(tmp_path: Path, daemons):
    mod = write_module(tmp_path, "import os\n\ndef run(ctx):\n    ctx['pid'] = os.getpid()\n")
    recipe = write_recipe(
        tmp_path,
        f"""
    steps:
      - {{name: py, type: python, module: {mod}}}
      - {{name: sh, type: shell, where: cluster, run: 'echo "{{\\"ppid\\": $PPID}}" > "$ORCH_CTX_OUT"'}}
    """,
    )
    daemon = start_detached(
        recipe, "--executor", "dask-local://1", "--exit-when-done", cwd=tmp_path
    )
    daemons.append(daemon)
    waited = run_cli("ctl", daemon.run_id, "wait", cwd=tmp_path, timeout=120)
    assert waited.returncode == 0, waited.stderr
    ctx = read_json(daemon.run_dir / "ctx.json")
    assert ctx["pid"] not in (daemon.pid, os.getpid())  # a worker process, not the daemon
    assert ctx["ppid"] == ctx["pid"]  # the shell step: that worker's child
    assert "on Dask worker tls:" in (daemon.run_dir / "logs" / "py.log").read_text()
    assert_gone([daemon.pid, ctx["pid"]], 30)  # the daemon and the cluster it started


# ------------------------------------------------------------------ nothing reachable from outside
def _listening(pids: list[int]) -> set[tuple[str, int]]:
    out = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        out |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out


def test_a_cluster_we_start_listens_on_loopback_only_and_never_on_8787():
    """The scheduler serves HTTP even without a dashboard; it tried 8787 first (and warned
    "Port 8787 is already in use" when another cluster had it)."""
    import warnings

    from core.cluster import Cluster, parse_executor

    me = os.getpid()
    before = _listening([me, *descendants(me)])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cluster = Cluster.start(parse_executor("dask-local://1"))
    try:
        ours = _listening([me, *descendants(me)]) - before
    finally:
        cluster.close()
    assert len(ours) >= 4  # the scheduler, its HTTP server, the nanny, the worker (and its HTTP)
    assert {ip for ip, _ in ours} == {"127.0.0.1"}
    assert 8787 not in {port for _, port in ours}
    assert not [w for w in seen if "already in use" in str(w.message)]


_INTRUDER = """
import os, sys
from distributed import Client
from distributed.security import Security

host_port = sys.argv[1].split("://")[1]
for address, security in ((f"tcp://{host_port}", None), (f"tls://{host_port}", Security.temporary())):
    try:
        client = Client(address, security=security, timeout=5)
    except Exception:
        continue
    print("ran code on the run's worker, pid", list(client.run(os.getpid).values()))
    client.close()
    sys.exit(1)
"""


def test_a_cluster_we_start_runs_no_code_for_a_client_without_the_runs_key():
    """Its scheduler listens on 127.0.0.1, where every local user can connect: without TLS and
    a key of the run's own, another user's client ran any code in the run's workers, as the
    user who started the run. The intruder here is a fresh process holding no key of ours, as
    another user's would be; it tries plain TCP, and TLS with a key of its own. The
    scheduler's HTTP pages (the workers' logs among them) are not served either."""
    import urllib.error
    import urllib.request

    from core.cluster import Cluster, parse_executor

    cluster = Cluster.start(parse_executor("dask-local://1"))
    try:
        address = cluster.client.scheduler.address
        intruder = subprocess.run(
            [sys.executable, "-c", _INTRUDER, address],
            capture_output=True,
            text=True,
            timeout=120,
            env=_worker_env(),
        )
        assert intruder.returncode == 0, intruder.stdout + intruder.stderr
        http = cluster._local.scheduler.http_server.port
        with pytest.raises(urllib.error.HTTPError) as page:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/info/main/workers.html", timeout=10)
    finally:
        cluster.close()
    assert page.value.code == 404


#: a dask-local run that starts the cluster and runs one shell step on it, and nothing else
ONE_CLUSTER_SHELL_STEP = """
executor: dask-local://1
steps:
  - {name: sh, type: shell, where: cluster, cmd: "true"}
"""


def test_a_local_cluster_run_from_a_shared_folder_imports_nothing_planted_there(
    tmp_path: Path, shared: Path, attacker: User
):
    """Its worker processes are started as ``python -c``, which looks in the current folder
    first for what it imports at start (multiprocessing itself) unless run with -P: a run
    started in /tmp imported another user's ``multiprocessing.py`` there, as the run's user."""
    recipe = write_recipe(tmp_path, ONE_CLUSTER_SHELL_STEP)
    planted = "import os\nopen(os.path.join(os.path.dirname(__file__), 'ran'), 'w').close()\n"
    attacker.do(lambda: (shared / "multiprocessing.py").write_text(planted))
    result = run_cli(recipe, "--no-ui", cwd=shared, timeout=120)
    assert not (shared / "ran").exists()
    assert result.returncode == 0, result.stderr


def _plant_every_module(folder: Path) -> Callable[[], None]:
    """``folder``, with a module for every name Python could import here, each leaving a
    ``.ran`` file next to itself if it is ever imported."""
    import pkgutil

    names = set(sys.stdlib_module_names) | {m.name for m in pkgutil.iter_modules()}
    names = {n for n in names if n.isidentifier()} - {"sitecustomize", "usercustomize"}

    def plant() -> None:
        folder.mkdir(mode=0o777)
        for name in names:
            (folder / f"{name}.py").write_text("open(__file__ + '.ran', 'w').close()\n")

    return plant


def test_a_local_cluster_imports_nothing_from_a_shared_dask_scratch_space(
    tmp_path: Path, shared: Path, attacker: User
):
    """Dask's scratch folder is ``dask-scratch-space`` in the temp folder, the same name for
    every user, and each of its servers (the scheduler in the runner itself) puts it first on
    ``sys.path``: another user who made it first, writable, had their module imported by the
    run, as the run's user. The attacker plants one for every name that can be imported."""
    recipe = write_recipe(tmp_path, ONE_CLUSTER_SHELL_STEP)
    scratch = shared / "dask-scratch-space"
    attacker.do(_plant_every_module(scratch))
    result = run_cli(recipe, "--no-ui", cwd=tmp_path, timeout=120, env={"TMPDIR": str(shared)})
    assert sorted(p.name for p in scratch.glob("*.ran")) == []
    assert result.returncode == 0, result.stderr
    assert [p.name for p in shared.iterdir()] == ["dask-scratch-space"]  # ours went with the run


def test_dask_local_without_cryptography_is_one_line_and_exit_2(tmp_path: Path):
    """The cluster's TLS key needs ``cryptography`` (in the ``dask`` extra): an install of
    orch-tui[dask] from before it was added said ``internal error: ImportError``, exit 1."""
    recipe = write_recipe(tmp_path, ONE_CLUSTER_SHELL_STEP)
    shadow = tmp_path / "shadow"
    (shadow / "cryptography").mkdir(parents=True)
    (shadow / "cryptography" / "__init__.py").write_text("raise ImportError('not installed')\n")
    result = run_cli(recipe, "--no-ui", cwd=tmp_path, timeout=120, env={"PYTHONPATH": str(shadow)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "orch-tui: dask-local needs the Python package cryptography (its TLS key): "
        "pip install 'orch-tui[dask]'"
    ]


def test_a_sigkilled_runners_cluster_scratch_folder_is_removed_and_no_other(tmp_path: Path):
    """A dask-local cluster keeps its files in a private ``orch-dask-*`` folder of the temp
    folder, removed as the cluster closes. A runner SIGKILLed left it there for ever: the
    watchdog, which stops what the dead runner started, removes it too, and nothing else (not
    another run's folder of the same kind)."""
    temp = tmp_path / "tmp"
    temp.mkdir(mode=0o700)
    other = temp / "orch-dask-another-run"
    other.mkdir()
    (other / "keep").write_text("another run's\n")
    mod = write_module(
        tmp_path,
        """
from pathlib import Path

def spin(ctx, stop):
    Path("spinning").touch()
    stop.wait(120)
""",
    )
    recipe = write_recipe(
        tmp_path, f"steps:\n  - {{name: spin, type: python, module: {mod}, function: spin}}\n"
    )
    proc = start_cli(
        recipe, "--no-ui", "--executor", "dask-local://1", cwd=tmp_path, env={"TMPDIR": str(temp)}
    )
    try:
        wait_for(lambda: (tmp_path / "spinning").exists(), 60, "the step to run")
        (scratch,) = [p for p in temp.glob("orch-dask-*") if p != other]
        started = descendants(proc.pid)
        proc.kill()
        proc.wait(10)
        assert_gone(started, 30)
        wait_for(lambda: not scratch.exists(), 30, "the run's scratch folder to go")
    finally:
        kill_tree(proc)
    assert sorted(p.name for p in temp.iterdir()) == [other.name]
    assert (other / "keep").read_text() == "another run's\n"


def test_a_dask_local_run_ends_without_a_traceback_on_stderr(tmp_path: Path):
    """Every dask-local run with a python step ended with ``distributed.event - ERROR`` and a
    13-line CancelledError traceback on stderr: the scheduler's report of a step's stop
    watcher's poll that the cluster's close cut short, its normal end."""
    mod = write_module(tmp_path, "def work(ctx):\n    print('hi')\n")
    recipe = write_recipe(
        tmp_path, f"steps:\n  - {{name: w, type: python, module: {mod}, function: work}}\n"
    )
    result = run_cli(recipe, "--no-ui", "--executor", "dask-local://1", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""


def _worker_spawned(proc: subprocess.Popen) -> bool:
    """A LocalCluster worker process is among ``proc``'s (or it is over)."""
    for pid in descendants(proc.pid):
        try:
            if "spawn_main" in " ".join(psutil.Process(pid).cmdline()):
                return True
        except psutil.Error:
            pass
    return proc.poll() is not None


def test_a_ctrl_c_as_the_cluster_starts_ends_the_run_without_tracebacks(tmp_path: Path):
    """SIGINT to the runner just as the LocalCluster's first worker process appears: it cut
    the cluster's start short, and Dask's exit hook, closing the half-made cluster, printed
    ``AssertionError: Status.init`` tracebacks (and its scratch folder was removed under it).
    Now SIGINT waits until the cluster is whole, then ends the run as usual. Three tries: the
    moment varies. (To the whole group, a worker may still get it before its preload.)"""
    temp = tmp_path / "tmp"
    temp.mkdir(mode=0o700)
    mod = write_module(tmp_path, "def work(ctx):\n    print('hi')\n")
    recipe = write_recipe(
        tmp_path, f"steps:\n  - {{name: w, type: python, module: {mod}, function: work}}\n"
    )
    for _ in range(3):
        proc = start_cli(
            recipe,
            "--no-ui",
            "--executor",
            "dask-local://2",
            cwd=tmp_path,
            env={"TMPDIR": str(temp)},
        )
        try:
            wait_for(lambda p=proc: _worker_spawned(p), 60, "a worker process")
            os.kill(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            kill_tree(proc)
        text = (out + err).decode()
        assert proc.returncode in (0, 130), text
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert list(temp.iterdir()) == []


def test_a_big_ctx_shipped_to_a_worker_leaves_no_dask_warning_in_the_output(tmp_path: Path):
    """A python step on a worker gets a copy of the ctx: an analyst's 12 MB of it made Dask
    print six lines of ``UserWarning: Sending large graph of size 12.00 MiB ... Consider
    loading the data with Dask directly`` into the run's output, unprefixed, about nothing the
    user wrote. The step's copy is the contract (``reads:`` ships less): no warning."""
    mod = write_module(
        tmp_path,
        """
def fill(ctx):
    ctx["big"] = "x" * (12 * 1024 * 1024)

def use(ctx):
    return len(ctx["big"])
""",
    )
    recipe = write_recipe(
        tmp_path,
        f"""
    steps:
      - {{name: fill, type: python, module: {mod}, function: fill, where: local}}
      - {{name: use, type: python, module: {mod}, function: use, output: n}}
    """,
    )
    result = run_cli(recipe, "--no-ui", "--executor", "dask-local://1", cwd=tmp_path, timeout=120)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "Warning" not in text and "large graph" not in text, text
    run_dir = next((tmp_path / ".orch" / "runs").iterdir())
    assert read_json(run_dir / "ctx.json")["n"] == 12 * 1024 * 1024


def test_what_a_python_step_starts_on_a_worker_is_stopped_when_it_ends(tmp_path: Path):
    """A python step on a dask-local worker that starts a process and returns: the process
    once outlived the run, and held the run's stdout (the workers' own) open, so a headless
    run read through a pipe did not end until it did. It is stopped as the step ends, as a
    ``where: cluster`` shell step's group is, and its log says so."""
    mod = write_module(
        tmp_path,
        """
import subprocess

def spawn(ctx):
    child = subprocess.Popen(["sleep", "1000"])
    with open("child.pid", "w") as f:
        f.write(str(child.pid))
""",
    )
    recipe = write_recipe(
        tmp_path, f"steps:\n  - {{name: spawn, type: python, module: {mod}, function: spawn}}\n"
    )
    out = tmp_path / "out.txt"  # a file, not a pipe: the process once held a pipe open for good
    try:
        with out.open("wb") as sink:
            proc = start_cli(
                recipe, "--no-ui", "--executor", "dask-local://1", cwd=tmp_path, stdout=sink
            )
            assert proc.wait(timeout=60) == 0, out.read_text() + proc.stderr.read().decode()
        child = int((tmp_path / "child.pid").read_text())
        assert_gone([child], timeout=1)
        text = out.read_text()
        assert "spawn | orch-tui: stopped 1 process the step left running" in text, text
    finally:
        if (tmp_path / "child.pid").exists():
            kill_tree(int((tmp_path / "child.pid").read_text()))


def test_a_worker_started_again_by_its_nanny_is_not_called_a_steps_leftover(tmp_path: Path):
    """A python step kills its own worker (a crash in C code does); the cluster's nanny starts
    a new one, from the runner's process, which carries the run's marker since python steps'
    children do. The run's end stopped it as a process "that steps left running" before it
    closed the cluster: a message about nothing the recipe left. The cluster is closed first."""
    mod = write_module(
        tmp_path,
        "import os, signal\n\ndef die(ctx):\n    os.kill(os.getpid(), signal.SIGKILL)\n\n"
        "def ok(ctx):\n    return 1\n",
    )
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: die, type: python, module: {mod}, function: die, continue_on_error: true}}
          - {{name: ok, type: python, module: {mod}, function: ok, output: done}}
        """,
    )
    result = run_cli(recipe, "--no-ui", "--executor", "dask-local://1", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "left running" not in result.stdout, result.stdout
