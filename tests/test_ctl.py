"""``orch-tui ctl``, ``runs`` and ``attach`` as a user runs them: real ``orch-tui`` processes.

Here the runs that are over (read back from their folders) and every error path; the live runs
(through the run daemon) are in tests/test_ctl_live.py. And, event by event, how ``logs -f``
tells a step's end from an attempt another follows (a race live).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal

import pytest

from core.events import StepFinished, StepStatus
from core.state import RunState, Status, StepState
from tests.conftest import (
    kill_tree,
    only_run_dir,
    read_events,
    read_pid,
    read_state,
    run_cli,
    start_cli,
    wait_for,
    write_recipe,
)
from tests.tui_helpers import TmuxApp
from tui.ctl import _StepEnd

RECIPE = """
name: demo
steps:
  - name: fill
    type: shell
    run: |
      echo filled
      echo '{"rows": [1, 2, 3], "word": "hi"}' > "$ORCH_CTX_OUT"
  - {name: broken, type: shell, run: "echo oops; exit 3"}
  - {name: after, type: shell, run: "true"}
"""


@pytest.fixture
def past(tmp_path):
    """A failed run that is over: its id (the cwd is ``tmp_path``)."""
    recipe = write_recipe(tmp_path, RECIPE)
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 1
    return only_run_dir(tmp_path).name


def ctl(tmp_path, *args):
    return run_cli("ctl", *args, cwd=tmp_path)


def assert_error(result, message: str) -> None:
    """Exit 2, one line on stderr, nothing on stdout."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr == f"orch-tui: {message}\n"
    assert result.stdout == ""


# -- a run that is over ------------------------------------------------------------------------------
def test_status_of_a_past_run(tmp_path, past):
    text = ctl(tmp_path, past, "status")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"run {past} demo: failed, ")
    assert lines[0].endswith("(not live)")
    assert lines[1].split() == ["STEP", "STATUS", "DURATION", "ATTEMPTS", "EXIT", "NOTE"]
    assert lines[3].split()[:2] == ["broken", "failed"] and "exit code 3" in lines[3]
    assert lines[4].split() == ["after", "blocked", "0", "blocked", "by", "broken"]

    as_json = ctl(tmp_path, past, "status", "--json")
    assert json.loads(as_json.stdout) == read_state(tmp_path / ".orch" / "runs" / past)


def test_status_columns_line_up_under_wide_step_names(tmp_path):
    """A step named in CJK (each character two columns wide) pushed the columns after it out of
    line by its length: they are placed by the width a terminal draws, as the run's own table."""
    from tui.cells import cell_len

    recipe = write_recipe(
        tmp_path,
        "steps:\n  - {name: データ処理, type: shell, run: 'true'}\n"
        "  - {name: ascii-step, type: shell, run: 'true'}\n",
    )
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 0
    header, *rows = ctl(tmp_path, only_run_dir(tmp_path).name, "status").stdout.splitlines()[1:]
    columns = {cell_len(row[: row.index("succeeded")]) for row in rows}
    assert columns == {cell_len(header[: header.index("STATUS")])}, rows


