"""The runner end to end: real shell processes, real Python step modules, real run directories.

Most tests run the recipe in-process (``Runner`` from ``load_recipe``) and read what a user
would read afterwards: state.json, ctx.json, events.jsonl and logs/. Where the command line is
the thing a user sees (exit codes, the summary, --jobs/--only/--skip/--resume-from), the test
runs ``orch-tui`` as a subprocess.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import socket
import stat
import time

import pytest

from tests.conftest import (
    PY,
    alive,
    assert_gone,
    event_index,
    free_port,
    make_runner,
    only_run_dir,
    read_events,
    read_json,
    read_pid,
    read_state,
    run_cli,
    run_recipe,
    wait_for,
    write_module,
    write_recipe,
)


def _py(text: str) -> str:
    """Recipe text with ``@PY@`` replaced by this interpreter (JSON-quoted for YAML)."""
    return text.replace("@PY@", json.dumps(PY))


# ============================================================================ scheduling
RENDEZVOUS = """
steps:
  - name: left
    type: shell
    depends_on: []
    run: |
      touch left.started
      for i in $(seq 100); do [ -f right.started ] && exit 0; sleep 0.05; done
      echo "right never started while left ran"; exit 1
  - name: right
    type: shell
    depends_on: []
    run: |
      touch right.started
      for i in $(seq 100); do [ -f left.started ] && exit 0; sleep 0.05; done
      echo "left never started while right ran"; exit 1
