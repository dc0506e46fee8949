"""The app's inbox of events while its loop does not drain it.

``a`` (attach to a session) runs the multiplexer on the app's own loop: nothing is drawn nor
drained until the user detaches from the session, maybe hours later, while the client's reader
thread goes on receiving the run's events. The app on a real client of a real socket (Pilot);
its loop is held the same way, by the test waiting on it, not by a multiplexer (``suspend`` is
not available under the headless driver: tests/test_tui_attach.py does ``a`` on a pty)."""

from __future__ import annotations

import threading

from core import events as ev
from core.client import connect
from core.control import LocalControl
from tests.conftest import make_runner
from tests.tui_helpers import SIZE, close_runner, until

STEPS = 150
#: the app's cap in this test: the run makes some 300 events while the app's loop is held
CAP = 40


def _recipe() -> str:
    """A gate (a file the test makes), then STEPS quick steps after it, then ``last``."""
    lines = [
        "steps:",
        "  - name: gate",
        "    type: shell",
        '    run: while [ ! -e "$ORCH_RUN_DIR/go" ]; do sleep 0.05; done; echo gate open',
    ]
    for i in range(STEPS):
        lines.append(f"  - {{name: s{i}, type: shell, cmd: 'true', depends_on: [gate]}}")
    names = ", ".join(f"s{i}" for i in range(STEPS))
    lines.append(f"  - {{name: last, type: shell, cmd: 'true', depends_on: [{names}]}}")
    return "\n".join(lines) + "\n"


async def test_an_app_whose_loop_is_held_keeps_a_bounded_inbox_and_shows_the_run_after(
    tmp_path, monkeypatch
):
    """Held while the run makes ~300 events, the app keeps at most INBOX_EVENTS of them (it
    kept each one: an app left in a session for an hour with a few chatty services grew 1 MB a
    minute); let go, it shows the run as it is, every step done."""
    from core.server import RunServer
    from tui import app as app_module
    from tui.app import make_app
    from tui.widgets import LogPane

    monkeypatch.setattr(app_module, "INBOX_EVENTS", CAP, raising=False)
    runner = make_runner(tmp_path, _recipe(), interactive=True)
    server = RunServer(LocalControl(runner), runner.rundir, run_id=runner.run_id)
    server.start()
    runner.start()
    control = connect(tmp_path / "run", client="tui")
    done, received, last = threading.Event(), [], []

    def watch(event: ev.Event) -> None:  # the same client's events, as the app's inbox gets them
        received.append(event.seq)
        if isinstance(event, ev.StepFinished) and event.step == "last":
            last.append(event.seq)
            done.set()

    try:
        app = make_app(control, detachable=True)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app._run.steps["gate"].status == "running", 10, "gate")
            control.subscribe(watch)
            (tmp_path / "run" / "go").touch()
            # the app's loop is held here, as a session attached with `a` holds it
            assert done.wait(60), "the run's steps did not end"
            held = len(app._inbox)
            assert len(received) > 3 * CAP
            assert held <= CAP + 1, f"{held} events held for {len(received)} received"
            await until(
                pilot,
                lambda: app._counts.get("succeeded") == STEPS + 2,
                10,
                "the app to show every step succeeded",
            )
            assert app._run.seq >= last[0]
            assert app._run.steps["last"].status == "succeeded"
            # the log shown (the first step's, selected) has what it printed as it ended
            pane = app.query_one("#log-main", LogPane)
            assert pane.step == "gate"
            await until(pilot, lambda: "gate open" in pane.lines, 10, "gate's last line shown")
    finally:
        control.close()
        close_runner(runner)
        server.close(str(runner.status), runner.exit_code)
        runner.rundir.close()