def test_status_of_a_large_run_on_a_terminal_fits_the_screen(tmp_path, tmux_socket):
    """``ctl status`` in an 80x24 terminal of a run of 300 steps (one failed, 200 it blocked):
    it printed a row a step, the run's line scrolled away, the screen left showing the last
    steps. It lists the steps worth a row (the failure first, then what it blocked), as many as
    fit under the run's line, and counts the rest; ``--all`` lists every one, as a pipe gets."""
    steps = ["  - {name: broken, type: shell, run: 'exit 3', depends_on: []}"]
    steps += [
        f"  - {{name: b{i:03d}, type: shell, run: 'true', depends_on: [broken]}}"
        for i in range(200)
    ]
    steps += [
        f"  - {{name: s{i:03d}, type: shell, run: 'true', depends_on: []}}" for i in range(99)
    ]
    recipe = write_recipe(tmp_path, "steps:\n" + "\n".join(steps) + "\n")
    assert run_cli(recipe, "--no-ui", "--jobs", "4", cwd=tmp_path, timeout=120).returncode == 1
    run_id = only_run_dir(tmp_path).name

    app = TmuxApp(tmux_socket, ["ctl", run_id, "status"], tmp_path)
    assert app.exited() == 0
    rows = [row for row in app.rows() if row.strip() and not row.startswith("Pane is dead")]
    # nothing scrolled away: the run's line first, a line left for the shell's prompt
    assert rows[0].startswith(f"run {run_id} ") and len(rows) <= 23, "\n".join(app.rows())
    assert rows[2].split()[:2] == ["broken", "failed"], rows
    listed = [row.split()[0] for row in rows[3:-1]]
    assert listed and all(name.startswith("b") for name in listed), rows  # then what it blocked
    assert rows[-1] == (
        f"… and {299 - len(listed)} more steps ({200 - len(listed)} blocked, 99 succeeded): "
        "--all lists every step"
    ), rows

    # a short, narrow terminal: still the run's line on screen, the count line not wrapped
    # (at 60x10 ten rows were listed whatever the height, and the count line wrapped)
    app = TmuxApp(tmux_socket, ["ctl", run_id, "status"], tmp_path, session="short", size=(60, 10))
    assert app.exited() == 0
    rows = [row for row in app.rows() if row.strip() and not row.startswith("Pane is dead")]
    assert rows[0].startswith(f"run {run_id} ") and len(rows) <= 9, "\n".join(app.rows())
    assert rows[-1].startswith("… and ") and rows[-1].endswith(
        " more steps: --all lists every step"
    )

    app = TmuxApp(tmux_socket, ["ctl", run_id, "status", "--all"], tmp_path, session="all")
    assert app.exited() == 0
    assert "s098 " in app.printed() and "… and" not in app.printed()
    piped = ctl(tmp_path, run_id, "status").stdout.splitlines()
    assert len(piped) == 2 + 300 and not piped[-1].startswith("…")


def test_logs_ctx_and_events_of_a_past_run(tmp_path, past):
    assert ctl(tmp_path, past, "logs", "broken").stdout == "oops\n"
    assert ctl(tmp_path, past, "logs", "broken", "-f").stdout == "oops\n"  # over: no waiting
    assert json.loads(ctl(tmp_path, past, "ctx").stdout) == {"rows": [1, 2, 3], "word": "hi"}
    assert json.loads(ctl(tmp_path, past, "ctx", "rows").stdout) == [1, 2, 3]

    recorded = read_events(tmp_path / ".orch" / "runs" / past)
    every = [json.loads(line) for line in ctl(tmp_path, past, "events").stdout.splitlines()]
    assert every == recorded
    later = ctl(tmp_path, past, "events", "--since", "5", "--follow").stdout.splitlines()
    assert [json.loads(line)["seq"] for line in later] == [e["seq"] for e in recorded[5:]]


def test_a_past_run_takes_no_command(tmp_path, past):
    for command in (["retry", "broken"], ["skip", "after"], ["stop", "broken"]):
        assert_error(ctl(tmp_path, past, *command), "the run is over (read-only)")
    assert read_state(tmp_path / ".orch" / "runs" / past)["steps"]["broken"]["status"] == "failed"


def test_stop_run_and_close_of_a_past_run_succeed_doing_nothing(tmp_path, past):
    """A CI job's cleanup step runs `ctl "$run" stop-run` (as the README advises), and the run
    is most often over by then: that was "the run is over (read-only)", exit 2, a red job for a
    run that ended as it should. What they are asked for is done already: exit 0, said so."""
    state = tmp_path / ".orch" / "runs" / past / "state.json"
    before = state.read_bytes()
    for command in (["stop-run"], ["stop-run", "--force"], ["close"]):
        result = ctl(tmp_path, past, *command)
        assert (result.returncode, result.stderr) == (0, ""), command
        assert result.stdout == f"run {past} is over already (failed, exit 1): nothing to stop\n"
    assert state.read_bytes() == before