"""


def test_parallel_steps_really_overlap_with_jobs_2(tmp_path):
    # Each step only succeeds if it sees the other one's file while it is itself running.
    recipe = write_recipe(tmp_path, RENDEZVOUS)
    result = run_cli(recipe, "--no-ui", "--jobs", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = read_state(only_run_dir(tmp_path))["steps"]
    assert steps["left"]["status"] == steps["right"]["status"] == "succeeded"


def test_jobs_1_serialises_independent_steps(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - name: one
            type: shell
            depends_on: []
            run: date +%s.%N > one.start; sleep 0.3; date +%s.%N > one.end
          - name: two
            type: shell
            depends_on: []
            run: date +%s.%N > two.start; sleep 0.3; date +%s.%N > two.end
        """,
    )
    result = run_cli(recipe, "--no-ui", "--jobs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    def times(name):
        return tuple(float((tmp_path / f"{name}.{e}").read_text()) for e in ("start", "end"))

    (s1, e1), (s2, e2) = times("one"), times("two")
    assert e1 <= s2 or e2 <= s1, f"one ran {s1}..{e1}, two ran {s2}..{e2}: they overlapped"


def test_absent_depends_on_runs_top_to_bottom(tmp_path):
    # 'first' is the slowest; if the steps were independent, the others would finish before it.
    result = run_recipe(
        tmp_path,
        """
        steps:
          - {name: first, type: shell, run: "sleep 0.3; echo first >> order.txt"}
          - {name: second, type: shell, run: "echo second >> order.txt"}
          - {name: third, type: shell, run: "echo third >> order.txt"}
        """,
        jobs=4,
    )
    assert result.code == 0
    assert (tmp_path / "order.txt").read_text().split() == ["first", "second", "third"]
    steps = result.steps
    assert steps["second"]["started"] >= steps["first"]["ended"]
    assert steps["third"]["started"] >= steps["second"]["ended"]


FAILING_BRANCH = """
steps:
  - name: broken
    type: shell
    depends_on: []
    run: echo "compiler exploded"; exit 3
  - name: child
    type: shell
    depends_on: [broken]
    run: touch child.ran
  - name: grandchild
    type: shell
    depends_on: [child]
    run: touch grandchild.ran
  - name: independent
    type: shell
    depends_on: []
    run: sleep 0.3; touch independent.ran
"""


def test_failure_blocks_only_its_dependents(tmp_path):
    recipe = write_recipe(tmp_path, FAILING_BRANCH)
    result = run_cli(recipe, "--no-ui", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr

    steps = read_state(only_run_dir(tmp_path))["steps"]
    assert steps["broken"]["status"] == "failed"
    assert steps["broken"]["exit_code"] == 3
    assert steps["broken"]["blocked_by"] == []
    for name in ("child", "grandchild"):
        assert steps[name]["status"] == "blocked"
        assert steps[name]["blocked_by"] == ["broken"], "blocked_by names the root failure"
        assert steps[name]["attempts"] == 0
    assert steps["independent"]["status"] == "succeeded"
    assert (tmp_path / "independent.ran").exists()
    assert not (tmp_path / "child.ran").exists()
    assert not (tmp_path / "grandchild.ran").exists()

    # The summary names the root failure (with its output) before what it blocked.
    out = result.stdout
    root_at = out.find("root failure: broken")
    blocked_at = out.find("blocked by broken: child, grandchild")
    assert root_at != -1 and blocked_at != -1, out
    assert root_at < blocked_at, out
    assert "compiler exploded" in out[root_at:blocked_at]
    assert "run failed" in out.splitlines()[-1]


def test_retries_until_the_third_attempt_succeeds(tmp_path):
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: flaky
            type: shell
            retries: 3
            retry_delay: 0.3
            run: |
              n=$(cat count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > count
              echo "attempt $n"
              [ "$n" -ge 3 ]
          - name: after
            type: shell
            run: touch after.ran
        """,
    )
    assert result.code == 0
    assert (tmp_path / "count").read_text().strip() == "3"
    flaky = result.steps["flaky"]
    assert flaky["status"] == "succeeded"
    assert flaky["attempts"] == 3
    assert (tmp_path / "after.ran").exists()

    starts = [
        e["ts"] for e in result.events if e["type"] == "step_started" and e["step"] == "flaky"
    ]
    assert len(starts) == 3
    for earlier, later in zip(starts, starts[1:], strict=False):
        assert later - earlier >= 0.25, f"retry_delay 0.3 not honoured: {starts}"
    finished = [e for e in result.events if e["type"] == "step_finished" and e["step"] == "flaky"]
    assert [e["will_retry"] for e in finished] == [True, True, False]
    log = result.log("flaky").decode()
    assert "attempt 1" in log and "attempt 3" in log, "every attempt's output is kept"


def test_retry_is_announced_before_the_next_attempts_output(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - {name: always_fails, type: shell, retries: 2, retry_delay: 0, run: "echo failing; exit 1"}
        """,
    )
    result = run_cli(recipe, "--no-ui", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    for attempt in (2, 3):
        assert first(f"retrying (attempt {attempt}") < first(f"--- attempt {attempt} ---"), (
            result.stdout
        )
    # events.jsonl: each attempt's output, then its end, then the retry, then the next start
    events = [
        e
        for e in read_events(only_run_dir(tmp_path))
        if e.get("step") == "always_fails" and e["type"] != "resources"
    ]
    kinds = []
    for e in events:
        if e["type"] == "step_output":
            kinds.append(
                "output" + ("+header" if any("--- attempt" in x for x in e["lines"]) else "")
            )
        else:
            kinds.append(e["type"] + (f":{e.get('status')}" if e["type"] == "step_status" else ""))
    assert kinds == [
        "step_started", "output", "step_finished", "step_status:pending",
        "step_started", "output+header", "step_finished", "step_status:pending",
        "step_started", "output+header", "step_finished",
    ], kinds  # fmt: skip


def test_retries_exhausted_fails_with_all_attempts_counted(tmp_path):
    result = run_recipe(
        tmp_path,
        """
        steps:
          - {name: hopeless, type: shell, retries: 2, run: "echo try >> tries; exit 7"}
        """,
    )
    assert result.code == 1
    assert result.steps["hopeless"]["status"] == "failed"
    assert result.steps["hopeless"]["attempts"] == 3
    assert (tmp_path / "tries").read_text().split() == ["try"] * 3


def test_timeout_kills_the_whole_tree(tmp_path):
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: slow
            type: shell
            timeout: 1
            grace: 2
            run: |
              sleep 1000 & echo $! > child.pid
              bash -c 'sleep 1000 & echo $! > grandchild.pid; wait' &
              echo $! > middle.pid
              wait
        """,
    )
    pids = [read_pid(tmp_path / f"{n}.pid") for n in ("child", "middle", "grandchild")]
    assert result.code == 1
    slow = result.steps["slow"]
    assert slow["status"] == "timed_out"
    assert "timed out" in slow["reason"]
    assert slow["duration"] < 4
    assert_gone(pids, timeout=3)


def test_step_ignoring_sigterm_is_killed_after_grace(tmp_path):
    started = time.monotonic()
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: stubborn
            type: shell
            timeout: 0.5
            grace: 1
            run: |
              trap '' TERM
              sleep 1000 & echo $! > child.pid
              wait; wait; wait
        """,
    )
    elapsed = time.monotonic() - started
    child = read_pid(tmp_path / "child.pid")
    stubborn = result.steps["stubborn"]
    assert stubborn["status"] == "timed_out"
    assert stubborn["signal"] == signal.SIGKILL, "SIGTERM was ignored, so it took a SIGKILL"
    assert stubborn["duration"] >= 1.3, "the grace period was not waited out"
    assert elapsed < 8
    assert_gone([child], timeout=3)


def test_continue_on_error_records_failure_and_lets_dependents_run(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        steps:
          - {name: lint, type: shell, continue_on_error: true, run: "echo warnings; exit 4"}
          - {name: build, type: shell, run: "touch build.ran"}
        """,
    )
    result = run_cli(recipe, "--no-ui", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = read_state(only_run_dir(tmp_path))["steps"]
    assert steps["lint"]["status"] == "failed"
    assert steps["lint"]["allowed"] is True
    assert steps["lint"]["exit_code"] == 4
    assert steps["build"]["status"] == "succeeded"
    assert (tmp_path / "build.ran").exists()
    assert "allowed failure: lint" in result.stdout


# ============================================================================ --only / --skip
CHAIN = """
steps:
  - {name: fetch, type: shell, run: "touch fetch.ran"}
  - {name: build, type: shell, run: "touch build.ran"}
  - {name: test, type: shell, run: "touch test.ran"}
"""


def _ran(tmp_path):
    return sorted(p.name.removesuffix(".ran") for p in tmp_path.glob("*.ran"))


def test_only_runs_just_those_steps_not_their_dependencies(tmp_path):
    recipe = write_recipe(tmp_path, CHAIN)
    result = run_cli(recipe, "--no-ui", "--only", "build", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _ran(tmp_path) == ["build"]
    steps = read_state(only_run_dir(tmp_path))["steps"]
    assert {n: s["status"] for n, s in steps.items()} == {
        "fetch": "skipped",
        "build": "succeeded",
        "test": "skipped",
    }


def test_skip_lets_dependents_proceed(tmp_path):
    recipe = write_recipe(tmp_path, CHAIN)
    result = run_cli(recipe, "--no-ui", "--skip", "build", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _ran(tmp_path) == ["fetch", "test"]
    steps = read_state(only_run_dir(tmp_path))["steps"]
    assert steps["build"]["status"] == "skipped"
    assert steps["build"]["attempts"] == 0


@pytest.mark.parametrize("option", ["--only", "--skip", "--resume-from"])
def test_unknown_step_name_is_a_usage_error_with_suggestion(tmp_path, option):
    recipe = write_recipe(tmp_path, CHAIN)
    result = run_cli(recipe, "--no-ui", option, "biuld", cwd=tmp_path)
    assert result.returncode == 2
    assert "biuld" in result.stderr
    assert "did you mean 'build'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".orch").exists(), "nothing may run on a usage error"
    assert _ran(tmp_path) == []


# ============================================================================ --resume-from
def test_resume_from_restores_ctx_of_the_latest_run(tmp_path):
    module = write_module(
        tmp_path,
        """
        import os

        def produce(ctx):
            ctx["greeting"] = os.environ["GREETING"]
            ctx["numbers"] = [1, 2, 3]
        """,
    )
    recipe = write_recipe(
        tmp_path,
        f"""
        steps:
          - name: produce
            type: python
            module: {module}
            function: produce
          - name: count
            type: shell
            run: |
              echo '{{"count": 3}}' > "$ORCH_CTX_OUT"; touch count.ran
          - name: consume
            type: shell
            expose: [greeting, numbers, count]
            run: echo "$greeting $numbers $count" >> consume.out
        """,
    )
    for greeting in ("first", "second"):  # the latest run's ctx must win
        result = run_cli(recipe, "--no-ui", cwd=tmp_path, env={"GREETING": greeting})
        assert result.returncode == 0, result.stdout + result.stderr
    (tmp_path / "count.ran").unlink()

    result = run_cli(
        recipe, "--no-ui", "--resume-from", "consume", cwd=tmp_path, env={"GREETING": "third"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = (tmp_path / "consume.out").read_text().splitlines()
    assert lines == ["first [1,2,3] 3", "second [1,2,3] 3", "second [1,2,3] 3"]
    assert not (tmp_path / "count.ran").exists(), "steps before --resume-from do not run"

    runs = sorted((tmp_path / ".orch" / "runs").iterdir(), key=lambda d: read_state(d)["started"])
    assert len(runs) == 3
    steps = read_state(runs[-1])["steps"]
    assert steps["produce"]["status"] == "skipped"
    assert steps["count"]["status"] == "skipped"
    assert steps["consume"]["status"] == "succeeded"
    assert read_json(runs[-1] / "ctx.json")["greeting"] == "second"


def _resume_recipe(tmp_path):
    module = write_module(
        tmp_path, "import os\n\ndef produce(ctx):\n    ctx['greeting'] = os.environ['GREETING']\n"
    )
    return write_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: produce, type: python, module: {module}, function: produce}}
          - {{name: count, type: shell, run: 'echo count=3 > "$ORCH_CTX_OUT"'}}
          - {{name: consume, type: shell, expose: [greeting, count],
              run: 'echo "$greeting $count" >> consume.out'}}
        """,
    )


def _runs_by_start(tmp_path):
    runs = (tmp_path / ".orch" / "runs").iterdir()
    return sorted(runs, key=lambda d: read_state(d)["started"])


def test_resume_skips_a_newer_run_that_did_not_produce_the_ctx(tmp_path):
    recipe = _resume_recipe(tmp_path)
    full = run_cli(recipe, "--no-ui", cwd=tmp_path, env={"GREETING": "full"})
    assert full.returncode == 0, full.stdout + full.stderr
    partial = run_cli(recipe, "--no-ui", "--only", "count", cwd=tmp_path, env={"GREETING": "x"})
    assert partial.returncode == 0, partial.stdout + partial.stderr
    first, newer = _runs_by_start(tmp_path)
    assert "greeting" not in read_json(newer / "ctx.json")

    result = run_cli(recipe, "--no-ui", "--resume-from", "consume", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "consume.out").read_text().splitlines() == ["full 3", "full 3"]
    first_id = read_state(first)["run_id"]
    assert f"ctx restored from run {first_id} ({first})" in result.stdout
    resumed = _runs_by_start(tmp_path)[-1]
    assert read_state(resumed)["resumed_from"] == {
        "run_id": first_id,
        "run_dir": str(first),
        "step": "consume",
    }

    # That resumed run restored produce and count from a run where they succeeded, and says
    # so in its state.json: it is the newest run to resume from now.
    again = run_cli(recipe, "--no-ui", "--resume-from", "consume", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (
        read_state(_runs_by_start(tmp_path)[-1])["resumed_from"]["run_id"]
        == (read_state(resumed)["run_id"])
    )


def test_resume_with_no_run_that_got_that_far_is_a_usage_error(tmp_path):
    recipe = _resume_recipe(tmp_path)
    skipped = run_cli(recipe, "--no-ui", "--skip", "count", cwd=tmp_path, env={"GREETING": "a"})
    assert skipped.returncode == 1  # consume: expose of the missing count
    (only,) = _runs_by_start(tmp_path)

    result = run_cli(recipe, "--no-ui", "--resume-from", "consume", cwd=tmp_path)
    assert result.returncode == 2
    assert read_state(only)["run_id"] in result.stderr
    assert "'count'" in result.stderr and "skipped" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(_runs_by_start(tmp_path)) == 1, "nothing ran"


# ============================================================================ ctx values
def test_non_json_ctx_value_fails_the_step_naming_the_key(tmp_path):
    module = write_module(
        tmp_path,
        """
        def store(ctx):
            ctx["fine"] = 1
            ctx["widget"] = object()
        """,
    )
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: store, type: python, module: {module}, function: store}}
          - {{name: after, type: shell, run: "touch after.ran"}}
        """,
    )
    assert result.code == 1
    store = result.steps["store"]
    assert store["status"] == "failed"
    assert "widget" in store["reason"]
    assert "JSON" in store["reason"]
    log = result.log("store").decode()
    assert "widget" in log
    assert result.steps["after"]["status"] == "blocked"
    assert result.ctx == {"fine": 1}, "ctx.json still holds what was valid"
    # the traceback ends at the step's line that wrote the value: the ctx's own frames (five
    # of core/context.py's, once) say nothing the error's line does not
    lines = log.splitlines()
    assert lines[-3:-1] == ['    ctx["widget"] = object()', "    ~~~^^^^^^^^^^"], log
    assert lines[-1].startswith("core.context.ContextValueError: ctx['widget']"), log
    assert "core/context.py" not in log, log


def test_a_missing_ctx_key_fails_the_step_with_a_traceback_ending_at_its_line(tmp_path):
    """``ctx["totl"]`` (a typo): the traceback ends at the step's line, as Python's own dict
    says it; it ended in orch-tui's core/context.py, which a data person then read (r17-user)."""
    module = write_module(
        tmp_path,
        "def report(ctx):\n    return ctx['totl'] / 2\n\n"
        "def chained(ctx):\n    try:\n        ctx['totl']\n    except KeyError as e:\n"
        "        raise ValueError('no total') from e\n",
    )
    result = run_recipe(
        tmp_path,
        f"steps:\n  - {{name: report, type: python, module: {module}, function: report}}\n",
    )
    assert result.code == 1
    lines = result.log("report").decode().splitlines()
    assert lines[-1] == "KeyError: 'totl'", lines
    assert "return ctx['totl'] / 2" in lines[-3] or "return ctx['totl'] / 2" in lines[-2], lines
    assert not any("core/context.py" in line for line in lines), lines
    # raised from it: the cause's traceback, printed above, ends at the step's line too
    result = run_recipe(
        tmp_path,
        f"steps:\n  - {{name: chained, type: python, module: {module}, function: chained}}\n",
        run_dir=tmp_path / "run2",
    )
    log = result.log("chained").decode()
    assert log.rstrip().endswith("ValueError: no total") and "KeyError: 'totl'" in log, log
    assert "core/context.py" not in log, log


def test_non_json_return_value_with_output_fails_naming_the_key(tmp_path):
    module = write_module(tmp_path, "def make(ctx):\n    return {1, 2}\n")
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: make, type: python, module: {module}, function: make, output: made}}
        """,
    )
    assert result.code == 1
    assert "made" in result.steps["make"]["reason"]
    assert "made" not in result.ctx


# ============================================================================ python steps
def test_python_step_output_goes_to_its_log_not_the_terminal(tmp_path, capfd):
    module = write_module(
        tmp_path,
        """
        import sys

        def chatty(ctx):
            print("printed-to-stdout-7731")
            print("printed-to-stderr-7731", file=sys.stderr)
        """,
    )
    result = run_recipe(
        tmp_path,
        f"steps:\n  - {{name: chatty, type: python, module: {module}, function: chatty}}\n",
    )
    assert result.code == 0
    log = result.log("chatty").decode()
    assert "printed-to-stdout-7731" in log
    assert "printed-to-stderr-7731" in log
    out, err = capfd.readouterr()
    assert "7731" not in out + err


def test_threads_a_python_step_starts_print_to_its_log(tmp_path, capfd):
    """A thread pool's workers and other threads a step starts print to that step's log (two
    steps at once, each its own), not to the runner's terminal; one outliving its step prints
    where the runner's own output goes, not into a closed log."""
    module = write_module(
        tmp_path,
        """
        import threading
        from concurrent.futures import ThreadPoolExecutor

        late = threading.Event()
        leftover = []

        def fan_out(ctx, tag):
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda i: print(f"{tag}-pool-{i}"), range(3)))
            thread = threading.Thread(target=lambda: print(f"{tag}-thread"))
            thread.start()
            thread.join()

        def leave(ctx):
            thread = threading.Thread(target=lambda: late.wait(10) and print("late-7731"))
            thread.start()
            leftover.append(thread)

        def finish(ctx):
            late.set()
            leftover[0].join(10)
        """,
    )
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: a, type: python, module: {module}, function: fan_out, params: {{tag: a}},
              depends_on: []}}
          - {{name: b, type: python, module: {module}, function: fan_out, params: {{tag: b}},
              depends_on: []}}
          - {{name: leave, type: python, module: {module}, function: leave, depends_on: []}}
          - {{name: finish, type: python, module: {module}, function: finish,
              depends_on: [a, b, leave]}}
        """,
    )
    assert result.code == 0
    for tag in ("a", "b"):
        # print writes the text, then the newline: threads' lines may interleave
        said = sorted(re.findall(r"[ab]-(?:pool-\d|thread)", result.log(tag).decode()))
        assert said == [f"{tag}-pool-0", f"{tag}-pool-1", f"{tag}-pool-2", f"{tag}-thread"]
    out, err = capfd.readouterr()
    assert "-pool-" not in out + err and "-thread" not in out + err
    assert "late-7731" in out


def test_python_step_gets_stop_and_log_when_named_and_output_stores_result(tmp_path):
    module = write_module(
        tmp_path,
        """
        import threading

        def full(ctx, stop, log, factor=1):
            log.info("logger line %d", 5)
            ctx["stop_type"] = type(stop).__name__
            ctx["stop_set"] = stop.is_set()
            return {"answer": 21 * factor}

        def plain(ctx, who):
            return f"hello {who}"

        def positional(ctx, *args, **kwargs):
            return sorted(kwargs)
        """,
    )
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - name: full
            type: python
            module: {module}
            function: full
            params: {{factor: 2}}
            output: result
          - {{name: plain, type: python, module: {module}, function: plain,
              params: {{who: world}}, output: greeting}}
          - {{name: positional, type: python, module: {module}, function: positional,
              params: {{x: 1}}, output: kwargs}}
        """,
    )
    assert result.code == 0, result.steps
    ctx = result.ctx
    assert ctx["result"] == {"answer": 42}
    assert ctx["stop_type"] == "Event"
    assert ctx["stop_set"] is False
    assert ctx["greeting"] == "hello world"
    assert ctx["kwargs"] == ["x"], "stop/log are passed only when named"
    assert "logger line 5" in result.log("full").decode()


