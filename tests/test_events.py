"""core.events: the event stream is enough to follow a run.

A client that starts from the snapshot in ``run_started`` (or any later snapshot) and applies
every later event (``RunState.apply``) ends with exactly what state.json says: nothing in the
run's state changes without an event carrying it. Runs here are real (shell processes, python
step modules); the events are read back from events.jsonl, as a client would read them.
"""

from __future__ import annotations

from pathlib import Path

from core.events import (
    CtxChanged,
    ResourcesSampled,
    RunStarted,
    StepOutput,
    StepStatus,
    decode_event,
)
from core.resources import FixedSampler
from core.state import RunState
from tests.conftest import (
    make_runner,
    read_state,
    run_recipe,
    stop_runner,
    wait_for,
    write_module,
)

MODULE = """
def talk(ctx):
    print("said something")
    ctx["said"] = "yes"
    ctx.append("rows", 1)

def quiet(ctx):
    ctx["quiet"] = True

def finale(ctx):
    ctx["finale"] = "the run's last write, a moment before its end"
"""


def recorded(run_dir: Path) -> list:
    """events.jsonl, each line decoded as a client decodes it."""
    return [decode_event(line) for line in (run_dir / "events.jsonl").read_bytes().splitlines()]


def mirror_of(events: list) -> RunState:
    """The run as a client following it sees it: the first snapshot, then every event."""
    first = events[0]
    assert isinstance(first, RunStarted)
    mirror = RunState.from_dict(first.state.to_dict())
    for event in events[1:]:
        mirror.apply(event)
    return mirror


def final_state(run_dir: Path) -> RunState:
    return RunState.from_json((run_dir / "state.json").read_bytes())


def test_a_mirror_of_the_events_ends_as_state_json(tmp_path):
    module = write_module(tmp_path, MODULE)
    result = run_recipe(
        tmp_path,
        f"""
        steps:
          - name: flaky
            type: shell
            run: test -f marker || {{ touch marker; exit 1; }}
            retries: 1
            retry_delay: 0.1
            depends_on: []
          - {{name: talk, type: python, module: {module}, function: talk, depends_on: []}}
          - {{name: quiet, type: python, module: {module}, function: quiet, depends_on: []}}
          - {{name: broken, type: shell, run: "echo no; exit 2", depends_on: [flaky]}}
          - {{name: passing, type: shell, run: "true", depends_on: [broken]}}
          - {{name: after, type: shell, run: "true", depends_on: [passing]}}
          - {{name: allowed, type: shell, run: "exit 3", continue_on_error: true, depends_on: []}}
          - name: server
            type: shell
            background: true
            run: echo up; exec sleep 30
            ready: {{log: up}}
            depends_on: []
          - {{name: uses, type: shell, run: echo using, depends_on: [server, talk, allowed]}}
          - {{name: hog, type: shell, run: sleep 0.6, depends_on: []}}
          - {{name: finale, type: python, module: {module}, function: finale, depends_on: [uses, hog]}}
        """,
        skip=["passing"],
        sampler=FixedSampler(),
        resource_interval=0.05,
    )
    assert result.code == 1
    events = recorded(result.run_dir)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))

    final = final_state(result.run_dir)
    assert mirror_of(events) == final
    assert final.seq == events[-1].seq
    # the ctx written a moment before the end is in an event, as in ctx.json
    assert any(isinstance(e, CtxChanged) and "finale" in e.keys for e in events)

    # the run went through what the mirror had to follow
    steps = final.steps
    assert steps["flaky"].status == "succeeded" and steps["flaky"].attempts == 2
    assert steps["broken"].status == "failed"
    assert steps["passing"].status == "skipped" and steps["passing"].blocked_by == ["broken"]
    assert steps["after"].status == "blocked" and steps["after"].blocked_by == ["broken"]
    assert steps["allowed"].status == "failed" and steps["allowed"].allowed
    assert steps["server"].status == "stopped" and steps["uses"].status == "succeeded"
    assert steps["talk"].log is not None and steps["quiet"].log is None
    assert steps["hog"].peak_cpu is not None
    # a skipped step's roots and a log coming to exist are events of their own
    assert any(
        isinstance(e, StepStatus) and e.step == "passing" and e.state.blocked_by for e in events
    )
    assert any(isinstance(e, StepOutput) and e.step == "talk" and e.log for e in events)