def test_commands_to_a_headless_run_still_going_say_it_has_no_daemon(tmp_path):
    """A run going --no-ui has no daemon to take a command: `ctl RUN stop-run` said "the run
    is over (read-only)" of a run that was not, and then (once stop-run of a past run
    succeeds) would have said it was over already. Now: why not, and what stops it."""
    recipe = write_recipe(
        tmp_path,
        "steps:\n  - {name: gate, type: shell, run: 'while [ ! -f go ]; do sleep 0.05; done'}\n",
    )
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    try:
        wait_for(lambda: read_state(only_run_dir(tmp_path))["steps"]["gate"]["status"] == "running")
        run_id = only_run_dir(tmp_path).name
        pid = read_state(only_run_dir(tmp_path))["pid"]
        said = (
            f"run {run_id} runs without a daemon (--no-ui, pid {pid}): ctl cannot change it; "
            f"Ctrl-C in its terminal or kill -INT {pid} stops it"
        )
        for command in (["stop-run"], ["close"], ["retry", "gate"], ["stop", "gate"]):
            assert_error(ctl(tmp_path, run_id, *command), said)
        assert read_state(only_run_dir(tmp_path))["steps"]["gate"]["status"] == "running"
        (tmp_path / "go").touch()
        assert proc.wait(30) == 0
    finally:
        kill_tree(proc)


GATED = """
steps:
  - name: gate
    type: shell
    run: 'echo waiting; while [ ! -f go ]; do sleep 0.05; done; echo through'
  - {name: after, type: shell, run: 'echo after'}
"""


@pytest.mark.parametrize("command", [["logs", "gate", "-f"], ["events", "--follow"]])
def test_a_follow_of_a_headless_run_still_going_follows_it(tmp_path, command):
    """`orch-tui R --no-ui &` then `ctl RUN logs STEP -f` (or `events --follow`): the run has
    no daemon, and the follow printed what was there and ended at once, exit 0, as if the step
    (the run) were over. It follows the folder now, to the step's (the run's) end."""
    recipe = write_recipe(tmp_path, GATED)
    run = start_cli(recipe, "--no-ui", cwd=tmp_path)
    follower = None
    try:
        wait_for(
            lambda: (only_run_dir(tmp_path) / "logs" / "gate.log").read_bytes() == b"waiting\n"
        )
        follower = start_cli("ctl", only_run_dir(tmp_path).name, *command, cwd=tmp_path)
        first = b""
        while not first.endswith(b"\n"):  # a byte at a time: the rest is communicate's
            assert select.select([follower.stdout], [], [], 30)[0], first
            byte = os.read(follower.stdout.fileno(), 1)
            assert byte, first
            first += byte
        assert first == b"waiting\n" if command[0] == "logs" else b'"run_started"' in first
        (tmp_path / "go").touch()
        out, err = follower.communicate(timeout=30)
        assert (follower.returncode, err) == (0, b"")
        assert run.wait(30) == 0
        if command[0] == "logs":
            assert first + out == b"waiting\nthrough\n"
        else:
            every = [json.loads(line) for line in (first + out).splitlines()]
            assert every == read_events(only_run_dir(tmp_path))
            assert every[-1]["type"] == "run_finished"
    finally:
        kill_tree(run)
        if follower is not None:
            kill_tree(follower)


def test_wait_on_a_past_run_exits_with_its_code(tmp_path, past):
    assert ctl(tmp_path, past, "wait").returncode == 1


def test_a_run_folder_names_the_run_too(tmp_path, past):
    folder = tmp_path / ".orch" / "runs" / past
    result = run_cli("ctl", folder, "logs", "broken", cwd=tmp_path / ".orch")
    assert result.stdout == "oops\n"