def test_timed_out_python_step_has_no_exit_code(tmp_path):
    module = write_module(tmp_path, "def run(ctx, stop):\n    stop.wait(30)\n")
    result = run_recipe(
        tmp_path, f"steps:\n  - {{name: slow, type: python, module: {module}, timeout: 0.5}}\n"
    )
    assert result.code == 1
    slow = result.steps["slow"]
    assert slow["status"] == "timed_out"
    assert slow["exit_code"] is None, "a thread has no exit code; 0 would read as success"
    assert slow["reason"] == "timed out after 0.5s"
    finished = result.events[event_index(result.events, "step_finished", "slow")]
    assert finished["exit_code"] is None


def test_a_python_step_ignoring_stop_is_interrupted_after_its_grace(tmp_path):
    """A loop that never looks at ``stop`` (a runaway computation) cannot be killed as a
    process is: once its grace is over, StepKilled is raised in its thread, so it ends instead
    of keeping a core busy until the runner exits."""
    module = write_module(
        tmp_path,
        """
        import threading

        ended = threading.Event()

        def spin(ctx):
            n = 0
            try:
                while True:
                    n += 1
            finally:
                ended.set()

        def after(ctx):
            pass
        """,
    )
    result = run_recipe(
        tmp_path,
        f"""steps:
  - {{name: spin, type: python, module: {module}, function: spin, timeout: 0.3, grace: 0.2,
      continue_on_error: true}}
  - {{name: after, type: python, module: {module}, function: after}}
""",
    )
    assert result.steps["spin"]["status"] == "timed_out"
    assert result.steps["after"]["status"] == "succeeded"
    assert importlib.import_module(module).ended.wait(10), "the spinning step never ended"


