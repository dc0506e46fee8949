"""``ready: {http: URL}`` and ``ready: {cmd: "..."}``: a background step's dependents wait until a
GET answers 2xx/3xx or a command exits 0, tried every ``interval`` on a worker thread.

Real servers on 127.0.0.1 (a python http.server run by the step itself), real commands; what is
checked is what a user reads (state.json, events.jsonl, the server's own record of the GETs it
answered) or sees on the machine (the tries a step left running: none).
"""

from __future__ import annotations

import json

import pytest

import core.readiness
from tests.conftest import (
    PY,
    alive,
    assert_gone,
    event_index,
    free_port,
    make_runner,
    marked,
    read_events,
    read_pid,
    run_recipe,
    wait_for,
)

#: answers 503 to the first ``ok_after`` GETs, then 200; writes each code it answered to
#: answers.txt (in the order it answered them)
SERVER = """
import http.server, sys

port, ok_after = int(sys.argv[1]), int(sys.argv[2])
answered = []


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if len(answered) >= ok_after else 503
        answered.append(code)
        with open("answers.txt", "a") as out:
            out.write(f"{code}\\n")
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", port), Answer).serve_forever()
"""


def server_step(name: str, port: int, ok_after: int, ready: str, **fields: str) -> str:
    """A background shell step serving SERVER on ``port``, with ``ready`` as written."""
    extra = "".join(f"    {key}: {value}\n" for key, value in fields.items())
    return (
        f"  - name: {name}\n"
        "    type: shell\n"
        "    background: true\n"
        f"    ready: {ready}\n"
        f"    cmd: {json.dumps(PY)}\n"
        f'    args: [server.py, "{port}", "{ok_after}"]\n'
        f"{extra}"
    )


def test_ready_http_waits_for_a_2xx_and_asks_nothing_after(tmp_path):
    (tmp_path / "server.py").write_text(SERVER)
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    result = run_recipe(
        tmp_path,
        "steps:\n"
        + server_step("web", port, 2, f'{{http: "{url}", interval: 0.05, timeout: 15}}')
        + "  - {name: client, type: shell, run: 'cat answers.txt > seen.txt'}\n",
    )
    assert result.code == 0, result.steps
    events = result.events
    assert event_index(events, "step_ready", "web") < event_index(events, "step_started", "client")
    # the dependent started once the 200 came, after the two 503s; no GET was made after it
    assert (tmp_path / "seen.txt").read_text().split() == ["503", "503", "200"]
    assert (tmp_path / "answers.txt").read_text().split() == ["503", "503", "200"]
    assert result.steps["web"]["status"] == "stopped"


def test_ready_http_not_ready_in_time_says_what_the_last_try_answered(tmp_path):
    (tmp_path / "server.py").write_text(SERVER)
    port, closed = free_port(), free_port()
    result = run_recipe(
        tmp_path,
        "steps:\n"
        + server_step("sick", port, 10**9, f'{{http: "http://127.0.0.1:{port}/", timeout: 3}}')
        + f"""\
  - name: silent
    type: shell
    background: true
    depends_on: []
    ready: {{http: "http://127.0.0.1:{closed}/", timeout: 2}}
    run: exec sleep 300
  - {{name: client, type: shell, depends_on: [sick, silent], run: "touch client.ran"}}
""",
    )
    assert result.code == 1
    steps = result.steps
    assert steps["sick"]["status"] == steps["silent"]["status"] == "failed"
    assert steps["sick"]["reason"] == f"not ready within 3s (http://127.0.0.1:{port}/: HTTP 503)"
    assert steps["silent"]["reason"] == (
        f"not ready within 2s (http://127.0.0.1:{closed}/: Connection refused)"
    )
    assert steps["client"]["status"] == "blocked"
    assert not (tmp_path / "client.ran").exists()


def test_ready_cmd_passes_once_a_file_exists_with_the_steps_env_and_cwd(tmp_path):
    (tmp_path / "svc").mkdir()
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: svc
            type: shell
            background: true
            cwd: svc
            env: {GREETING: hello}
            ready:
              cmd: 'echo "$GREETING $PWD $ORCH_STEP" >> tries; test -f made'
              interval: 0.05
              timeout: 15
            run: |
              # up once its readiness was tried and refused twice
              until [ "$(wc -l < tries 2>/dev/null || echo 0)" -ge 2 ]; do sleep 0.02; done
              touch made
              exec sleep 300
          - {name: client, type: shell, run: "cp svc/tries tries.seen"}
        """,
    )
    assert result.code == 0, result.steps
    tries = (tmp_path / "svc" / "tries").read_text().splitlines()
    assert len(tries) >= 3
    assert set(tries) == {f"hello {tmp_path / 'svc'} svc"}
    # the dependent started after the try that passed: nothing tried after that one
    assert (tmp_path / "tries.seen").read_text().splitlines() == tries
    events = result.events
    assert event_index(events, "step_ready", "svc") < event_index(events, "step_started", "client")


def test_ready_cmd_not_ready_in_time_fails_and_leaves_no_try_running(tmp_path):
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: failing
            type: shell
            background: true
            ready: {cmd: "exit 3", timeout: 1, interval: 0.05}
            run: exec sleep 300
          - name: hanging
            type: shell
            background: true
            depends_on: []
            ready: {cmd: "echo $$ > trypid; exec sleep 300", timeout: 1}
            run: exec sleep 300
          - {name: client, type: shell, depends_on: [failing, hanging], run: "true"}
        """,
    )
    assert result.code == 1
    steps = result.steps
    assert steps["failing"]["reason"] == "not ready within 1s (cmd 'exit 3' exit code 3)"
    # the try is cut at what was left of the timeout: killed as the step failed, or just before
    assert steps["hanging"]["reason"].startswith("not ready within 1s (cmd ")
    assert steps["client"]["status"] == "blocked"
    assert not alive(read_pid(tmp_path / "trypid"))
    assert not marked(result.run_dir)
    assert not [e for e in result.events if "left running" in e.get("text", "")]