# -- errors: one line, exit 2 -------------------------------------------------------------------------
def test_ctl_errors_are_one_line_and_exit_2(tmp_path, past):
    cases = [
        ((past, "retry", "brokn"), "no step named 'brokn' (did you mean 'broken'?)"),
        ((past, "logs", "nope"), "no step named 'nope'"),
        ((past, "ctx", "rowz"), "no ctx key 'rowz' (did you mean 'rows'?)"),
        (
            ("20261129-000000-0000", "status"),
            f"no run 20261129-000000-0000 in {tmp_path}/.orch/runs (orch-tui runs lists them)",
        ),
        (("retry", "broken"), "no live run in this workspace (orch-tui runs lists its runs)"),
        (
            (past,),
            "ctl: which command? (status, skip, retry, stop, restart, stop-run, close, "
            "wait, logs, ctx, events)",
        ),
        ((past, "logs"), "ctl [RUN] logs: the following arguments are required: STEP"),
        (
            (past, "events", "--since", "x"),
            "ctl [RUN] events: argument --since: expected a whole number, got 'x'",
        ),
        (
            (past, "events", "--since", "-5"),
            "ctl [RUN] events: argument --since: must be at least 0, got -5",
        ),
        (
            (past, "dance"),
            "ctl: argument COMMAND: invalid choice: 'dance' (choose from "
            "'status', 'skip', 'retry', 'stop', 'restart', 'stop-run', 'close', 'wait', 'logs', "
            "'ctx', 'events')",
        ),
    ]
    for args, message in cases:
        assert_error(ctl(tmp_path, *args), message)


def copies_of(past_dir, runs, ids):
    """Copies of the run folder ``past_dir`` in the runs folder ``runs``, named ``ids``, each
    log of 'broken' saying which it is."""
    for run_id in ids:
        shutil.copytree(past_dir, runs / run_id)
        (runs / run_id / "logs" / "broken.log").write_text(f"{run_id}\n")


def test_a_run_is_named_by_a_unique_prefix_or_its_last_part(tmp_path, past):
    """`orch-tui attach 20261130` said "no run 20261130": only the whole id was taken."""
    runs = tmp_path / ".orch" / "runs"
    ids = [f"20250101-12000{n}-{tail}" for n, tail in enumerate(["aaaa", "bbbb", "aaab"])]
    copies_of(runs / past, runs, ids)
    for given, meant in [
        ("20250101-120001", ids[1]),
        ("20250101-1200", None),
        ("bbbb", ids[1]),
        ("aaaa", ids[0]),
        (past[:13], past),
        (past[-4:], past),
    ]:
        result = ctl(tmp_path, given, "logs", "broken")
        if meant is None:
            newest = list(reversed(ids))
            message = f"run {given} is ambiguous: {newest[0]}, {newest[1]} and {newest[2]}"
            assert_error(result, message)
        else:
            assert (result.returncode, result.stdout) == (
                0,
                "oops\n" if meant == past else f"{meant}\n",
            )


def test_an_ambiguous_run_lists_five_matches_then_how_many_more(tmp_path, past):
    runs = tmp_path / ".orch" / "runs"
    ids = [f"20250101-12000{n}-{n}{n}{n}{n}" for n in range(7)]
    copies_of(runs / past, runs, ids)
    assert_error(
        ctl(tmp_path, "2025", "status"),
        f"run 2025 is ambiguous: {', '.join(ids[:1:-1])} and 2 more",
    )


def test_a_run_of_another_workspace_is_never_matched(tmp_path, past):
    other = tmp_path / "other"  # a workspace of its own: its runs in other/.orch/runs
    copies_of(
        tmp_path / ".orch" / "runs" / past, other / ".orch" / "runs", ["20250101-120000-cccc"]
    )
    assert_error(
        ctl(tmp_path, "cccc", "status"),
        f"no run cccc in {tmp_path}/.orch/runs (orch-tui runs lists them)",
    )
    assert ctl(other, "cccc", "logs", "broken").stdout == "20250101-120000-cccc\n"