def test_a_runaway_python_step_is_killed_with_the_collector_off_while_its_frames_are_read(
    tmp_path, monkeypatch
):
    """Killing a python step reads the threads' frames (``sys._current_frames``). CPython 3.11
    may collect inside that call while it holds the interpreter's lock on its threads, and a
    finalizer waiting for the lock hangs the process (python/cpython#106883): the fresh-clone
    CI hung for good in the test above, the scheduler in that call. The hang cannot be forced
    at will; what is checked is that the frames are read with the collector off, and that the
    collector is on again after."""
    import gc
    import sys

    seen: list[bool] = []
    real = sys._current_frames

    def frames():
        seen.append(gc.isenabled())
        return real()

    monkeypatch.setattr(sys, "_current_frames", frames)
    module = write_module(tmp_path, "def spin(ctx):\n    while True:\n        pass\n")
    result = run_recipe(
        tmp_path,
        f"steps:\n  - {{name: spin, type: python, module: {module}, function: spin, "
        "timeout: 0.3, grace: 0.2}\n",
    )
    assert result.steps["spin"]["status"] == "timed_out"
    assert seen and not any(seen), seen
    assert gc.isenabled()


def test_tuples_a_step_stores_are_lists_to_the_next_step_as_on_a_cluster(tmp_path):
    """``return mean, std`` or ``ctx.append("rows", (t, v))``: the next step gets lists, as it
    does on a Dask worker or in a resumed run (JSON has no tuple), so the same comparison holds
    wherever the recipe runs. Locally it got the tuple back: ``== (100, 3)`` was true only
    here."""
    module = write_module(
        tmp_path,
        """
        def make(ctx):
            ctx.append("rows", (1, 2.5))
            ctx["nested"] = {"pairs": [(1, 2)]}
            return (100, 3)

        def look(ctx):
            got = [ctx["shape"], ctx["rows"][0], ctx["nested"]["pairs"][0]]
            return [[type(value).__name__, value == [100, 3] or value] for value in got]
        """,
    )
    result = run_recipe(
        tmp_path,
        f"""steps:
  - {{name: make, type: python, module: {module}, function: make, output: shape}}
  - {{name: look, type: python, module: {module}, function: look, output: seen}}
""",
    )
    assert result.code == 0
    assert result.runner.ctx["seen"] == [["list", True], ["list", [1, 2.5]], ["list", [1, 2]]]


def test_python_step_exception_fails_with_reason_and_traceback(tmp_path):
    module = write_module(
        tmp_path,
        """
        def explode(ctx):
            helper_that_fails()

        def helper_that_fails():
            raise ValueError("bad input 42")
        """,
    )
    result = run_recipe(
        tmp_path,
        f"steps:\n  - {{name: explode, type: python, module: {module}, function: explode}}\n",
    )
    assert result.code == 1
    step = result.steps["explode"]
    assert step["status"] == "failed"
    assert step["reason"] == "ValueError: bad input 42"
    log = result.log("explode").decode()
    assert "Traceback (most recent call last)" in log
    assert "helper_that_fails" in log
    assert "ValueError: bad input 42" in log
    # the first frame is the step's own function, not orch-tui's call of it
    first = log.splitlines()[1]
    assert first.startswith(f'  File "{tmp_path}') and first.endswith("in explode"), log
    assert "core/executors" not in log, log


def test_python_step_sys_exit_with_a_message_fails_with_that_line_and_no_traceback(tmp_path):
    """``sys.exit("message")``: a failure the step expected and worded (a port in use), shown
    as written, as Python shows it for a script; a number stays an exit status."""
    module = write_module(
        tmp_path,
        """
        import sys

        def worded(ctx):
            sys.exit("port 8050 is taken\\nsecond line")

        def numbered(ctx):
            sys.exit(3)
        """,
    )
    result = run_recipe(
        tmp_path,
        f"""steps:
  - {{name: worded, type: python, module: {module}, function: worded, continue_on_error: true}}
  - {{name: numbered, type: python, module: {module}, function: numbered}}
""",
    )
    assert result.code == 1
    assert result.steps["worded"]["reason"] == "port 8050 is taken"
    assert result.log("worded").decode() == "port 8050 is taken\nsecond line\n"
    assert result.steps["numbered"]["reason"] == "exited with SystemExit(3)"
    assert result.steps["numbered"]["exit_code"] == 3


def test_a_return_value_the_ctx_cannot_hold_fails_with_one_line_naming_output(tmp_path):
    """A function returning a set (or a numpy array) to ``output:`` has finished: the failure
    is the storing, said in one line naming the key, not a traceback of orch-tui's frames."""
    module = write_module(tmp_path, "def run(ctx):\n    return {1, 2}\n")
    result = run_recipe(
        tmp_path, f"steps:\n  - {{name: agg, type: python, module: {module}, output: stats}}\n"
    )
    assert result.code == 1
    reason = (
        "output: ctx['stats']: the value has type set, which is not JSON-serialisable "
        "(use str, int, float, bool, None, list or dict)"
    )
    assert result.steps["agg"]["reason"] == reason
    assert result.log("agg").decode() == reason + "\n"


def test_a_huge_exception_message_is_cut_in_the_reason_and_whole_in_the_log(tmp_path):
    """An exception quoting a whole array: its reason (state.json, every event, the summary,
    the app's title) keeps the first 300 characters; the log keeps all of it."""
    module = write_module(
        tmp_path,
        """
        def run(ctx):
            raise ValueError("bad rows: " + repr(list(range(100_000))))
        """,
    )
    result = run_recipe(tmp_path, f"steps:\n  - {{name: boom, type: python, module: {module}}}\n")
    reason = result.steps["boom"]["reason"]
    message = "ValueError: bad rows: " + repr(list(range(100_000)))
    assert reason == message[:299] + "…"
    assert result.log("boom").decode().endswith(message + "\n")


def test_python_step_error_naming_undecodable_bytes_is_recorded(tmp_path):
    """A file name that is not UTF-8 (os.listdir, os.fsdecode) put in an exception's message
    is a lone surrogate there: the run's state.json and the step's step_finished event must
    still be written, the byte shown as a replacement character."""
    module = write_module(
        tmp_path,
        """
        import os

        def explode(ctx):
            name = os.fsdecode(b"missing-\\xff.txt")
            raise ValueError(f"cannot read {name}")

        def after(ctx):
            pass
        """,
    )
    result = run_recipe(
        tmp_path,
        f"""steps:
  - {{name: explode, type: python, module: {module}, function: explode, continue_on_error: true}}
  - {{name: after, type: python, module: {module}, function: after}}
""",
    )
    assert result.code == 0
    reason = result.steps["explode"]["reason"]
    assert reason == "ValueError: cannot read missing-\ufffd.txt"
    finished = result.events[event_index(result.events, "step_finished", "explode")]
    assert finished["reason"] == reason


