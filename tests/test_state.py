"""core.state: the typed run state is state.json, both ways, and says which commands apply."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import msgspec
import pytest

from core.state import (
    ACTIVE,
    ENDED,
    FAILURES,
    RETRYABLE,
    SKIPPABLE,
    STOPPABLE,
    WAITING,
    Health,
    RunState,
    RunStatus,
    SessionRef,
    Status,
    StepState,
    allowed_actions,
)
from tests.conftest import ROOT


def a_run(**steps: StepState) -> RunState:
    return RunState(
        run_id="20261125-120000-abcd",
        recipe="/work/recipe.yaml",
        name="recipe",
        run_dir="/work/.orch/runs/20261125-120000-abcd",
        pid=4242,
        status=RunStatus.RUNNING,
        started=1_700_000_000.0,
        resumed_from={"run_id": "r0", "run_dir": "/work/.orch/runs/r0", "step": "b"},
        seq=17,
        ctx_version=3,
        steps=steps,
    )


def every_kind_of_step() -> dict[str, StepState]:
    return {
        "build": StepState(
            name="build",
            type="shell",
            index=0,
            status=Status.FAILED,
            attempts=2,
            exit_code=2,
            reason="exit code 2",
            started=1_700_000_001.0,
            ended=1_700_000_002.5,
            duration=1.5,
            retries=1,
            peak_cpu=97.5,
            peak_rss=10_485_760,
            log="logs/build.log",
        ),
        "after": StepState(
            name="after",
            type="python",
            index=1,
            depends_on=["build"],
            status=Status.BLOCKED,
            blocked_by=["build"],
        ),
        "web": StepState(
            name="web",
            type="session",
            index=2,
            depends_on=[],
            session=SessionRef(
                backend="tmux", name="web", action="create", socket="orch", log="/r/web.log"
            ),
            status=Status.SUCCEEDED,
            signal=None,
        ),
        "dash": StepState(
            name="dash",
            type="shell",
            index=3,
            background=True,
            status="ready",
            attempts=3,
            restarts=2,
            restart_reason="unhealthy: port 8050: Connection refused (3 checks in a row)",
            health=Health.HEALTHY,
        ),
    }


def test_state_json_round_trips_and_is_plain_json():
    run = a_run(**every_kind_of_step())
    data = run.to_json()
    assert RunState.from_json(data) == run
    parsed = json.loads(data)
    assert RunState.from_dict(parsed) == run
    assert run.to_dict() == parsed  # to_dict is the JSON document itself: no enums, no tuples
    assert parsed["status"] == "running" and parsed["seq"] == 17 and parsed["ctx_version"] == 3
    steps = parsed["steps"]
    assert list(steps) == ["build", "after", "web", "dash"]  # recipe order kept
    assert steps["build"]["status"] == "failed" and steps["build"]["duration"] == 1.5
    assert steps["after"]["blocked_by"] == ["build"] and steps["after"]["log"] is None
    assert steps["web"]["session"] == {
        "backend": "tmux",
        "name": "web",
        "action": "create",
        "socket": "orch",
        "log": "/r/web.log",
    }
    assert (steps["dash"]["restarts"], steps["dash"]["health"]) == (2, "healthy")
    assert steps["dash"]["restart_reason"].startswith("unhealthy: ")
    assert steps["build"]["restarts"] == 0 and steps["build"]["health"] is None
    assert data.startswith(b"{\n  ")  # indented: people read state.json too


def test_statuses_compare_and_print_as_their_strings():
    run = RunState.from_json(a_run(**every_kind_of_step()).to_json())
    status = run.steps["build"].status
    assert status is Status.FAILED
    assert status == "failed" and f"{status}" == "failed" and str(status) == "failed"
    assert {"failed": 1}[status] == 1
    assert run.status is RunStatus.RUNNING and str(run.status) == "running"


def test_a_snapshot_does_not_follow_the_original():
    run = a_run(**every_kind_of_step())
    snapshot = run.copy()
    run.steps["after"].status = Status.PENDING
    run.steps["after"].blocked_by = []
    run.status = RunStatus.FAILED
    assert snapshot.steps["after"].status == "blocked"
    assert snapshot.steps["after"].blocked_by == ["build"]
    assert snapshot.status == "running"


def test_elapsed_grows_while_active_and_is_the_duration_once_ended():
    running = StepState(name="a", type="shell", index=0, status="running", started=100.0)
    assert running.elapsed(now=103.5) == 3.5
    ended = StepState(
        name="a", type="shell", index=0, status="succeeded", started=100.0, ended=101.0
    )
    assert ended.elapsed(now=200.0) == 1.0
    ended.duration = 1.25
    assert ended.elapsed(now=200.0) == 1.25
    assert StepState(name="a", type="shell", index=0).elapsed(now=200.0) is None


def test_the_groups_cover_every_status_once_where_they_should():
    assert set(Status) == ACTIVE | WAITING | ENDED
    assert not (ACTIVE & WAITING) and not (ACTIVE & ENDED) and not (WAITING & ENDED)
    assert FAILURES < ENDED and FAILURES < SKIPPABLE and FAILURES < RETRYABLE
    assert Status.SKIPPED not in RETRYABLE and Status.SKIPPED not in SKIPPABLE
    assert STOPPABLE == ACTIVE
    assert Status.READY in ACTIVE and "blocked" in WAITING and Status.STOPPED in ENDED
    assert Status.TIMED_OUT in FAILURES and Status.CANCELLED not in FAILURES


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("pending", {"skip"}),
        ("blocked", {"skip"}),
        ("running", {"stop"}),
        ("ready", {"stop"}),
        ("succeeded", {"retry"}),
        ("failed", {"skip", "retry"}),
        ("timed_out", {"skip", "retry"}),
        ("skipped", set()),
        ("cancelled", {"skip", "retry"}),
        ("stopped", {"retry"}),
    ],
)
def test_allowed_actions_follow_the_status(status, expected):
    step = StepState(name="s", type="shell", index=0, status=status)
    assert allowed_actions(step, a_run(s=step)) == expected


@pytest.mark.parametrize(
    ("step_type", "expected"), [("shell", {"stop", "restart"}), ("session", {"stop"})]
)
@pytest.mark.parametrize("status", sorted(ACTIVE))
def test_a_running_service_may_be_restarted(status, step_type, expected):
    step = StepState(name="s", type=step_type, index=0, background=True, status=status)
    run = a_run(s=step)
    assert allowed_actions(step, run) == expected
    run.closing = True
    assert allowed_actions(step, run) == {"stop"}


@pytest.mark.parametrize("status", list(Status))
def test_a_closing_run_only_lets_running_steps_be_stopped(status):
    step = StepState(name="s", type="shell", index=0, status=status)
    run = a_run(s=step)
    run.closing = True
    assert allowed_actions(step, run) == ({"stop"} if status in ACTIVE else set())


def test_a_step_state_is_out_of_the_cyclic_collectors_sight():
    """A run makes a StepState per step event and clients keep one per step: tracked, they
    were a third of what the TUI's full collections walked while a key waited."""
    state = StepState(name="a", type="shell", index=0, depends_on=["b"])
    assert not gc.is_tracked(state)
    assert not gc.is_tracked(msgspec.structs.replace(state, status=Status.RUNNING))
    assert not gc.is_tracked(msgspec.json.decode(msgspec.json.encode(state), type=StepState))


def test_version_does_not_import_the_typed_state():
    """``orch-tui --version`` stays as fast as before msgspec: only runs need the typed state."""
    code = (
        "import sys; sys.argv = ['orch-tui', '--version']\nfrom tui.cli import main\n"
        "try: main()\nexcept SystemExit: pass\nprint('\\n'.join(sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert not {"msgspec", "core.state", "core.events", "tui.stdout"} & set(out.split())