def test_readers_without_run_read_the_newest_run_when_none_is_live(tmp_path, past):
    """``--detach --exit-when-done`` then ``ctl wait``: a run quicker than the script is over by
    the time ``wait`` looks, and must still give its exit code, not 'no live run'."""
    waited = ctl(tmp_path, "wait")
    assert waited.returncode == 1
    assert waited.stderr == f"orch-tui: no live run; run {past}, the newest\n"
    assert ctl(tmp_path, "logs", "broken").stdout == "oops\n"


def test_without_any_run_a_reader_says_there_is_none(tmp_path):
    assert_error(
        ctl(tmp_path, "status"), "no live run in this workspace (orch-tui runs lists its runs)"
    )


def test_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "notes").mkdir()
    assert_error(
        ctl(tmp_path, "notes", "status"), f"{tmp_path}/notes is not a run folder (no state.json)"
    )


def test_attach_needs_a_terminal(tmp_path, past):
    assert_error(
        run_cli("attach", past, cwd=tmp_path),
        "attach needs a terminal (orch-tui ctl [RUN] status works without one)",
    )


# -- runs ----------------------------------------------------------------------------------------------
def test_runs_lists_the_workspace_runs_newest_first(tmp_path):
    recipe = write_recipe(tmp_path, RECIPE)
    empty = run_cli("runs", cwd=tmp_path)
    assert (empty.returncode, empty.stdout) == (0, "no runs in .orch/runs\n")
    assert json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout) == []

    good = write_recipe(tmp_path, "steps: [{name: one, type: shell, run: 'true'}]", "good.yaml")
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 1
    assert run_cli(good, "--no-ui", cwd=tmp_path).returncode == 0

    rows = json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)
    assert [(r["recipe"], r["status"], r["live"]) for r in rows] == [
        (str(good), "succeeded", False),
        (str(recipe), "failed", False),
    ]
    for row in rows:
        state = read_state(tmp_path / ".orch" / "runs" / row["id"])
        assert (row["started"], row["ended"]) == (state["started"], state["ended"])
        assert row["duration"] == pytest.approx(state["ended"] - state["started"])
        assert row["run_dir"] == str(tmp_path / ".orch" / "runs" / row["id"])

    table = run_cli("runs", cwd=tmp_path).stdout.splitlines()
    assert table[0].split() == ["RUN", "RECIPE", "STATUS", "STARTED", "DURATION", "LIVE"]
    assert [line.split()[:3] for line in table[1:]] == [
        [rows[0]["id"], "good.yaml", "succeeded"],
        [rows[1]["id"], "recipe.yaml", "failed"],
    ]
    assert all(line.split()[-1] == "no" for line in table[1:])


def test_runs_on_an_80_column_terminal_fits_a_row_a_line(tmp_path, tmux_socket):
    """A long recipe path and an `interrupted` status made a row wider than 80 columns, so every
    row wrapped onto two lines: the history was unreadable where a user reads it. The path is
    cut by the columns a terminal draws (its CJK characters take two)."""
    from tui.cells import cell_len

    nested = tmp_path / "nightly" / "builds"
    nested.mkdir(parents=True)
    long = write_recipe(
        nested, "steps: [{name: one, type: shell, run: 'true'}]", "a_rather_long_name_名前.yaml"
    )
    short = write_recipe(tmp_path, "steps: [{name: one, type: shell, run: 'exit 3'}]", "short.yaml")
    assert run_cli(long, "--no-ui", cwd=tmp_path).returncode == 0
    assert run_cli(short, "--no-ui", cwd=tmp_path).returncode == 1
    newest, older = (
        row["id"] for row in json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)
    )

    app = TmuxApp(tmux_socket, ["runs"], tmp_path)
    assert app.exited() == 0
    lines = [row for row in app.rows() if row.strip() and not row.startswith("Pane is dead")]
    assert [line.split()[:3] for line in lines] == [
        ["RUN", "RECIPE", "STATUS"],
        [newest, "short.yaml", "failed"],
        [older, lines[2].split()[1], "succeeded"],
    ]
    assert lines[2].split()[1].startswith("…") and lines[2].split()[1].endswith("_name_名前.yaml")
    assert all(cell_len(line) <= 80 and line.split()[-1] in ("LIVE", "no") for line in lines)
    # to a pipe every cell is whole, for awk and grep
    piped = run_cli("runs", cwd=tmp_path).stdout
    assert "nightly/builds/a_rather_long_name_名前.yaml" in piped


