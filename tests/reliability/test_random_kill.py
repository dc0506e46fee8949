"""Random SIGKILLs of the runner during a recipe of hundreds of fast steps; then --resume-from.

Each kill lands at a seeded random point of the run (measured by the step logs: every step
prints first, and a step's log is made at its first write). After every kill, state.json and
ctx.json must parse (they are replaced atomically), and what state.json calls succeeded must be
in ctx.json.
The next run resumes from the first step state.json does not call succeeded (or skipped).
The last run goes to the end, and its ctx must hold every key every step writes: nothing lost.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import kill_tree, marked, start_cli, wait_for, write_module, write_recipe

STEPS = 600
KILLS = 6

PUT = """
def put(ctx, i):
    print(i)
    ctx[f"p{i:03d}"] = i
    ctx.append("trail", i)
"""


def _recipe(tmp_path: Path) -> Path:
    module = write_module(tmp_path, PUT)
    lines = ["steps:"]
    for i in range(STEPS):
        if i % 2 == 0:
            lines.append(
                f"  - {{name: s{i:03d}, type: python, module: {module}, function: put,"
                f" params: {{i: {i}}}}}"
            )
        elif i % 4 == 1:
            lines.append(
                f"""  - {{name: s{i:03d}, type: shell, run: 'echo {i}; echo s{i:03d}={i} > "$ORCH_CTX_OUT"'}}"""
            )
        else:
            lines.append(
                f"  - {{name: s{i:03d}, type: shell, cmd: sh,"
                f""" args: [-c, 'echo {i}; printf "{{\\"s{i:03d}\\": {i}}}" > "$ORCH_CTX_OUT"']}}"""
            )
    return write_recipe(tmp_path, "\n".join(lines) + "\n")


def _expected_key(i: int) -> str:
    return f"p{i:03d}" if i % 2 == 0 else f"s{i:03d}"


def _runs(tmp_path: Path) -> set[Path]:
    root = tmp_path / ".orch" / "runs"
    return set(root.iterdir()) if root.is_dir() else set()


def _started_steps(run_dir: Path) -> int:
    try:
        return len(list((run_dir / "logs").iterdir()))
    except FileNotFoundError:
        return 0


def _first_not_done(state: dict) -> int | None:
    for name, step in state["steps"].items():  # recipe order
        if step["status"] not in ("succeeded", "skipped"):
            return int(name[1:])
    return None


def _check_complete(run_dir: Path) -> int:
    """The run went to the end: every key of every step is in its ctx. Duplicated appends."""
    ctx = json.loads((run_dir / "ctx.json").read_bytes())
    lost = [k for k in map(_expected_key, range(STEPS)) if k not in ctx]
    assert not lost, f"lost: {lost}"
    trail = ctx["trail"]
    evens = set(range(0, STEPS, 2))
    assert set(trail) == evens, "every python step's append is in the final ctx"
    return len(trail) - len(evens)


@pytest.mark.parametrize("seed", [7, 2024])
def test_random_sigkills_lose_nothing_and_resume_continues(tmp_path, seed, faults):
    rng = random.Random(seed)
    recipe = _recipe(tmp_path)
    early = rng.randrange(KILLS)  # this kill lands right at the start, before any save
    resume: int | None = None  # the step the next run starts from
    kills = reruns = completed = dupes = 0
    report = []
    while kills < KILLS:
        args = [recipe, "--no-ui"]
        if resume is not None:
            args += ["--resume-from", f"s{resume:03d}"]
        before = _runs(tmp_path)
        proc = start_cli(*args, cwd=tmp_path, stdout=subprocess.DEVNULL)
        try:
            run_dir = wait_for(lambda b=before: (_runs(tmp_path) - b).pop(), message="run dir")
            if kills == early:
                wait_for(lambda d=run_dir: _started_steps(d) >= 1, message="the first step")
            else:
                # once something is saved, a random number of steps more: anywhere in a step
                # (python, shell, ctx merge, a save in progress)
                wait_for(
                    lambda d=run_dir, p=proc: (d / "state.json").exists() or p.poll() is not None,
                    message="a first save",
                )
                extra = _started_steps(run_dir) + rng.randrange(120)
                wait_for(
                    lambda d=run_dir, n=extra, p=proc: (
                        _started_steps(d) >= n or p.poll() is not None
                    ),
                    timeout=15,
                    message=f"{extra} steps started",
                )
            if proc.poll() is not None:  # the rest of the recipe ran before the kill point
                assert proc.returncode == 0
                dupes += _check_complete(run_dir)
                completed += 1
                resume = None  # a new campaign from the top
                continue
            faults.tried("random SIGKILL of the runner mid-recipe")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=5)
            kills += 1
        finally:
            kill_tree(proc)
        started = _started_steps(run_dir) + (resume or 0)
        wait_for(lambda d=run_dir: not marked(d), timeout=8, message="the watchdog's clean-up")
        state_path, ctx_path = run_dir / "state.json", run_dir / "ctx.json"
        if not state_path.exists():  # killed before the first save: resume as before
            report.append(f"s{started - 1:03d} (before the first save)")
            faults.survived("random SIGKILL of the runner mid-recipe")
            continue
        state = json.loads(state_path.read_bytes())  # atomic: always parses
        ctx = json.loads(ctx_path.read_bytes())
        done = [n for n, s in state["steps"].items() if s["status"] == "succeeded"]
        missing = [n for n in done if _expected_key(int(n[1:])) not in ctx]
        if missing:
            faults.lost("random SIGKILL of the runner mid-recipe", len(missing))
        assert not missing, f"state.json says succeeded but ctx.json lacks their keys: {missing}"
        first = _first_not_done(state)
        if first is None:  # the kill landed after the last step, as the process was ending
            dupes += _check_complete(run_dir)  # nothing lost: a new campaign from the top
            report.append(f"s{started - 1:03d} (after the last step)")
            resume = None
            faults.survived("random SIGKILL of the runner mid-recipe")
            continue
        assert first >= (resume or 0), "a resumed run never goes backwards"
        reruns += started - first
        report.append(f"s{started - 1:03d} (saved through s{first - 1:03d})")
        resume = first
        faults.survived("random SIGKILL of the runner mid-recipe")

    args = [recipe, "--no-ui"] + (["--resume-from", f"s{resume:03d}"] if resume else [])
    before = _runs(tmp_path)
    proc = start_cli(*args, cwd=tmp_path)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        kill_tree(proc)
    assert proc.returncode == 0, out.decode()[-2000:] + err.decode()
    (final_dir,) = _runs(tmp_path) - before
    dupes += _check_complete(final_dir)
    print(
        f"\nseed {seed}: {kills} kills at "
        + ", ".join(report)
        + f"; {completed + 1} complete runs; steps run again after a kill: {reruns}, "
        f"duplicated appends: {dupes}; keys lost: 0"
    )


def test_state_json_is_never_ahead_of_ctx_json_when_ctx_saves_are_slow(tmp_path, faults):
    """A big ctx (here: one that takes 0.1 s to serialise) is saved less often than the state;
    the state must then wait for it. Once, state.json was written at every interval while the
    ctx save was put off: a crash in between left a state.json calling steps succeeded whose
    writes were not in ctx.json, and --resume-from after them lost those writes."""
    from core.rundir import RunDir
    from core.store import RunStore

    store = RunStore(RunDir.create(tmp_path / "run", tmp_path, "run"), interval=0.02)
    counter = {"n": 0}

    def slow_ctx() -> bytes:
        n = counter["n"]
        time.sleep(0.1)  # the injected fault: a slow save (huge ctx, slow disk)
        return json.dumps({"n": n}).encode()

    store.start(lambda: json.dumps({"n": counter["n"]}).encode(), slow_ctx, lambda: counter["n"])
    faults.tried("slow ctx saves while the state changes")
    state_path, ctx_path = tmp_path / "run" / "state.json", tmp_path / "run" / "ctx.json"
    checks = 0
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline:
            counter["n"] += 1  # a step succeeded (its ctx write first, then its state)
            store.ctx_changed()
            store.state_changed()
            if state_path.exists() and ctx_path.exists():
                state = json.loads(state_path.read_bytes())  # first the state ...
                ctx = json.loads(ctx_path.read_bytes())  # ... then a ctx at least as new
                assert ctx["n"] >= state["n"], f"state.json at {state['n']}, ctx.json at {ctx['n']}"
                checks += 1
            time.sleep(0.002)  # the pace of steps finishing, not synchronisation
    finally:
        store.close()
    final = (json.loads(state_path.read_bytes()), json.loads(ctx_path.read_bytes()))
    assert final[0]["n"] == final[1]["n"] == counter["n"]
    assert checks > 100
    print(f"\n{checks} checks of state.json against ctx.json")
    faults.survived("slow ctx saves while the state changes")