# ============================================================================ shell steps
def test_shell_environment_expose_and_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("INHERITED_ONLY", "inherited")
    monkeypatch.setenv("A", "inherited")
    result = run_recipe(
        tmp_path,
        _py(
            """
            env: {A: recipe, B: recipe, C: recipe, D: recipe, ORCH_STEP: from-recipe}
            ctx:
              C: exposed
              D: {nested: [1, true, null]}
              text: "two words $HOME"
              number: 5
              ORCH_STEP: from-ctx
            steps:
              - name: show
                type: shell
                env: {B: step, C: step, D: step, ORCH_STEP: from-step}
                expose: [C, D, text, number, ORCH_STEP]
                cmd: @PY@
                args:
                  - -c
                  - "import json, os; json.dump(dict(os.environ), open('env.json', 'w'))"
            """
        ),
    )
    assert result.code == 0, result.steps
    env = read_json(tmp_path / "env.json")
    assert env["INHERITED_ONLY"] == "inherited"
    assert env["A"] == "recipe"
    assert env["B"] == "step"
    assert env["C"] == "exposed"
    assert json.loads(env["D"]) == {"nested": [1, True, None]}
    assert env["text"] == "two words $HOME", "strings are exposed raw"
    assert env["number"] == "5"
    assert env["ORCH_STEP"] == "show", "ORCH_* beats everything"
    assert env["ORCH_RUN_DIR"] == str(result.run_dir)
    assert os.path.isabs(env["ORCH_RUN_DIR"])
    assert env["ORCH_CTX_OUT"]


def test_expose_of_a_key_the_ctx_does_not_hold_fails_the_step_naming_it(tmp_path):
    result = run_recipe(
        tmp_path,
        """
        ctx: {present: yes}
        steps:
          - {name: show, type: shell, expose: [present, foo], run: "touch show.ran"}
          - {name: after, type: shell, run: "touch after.ran"}
        """,
    )
    assert result.code == 1
    show = result.steps["show"]
    assert show["status"] == "failed"
    assert "expose: ctx has no key 'foo'" in show["reason"]
    assert "expose: ctx has no key 'foo'" in result.log("show").decode()
    assert result.steps["after"]["status"] == "blocked"
    assert not (tmp_path / "show.ran").exists(), "the step must not run without its variable"


def test_expose_of_a_value_too_big_for_an_environment_variable_names_the_key(tmp_path):
    """Linux holds at most 128 KiB in one environment variable: a bigger exposed value failed
    the step with "bash: Argument list too long", though the step has no argument list. The
    reason names the key and its size; a value within the limit is exposed whole."""
    rows = list(range(30000))  # 168,891 bytes of JSON
    result = run_recipe(
        tmp_path,
        f"""
        ctx: {{rows: {rows}, near: "{"x" * 130000}"}}
        steps:
          - {{name: show, type: shell, expose: [rows], run: "touch show.ran"}}
          - {{name: fits, type: shell, expose: [near], run: 'test ${{#near}} = 130000', depends_on: []}}
        """,
    )
    show = result.steps["show"]
    assert show["status"] == "failed"
    assert "expose: ctx['rows'] is 168,891 bytes as an environment variable" in show["reason"]
    assert not (tmp_path / "show.ran").exists()
    assert result.steps["fits"]["status"] == "succeeded", result.log("fits")


def test_ctx_out_key_value_lines_and_json_object(tmp_path):
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: lines
            type: shell
            run: |
              printf 'plain=1\\nspaced=hello world\\n# comment\\n\\nequals=a=b\\n' > "$ORCH_CTX_OUT"
          - name: json
            type: shell
            run: |
              echo '{"n": 3, "l": [1, "x"], "flag": false}' > "$ORCH_CTX_OUT"
          - name: use
            type: shell
            expose: [plain, l]
            run: echo "$plain|$l" > use.out
        """,
    )
    assert result.code == 0, result.steps
    ctx = result.ctx
    assert ctx["plain"] == "1", "KEY=VALUE values are strings"
    assert ctx["spaced"] == "hello world"
    assert ctx["equals"] == "a=b"
    assert ctx["n"] == 3 and ctx["l"] == [1, "x"] and ctx["flag"] is False
    assert (tmp_path / "use.out").read_text() == '1|[1,"x"]\n'


def test_ctx_out_is_made_by_the_step_that_writes_it(tmp_path):
    """ORCH_CTX_OUT names a file that does not exist yet (nothing is made per step for the
    few that write one): appending to it creates it and is merged; a step that writes
    nothing leaves none; a retry writes to a new name, not the failed attempt's file."""
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: fresh
            type: shell
            run: 'test ! -e "$ORCH_CTX_OUT" && echo made=yes >> "$ORCH_CTX_OUT"'
          - name: silent
            type: shell
            run: 'true'
          - name: again
            type: shell
            retries: 1
            run: |
              test ! -e "$ORCH_CTX_OUT" || exit 3
              if [ -e first.ran ]; then echo second=yes >> "$ORCH_CTX_OUT"
              else echo first=yes >> "$ORCH_CTX_OUT"; touch first.ran; exit 1; fi
        """,
    )
    assert result.code == 0, result.steps
    assert result.ctx["made"] == "yes"
    assert result.ctx["second"] == "yes" and "first" not in result.ctx
    assert result.steps["again"]["attempts"] == 2
    assert not (result.run_dir / "ctx_out" / "silent.log.1.env").exists()


def test_failed_step_does_not_merge_its_ctx_out(tmp_path):
    result = run_recipe(
        tmp_path,
        """
        steps:
          - {name: half, type: shell, continue_on_error: true,
             run: "echo partial=yes > \\"$ORCH_CTX_OUT\\"; exit 1"}
        """,
    )
    assert result.steps["half"]["status"] == "failed"
    assert "partial" not in result.ctx


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("not json", "line 1: not KEY=VALUE or a JSON object"),
        ("a=1\\n=2", "line 2: not KEY=VALUE or a JSON object"),
        ("{broken", "invalid JSON at line 1"),
        ("[1, 2]", "not KEY=VALUE or a JSON object"),
        ('{\\"n\\": NaN}', "ctx['n']"),
    ],
    ids=["text", "empty-key", "bad-json", "json-list", "nan"],
)
def test_bad_ctx_out_fails_the_step_naming_it_not_an_internal_file(tmp_path, written, problem):
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: badjson, type: shell, run: "printf '{written}' > \\"$ORCH_CTX_OUT\\""}}
        """,
    )
    assert result.code == 1
    step = result.steps["badjson"]
    assert step["status"] == "failed"
    assert step["reason"].startswith("step 'badjson': ORCH_CTX_OUT: "), step["reason"]
    assert problem in step["reason"]
    assert "ctx_out" not in step["reason"].replace("ORCH_CTX_OUT", ""), "no internal file name"


def test_cmd_and_args_never_go_through_a_shell(tmp_path):
    nasty = ["$(touch pwned)", "; touch pwned2", "*", "$HOME", "`touch pwned3`", "a b", "'\"", ""]
    script = "import json, sys; json.dump(sys.argv[1:], open('argv.json', 'w'))"
    args = json.dumps(["-c", script, *nasty])  # JSON is YAML: the args exactly as listed
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - name: argv
            type: shell
            cmd: {json.dumps(PY)}
            args: {args}
        """,
    )
    assert result.code == 0, result.steps
    assert read_json(tmp_path / "argv.json") == nasty
    assert not list(tmp_path.glob("pwned*"))


def test_binary_output_and_huge_line_logged_byte_for_byte(tmp_path):
    data = (
        bytes(range(256)) * 4
        + b"\n\xff\xfe invalid utf-8 \xc3\x28 \x80\n"
        + b"\r\x1b[31mred\x1b[0m\n"
        + b"y" * (1024 * 1024)  # 1 MB, no newline at the end
    )
    (tmp_path / "data.bin").write_bytes(data)
    result = run_recipe(
        tmp_path,
        """
        steps:
          - {name: dump, type: shell, cmd: cat, args: [data.bin]}
        """,
    )
    assert result.code == 0
    assert result.log("dump") == data


def test_step_ends_when_its_process_exits_even_if_a_child_holds_stdout(tmp_path):
    started = time.monotonic()
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: leaves_child
            type: shell
            run: |
              sleep 30 & echo $! > child.pid
              echo "main done"
          - {name: next, type: shell, run: "echo next ran"}
        """,
    )
    elapsed = time.monotonic() - started
    child = read_pid(tmp_path / "child.pid")
    assert result.code == 0
    assert result.steps["leaves_child"]["status"] == "succeeded"
    assert result.steps["leaves_child"]["duration"] < 3
    assert result.steps["next"]["status"] == "succeeded"
    assert elapsed < 10, f"the run waited for the child holding stdout ({elapsed:.1f}s)"
    assert b"main done" in result.log("leaves_child")
    assert not alive(child), "what a step left running is stopped at the end of the run"