def test_client_command_names_are_never_recipes(tmp_path, past):
    """Folders named ``runs`` and ``ctl`` (a user's own), a recipe file named ``attach``."""
    for folder in ("runs", "ctl"):
        (tmp_path / folder).mkdir()
    (tmp_path / "attach").write_text("steps:\n  - {name: a, type: shell, run: 'touch ran'}\n")

    assert past in run_cli("runs", cwd=tmp_path).stdout
    assert ctl(tmp_path, past, "wait").returncode == 1
    assert_error(
        run_cli("--no-ui", "attach", cwd=tmp_path),
        (
            "'attach' is a command: put it first (orch-tui attach ...); "
            "a recipe file of that name is given as ./attach or --recipe attach"
        ),
    )
    assert not (tmp_path / "ran").exists()
    assert run_cli("./attach", "--no-ui", cwd=tmp_path).returncode == 0
    assert (tmp_path / "ran").exists()


def test_a_daemon_run_without_its_socket_died_whatever_its_pid(tmp_path, past):
    """pids are reused: a run that says it is running under a live pid (here pytest's own) is
    a headless run still going, unless it had a daemon (daemon.log) whose socket is gone."""
    run_dir = tmp_path / ".orch" / "runs" / past
    state = read_state(run_dir)
    state.update(status="running", exit_code=None, ended=None, pid=os.getpid())
    (run_dir / "state.json").write_text(json.dumps(state))

    def listed() -> tuple[str, bool]:
        [row] = json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)
        return row["status"], row["live"]

    assert listed() == ("running", False)
    (run_dir / "daemon.log").write_text("")
    assert listed() == ("died", False)


def _flaky(status: Status, attempts: int, retries: int = 2, restarting: bool = False) -> StepState:
    return StepState(
        name="flaky",
        type="shell",
        index=0,
        retries=retries,
        background=restarting,
        restarting=restarting,
        status=status,
        attempts=attempts,
    )


@pytest.mark.parametrize("again", ["will_retry", "will_restart"])
def test_logs_follow_is_not_ended_by_an_attempt_another_follows(again):
    """``logs -f``'s judge of a step's end, event by event: an attempt's end that says another
    follows (a retry, a service's restart) is not the step's end; the last one is. Asked after
    each event, as the follow asks between two of them (the race the live test hits 1 in 2)."""
    end = _StepEnd("flaky")
    failed = StepFinished(
        step="flaky",
        state=_flaky(Status.FAILED, 1),
        status=Status.FAILED,
        attempt=1,
        seq=5,
        **{again: True},
    )
    assert end.see(failed) and not end.ended
    pending = StepStatus(
        step="flaky", state=_flaky(Status.PENDING, 1), status=Status.PENDING, seq=6
    )
    assert end.see(pending) and not end.ended
    last = StepFinished(
        step="flaky", state=_flaky(Status.FAILED, 3), status=Status.FAILED, attempt=3, seq=9
    )
    assert end.see(last) and end.ended
    assert not end.see(
        StepStatus(step="other", state=_flaky(Status.PENDING, 0), seq=10, status=Status.PENDING)
    )


