"""The run's end stops dependents before what they depend on (core.stoporder): the web
server before its database, the tests before the service they test, whichever way the run
ends. Real shell services whose traps write, as they go, the order they were stopped in."""

from __future__ import annotations

import signal

import pytest

from tests.conftest import make_runner, wait_for

#: each step writes its name to ``order`` as it is stopped; web takes a moment to stop (it
#: drains its connections): signalled at once with it, db was gone first
STACK = """
steps:
  - name: db
    type: shell
    background: true
    run: "trap 'echo db >> {order}; exit 0' INT TERM; while true; do sleep 0.05; done"
  - name: web
    type: shell
    background: true
    depends_on: [db]
    run: "trap 'sleep 0.3; echo web >> {order}; exit 0' INT TERM; while true; do sleep 0.05; done"
  - name: tests
    type: shell
    depends_on: [web]
    run: "trap 'sleep 0.3; echo tests >> {order}; exit 0' INT TERM; touch {up}; {work}"
  - name: other
    type: shell
    background: true
    depends_on: []
    run: "trap 'echo other >> {order}; exit 0' INT TERM; while true; do sleep 0.05; done"
"""


@pytest.mark.parametrize("end", ["ctrl-c", "close", "work-done"])
def test_the_run_stops_dependents_before_what_they_depend_on(tmp_path, runners, end):
    order, up = tmp_path / "order", tmp_path / "up"
    work = "true" if end == "work-done" else "while true; do sleep 0.05; done"
    runner = make_runner(tmp_path, STACK.format(order=order, up=up, work=work))
    runners.append(runner)
    runner.start()
    wait_for(up.exists, 10, "the tests step to start")
    if end == "ctrl-c":
        runner.stop_run(signal.SIGINT)
    elif end == "close":
        runner.close()
    assert runner.wait(30) is not None
    stopped = order.read_text().split()
    expected = ["web", "db"] if end == "work-done" else ["tests", "web", "db"]
    assert [name for name in stopped if name != "other"] == expected, stopped
    assert "other" in stopped  # needed by nothing: stopped at once, beside the first
    steps = runner.snapshot().steps
    assert steps["db"].ended >= steps["web"].ended, "db ended before web"