def test_leftover_ignoring_sigterm_is_killed_and_the_run_still_ends(tmp_path):
    # Stopping leftovers takes the whole 2 s SIGTERM grace here, while the state is being saved:
    # this once deadlocked the end of the run (the store and the runner took their locks in
    # opposite orders), so the run must finish, and the leftover be SIGKILLed.
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: litter
            type: shell
            run: |
              ( trap '' TERM; exec sleep 1000 ) & echo $! > stubborn.pid
              echo done
        """,
        timeout=10,
    )
    assert result.code == 0
    assert result.state["status"] == "succeeded"
    assert not alive(read_pid(tmp_path / "stubborn.pid"))
    messages = [e["text"] for e in result.events if e["type"] == "message"]
    assert any("left running" in m for m in messages), messages


def test_missing_program_fails_the_step_cleanly(tmp_path):
    result = run_recipe(
        tmp_path,
        # after another step (which might have built it), so it is not refused up front
        "steps:\n  - {name: first, type: shell, run: 'true'}\n"
        "  - {name: nope, type: shell, cmd: /nonexistent/program-xyz}\n",
    )
    assert result.code == 1
    assert result.steps["nope"]["status"] == "failed"
    assert "cannot start" in result.steps["nope"]["reason"]


# ============================================================================ background steps
def _order(result, first: tuple[str, str], then: tuple[str, str]) -> None:
    events = result.events
    assert event_index(events, first[0], first[1]) < event_index(events, then[0], then[1])


def test_background_ready_by_port(tmp_path):
    port = free_port()
    result = run_recipe(
        tmp_path,
        _py(
            f"""
            steps:
              - name: server
                type: shell
                background: true
                ready: {{port: {port}, timeout: 15}}
                cmd: @PY@
                args: [-m, http.server, "{port}", --bind, 127.0.0.1]
              - name: client
                type: shell
                cmd: @PY@
                args:
                  - -c
                  - |
                    import urllib.request
                    with urllib.request.urlopen("http://127.0.0.1:{port}/") as r:
                        open("client.out", "w").write(str(r.status))
            """
        ),
    )
    assert result.code == 0, result.steps
    assert (tmp_path / "client.out").read_text() == "200"
    _order(result, ("step_ready", "server"), ("step_started", "client"))
    server = result.steps["server"]
    assert server["status"] == "stopped"
    pid = next(
        e["pid"] for e in result.events if e["type"] == "step_started" and e["step"] == "server"
    )
    assert not alive(pid)


@pytest.fixture
def stranger():
    """A listener of somebody else's (this test's process, not the step's) on a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_port_already_taken_fails_the_step_naming_the_holder(tmp_path, stranger):
    result = run_recipe(
        tmp_path,
        _py(
            f"""
            steps:
              - name: server
                type: shell
                background: true
                ready: {{port: {stranger}, timeout: 15}}
                cmd: @PY@
                args: [-m, http.server, "{stranger}", --bind, 127.0.0.1]
              - {{name: client, type: shell, run: "touch client.ran"}}
            """
        ),
    )
    assert result.code == 1
    server = result.steps["server"]
    assert server["status"] == "failed"
    assert server["exit_code"] is None, "it was not started"
    assert server["reason"].startswith(f"port {stranger} is already in use by pid {os.getpid()} (")
    assert result.steps["client"]["status"] == "blocked"
    assert not (tmp_path / "client.ran").exists(), "the dependent never met the stranger"


def test_port_holder_as_proc_tells_it(stranger):
    from core.ports import Listener, describe_holder, held_by, listeners, local_addresses

    (found,) = listeners(stranger, local_addresses("localhost"))
    assert held_by([found], [os.getpid()])
    assert not held_by([found], [os.getppid()])
    assert describe_holder(found).startswith(f"pid {os.getpid()} (")
    assert listeners(stranger, local_addresses("127.0.0.2")) == [], "another address"
    assert local_addresses("192.0.2.1") is None, "not an address of this machine: connect only"
    hidden = Listener("127.0.0.1", inode=0, uid=os.getuid() + 1)  # no process shows inode 0
    assert describe_holder(hidden) == "another user's process"


def test_a_stranger_listening_later_does_not_make_the_step_ready(tmp_path, runners):
    port = free_port()
    runner = make_runner(
        tmp_path,
        f"""
        steps:
          - name: server
            type: shell
            background: true
            ready: {{port: {port}, timeout: 1}}
            run: exec sleep 1000
          - {{name: client, type: shell, run: "touch client.ran"}}
        """,
    )
    runners.append(runner)
    runner.start()
    wait_for(lambda: runner.state()["steps"]["server"]["status"] == "running")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert runner.wait(15) == 1
    server = runner.state()["steps"]["server"]
    assert server["status"] == "failed"
    assert f"not ready within 1s (port {port})" in server["reason"]
    assert not (tmp_path / "client.ran").exists()


def test_python_step_listening_in_the_runner_is_ready_by_port(tmp_path):
    port = free_port()
    module = write_module(
        tmp_path,
        """
        import socket

        def serve(ctx, port, stop):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
                sock.listen()
                stop.wait(30)
        """,
    )
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - {{name: server, type: python, module: {module}, function: serve,
              params: {{port: {port}}}, background: true, ready: {{port: {port}, timeout: 15}}}}
          - {{name: client, type: shell, run: "touch client.ran"}}
        """,
    )
    assert result.code == 0, result.steps
    _order(result, ("step_ready", "server"), ("step_started", "client"))
    assert result.steps["server"]["status"] == "stopped"


def test_background_ready_by_log_regex(tmp_path):
    result = run_recipe(
        tmp_path,
        r"""
        steps:
          - name: service
            type: shell
            background: true
            ready: {log: 'listening on port \d+'}
            run: |
              echo "starting up"
              sleep 0.3
              echo "listening on port 8123" >&2
              exec sleep 1000
          - {name: user, type: shell, run: "touch user.ran"}
        """,
    )
    assert result.code == 0, result.steps
    assert (tmp_path / "user.ran").exists()
    _order(result, ("step_ready", "service"), ("step_started", "user"))
    events = result.events
    ready = events[event_index(events, "step_ready", "service")]
    started = events[event_index(events, "step_started", "service")]
    assert ready["ts"] - started["ts"] >= 0.25, "ready before the line was printed"
    assert result.steps["service"]["status"] == "stopped"


def test_background_ready_by_ctx_key_set_by_a_python_step(tmp_path):
    module = write_module(
        tmp_path,
        """
        import time

        def serve(ctx, stop):
            time.sleep(0.2)
            ctx["token"] = "s3cret"
            stop.wait(30)
        """,
    )
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - name: service
            type: python
            module: {module}
            function: serve
            background: true
            ready: {{ctx: token, timeout: 10}}
          - {{name: user, type: shell, expose: [token], run: 'echo "$token" > token.out'}}
        """,
    )
    assert result.code == 0, result.steps
    assert (tmp_path / "token.out").read_text() == "s3cret\n"
    _order(result, ("step_ready", "service"), ("step_started", "user"))
    assert result.steps["service"]["status"] == "stopped"


def test_background_ready_by_delay(tmp_path):
    result = run_recipe(
        tmp_path,
        """
        steps:
          - {name: warm, type: shell, background: true, ready: {delay: 0.5}, run: "exec sleep 1000"}
          - {name: user, type: shell, run: "true"}
        """,
    )
    assert result.code == 0, result.steps
    events = result.events
    _order(result, ("step_ready", "warm"), ("step_started", "user"))
    warm_started = events[event_index(events, "step_started", "warm")]["ts"]
    user_started = events[event_index(events, "step_started", "user")]["ts"]
    assert user_started - warm_started >= 0.45