def test_logs_follow_started_between_a_failed_attempt_and_its_retry_goes_on():
    """A follow that begins (or connects again) with a snapshot taken right after an attempt
    failed, before the event that makes the step pending again, does not take it for the end:
    the step has retries left. One with none left has ended."""

    def run_with(step: StepState) -> RunState:
        return RunState(
            run_id="r", recipe="r.yaml", name="r", run_dir="/r", pid=1, seq=5, steps={"flaky": step}
        )

    between = _StepEnd("flaky")
    between.seed(run_with(_flaky(Status.FAILED, attempts=1, retries=2)))
    assert not between.ended
    service = _StepEnd("flaky")  # a service's end, its restart to come
    service.seed(run_with(_flaky(Status.FAILED, attempts=1, retries=0, restarting=True)))
    assert not service.ended
    over = _StepEnd("flaky")
    over.seed(run_with(_flaky(Status.FAILED, attempts=3, retries=2)))
    assert over.ended
    later = _StepEnd("flaky")  # an event newer than the snapshot wins over it
    later.see(
        StepFinished(
            step="flaky",
            state=_flaky(Status.SUCCEEDED, 2),
            attempt=2,
            status=Status.SUCCEEDED,
            seq=7,
        )
    )
    later.seed(run_with(_flaky(Status.PENDING, attempts=1)))
    assert later.ended


def test_a_headless_run_killed_in_its_first_instant_is_listed_as_died(tmp_path):
    """SIGKILLed as soon as its first step starts (long before the store's first coalesced
    save): its folder is still a run that ``runs`` lists as died and ``ctl status`` reads."""
    recipe = write_recipe(
        tmp_path,
        "steps:\n"
        "  - {name: first, type: shell, run: 'echo $$ > first.pid; exec sleep 60'}\n"
        "  - {name: second, type: shell, run: 'true'}\n",
    )
    proc = start_cli(recipe, "--no-ui", cwd=tmp_path)
    step_pid = None
    try:
        step_pid = read_pid(tmp_path / "first.pid")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        run_id = only_run_dir(tmp_path).name
        [row] = json.loads(run_cli("runs", "--json", cwd=tmp_path).stdout)
        assert (row["id"], row["status"], row["live"]) == (run_id, "died", False)
        status = ctl(tmp_path, run_id, "status")
        assert status.returncode == 0, status.stderr
        assert "interrupted" in status.stdout
        assert "first" in status.stdout and "cancelled" in status.stdout
        # its ctx too, which --resume-from takes from the newest run
        assert json.loads((tmp_path / ".orch" / "runs" / run_id / "ctx.json").read_text()) == {}
    finally:
        kill_tree(proc, [step_pid] if step_pid else [])


def test_a_resumed_run_killed_in_its_first_instant_keeps_the_ctx_its_state_relies_on(tmp_path):
    """A resumed run's first state.json says the steps it restored succeeded: the ctx they
    made is on disk before it (as in every save), so a run killed right then can be resumed
    from in turn. The first save wrote state.json alone, and ctx.json came 0.25 s later."""
    recipe = write_recipe(
        tmp_path,
        "steps:\n"
        "  - {name: produce, type: shell, run: 'echo made=yes > \"$ORCH_CTX_OUT\"'}\n"
        "  - {name: second, type: shell,"
        " run: '[ -e go ] || exit 1; echo $$ > second.pid; exec sleep 60'}\n",
    )
    assert run_cli(recipe, "--no-ui", cwd=tmp_path).returncode == 1
    (tmp_path / "go").touch()
    proc = start_cli(recipe, "--no-ui", "--resume-from", "second", cwd=tmp_path)
    step_pid = None
    try:
        step_pid = read_pid(tmp_path / "second.pid")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        kill_tree(proc, [step_pid] if step_pid else [])
    newest = max((tmp_path / ".orch" / "runs").iterdir())
    assert read_state(newest)["resumed_from"] is not None
    assert json.loads((newest / "ctx.json").read_text()) == {"made": "yes"}
