"""orch-tui benchmarks: each figure is a ratio against a baseline run in the same invocation.

    python bench/run.py            # full sizes, medians of 5 runs, writes bench/results.json
    python bench/run.py --quick    # tiny sizes, one run: a correctness check (used by the tests)

Machines here are shared and noisy, so absolute seconds mean little; the ratio to ``make`` or to
a plain shell redirect, measured seconds apart, is what to compare between versions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORCH = [sys.executable, "-m", "tui.cli"]


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _run(argv: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, **kw)
    if result.returncode != 0:
        raise RuntimeError(f"{argv} failed ({result.returncode}): {result.stderr[-2000:]!r}")
    return result


def _measure(fn: Callable[[], None], repeat: int) -> dict[str, float]:
    times = [_timed(fn) for _ in range(repeat)]
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def _write_chain_recipe(path: Path, n: int, *, jobs_wide: bool = False) -> None:
    lines = ["steps:"]
    for i in range(n):
        lines += [f"  - name: s{i}", "    type: shell", '    cmd: "true"']
        if jobs_wide:
            lines.append("    depends_on: []")
    path.write_text("\n".join(lines) + "\n")


def _write_makefile(path: Path, n: int, *, wide: bool = False) -> None:
    rules = [
        f"all: {' '.join(f's{i}' for i in range(n))}",
        ".PHONY: all " + " ".join(f"s{i}" for i in range(n)),
    ]
    for i in range(n):
        dep = "" if wide or i == 0 else f"s{i - 1}"
        rules.append(f"s{i}: {dep}\n\t@true")
    path.write_text("\n".join(rules) + "\n")


def bench_scheduling(work: Path, n: int, repeat: int) -> dict:
    (work / "pyproject.toml").write_text("")
    _write_chain_recipe(work / "chain.yaml", n)
    _write_makefile(work / "Makefile", n)
    _write_chain_recipe(work / "wide.yaml", n, jobs_wide=True)
    _write_makefile(work / "Makefile.wide", n, wide=True)
    runs = work / "runs"

    def orch(recipe: str, *extra: str) -> Callable[[], None]:
        def go() -> None:
            shutil.rmtree(runs, ignore_errors=True)
            _run([*ORCH, recipe, "--no-ui", "--run-dir", str(runs), *extra], work, env=_env())

        return go

    out = {
        "make_j1": _measure(lambda: _run(["make", "-s", "-j1"], work), repeat),
        "orch_chain": _measure(orch("chain.yaml", "--jobs", "1"), repeat),
        "make_j2_wide": _measure(
            lambda: _run(["make", "-s", "-j2", "-f", "Makefile.wide"], work), repeat
        ),
        "orch_wide_j2": _measure(orch("wide.yaml", "--jobs", "2"), repeat),
    }
    out["ratio_chain_vs_make"] = out["orch_chain"]["median"] / out["make_j1"]["median"]
    out["ratio_wide_vs_make"] = out["orch_wide_j2"]["median"] / out["make_j2_wide"]["median"]
    return out


def bench_python_steps(work: Path, n: int, repeat: int) -> dict:
    """No-op python steps per second, in-process (the runner's own overhead, no start-up)."""
    sys.path.insert(0, str(ROOT))
    from core.recipe import Recipe, Step
    from core.runner import Runner

    def chain() -> Recipe:
        steps = tuple(
            Step(
                name=f"p{i}",
                type="python",
                index=i,
                line=i + 1,
                depends_on=(f"p{i - 1}",) if i else (),
                module="bench.noop",
                function="run",
            )
            for i in range(n)
        )
        return Recipe(path=work / "py.yaml", workspace=ROOT, steps=steps)

    def go() -> None:
        run_dir = work / "pyruns"
        shutil.rmtree(run_dir, ignore_errors=True)
        code = Runner(chain(), run_dir=run_dir, jobs=1).run()
        assert code == 0, code

    m = _measure(go, repeat)
    m["steps_per_second"] = n / m["median"]
    return m


def bench_log_capture(work: Path, lines: int, repeat: int) -> dict:
    (work / "pyproject.toml").write_text("")
    (work / "flood.yaml").write_text(
        f"steps:\n  - name: flood\n    type: shell\n    cmd: seq\n    args: ['{lines}']\n"
    )
    runs = work / "floodruns"

    def orch() -> None:
        shutil.rmtree(runs, ignore_errors=True)
        _run([*ORCH, "flood.yaml", "--no-ui", "--run-dir", str(runs)], work, env=_env())

    def redirect() -> None:
        with open(work / "seq.out", "wb") as f:
            subprocess.run(["seq", str(lines)], stdout=f, check=True)

    out = {"redirect": _measure(redirect, repeat), "orch": _measure(orch, repeat)}
    got = (runs / "logs" / "flood.log").read_bytes()
    out["lines_lost"] = lines - got.count(b"\n")
    out["byte_identical"] = got == (work / "seq.out").read_bytes()
    out["ratio_vs_redirect"] = out["orch"]["median"] / out["redirect"]["median"]
    return out


def bench_startup(repeat: int) -> dict:
    demo = ROOT / "recipes" / "example_parallel.yaml"
    out = {
        "python_pass": _measure(lambda: _run([sys.executable, "-c", "pass"], ROOT), repeat),
        "version": _measure(lambda: _run([*ORCH, "--version"], ROOT), repeat),
        "validate": _measure(lambda: _run([*ORCH, "validate", str(demo)], ROOT), repeat),
    }
    out["ratio_version_vs_python"] = out["version"]["median"] / out["python_pass"]["median"]
    return out


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else 5
    sizes = (
        {"chain": 10, "py": 50, "lines": 10_000}
        if args.quick
        else {"chain": 200, "py": 1000, "lines": 2_000_000}
    )
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        work = Path(tmp)
        results["scheduling"] = bench_scheduling(work, sizes["chain"], repeat)
        results["python_steps"] = bench_python_steps(work, sizes["py"], repeat)
        results["log_capture"] = bench_log_capture(work, sizes["lines"], repeat)
        results["startup"] = bench_startup(repeat)
    _print_table(results)
    if not args.quick:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _print_table(results: dict) -> None:
    print(f"{'benchmark':<34}{'median':>10}{'min':>10}{'max':>10}")
    for group, data in results.items():
        for name, value in data.items():
            if isinstance(value, dict):
                print(
                    f"{group + '.' + name:<34}{value['median']:>10.3f}{value['min']:>10.3f}{value['max']:>10.3f}"
                )
        for name, value in data.items():
            if not isinstance(value, dict):
                shown = f"{value:.2f}" if isinstance(value, float) else str(value)
                print(f"  {group + '.' + name:<32}{shown:>10}")


if __name__ == "__main__":
    sys.exit(main())