def test_background_not_ready_in_time_fails_and_blocks_dependents(tmp_path):
    started = time.monotonic()
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: mute
            type: shell
            background: true
            grace: 1
            ready: {log: NEVER-PRINTED, timeout: 0.5}
            run: echo $$ > mute.pid; exec sleep 1000
          - {name: user, type: shell, run: "touch user.ran"}
        """,
    )
    pid = read_pid(tmp_path / "mute.pid")
    assert result.code == 1
    mute = result.steps["mute"]
    assert mute["status"] == "failed"
    assert "not ready within 0.5s" in mute["reason"]
    assert result.steps["user"]["status"] == "blocked"
    assert result.steps["user"]["blocked_by"] == ["mute"]
    assert not (tmp_path / "user.ran").exists()
    assert time.monotonic() - started < 8
    assert not alive(pid)


def test_background_exiting_before_ready_fails_at_once(tmp_path):
    port = free_port()
    started = time.monotonic()
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - name: crashy
            type: shell
            background: true
            ready: {{port: {port}, timeout: 20}}
            run: echo "config error"; exit 0
          - {{name: user, type: shell, run: "touch user.ran"}}
        """,
    )
    assert time.monotonic() - started < 8, "it waited for the readiness timeout"
    assert result.code == 1
    assert result.steps["crashy"]["status"] == "failed"
    assert "before it was ready" in result.steps["crashy"]["reason"]
    assert result.steps["user"]["status"] == "blocked"


def test_background_steps_are_stopped_when_foreground_ends(tmp_path):
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: daemon
            type: shell
            background: true
            run: |
              sleep 1000 & echo $! > daemon-child.pid
              echo $$ > daemon.pid
              wait
          - {name: work, type: shell, run: "sleep 0.2"}
        """,
    )
    pids = [read_pid(tmp_path / "daemon.pid"), read_pid(tmp_path / "daemon-child.pid")]
    assert result.code == 0, result.steps
    daemon = result.steps["daemon"]
    assert daemon["status"] == "stopped"
    assert result.state["status"] == "succeeded"
    assert_gone(pids, timeout=3)


# ============================================================================ run directory
def test_run_directory_files_and_permissions(tmp_path):
    module = write_module(tmp_path, "def put(ctx):\n    ctx['k'] = 'v'\n")
    result = run_recipe(
        tmp_path,
        f"""
        name: layout
        steps:
          - {{name: put, type: python, module: {module}, function: put}}
          - {{name: 'odd name (2)', type: shell, run: "echo hi"}}
          - {{name: fail, type: shell, depends_on: [], continue_on_error: true, run: "exit 1"}}
        """,
    )
    run_dir = result.run_dir
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((run_dir / "logs").stat().st_mode) == 0o700

    state = read_state(run_dir)
    assert state["status"] == "succeeded"
    assert state["exit_code"] == 0
    assert set(state["steps"]) == {"put", "odd name (2)", "fail"}
    for name, info in state["steps"].items():
        if name in ("put", "fail"):  # a step that printed nothing has no log file (lazy)
            assert info["log"] is None
            assert not list((run_dir / "logs").glob(f"{name}*"))
            continue
        assert (run_dir / info["log"]).is_file(), info["log"]
    assert read_json(run_dir / "ctx.json") == {"k": "v"}

    lines = (run_dir / "events.jsonl").read_bytes().splitlines()
    events = [json.loads(line) for line in lines]
    assert all(isinstance(e.get("type"), str) for e in events)
    assert events[0]["type"] == "run_started"
    assert events[-1]["type"] == "run_finished"
    assert events[-1]["exit_code"] == 0
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))


def test_state_names_a_log_only_once_it_exists(tmp_path, runners):
    module = write_module(tmp_path, "def speak(ctx):\n    print('said')\n")
    runner = make_runner(
        tmp_path,
        f"""
        steps:
          - {{name: speak, type: python, module: {module}, function: speak}}
          - {{name: gate, type: shell, run: "echo waiting; while [ ! -f go ]; do sleep 0.05; done"}}
          - {{name: later, type: shell, run: "true"}}
          - {{name: last, type: shell, run: "echo done"}}
        """,
    )
    runners.append(runner)
    runner.start()
    wait_for(lambda: read_state(runner.run_dir)["steps"]["gate"]["log"] is not None)
    steps = read_state(runner.run_dir)["steps"]
    assert steps["later"]["log"] is None, "a pending step has no log yet"
    for name in ("speak", "gate"):
        assert (runner.run_dir / steps[name]["log"]).is_file(), name
    (tmp_path / "go").touch()
    assert runner.wait(10) == 0
    steps = read_state(runner.run_dir)["steps"]
    assert (runner.run_dir / steps["last"]["log"]).read_text() == "done\n"
    assert steps["later"]["log"] is None, "a shell step that printed nothing has no log"
    assert not list((runner.run_dir / "logs").glob("later*"))


# ============================================================================ command API
INTERACTIVE = """
steps:
  - name: check
    type: shell
    run: test -f fixed || { echo "not fixed yet"; exit 1; }
  - name: after
    type: shell
    run: touch after.ran
  - name: side
    type: shell
    depends_on: []
    run: "true"