@pytest.fixture
def long_tries(monkeypatch):
    """A try may run for 300 s: one still running after its step stopped waiting could only
    have been left there (it is killed at once, not at its limit)."""
    monkeypatch.setattr(core.readiness, "TRY_LIMIT", 300.0)


HANGING_TRY = """
steps:
  - name: svc
    type: shell
    background: true
    ready: {cmd: "echo $$ >> trypids; exec sleep 300", timeout: 600}
    run: |
      until [ -s trypids ]; do sleep 0.02; done
      %s
  - {name: client, type: shell, run: "true"}
"""


def test_a_step_that_dies_while_its_ready_cmd_is_tried_ends_the_try(tmp_path, runners, long_tries):
    runner = make_runner(tmp_path, HANGING_TRY % "exit 3", interactive=True)
    runners.append(runner)
    runner.start()
    wait_for(lambda: runner.snapshot().steps["svc"].status == "failed")
    svc = runner.snapshot().steps["svc"]
    assert "before it was ready" in svc.reason
    (pid,) = map(int, (tmp_path / "trypids").read_text().split())
    assert_gone([pid])  # while the run is still open: its end's clean-up did not do it
    assert (tmp_path / "trypids").read_text().split() == [str(pid)], "tried again after"
    assert runner.snapshot().steps["client"].status == "blocked"
    runner.close()
    assert runner.wait(15) == 1


def test_the_run_stopped_while_a_ready_cmd_is_tried_leaves_nothing(tmp_path, runners, long_tries):
    runner = make_runner(tmp_path, HANGING_TRY % "exec sleep 300", interactive=True)
    runners.append(runner)
    runner.start()
    pid = read_pid(tmp_path / "trypids")
    runner.stop_run()
    assert runner.wait(15) is not None
    assert not alive(pid)
    assert (tmp_path / "trypids").read_text().split() == [str(pid)], "tried again after"
    assert runner.snapshot().steps["svc"].status == "cancelled"
    assert not marked(runner.run_dir)
    # the try was the readiness check's to end, not a leftover of the step's
    events = read_events(runner.run_dir)
    assert not [e for e in events if "left running" in e.get("text", "")], events


def _stranger(tmp_path, port: int):
    """Another program already answering 200 on ``port`` (started by the test, not the run)."""
    import subprocess

    folder = tmp_path / "stranger"
    folder.mkdir()
    (folder / "server.py").write_text(SERVER)
    proc = subprocess.Popen([PY, "server.py", str(port), "0"], cwd=folder)
    wait_for(lambda: core.readiness.answers("127.0.0.1", port), 10, "the stranger up")
    return proc


def test_ready_http_on_a_port_another_program_holds_does_not_start(tmp_path):
    """A stranger already answering on the URL's port: the step is not started (its own
    server would die with "Address already in use"), as for ``ready: {port}``, and says who
    holds it. The stranger made the step ready and its dependents talked to it (r16-review)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    stranger = _stranger(tmp_path, port)
    try:
        result = run_recipe(
            tmp_path,
            "steps:\n"
            "  - name: web\n"
            "    type: shell\n"
            "    background: true\n"
            "    run: exec sleep 30\n"
            f'    ready: {{http: "{url}", interval: 0.05, timeout: 2}}\n'
            "  - {name: client, type: shell, run: echo talked}\n",
        )
    finally:
        stranger.kill()
        stranger.wait()
    web = result.steps["web"]
    assert result.code == 1 and web["status"] == "failed", web
    assert f"port {port} is already in use by" in web["reason"], web["reason"]
    assert result.steps["client"]["status"] == "blocked"


def test_ready_http_is_met_by_a_server_that_left_the_steps_group(tmp_path):
    """A server that daemonizes (setsid, pg_ctl start; docker's proxy) is not in the step's
    process group: its 2xx still makes the step ready. A check of who answered refused it
    (r17-review), where the URL answering is what was asked for."""
    (tmp_path / "server.py").write_text(SERVER)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    result = run_recipe(
        tmp_path,
        "steps:\n"
        "  - name: web\n"
        "    type: shell\n"
        "    background: true\n"
        f"    run: setsid {json.dumps(PY)} server.py {port} 0 & echo $! > server.pid; exec sleep 30\n"
        f'    ready: {{http: "{url}", interval: 0.05, timeout: 10}}\n'
        "  - {name: client, type: shell, run: echo talked}\n",
    )
    try:
        assert result.code == 0, result.steps
        assert result.steps["client"]["status"] == "succeeded"
    finally:
        assert_gone([read_pid(tmp_path / "server.pid")])


def test_a_ready_cmd_still_tried_at_the_timeout_is_quoted_on_one_line(tmp_path):
    """The timeout comes while the first try still runs: the reason quotes the command on one
    line, cut, as a try's answer does. It held the raw block, newlines and all, in the reason,
    the event line and state.json (r16-review)."""
    result = run_recipe(
        tmp_path,
        """
        steps:
          - name: db
            type: shell
            background: true
            run: exec sleep 30
            ready:
              timeout: 1
              cmd: |
                # wait for the database to take connections
                sleep 10
                echo up
        """,
    )
    reason = result.steps["db"]["reason"]
    assert result.code == 1 and "\n" not in reason, reason
    assert reason.startswith("not ready within 1s (cmd '# wait for the database to take"), reason