def test_a_mirror_follows_commands_an_end_and_a_reopening(tmp_path, runners):
    runner = make_runner(
        tmp_path,
        """
        steps:
          - {name: check, type: shell, run: test -f ok, depends_on: []}
          - {name: after, type: shell, run: "true", depends_on: [check]}
          - {name: side, type: shell, run: exit 1, depends_on: []}
        """,
        interactive=True,
    )
    runners.append(runner)
    runner.start()
    wait_for(lambda: runner.snapshot().status == "failed", message="the run's first end")
    (tmp_path / "ok").touch()
    runner.retry("check")
    wait_for(lambda: runner.snapshot().steps["after"].status == "succeeded")
    runner.skip("side")
    wait_for(lambda: runner.snapshot().status == "succeeded", message="the run's second end")
    runner.close()
    assert runner.wait(10) == 0

    events = recorded(runner.run_dir)
    kinds = [e.kind for e in events]
    assert "run_reopened" in kinds and kinds.count("run_finished") == 3  # failed, failed, ok
    assert "run_closing" in kinds
    assert mirror_of(events) == final_state(runner.run_dir)


def test_a_client_may_join_late_from_a_snapshot(tmp_path, runners):
    """Subscribe, then take a snapshot: the events it already holds change nothing when
    applied again, the later ones bring it to the end."""
    runner = make_runner(
        tmp_path,
        """
        steps:
          - {name: first, type: shell, run: echo one}
          - {name: gate, type: shell, run: "while [ ! -f go ]; do sleep 0.02; done"}
          - {name: last, type: shell, run: echo three}
        """,
    )
    runners.append(runner)
    runner.start()
    wait_for(lambda: runner.snapshot().steps["gate"].status == "running")
    seen: list = []
    runner.subscribe(seen.append)
    mirror = runner.snapshot()
    assert mirror.seq > 1 and mirror.steps["first"].status == "succeeded"
    (tmp_path / "go").touch()
    assert runner.wait(10) == 0
    stop_runner(runner)
    for event in recorded(runner.run_dir)[: mirror.seq]:  # already in the snapshot
        mirror.apply(event)
    for event in seen:
        mirror.apply(event)
    assert mirror == final_state(runner.run_dir)


def test_a_running_steps_peaks_reach_a_mirror(tmp_path, runners):
    """The peaks of a step that is still running are in its state: the mirror has them too,
    from the ``resources`` events, before the step's end brings its state."""
    runner = make_runner(
        tmp_path,
        "steps: [{name: hog, type: shell, run: 'while [ ! -f go ]; do sleep 0.02; done'}]",
        sampler=FixedSampler(step_cpu=7.0, step_rss=4096),
        resource_interval=0.05,
    )
    runners.append(runner)
    seen: list = []
    runner.subscribe(seen.append)
    runner.start()
    wait_for(lambda: any(isinstance(e, ResourcesSampled) and e.peaks for e in list(seen)))
    mirror = mirror_of(list(seen))
    assert mirror.steps["hog"].status == "running"
    assert (mirror.steps["hog"].peak_cpu, mirror.steps["hog"].peak_rss) == (7.0, 4096)
    (tmp_path / "go").touch()
    assert runner.wait(10) == 0


def test_the_output_of_an_otherwise_idle_step_reaches_events_jsonl(tmp_path, runners):
    """``ctl events --follow`` reads events.jsonl up to a live run's snapshot: a step that
    only prints now and then (no state change to save) must not leave its output events in a
    buffer there."""
    runner = make_runner(
        tmp_path,
        """
        steps:
          - name: talk
            type: shell
            run: "echo first; while [ ! -f go ]; do sleep 0.02; done; echo second; exec sleep 60"
        """,
    )
    runners.append(runner)
    runner.start()
    # the log's name is in state.json once "first" was written: the last save that is due
    wait_for(lambda: read_state(runner.run_dir)["steps"]["talk"]["log"] is not None)
    (tmp_path / "go").touch()

    def said_second() -> bool:
        lines = [e.lines for e in recorded(runner.run_dir) if isinstance(e, StepOutput)]
        return any("second" in line for chunk in lines for line in chunk)

    wait_for(said_second, message="the step's second line in events.jsonl")