"""


def _status(runner, name):
    return runner.state()["steps"][name]["status"]


def test_interactive_retry_after_fixing_the_cause(tmp_path, runners):
    runner = make_runner(tmp_path, INTERACTIVE, interactive=True)
    runners.append(runner)
    runner.start()
    wait_for(lambda: _status(runner, "after") == "blocked", message="'after' blocked")
    assert _status(runner, "check") == "failed"
    assert runner.state()["steps"]["after"]["blocked_by"] == ["check"]
    wait_for(lambda: _status(runner, "side") == "succeeded")
    assert runner.allowed_actions("check") == {"skip", "retry"}
    assert runner.allowed_actions("after") == {"skip"}
    assert runner.allowed_actions("side") == {"retry"}
    assert not runner.finished, "interactive: a failure waits for the user"

    (tmp_path / "fixed").touch()
    runner.retry("check")
    wait_for(lambda: _status(runner, "after") == "succeeded", message="'after' ran after retry")
    steps = runner.state()["steps"]
    assert steps["check"]["status"] == "succeeded"
    assert steps["check"]["attempts"] == 2
    assert (tmp_path / "after.ran").exists()

    runner.close()
    assert runner.wait(10) == 0


def test_interactive_skip_of_failed_step_lets_dependent_run(tmp_path, runners):
    runner = make_runner(tmp_path, INTERACTIVE, interactive=True)
    runners.append(runner)
    runner.start()
    wait_for(lambda: _status(runner, "after") == "blocked")
    runner.skip("check")
    wait_for(lambda: _status(runner, "after") == "succeeded")
    assert _status(runner, "check") == "skipped"
    assert runner.allowed_actions("check") == frozenset()
    runner.close()
    assert runner.wait(10) == 0


def test_interactive_stop_step_cancels_quickly(tmp_path, runners):
    runner = make_runner(
        tmp_path,
        """
        steps:
          - {name: long, type: shell, run: "echo $$ > long.pid; exec sleep 100"}
          - {name: after, type: shell, run: "true"}
        """,
        interactive=True,
    )
    runners.append(runner)
    runner.start()
    pid = read_pid(tmp_path / "long.pid")
    wait_for(lambda: _status(runner, "long") == "running")
    assert runner.allowed_actions("long") == {"stop"}
    assert runner.allowed_actions("after") == {"skip"}
    started = time.monotonic()
    runner.stop_step("long")
    wait_for(lambda: _status(runner, "long") == "cancelled", timeout=3)
    assert time.monotonic() - started < 3
    assert not alive(pid)
    wait_for(lambda: _status(runner, "after") == "blocked")
    assert runner.allowed_actions("long") == {"retry", "skip"}
    runner.close()
    assert runner.wait(10) == 1


def test_interactive_skip_of_a_step_the_user_stopped_lets_its_dependent_run(tmp_path, runners):
    """``k`` then ``s``: the user stopped a step and wants what follows it to go on."""
    runner = make_runner(
        tmp_path,
        """
        steps:
          - {name: long, type: shell, run: "exec sleep 100"}
          - {name: after, type: shell, run: "true"}
        """,
        interactive=True,
    )
    runners.append(runner)
    runner.start()
    wait_for(lambda: _status(runner, "long") == "running")
    runner.stop_step("long")
    wait_for(lambda: _status(runner, "after") == "blocked")
    runner.skip("long")
    wait_for(lambda: _status(runner, "after") == "succeeded")
    assert _status(runner, "long") == "skipped"
    runner.close()
    assert runner.wait(10) == 0


def test_interactive_close_stops_background_steps(tmp_path, runners):
    runner = make_runner(
        tmp_path,
        """
        steps:
          - {name: bg, type: shell, background: true, run: "echo $$ > bg.pid; exec sleep 1000"}
          - {name: fg, type: shell, run: "true"}
        """,
        interactive=True,
    )
    runners.append(runner)
    runner.start()
    pid = read_pid(tmp_path / "bg.pid")
    wait_for(lambda: _status(runner, "fg") == "succeeded")
    assert _status(runner, "bg") == "ready"
    assert runner.allowed_actions("bg") == {"stop", "restart"}
    assert runner.wait(0.3) is None, "interactive runs wait for close()"
    runner.close()
    assert runner.wait(10) == 0
    assert read_state(runner.run_dir)["steps"]["bg"]["status"] == "stopped"
    assert not alive(pid)


def test_interactive_run_ends_once_every_step_has_and_a_retry_reopens_it(tmp_path, runners):
    from core.resources import FixedSampler

    runner = make_runner(
        tmp_path,
        """
        steps:
          - {name: check, type: shell, run: "test -f fixed"}
          - {name: after, type: shell, run: "while [ ! -f go ]; do sleep 0.05; done"}
        """,
        interactive=True,
        sampler=FixedSampler(),
        resource_interval=0.05,
    )
    runners.append(runner)
    seen: list[dict] = []
    runner.subscribe(lambda event: seen.append(event.to_dict()))
    runner.start()

    def kinds() -> list[str]:
        return [e["type"] for e in seen if e["type"] in ("run_finished", "run_reopened")]

    def state() -> dict:
        return read_state(runner.run_dir)

    wait_for(lambda: state()["status"] == "failed", message="the run over in state.json")
    assert state()["exit_code"] == 1 and state()["ended"] is not None
    assert state()["steps"]["after"]["status"] == "blocked"
    wait_for(lambda: kinds() == ["run_finished"])
    wait_for(lambda: "run_finished" in [e["type"] for e in read_events(runner.run_dir)])
    assert not runner.finished, "the app is still open: the runner still takes commands"
    time.sleep(0.5)  # ten sampling intervals: an absence can only be seen by waiting
    after_end = [e["type"] for e in seen[[e["type"] for e in seen].index("run_finished") :]]
    assert "resources" not in after_end, "nothing runs: nothing to sample"

    (tmp_path / "fixed").touch()
    runner.retry("check")
    wait_for(lambda: _status(runner, "after") == "running", message="after running")
    wait_for(lambda: state()["status"] == "running" and state()["ended"] is None)
    assert state()["exit_code"] is None
    assert kinds() == ["run_finished", "run_reopened"]
    (tmp_path / "go").touch()
    wait_for(lambda: state()["status"] == "succeeded", message="the run over again")
    assert state()["exit_code"] == 0 and state()["ended"] is not None
    wait_for(lambda: kinds() == ["run_finished", "run_reopened", "run_finished"])
    finished = [e for e in seen if e["type"] == "run_finished"]
    assert [e["status"] for e in finished] == ["failed", "succeeded"]

    runner.close()
    assert runner.wait(10) == 0
    assert kinds() == ["run_finished", "run_reopened", "run_finished"], "closing: no new end"
    assert read_state(runner.run_dir)["ended"] == finished[-1]["ts"]


def test_interactive_run_with_a_ready_background_step_is_not_over(tmp_path, runners):
    """A service still up keeps the run going; stopped (`k`), the run is over; started again
    (`r`), the run runs again."""
    runner = make_runner(
        tmp_path,
        """
        steps:
          - {name: bg, type: shell, background: true, run: "exec sleep 1000"}
          - {name: fg, type: shell, run: "true"}
        """,
        interactive=True,
    )
    runners.append(runner)
    runner.start()
    wait_for(lambda: _status(runner, "fg") == "succeeded")
    assert _status(runner, "bg") == "ready"
    wait_for(lambda: read_state(runner.run_dir)["steps"]["fg"]["status"] == "succeeded")
    assert read_state(runner.run_dir)["status"] == "running"
    runner.stop_step("bg")
    wait_for(lambda: read_state(runner.run_dir)["status"] == "succeeded", message="over")
    # `r` on the stopped service: it is up again, and so is the run (state.json said it was
    # over, with an end time, while the service ran again, and the app's header with it)
    runner.retry("bg")
    wait_for(lambda: _status(runner, "bg") == "ready", message="bg up again")
    state = wait_for(
        lambda: (s := read_state(runner.run_dir))["status"] == "running" and s,
        message="the run running again in state.json",
    )
    assert state["ended"] is None and state["exit_code"] is None
    assert "run_reopened" in [e["type"] for e in read_events(runner.run_dir)]
    runner.close()
    assert runner.wait(10) == 0


def test_commands_on_unknown_steps_raise(tmp_path, runners):
    runner = make_runner(tmp_path, "steps:\n  - {name: a, type: shell, run: 'true'}\n")
    runners.append(runner)
    with pytest.raises(KeyError):
        runner.skip("nope")
    runner.start()
    assert runner.wait(10) == 0
    assert read_events(runner.run_dir)[-1]["type"] == "run_finished"


def test_runs_folder_is_private_whatever_the_umask(tmp_path):
    recipe = write_recipe(tmp_path, "steps:\n  - {name: one, type: shell, run: 'true'}\n")
    old = os.umask(0)
    try:
        result = run_cli(recipe, "--no-ui", cwd=tmp_path)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    for folder in (tmp_path / ".orch", tmp_path / ".orch" / "runs"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a run to another user needs root")
def test_resume_ignores_a_run_left_by_another_user(tmp_path):
    recipe = write_recipe(
        tmp_path,
        "steps:\n  - {name: a, type: shell, run: 'true'}\n  - {name: b, type: shell, run: 'true'}\n",
    )
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 0
    (planted,) = (tmp_path / ".orch" / "runs").iterdir()
    for path in (planted, planted / "state.json"):
        os.chown(path, 65534, 65534)  # nobody's run now
    result = run_cli(recipe, "--no-ui", "--resume-from", "b", cwd=tmp_path)
    assert result.returncode == 2
    assert "no earlier run" in result.stderr


def test_stop_run_force_kills_at_once_on_the_first_call(tmp_path):
    """``ctl stop-run --force`` (and --force from the command API): SIGKILL at once, as its help
    says, not SIGTERM and the whole grace. It only worked as the second of two stops (Ctrl-C
    twice); alone it waited out the grace of a step that ignores SIGTERM."""
    runner = make_runner(
        tmp_path,
        """
        steps:
          - {name: stubborn, type: shell, run: 'trap "" TERM; echo up; sleep 60', grace: 60}
        """,
    )
    runner.start()
    try:
        wait_for(lambda: (tmp_path / "run" / "logs" / "stubborn.log").read_bytes() == b"up\n")
        runner.stop_run(force=True)
        assert runner.wait(20) == 130, "still waiting out the step's 60 s of grace"
        step = runner.state()["steps"]["stubborn"]
        assert (step["status"], step["signal"]) == ("cancelled", signal.SIGKILL)
    finally:
        runner.stop_run(signal.SIGKILL, force=True)
        runner.wait(10)
