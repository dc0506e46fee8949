"""Every key of the TUI (contract.md, "TUI keys") against a real runner and real processes.

The app runs headless (``app.run_test``) around a real :class:`core.runner.Runner`; keys go in
through the Pilot, and each test waits (polling with a deadline, never a bare sleep) for what a
user would see: the runner's state, the tree's labels, the log pane's lines and subtitle.
"""

from __future__ import annotations

import io
import re
import time
import uuid
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from tests import tui_helpers
from tests.conftest import alive, needs_screen, read_events, read_state, screen_session_pids
from tests.tui_helpers import (
    SIZE,
    footer_keys,
    main_pane,
    screen_lines,
    select_session,
    selected,
    send_key,
    status,
    step_pid,
    tree_label,
    until,
    until_status,
    write_module,
)

# a fixture (a plain assignment, so the test functions' arguments do not shadow an import)
orch = tui_helpers.orch


def _tree(app):
    from tui.widgets import StepTree

    return app.query_one(StepTree)


def _events_of(runner, step: str, kind: str | None = None, **match) -> list[dict]:
    """events.jsonl's events about ``step`` (of ``kind``, with ``match``); [] while unreadable."""
    try:
        events = read_events(runner.run_dir)
    except (OSError, ValueError):  # not written yet, or a line half written
        return []
    return [
        e
        for e in events
        if e.get("step") == step
        and kind in (None, e["type"])
        and all(e.get(k) == v for k, v in match.items())
    ]


async def _type(pilot, text: str) -> None:
    await pilot.press(*["space" if c == " " else c for c in text])


# ------------------------------------------------------------------------------ moving
async def test_opens_on_first_step_and_moves_with_the_log(orch):
    app, runner = orch(
        """
        steps:
          - {name: one, type: shell, run: echo output-of-one}
          - {name: two, type: shell, run: echo output-of-two}
          - {name: three, type: shell, run: echo output-of-three}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "three", "succeeded")
        pane = main_pane(app)
        assert selected(app) == "one"
        assert app.focused is _tree(app)
        await until(pilot, lambda: pane.lines == ["output-of-one"], what="one's log")
        assert pane.step == "one"

        await pilot.press("down")
        await until(pilot, lambda: selected(app) == "two" and pane.lines == ["output-of-two"])
        await pilot.press("down")
        await until(pilot, lambda: selected(app) == "three" and pane.lines == ["output-of-three"])
        await pilot.press("up")
        await until(pilot, lambda: selected(app) == "two" and pane.lines == ["output-of-two"])
        await pilot.press("enter")
        await until(pilot, lambda: selected(app) == "two" and pane.step == "two")
        await pilot.press("home")
        await until(pilot, lambda: selected(app) == "one" and pane.lines == ["output-of-one"])
        await pilot.press("end")
        await until(pilot, lambda: selected(app) == "three" and pane.lines == ["output-of-three"])
        assert "three" in str(pane.border_title)


async def test_f_and_shift_f_go_to_the_next_and_previous_failed_step_around_the_tree(orch):
    """f / F select the next / previous failed (or timed-out) step, wrapping around; a step
    blocked by a failure is passed over: the failure it names is the one to look at."""
    app, runner = orch(
        """
        steps:
          - {name: fine, type: shell, run: "true", depends_on: []}
          - {name: broke, type: shell, run: "exit 3", depends_on: []}
          - {name: waits, type: shell, run: "true", depends_on: [broke]}
          - {name: also_fine, type: shell, run: "true", depends_on: []}
          - {name: slow, type: shell, run: "sleep 30", timeout: 0.2, depends_on: []}
          - {name: last, type: shell, run: "true", depends_on: []}
        """
    )
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        tree = _tree(app)
        for name, wanted in (("broke", "failed"), ("slow", "timed_out"), ("last", "succeeded")):
            await until_status(pilot, runner, name, wanted)
            await until(pilot, lambda: tree._states[name][0].status == wanted)  # noqa: B023
        assert status(runner, "waits") == "blocked"
        assert selected(app) == "fine"
        for key, expected in (("f", "broke"), ("f", "slow"), ("f", "broke"), ("F", "slow")):
            await pilot.press(key)
            await until(pilot, lambda: selected(app) == expected, what=f"{key} to {expected}")  # noqa: B023
        await pilot.press("F")
        await until(pilot, lambda: selected(app) == "broke")
        await until(pilot, lambda: main_pane(app).step == "broke", what="broke's log")
        assert not app._notifications


async def test_f_goes_to_the_next_failed_step_from_the_log_pane_too(orch):
    """Reading a failure's log (the log pane has the focus), `f` goes on to the next failed
    step, its log shown in the pane, the focus kept; `F` back. The keys were the tree's only:
    with the log focused they did nothing at all, not even the "no step has failed" notice."""
    app, runner = orch(
        """
        steps:
          - {name: one, type: shell, run: "echo first; exit 3", depends_on: []}
          - {name: fine, type: shell, run: "true", depends_on: []}
          - {name: two, type: shell, run: "echo second; exit 4", depends_on: []}
        """
    )
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await until_status(pilot, runner, "one", "failed")
        await until_status(pilot, runner, "two", "failed")
        pane = main_pane(app)
        await pilot.press("tab")  # into the log: reading it
        assert app.focused is pane and selected(app) == "one"
        await pilot.press("f")
        await until(pilot, lambda: selected(app) == "two", what="f to two")
        await until(pilot, lambda: pane.lines == ["second"], what="two's log in the pane")
        assert app.focused is pane
        await pilot.press("F")
        await until(pilot, lambda: selected(app) == "one", what="F back to one")


async def test_f_without_a_failed_step_says_so_and_stays(orch):
    app, runner = orch(
        "steps: [{name: one, type: shell, run: 'true'}, {name: two, type: shell, run: 'true'}]"
    )
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await until_status(pilot, runner, "two", "succeeded")
        await pilot.press("down")
        await until(pilot, lambda: selected(app) == "two")
        for key in ("f", "F"):
            await pilot.press(key)
            await until(pilot, lambda: app._notifications, what="a notice")
            assert [n.message for n in app._notifications] == ["no step has failed"]
            assert selected(app) == "two"
            app.clear_notifications()


async def test_a_key_moves_the_cursor_in_a_frame_before_the_log_pane_follows(orch):
    """Down paints the tree's new cursor row first; the log pane (a file read and a repaint of
    the whole pane) follows in the next frame. In one frame together, the cursor's move waited
    for the pane: 30-130 ms during a big run instead of 3-15."""
    steps = "\n".join(f"  - {{name: s{i}, type: shell, run: echo out-{i}}}" for i in range(4))
    app, runner = orch(f"steps:\n{steps}\n")
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "s3", "succeeded")
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines == ["out-0"], what="s0's log")
        frames: list[tuple[str | None, str | None]] = []  # (the cursor's step, the pane's)
        screen = app.screen
        paint = screen._compositor_refresh

        def painted() -> None:
            paint()
            frames.append((selected(app), pane.step))

        screen._compositor_refresh = painted
        for step in ("s1", "s2", "s3"):
            del frames[:]
            send_key(app, "down")
            await until(pilot, lambda s=step: pane.lines == [f"out-{s[1:]}"], what=f"{step}'s log")
            moved = [f for f in frames if f[0] == step]
            assert moved and moved[0][1] != step, frames


# ------------------------------------------------------------------------------ s, r, k
async def test_skip_a_failed_step_lets_its_dependent_run(orch):
    app, runner = orch(
        """
        steps:
          - {name: bad, type: shell, run: echo broken; exit 3}
          - {name: after, type: shell, run: echo after-ran}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "bad", "failed")
        await until_status(pilot, runner, "after", "blocked")
        tree = _tree(app)
        assert selected(app) == "bad"
        assert tree.check_action("skip", ()) is True
        assert "s" in app.screen.active_bindings
        await until(pilot, lambda: "s" in footer_keys(app), what="s in the footer")
        assert "← bad" in tree_label(app, "after")

        await pilot.press("s")
        await until_status(pilot, runner, "bad", "skipped")
        await until_status(pilot, runner, "after", "succeeded")
        assert (runner.run_dir / "logs" / "after.log").read_text() == "after-ran\n"

        # on a succeeded step, s is not offered: not allowed, not bound, not in the footer
        await pilot.press("down")
        await until(pilot, lambda: selected(app) == "after")
        assert tree.check_action("skip", ()) is False
        assert "s" not in app.screen.active_bindings
        assert "r" in app.screen.active_bindings  # a succeeded step may be run again
        await until(pilot, lambda: "s" not in footer_keys(app), what="s gone from the footer")
        await pilot.press("s")  # ignored
        await pilot.press("r")  # a later key, handled (and sent to the runner) after s
        await until(pilot, lambda: _events_of(runner, "after", "step_finished", attempt=2))
        events = _events_of(runner, "after")
        assert not [
            e for e in events if e.get("status") == "skipped" or "skip" in e.get("text", "")
        ]
        assert _events_of(runner, "bad", "step_status", status="skipped")  # what a skip leaves
        assert status(runner, "after") == "succeeded"


async def test_retry_a_failed_step_then_its_dependent_runs(orch, tmp_path: Path):
    marker = tmp_path / "marker"
    app, runner = orch(
        f"""
        steps:
          - name: flaky
            type: shell
            run: |
              if [ -f '{marker}' ]; then echo found the marker; else echo no marker; exit 1; fi
          - {{name: after, type: shell, run: echo after-ran}}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "flaky", "failed")
        await until_status(pilot, runner, "after", "blocked")
        assert runner.state()["steps"]["flaky"]["attempts"] == 1
        assert "r" in app.screen.active_bindings

        marker.write_text("")
        await pilot.press("r")
        await until_status(pilot, runner, "flaky", "succeeded")
        await until_status(pilot, runner, "after", "succeeded")
        assert runner.state()["steps"]["flaky"]["attempts"] == 2
        await until(pilot, lambda: "×2" in tree_label(app, "flaky"), what="×2 in the tree")
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines[-1:] == ["found the marker"], what="attempt 2 log")
        log = (runner.run_dir / "logs" / "flaky.log").read_text()
        assert log == "no marker\n--- attempt 2 ---\nfound the marker\n"


async def test_stop_a_running_step(orch):
    app, runner = orch(
        """
        steps:
          - {name: sleeper, type: shell, cmd: sleep, args: ["100"]}
          - {name: after, type: shell, run: "true"}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "sleeper", "running")
        pid = step_pid(runner, "sleeper")
        assert pid is not None and alive(pid)
        assert "k" in app.screen.active_bindings
        started = time.monotonic()
        await pilot.press("k")
        await until_status(pilot, runner, "sleeper", "cancelled", timeout=4)
        took = time.monotonic() - started
        print(f"k -> cancelled in {took:.2f}s")
        await until(pilot, lambda: not alive(pid), 4, f"sleep (pid {pid}) to be gone")
        assert took < 4  # SIGTERM ends sleep at once: well within the 5 s grace
        await until_status(pilot, runner, "after", "blocked")
        assert "k" not in app.screen.active_bindings


async def test_r_restarts_a_running_service_and_leaves_its_dependents_alone(orch, tmp_path):
    app, runner = orch(
        """
        steps:
          - name: svc
            type: shell
            background: true
            health: {cmd: "true", interval: 0.05}
            run: echo $$ >> starts; echo "start $(wc -l < starts)"; exec sleep 100
          - {name: user, type: shell, cmd: sleep, args: ["100"]}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "user", "running")
        await until(pilot, lambda: "♥" in tree_label(app, "svc"), what="svc healthy in the tree")
        assert selected(app) == "svc"
        assert app.screen.active_bindings["r"].binding.description == "Restart"
        first, user = step_pid(runner, "svc"), step_pid(runner, "user")

        await pilot.press("r")
        await until(pilot, lambda: runner.snapshot().steps["svc"].restarts == 1, what="restart")
        await until(pilot, lambda: not alive(first), 4, f"the first start (pid {first}) gone")
        await until_status(pilot, runner, "svc", "ready")
        await until(pilot, lambda: "↻1" in tree_label(app, "svc"), what="↻1 in the tree")
        await until(pilot, lambda: main_pane(app).lines[-1:] == ["start 2"], what="its new log")
        assert runner.snapshot().steps["svc"].restart_reason == "manual"
        assert (tmp_path / "starts").read_text().count("\n") == 2
        assert step_pid(runner, "user") == user and alive(user)  # its dependent: undisturbed
        # events.jsonl is written within the store's interval: once the svc's second start is
        # there, everything before it is too
        await until(pilot, lambda: len(_events_of(runner, "svc", "step_started")) == 2, what="")
        assert len(_events_of(runner, "user", "step_started")) == 1


async def test_a_step_asked_to_stop_says_so_until_it_has_ended(orch):
    """k on a service that takes its grace to end (it ignores SIGTERM, or drains its
    connections): its row said "● svc" (up) for the whole grace, as if k had done nothing.
    It says "stopping" until it has ended, and so does ctl status."""
    from tui.format import step_status_words

    app, runner = orch(
        """
        steps:
          - {name: svc, type: shell, background: true, grace: 30,
             run: "trap '' TERM; while true; do sleep 0.05; done"}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "svc", "ready")
        await pilot.press("k")
        await until(pilot, lambda: " stopping" in str(tree_label(app, "svc")), what="stopping")
        assert str(tree_label(app, "svc")).startswith("● svc"), tree_label(app, "svc")
        assert step_status_words(runner.snapshot().steps["svc"]) == "stopping"
        runner.stop_run(force=True)  # not its 30 s of grace
        await until_status(pilot, runner, "svc", "stopped")
        await until(pilot, lambda: "stopping" not in str(tree_label(app, "svc")), what="ended")
        assert step_status_words(runner.snapshot().steps["svc"]) == "stopped"


async def test_k_again_on_a_step_taking_its_grace_kills_it_now(orch):
    """k on a step that ignores SIGTERM (grace 60 s): its row says stopping and the footer
    offers ``k Kill step``; k again kills it at once (SIGKILL), as q again kills the run's
    steps. The footer offered ``k Stop`` again, and k sent SIGTERM once more and said
    "stop: svc": the step took its whole grace."""
    from textual.widgets._footer import FooterKey

    app, runner = orch(
        """
        steps:
          - {name: svc, type: shell, background: true, grace: 60,
             run: "trap '' TERM; while true; do sleep 0.05; done"}
        """
    )

    def offered() -> set[tuple[str, str]]:
        return {(key.key, key.description) for key in app.screen.query(FooterKey)}

    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "svc", "ready")
        await until(pilot, lambda: ("k", "Stop") in offered(), what="k Stop")
        await pilot.press("k")
        await until(pilot, lambda: runner.snapshot().steps["svc"].stopping, what="stopping")
        await until(pilot, lambda: ("k", "Kill step") in offered(), what="k Kill step")
        assert ("k", "Stop") not in offered(), offered()
        await pilot.press("k")
        await until_status(pilot, runner, "svc", "stopped", timeout=10)
        svc = runner.snapshot().steps["svc"]
        assert (svc.signal, svc.stopping) == (9, False), svc


async def test_a_stopped_service_is_not_marked_healthy(orch):
    """A healthy service the user stops (k): its row kept its green ♥ and ``ctl status`` /
    the summary said "bg; healthy; …" of a service that was not there any more."""
    from tui.format import service_note

    app, runner = orch(
        """
        steps:
          - name: svc
            type: shell
            background: true
            health: {cmd: "true", interval: 0.05}
            cmd: sleep
            args: ["100"]
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "♥" in tree_label(app, "svc"), what="svc healthy in the tree")
        assert "healthy" in service_note(runner.snapshot().steps["svc"])
        await pilot.press("k")
        await until_status(pilot, runner, "svc", "stopped")
        await until(pilot, lambda: "♥" not in tree_label(app, "svc"), what="no ♥ once stopped")
        assert str(tree_label(app, "svc")).startswith("■ svc"), str(tree_label(app, "svc"))
        assert "healthy" not in service_note(runner.snapshot().steps["svc"])


async def test_the_footer_keeps_its_keys_when_the_terminal_focus_comes_back(orch):
    """Focus leaving and coming back (tmux's focus events) republishes the screen's keys: the
    footer shows the same ones and keeps them (Textual's rebuilt every key widget each time,
    tens of ms that keys typed meanwhile waited for); a change of keys still rebuilds it."""
    from textual import events
    from textual.widgets._footer import FooterKey

    app, runner = orch(
        """
        steps:
          - {name: bad, type: shell, run: exit 3}
          - {name: good, type: shell, run: 'true', depends_on: []}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "bad", "failed")
        await until_status(pilot, runner, "good", "succeeded")  # nothing changes any more
        await until(pilot, lambda: "s" in footer_keys(app), what="s in the footer")
        await pilot.pause()  # a rebuild under way is done
        shown = list(app.screen.query(FooterKey))
        app.post_message(events.AppBlur())
        await until(pilot, lambda: not app.app_focus, what="the focus gone")
        app.post_message(events.AppFocus())
        await until(pilot, lambda: app.app_focus, what="the focus back")
        await pilot.pause()  # the footer's rebuild, if any, is queued after the next refresh
        await pilot.pause()
        assert list(app.screen.query(FooterKey)) == shown

        await pilot.press("down")  # a succeeded step: no s
        await until(pilot, lambda: "s" not in footer_keys(app), what="s gone from the footer")


# ------------------------------------------------------------------------------ q
@pytest.mark.parametrize("key", ["q", "ctrl+q", "ctrl+c"])
async def test_quit_while_running_asks_and_n_or_escape_cancel(orch, key: str):
    from tui.screens.confirm_quit import ConfirmQuit

    app, runner = orch(
        """
        steps:
          - {name: sleeper, type: shell, cmd: sleep, args: ["100"]}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "sleeper", "running")
        for cancel in ("n", "escape"):
            await pilot.press(key)
            await until(pilot, lambda: isinstance(app.screen, ConfirmQuit), what="the question")
            depth = len(app.screen_stack)
            await pilot.press(key)  # again: the same question, not a second one
            assert len(app.screen_stack) == depth and app.is_running
            await pilot.press(cancel)
            await until(pilot, lambda: not isinstance(app.screen, ConfirmQuit), what="no question")
            assert app.is_running
            assert status(runner, "sleeper") == "running"
            assert not runner.finished
        await pilot.press(key)
        await until(pilot, lambda: isinstance(app.screen, ConfirmQuit), what="the question")
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, 20, "the app to exit")
    assert app.return_value == 130
    assert read_state(runner.run_dir)["steps"]["sleeper"]["status"] == "cancelled"


async def test_a_sigterm_to_the_app_under_the_quit_question_takes_the_question_away(orch):
    """``q`` shows the question, then the app gets SIGTERM (the run stops, as Ctrl-C stops a
    headless one): the question stayed up, offering a ``d`` and a ``y`` that no longer did
    anything, while the header said "stopping"."""
    from tui.screens.confirm_quit import ConfirmQuit

    app, runner = orch(
        """
        steps:
          - {name: sleeper, type: shell, cmd: sleep, args: ["100"]}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "sleeper", "running")
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmQuit), what="the question")
        app.interrupt()  # what the app's SIGTERM handler calls
        await until(pilot, lambda: not isinstance(app.screen, ConfirmQuit), what="no question")
        await until(pilot, lambda: not app.is_running, 20, "the app to exit")
    assert app.return_value == 130


async def test_quit_asks_while_a_service_waits_out_its_restart_delay(orch):
    """A dev stack whose one service crashed and waits to start again (↻ in the tree and the
    header): q ended the run at once, unasked, as if nothing ran; it asks, naming the service
    as restarting, and n keeps the run, its service restarted when due."""
    from tui.screens.confirm_quit import ConfirmQuit

    app, runner = orch(
        """
        steps:
          - {name: api, type: shell, background: true, restart: always, restart_delay: 30,
             run: exit 1}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app._run.steps["api"].restarting, 10, "api to wait")
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmQuit), what="the question")
        assert app.screen.running == ["api (restarting)"]
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmQuit), what="no question")
        assert app.is_running and not runner.finished
        assert runner.snapshot().steps["api"].restarting
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmQuit), what="the question")
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, 20, "the app to exit")
    assert read_state(runner.run_dir)["steps"]["api"]["status"] == "stopped"


@needs_screen
async def test_quit_yes_stops_steps_keeps_sessions_and_exits(orch, screendir):
    from tui.screens.confirm_quit import ConfirmQuit

    session = f"orchtui-q-{uuid.uuid4().hex[:8]}"
    app, runner = orch(
        f"""
        steps:
          - {{name: sess, type: session, action: create, session: {session}}}
          - {{name: fg, type: shell, cmd: sleep, args: ["100"], depends_on: [sess]}}
          - {{name: bg, type: shell, cmd: sleep, args: ["100"], background: true, depends_on: []}}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "sess", "succeeded", timeout=20)
        await until_status(pilot, runner, "fg", "running")
        await until_status(pilot, runner, "bg", "ready")
        pids = [step_pid(runner, "fg"), step_pid(runner, "bg")]
        assert all(pids) and all(alive(p) for p in pids)
        assert screen_session_pids(screendir, session)

        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmQuit), what="the question")
        assert "fg" in str(app.screen.running) and "bg" in str(app.screen.running)
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, 20, "the app to exit")
    assert app.return_value == 130  # closed before its foreground steps were done
    assert runner.finished
    state = read_state(runner.run_dir)
    assert state["steps"]["fg"]["status"] == "cancelled"
    assert state["steps"]["bg"]["status"] == "stopped"
    assert state["steps"]["sess"]["status"] == "succeeded"
    for pid in pids:
        assert not alive(pid), f"step process {pid} survived the quit"
    assert screen_session_pids(screendir, session), "quitting killed the session"


async def test_quit_when_nothing_runs_exits_at_once(orch):
    from tui.screens.confirm_quit import ConfirmQuit

    app, runner = orch(
        """
        steps:
          - {name: one, type: shell, run: echo done}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "one", "succeeded")
        await pilot.press("q")
        assert not isinstance(app.screen, ConfirmQuit)
        await until(pilot, lambda: not app.is_running, 10, "the app to exit")
    assert app.return_value == 0
    assert runner.finished and runner.exit_code == 0


async def test_once_quitting_no_screen_opens_over_the_ending_app(orch, tmp_path: Path):
    """`q`, `y`: while the run stops (a step taking its grace), `?`, `S`, `/` and the palette
    open nothing: the app is ending. A help screen opened as it exited crashed it with a
    traceback (``orch-tui`` attached to a run daemon, `?` typed right after `y`)."""
    from tui.screens.confirm_quit import ConfirmQuit

    stopping = tmp_path / "stopping"
    app, runner = orch(
        f"""
        steps:
          - name: slow_to_stop
            type: shell
            run: trap 'touch {stopping}; sleep 1; exit 0' TERM; sleep 100 & wait
            grace: 5
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "slow_to_stop", "running")
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmQuit), what="the question")
        await pilot.press("y")
        await until(pilot, stopping.exists, what="the step stopping")
        for key in ("question_mark", "S", "slash", "ctrl+p"):
            await pilot.press(key)
            assert app.screen is app.screen_stack[0], f"{key} opened {app.screen}"
        await until(pilot, lambda: not app.is_running, 10, "the app to exit")
    assert app.return_value == 130  # closed before its foreground step was done


@pytest.mark.parametrize("again", ["q", "ctrl+c"])
async def test_q_again_while_the_run_stops_kills_its_steps_at_once(orch, tmp_path: Path, again):
    """`q`, `y`, then a service that takes its 60 s grace: the footer offers `q Kill now` (no
    `d`, which did nothing then), and `q` or Ctrl+C kills every step at once, as a second
    Ctrl-C does headless. Both did nothing: the footer said `q Quit`, `d Detach`, and the app
    waited out the grace."""
    from textual.widgets._footer import FooterKey

    from tui.screens.confirm_quit import ConfirmQuit

    up = tmp_path / "up"
    app, runner = orch(
        f"""
        steps:
          - name: svc
            type: shell
            background: true
            grace: 60
            run: "trap '' TERM; touch {up}; while true; do sleep 0.05; done"
          - {{name: work, type: shell, cmd: sleep, args: ["100"], depends_on: [svc]}}
        """,
        detachable=True,
    )

    def offered() -> set[tuple[str, str]]:
        return {(key.key, key.description) for key in app.screen.query(FooterKey)}

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, up.exists, what="svc to start")
        await until_status(pilot, runner, "work", "running")
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmQuit), what="the question")
        await pilot.press("y")
        await until(pilot, lambda: runner.snapshot().steps["svc"].stopping, what="svc stopping")
        await until(pilot, lambda: ("q", "Kill now") in offered(), what="q Kill now")
        assert ("q", "Quit") not in offered() and "d" not in footer_keys(app), offered()
        await pilot.press(again)
        await until(pilot, lambda: not app.is_running, 10, "the app to exit")
    assert app.return_value == 130
    svc = runner.snapshot().steps["svc"]
    assert (svc.status, svc.signal) == ("stopped", 9)  # a service up: stopped by `y`


# ------------------------------------------------------------------------------ ?, p
async def test_help_opens_and_escape_closes(orch):
    from tui.screens.help import HelpScreen

    app, runner = orch("steps:\n  - {name: one, type: shell, run: echo x}\n")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help screen")
        console = Console(width=100, record=True, file=io.StringIO())
        console.print(app.screen.query_one("#help-body").content)  # what the help shows
        body = console.export_text()
        for key in ("skip the selected step", "retry", "attach", "quit"):
            assert key in body
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="help closed")
        assert app.focused is _tree(app)


def test_help_says_what_every_key_in_the_footer_does():
    """Each key the steps screen's footer can offer (the app's, the tree's, a log's) has a row
    in the help that names what the footer says it does: ``q Kill now`` while the run stops
    was offered with the help saying only "quit" of ``q``."""
    from tui.app import OrchApp
    from tui.screens.help import KEYS
    from tui.widgets import LogPane, StepTree

    shown = {"slash": "/", "question_mark": "?", "end": "End"}
    for owner in (OrchApp, StepTree, LogPane):
        for binding in owner.BINDINGS:
            if not binding.show:
                continue
            key = shown.get(binding.key, binding.key)
            word = binding.description.split()[0].lower()  # "Kill now": kill
            rows = [text for keys, text in KEYS if text and key in keys.split()]
            assert rows, f"{key} ({binding.description}) is not in the help"
            assert any(word in text.lower() for text in rows), (key, binding.description, rows)


async def test_pin_keeps_a_log_beside_and_never_repeats_the_main_pane(orch):
    from tui.widgets import LogPane

    app, runner = orch(
        """
        steps:
          - {name: one, type: shell, run: echo output-of-one}
          - {name: two, type: shell, run: echo output-of-two}
          - {name: three, type: shell, run: echo output-of-three}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "three", "succeeded")
        pinned, pane = app.query_one("#log-pinned", LogPane), main_pane(app)

        def shown() -> tuple[str | None, str | None]:
            """(main pane's step, pinned pane's step if it is on screen)"""
            assert not (pinned.display and pinned.step == pane.step), "the same log twice"
            return pane.step, pinned.step if pinned.display else None

        async def footer_says(words: str) -> None:
            """The footer names what `p` does on the selected step, and only that."""
            other = "p Unpin log" if words == "p Pin log" else "p Pin log"
            await until(pilot, lambda: words in screen_lines(app)[-1], what=words)
            assert other not in screen_lines(app)[-1]

        assert shown() == ("one", None)
        await footer_says("p Pin log")
        await pilot.press("p")  # pins one: beside the others, not beside itself
        await until(pilot, lambda: pinned.step == "one", what="one pinned")
        assert shown() == ("one", None)
        await footer_says("p Unpin log")  # on the pinned step p unpins: the footer says so
        await pilot.press("down")
        await until(pilot, lambda: shown() == ("two", "one"), what="one beside two")
        await footer_says("p Pin log")
        await until(pilot, lambda: pinned.lines == ["output-of-one"], what="one's log pinned")
        assert pinned.region.width > 0 and pane.lines == ["output-of-two"]

        await pilot.press("p")  # on another step: pins that one instead
        await until(pilot, lambda: pinned.step == "two", what="two pinned")
        assert shown() == ("two", None)
        await pilot.press("down")
        await until(pilot, lambda: shown() == ("three", "two"), what="two beside three")
        await pilot.press("up", "up")
        await until(pilot, lambda: shown() == ("one", "two"), what="two beside one")

        await pilot.press("down")
        await footer_says("p Unpin log")
        await pilot.press("p")  # on the pinned step: unpins
        await until(pilot, lambda: pinned.step is None, what="unpinned")
        await footer_says("p Pin log")
        await pilot.press("down")
        await until(pilot, lambda: shown() == ("three", None), what="no pinned pane")


async def test_p_right_after_down_pins_the_step_moved_to(orch):
    """Down then p, both queued at once, from the pinned step: p pins the step the cursor is on
    now. It unpinned: what p does followed the tree's "moved" message, which comes after p."""
    from tui.widgets import LogPane

    app, runner = orch(
        """
        steps:
          - {name: one, type: shell, run: echo output-of-one}
          - {name: two, type: shell, run: echo output-of-two}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "two", "succeeded")
        pinned = app.query_one("#log-pinned", LogPane)
        await pilot.press("p")
        await until(pilot, lambda: "p Unpin log" in screen_lines(app)[-1], what="one pinned")
        send_key(app, "down")  # both queued before the app draws a frame (pilot.press waits)
        send_key(app, "p")
        await until(pilot, lambda: pinned.step != "one", what="the pin moved")
        assert (selected(app), pinned.step) == ("two", "two")


# ------------------------------------------------------------------------------ the log pane
EARLIER = "earlier lines on disk"  # a log pane's border, when it shows only the end


async def test_log_follows_pauses_on_scroll_resumes_on_end_and_searches(orch, tmp_path: Path):
    more = tmp_path / "more"
    app, runner = orch(
        f"""
        steps:
          - name: chatty
            type: shell
            run: |
              for i in $(seq 1 3000); do echo "line $i"; done
              while [ ! -f '{more}' ]; do sleep 0.02; done
              for i in $(seq 3001 3010); do echo "line $i"; done
              exec sleep 100
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines[-1:] == ["line 3000"], what="the last line")
        await until(pilot, lambda: pane.scroll_y == pane.max_scroll_y > 0, what="the tail")
        # following keeps the last FOLLOW_LINES (2,000) of the 3,000 lines, and says so
        assert pane.follow and pane.border_subtitle == f"following · {EARLIER}"

        await pilot.press("tab")
        assert app.focused is pane
        await pilot.press("pageup")
        await until(pilot, lambda: not pane.follow, what="following to pause")
        # paused, the pane holds the whole log: nothing earlier is left out
        assert pane.border_subtitle == "paused · End to follow" and len(pane.lines) == 3000
        frozen_at = pane.scroll_y
        assert frozen_at < pane.max_scroll_y

        more.write_text("")
        await until(pilot, lambda: pane.pending > 0, what="the new output to be counted")
        assert "new bytes" in str(pane.border_subtitle)
        assert pane.scroll_y == frozen_at and pane.lines[-1] == "line 3000"

        await pilot.press("end")
        await until(pilot, lambda: pane.follow and pane.lines[-1:] == ["line 3010"])
        await until(pilot, lambda: pane.scroll_y == pane.max_scroll_y, what="the tail again")
        assert pane.border_subtitle == f"following · {EARLIER}"

        await pilot.press("up")  # one line up also pauses
        await until(pilot, lambda: not pane.follow, what="following to pause on up")
        await pilot.press("end")
        await until(pilot, lambda: pane.follow, what="following again")

        from tui.screens.search import SearchPrompt

        await _search(pilot, app, "line 1234")
        await until(pilot, lambda: not isinstance(app.screen, SearchPrompt))
        await until(pilot, lambda: pane._match is not None, what="a match")
        assert pane.lines[pane._match] == "line 1234"
        await until(
            pilot,
            lambda: pane.scroll_y <= pane._match < pane.scroll_y + pane.size.height,
            what="the match on screen",
        )
        assert str(pane.border_subtitle).startswith("/line 1234")
        assert not pane.follow


async def test_a_search_typed_in_one_burst_with_its_slash_is_whole(orch):
    """`/beta` and Enter in one burst (typed fast, pasted, or while the app is busy): the keys
    behind `/` were queued to the tree, which had the focus, before the prompt opened, and
    were lost: the prompt opened empty, waiting. They go to the prompt, in their order."""
    from textual import events

    from tui.screens.search import SearchPrompt

    app, runner = orch(
        "steps: [{name: one, type: shell, run: 'echo alpha; echo beta; echo gamma'}]"
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "one", "succeeded")
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines == ["alpha", "beta", "gamma"], what="the log")
        for key, char in (("slash", "/"), *((c, c) for c in "beta"), ("enter", "\r")):
            event = events.Key(key, char)
            event.set_sender(app)
            app._driver.send_message(event)  # all queued before the app handles one
        await until(pilot, lambda: pane._match is not None, what="a match")
        assert pane.lines[pane._match] == "beta"
        assert not isinstance(app.screen, SearchPrompt)
        assert str(pane.border_subtitle).startswith("/beta")


async def _search(pilot, app, text: str) -> None:
    """``/``, the text typed into the prompt, Enter."""
    from tui.screens.search import SearchPrompt

    await pilot.press("slash")
    await until(pilot, lambda: isinstance(app.screen, SearchPrompt), what="the prompt")
    await _type(pilot, text)
    await pilot.press("enter")


async def test_a_search_while_following_finds_a_line_above_the_followed_tail(orch):
    """A following pane holds the log's last 2,000 lines; a pause loads 20,000. `/` while
    following searched the 2,000 only: in a 3,000-line log `<77>` was "not found in the
    loaded lines", and found once the user scrolled up first. It is found either way; a text
    that is nowhere leaves the pane following, and the notice says whether all was searched."""
    from tui.screens.search import SearchPrompt

    app, runner = orch(
        """
        steps:
          - {name: chatty, type: shell, run: 'for i in $(seq 1 3000); do echo "line <$i>"; done'}
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "chatty", "succeeded")
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines[-1:] == ["line <3000>"], what="the tail")
        assert pane.follow and "line <77>" not in pane.lines  # the followed tail only

        await _search(pilot, app, "<77>")
        await until(pilot, lambda: not isinstance(app.screen, SearchPrompt))
        await until(pilot, lambda: pane._match is not None, what="a match")
        assert pane.lines[pane._match] == "line <77>" and not pane.follow

        await pilot.press("tab", "end")  # following again
        await until(pilot, lambda: pane.follow and len(pane.lines) < 3000, what="following")
        await _search(pilot, app, "<nowhere>")
        await until(pilot, lambda: app._notifications, what="a notice")
        notice = list(app._notifications)[-1].message
        assert notice == "'<nowhere>' not found in the log", notice
        assert pane.follow and pane.lines[-1] == "line <3000>"


async def test_a_search_not_found_in_a_long_log_says_where_all_of_it_is(orch):
    """The pane loads at most 20,000 lines: a text not among them is not said to be nowhere,
    the notice names how many lines were searched and the log file that has every line."""

    app, runner = orch(
        """
        steps:
          - {name: chatty, type: shell, run: 'seq 1 25000'}
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "chatty", "succeeded")
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines[-1:] == ["25000"], what="the tail")
        await _search(pilot, app, "nowhere")
        await until(pilot, lambda: app._notifications, what="a notice")
        notice = list(app._notifications)[-1].message
        log = runner.run_dir / "logs" / "chatty.log"
        assert notice == f"'nowhere' not found in the log's last 20,000 lines (all of it: {log})"
        assert pane.follow


_COUNTED_LINES = """
        steps:
          - name: counted
            type: shell
            run: |
              n=$(( $(cat '{count}' 2>/dev/null || echo 0) + 1 )); echo $n > '{count}'
              for i in $(seq 1 300); do echo "run $n line $i"; done
              exit 1
"""


async def test_slash_from_the_step_tree_searches_the_selected_log(orch, tmp_path: Path):
    from tui.screens.search import SearchPrompt

    app, runner = orch(_COUNTED_LINES.format(count=tmp_path / "count"))
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "counted", "failed")
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines[-1:] == ["run 1 line 300"], what="the log")
        assert app.focused is _tree(app)  # where the app opens
        assert "n" not in footer_keys(app)  # no search: nothing to go to

        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.screen, SearchPrompt), what="the prompt")
        await _type(pilot, "line 12")
        await pilot.press("enter")
        await until(pilot, lambda: pane._match is not None, what="a match")
        assert pane.lines[pane._match] == "run 1 line 129"  # the last one: searched upwards
        # the search stopped following: the pane says so, and how to come back
        subtitle = str(pane.border_subtitle)
        assert subtitle.startswith("/line 12: 11 in view") and "paused" in subtitle
        assert subtitle.endswith("End to follow") and not pane.follow

        assert app.focused is _tree(app)
        # the footer offers n while a search is on, with the tree focused too (where `/` was)
        await until(pilot, lambda: "n" in footer_keys(app), what="n in the footer")
        await pilot.press("n")  # from the tree too: the next match upwards
        await until(pilot, lambda: pane.lines[pane._match] == "run 1 line 128", what="n")
        await pilot.press("N")
        await until(pilot, lambda: pane.lines[pane._match] == "run 1 line 129", what="N")


async def test_retry_shows_the_new_attempt_in_a_paused_pane(orch, tmp_path: Path):
    app, runner = orch(_COUNTED_LINES.format(count=tmp_path / "count"))
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "counted", "failed")
        pane = main_pane(app)
        await until(pilot, lambda: pane.lines[-1:] == ["run 1 line 300"], what="the log")
        await pilot.press("slash")  # looking into the failure: following pauses
        await _type(pilot, "line 12")
        await pilot.press("enter")
        await until(pilot, lambda: not pane.follow, what="following to pause")
        assert app.focused is _tree(app)

        await pilot.press("r")
        await until_status(pilot, runner, "counted", "failed")
        assert runner.state()["steps"]["counted"]["attempts"] == 2
        await until(pilot, lambda: pane.lines[-1:] == ["run 2 line 300"], what="attempt 2")
        await until(pilot, lambda: pane.scroll_y == pane.max_scroll_y, what="the end shown")
        # still searching, in both attempts' lines
        assert pane.follow and pane.border_subtitle == "/line 12: 22 in view · following"


def _first_line(pane) -> str:
    """The pane's top line as drawn (what an empty pane says, dimmed)."""
    return pane.render_line(0).text.rstrip()


async def test_an_empty_log_says_why(orch, tmp_path: Path):
    go = tmp_path / "go"
    module = write_module(tmp_path, "def run(ctx):\n    return None\n")
    app, runner = orch(
        f"""
        steps:
          - {{name: silent, type: python, module: {module}}}
          - name: waiting
            type: shell
            run: "while [ ! -f '{go}' ]; do sleep 0.02; done"
            depends_on: []
          - {{name: later, type: shell, run: "true", depends_on: [waiting]}}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        pane = main_pane(app)
        await until_status(pilot, runner, "silent", "succeeded")  # printed nothing: no log
        assert not (runner.run_dir / "logs" / "silent.log").exists()
        await until(pilot, lambda: _first_line(pane) == "no output", what="no output")
        await until_status(pilot, runner, "waiting", "running")
        await pilot.press("down")
        await until(pilot, lambda: _first_line(pane) == "waiting for output…", what="waiting")
        await pilot.press("down")
        await until(pilot, lambda: _first_line(pane) == "pending: no output yet", what="pending")
        go.write_text("")
        await until_status(pilot, runner, "later", "succeeded")
        await until(pilot, lambda: _first_line(pane) == "no output", what="later: no output")


async def test_a_step_that_never_ran_says_why_it_was_skipped(orch):
    """A step --skip, --only or a resume passed over: its empty log says why, as the headless
    summary does; it said "no output", as if it had run, and nothing on screen said why."""
    app, runner = orch(
        """
        steps:
          - {name: kept, type: shell, run: 'true'}
          - {name: left, type: shell, run: 'true'}
        """,
        skip=["left"],
    )
    async with app.run_test(size=SIZE) as pilot:
        pane = main_pane(app)
        await until_status(pilot, runner, "kept", "succeeded")
        await pilot.press("down")
        await until_status(pilot, runner, "left", "skipped")
        await until(pilot, lambda: _first_line(pane) == "skipped: --skip", what=_first_line(pane))


async def test_a_step_that_did_not_succeed_says_how_it_ended_above_its_log(orch, tmp_path: Path):
    """Its exit code, its timeout or its error beside its name: the log alone may say nothing
    (no output), and the tree only marks it. ``ctl status`` and the headless summary said it;
    the app did not."""
    app, runner = orch(
        """
        steps:
          - {name: slow, type: shell, run: 'sleep 5', timeout: 0.3}
          - {name: bad, type: shell, run: 'exit 3', depends_on: []}
          - {name: good, type: shell, run: 'echo fine', depends_on: []}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        pane = main_pane(app)
        await until_status(pilot, runner, "slow", "timed_out")
        await until(pilot, lambda: _title(pane) == "slow · timed out after 0.3s")
        await pilot.press("down")
        await until_status(pilot, runner, "bad", "failed")
        await until(pilot, lambda: _title(pane) == "bad · failed: exit 3")
        await pilot.press("down")
        await until_status(pilot, runner, "good", "succeeded")
        await until(pilot, lambda: _title(pane) == "good")  # nothing to add


async def test_the_log_title_follows_a_failed_step_that_is_skipped(orch, tmp_path: Path):
    """`s` on the failed step in view: its row says skipped, and so does the head of its log
    at once (it kept saying "failed: exit 3" until another step was selected and back)."""
    app, runner = orch(
        """
        steps:
          - {name: bad, type: shell, run: 'echo oops; exit 3'}
          - {name: after, type: shell, run: 'true'}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        pane = main_pane(app)
        await until_status(pilot, runner, "bad", "failed")
        await until(pilot, lambda: _title(pane) == "bad · failed: exit 3")
        await pilot.press("s")
        await until_status(pilot, runner, "after", "succeeded")
        await until(pilot, lambda: _title(pane) == "bad", what="the title without the failure")


def _title(pane) -> str:
    from rich.text import Text

    return Text.from_markup(str(pane.border_title)).plain


# ------------------------------------------------------------------------------ ctx, palette
def _count_nodes(node) -> int:
    return 1 + sum(_count_nodes(child) for child in node.children)


async def test_ctx_inspector_shows_a_long_list_by_its_length(orch, tmp_path: Path):
    from tui.widgets import CtxInspector

    module = write_module(
        tmp_path,
        """
        def run(ctx):
            ctx["title"] = "ten thousand rows"
            for i in range(10_000):
                ctx.append("rows", [i, i * 2])
        """,
    )
    app, runner = orch(
        f"""
        steps:
          - {{name: fill, type: python, module: {module}}}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "fill", "succeeded")
        inspector = app.query_one(CtxInspector)
        await until(
            pilot,
            lambda: (
                "rows" in inspector._key_nodes
                and "[10,000]" in str(inspector._key_nodes["rows"].label)
            ),
            what="rows [10,000] in the inspector",
        )
        node = inspector._key_nodes["rows"]
        assert str(node.label) == "rows [10,000]"
        total = _count_nodes(inspector.root)
        print(f"ctx inspector nodes for 10,000 rows: {total}")
        assert total < 100, total
        assert str(node.children[-1].label).startswith("[9999]")
        assert 'title: "ten thousand rows"' in str(inspector._key_nodes["title"].label)


async def test_command_palette_offers_skip_for_a_failed_step(orch):
    app, runner = orch(
        """
        steps:
          - {name: bad, type: shell, run: exit 1}
          - {name: good, type: shell, run: "true", depends_on: []}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "bad", "failed")
        await until_status(pilot, runner, "good", "succeeded")
        assert selected(app) == "bad"
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Skip bad" in titles and "Retry bad" in titles
        await pilot.press("down")
        await until(pilot, lambda: selected(app) == "good")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Skip good" not in titles and "Retry good" in titles


async def test_command_palette_has_one_keys_entry_and_its_quit_asks(orch):
    from textual.command import CommandList, CommandPalette

    from tui.screens.confirm_quit import ConfirmQuit

    app, runner = orch("steps:\n  - {name: sleeper, type: shell, cmd: sleep, args: ['100']}\n")
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "sleeper", "running")

        async def palette_titles(query: str) -> list[str]:
            await pilot.press("ctrl+p")
            await until(pilot, lambda: isinstance(app.screen, CommandPalette), what="palette")
            await _type(pilot, query)
            results = app.screen.query_one(CommandList)
            await until(pilot, lambda: results.option_count > 0, what=f"matches for {query}")
            return [
                str(results.get_option_at_index(i).prompt).split("\n")[0]
                for i in range(results.option_count)
            ]

        titles = await palette_titles("keys")
        assert titles.count("Keys") == 1, titles
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, CommandPalette), what="closed")

        assert "Quit" in await palette_titles("quit")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmQuit), what="the question")
        assert app.is_running and status(runner, "sleeper") == "running"
        await pilot.press("n")


# ------------------------------------------------------------------------------ S
def _one_session(session: str) -> str:
    """A recipe of one step that creates the screen session ``session``."""
    return f"""
        steps:
          - {{name: sess, type: session, action: create, session: {session}}}
        """


async def _until_session_shown(pilot, app, runner, session: str):
    """The step tree, once the session step succeeded and its session is under Sessions."""
    await until_status(pilot, runner, "sess", "succeeded", timeout=20)
    tree = _tree(app)
    await until(pilot, lambda: ("screen", None, session) in tree._session_nodes, what="Sessions")
    return tree


@needs_screen
async def test_sessions_screen_lists_a_real_screen_session(orch, screendir):
    from textual.widgets import DataTable

    from tui.screens.sessions import SessionsScreen

    session = f"orchtui-s-{uuid.uuid4().hex[:8]}"
    app, runner = orch(_one_session(session))
    async with app.run_test(size=SIZE) as pilot:
        tree = await _until_session_shown(pilot, app, runner, session)
        assert tree.check_action("attach", ())  # a session step: a offered

        await pilot.press("S")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen), what="sessions")
        table = app.screen.query_one(DataTable)

        def row():
            rows = [table.get_row_at(i) for i in range(table.row_count)]
            return next((r for r in rows if r[0] == "screen" and r[2] == session), None)

        found = await until(pilot, row, 15, f"{session} in the sessions table")
        assert found[3] == "detached"
        assert found[6] == runner.run_id  # the run that created it
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, SessionsScreen), what="back")
        assert selected(app) == "sess"


@needs_screen
async def test_the_sessions_group_folds_and_unfolds(orch, screendir):
    session = f"orchtui-f-{uuid.uuid4().hex[:8]}"
    app, runner = orch(_one_session(session))
    async with app.run_test(size=SIZE) as pilot:
        tree = await _until_session_shown(pilot, app, runner, session)

        def rows() -> list[str]:
            return [line.node.label.plain for line in tree._tree_lines]

        unfolded = ["sess", "Sessions", f"▣ {session} screen"]
        await until(pilot, lambda: rows() == unfolded, what="the session's row")
        tree.move_cursor(tree._sessions_node)
        await pilot.press("space")
        await until(pilot, lambda: rows() == ["sess", "Sessions"], what="folded")
        await pilot.press("space")
        await until(pilot, lambda: rows() == unfolded, what="unfolded")


@needs_screen
async def test_a_session_pane_shows_what_arrives_in_the_session(orch, screendir):
    from core.sessions import get_backend

    session = f"orchtui-l-{uuid.uuid4().hex[:8]}"
    app, runner = orch(
        f"""
        steps:
          - {{name: logged, type: session, action: create, session: {session}, log: true}}
          - {{name: unlogged, type: session, action: create, session: {session}-n}}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "unlogged", "succeeded", timeout=20)
        tree = _tree(app)
        await until(pilot, lambda: len(tree._session_nodes) == 2, what="the Sessions group")
        pane = main_pane(app)
        await select_session(pilot, session)
        await until(pilot, lambda: pane.step == f"session {session}", what="the session's pane")

        # typed from outside (or by a user attached to it): no step event says the log grew
        get_backend("screen").send(session, "echo typed-$((6 * 7))")
        await until(pilot, lambda: "typed-42" in pane.lines, 10, "the session's new output")

        await select_session(pilot, f"{session}-n")
        await until(
            pilot,
            lambda: _first_line(pane).startswith("no log: `log: true`"),
            what="the hint of a session without a log",
        )


# ------------------------------------------------------------------------------ load
async def test_stays_responsive_while_a_step_floods_its_log(orch):
    app, runner = orch(
        """
        steps:
          - {name: flood, type: shell, cmd: "yes", args: ["a line of flood output, as fast as it goes"]}
          - {name: quiet, type: shell, run: echo quiet, depends_on: []}
        """
    )
    me = psutil.Process()
    async with app.run_test(size=SIZE) as pilot:
        await until_status(pilot, runner, "flood", "running")
        log = runner.run_dir / "logs" / "flood.log"
        await until(pilot, lambda: log.stat().st_size > 1_000_000, what="the flood")
        pane = main_pane(app)
        assert pane.step == "flood"  # the pane follows the flood: the worst case
        rss_start = rss_peak = me.memory_info().rss
        timings = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for key, target in (("down", "quiet"), ("up", "flood")):
                t0 = time.perf_counter()
                send_key(app, key)
                await until(pilot, lambda t=target: selected(app) == t, 10, f"{target} selected")
                timings.append(time.perf_counter() - t0)
                await until(pilot, lambda t=target: pane.step == t, 10, f"{target}'s log")
            rss_peak = max(rss_peak, me.memory_info().rss)
        # the Pilot's own press works too (slowly: it waits for an idle process, capped)
        await pilot.press("down")
        await until(pilot, lambda: selected(app) == "quiet")
        await pilot.press("up")
        await until(pilot, lambda: selected(app) == "flood" and len(pane.lines) > 100)
        assert status(runner, "flood") == "running", "the flood ended too soon to be a test"
        timings.sort()
        print(
            f"\nflood log {log.stat().st_size / 1e6:.0f} MB; {len(timings)} moves: "
            f"median {timings[len(timings) // 2] * 1000:.0f} ms, max {timings[-1] * 1000:.0f} ms; "
            f"RSS {rss_start / 2**20:.0f} -> peak {rss_peak / 2**20:.0f} MiB"
        )
        assert len(pane.lines) <= 2000  # only the tail is kept while following
        # bounded memory: a tail of the log per tick, never the whole (growing) log
        assert rss_peak - rss_start < 300 * 2**20
        await pilot.press("k")
        await until_status(pilot, runner, "flood", "cancelled")
        log.unlink()  # hundreds of MB: not worth keeping in pytest's tmp dirs


# ------------------------------------------------------------------------------ the header
async def test_header_clock_stops_once_every_step_has_ended(tmp_path: Path):
    from core.control import LocalControl
    from core.recipe import load_recipe
    from core.runner import Runner
    from tui.app import make_app
    from tui.widgets.run_header import RunHeader

    now = [1_000.0]  # the runner's and the app's clock, moved by hand

    def clock() -> float:
        return now[0]

    path = tui_helpers.write_recipe(tmp_path, "steps:\n  - {name: one, type: shell, run: 'true'}\n")
    runner = Runner(load_recipe(path), run_dir=tmp_path / "run", interactive=True, clock=clock)
    app = make_app(LocalControl(runner), clock=clock, start=runner.start)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until_status(pilot, runner, "one", "succeeded")
            await until(pilot, lambda: runner.status == "succeeded", 10, "the run over")
            now[0] += 100  # an app left open long after the run ended
            header = app.query_one(RunHeader)
            await until(pilot, lambda: "succeeded" in str(header.render()), 10, "the header")
            await pilot.pause(0.2)  # a few refreshes of the header with the new time
            assert str(header.render()).endswith("· 0.0s"), str(header.render())
    finally:
        tui_helpers.close_runner(runner)


async def test_a_long_recipe_name_leaves_the_header_room_for_the_run_state(orch):
    """At 80 columns a long recipe name is cut (…), not the run's state: the header said
    "orch-tui  A rather long recipe name for the nightly integration pipeline of the" and
    nothing of the run having failed."""
    app, _runner = orch(
        """
        name: A rather long recipe name for the nightly integration pipeline of the lab
        steps:
          - {name: bad, type: shell, run: exit 3}
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until(
            pilot,
            lambda: re.search(
                r" · failed · r retries · 0/1 ✗1 · \S+$", screen_lines(app)[0].rstrip()
            ),
            what="the run's state on the header's row",
        )
        assert screen_lines(app)[0].startswith(" orch-tui  A rather long recipe name for")
        assert "… · failed" in screen_lines(app)[0]


async def test_header_counts_a_step_stopped_with_k(orch):
    """A step stopped with `k` is cancelled (⊗ in the tree): the header counts it as it counts
    the failed ones. It counted it nowhere: "0/2 ⏱1" for a run of a stopped step and a timed
    out one, as if one step had vanished."""
    app, runner = orch(
        """
        steps:
          - {name: stuck, type: shell, run: sleep 60, grace: 1}
          - {name: slow, type: shell, run: sleep 60, timeout: 0.2, grace: 1, depends_on: []}
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "stuck", "running")
        await pilot.press("k")  # stuck is selected: the first step
        await until_status(pilot, runner, "stuck", "cancelled")
        await until_status(pilot, runner, "slow", "timed_out")
        await until(
            pilot,
            lambda: " · 0/2 ⏱1 ⊗1 · " in screen_lines(app)[0],
            what=f"both steps counted on the header: {screen_lines(app)[0]!r}",
        )


async def test_an_allowed_failure_is_marked_as_one_not_as_a_failure_of_the_run(orch):
    """A continue_on_error step that failed blocks nothing and fails no run: the tree and the
    header mark it with a yellow ⚠ (as the headless output does: told from a failure's ✗ by
    its shape, without colour too), its log's title says "failed (allowed)", and with a
    service still up the run is "done · services up", not "waiting · r retries". It was a red
    ✗ counted with the failures, and the header asked for a retry; then a yellow ✗, a
    failure's shape."""
    from tui.widgets import StepTree
    from tui.widgets.run_header import RunHeader

    app, runner = orch(
        """
        steps:
          - {name: lint, type: shell, run: exit 4, continue_on_error: true}
          - {name: svc, type: shell, background: true, run: sleep 60, depends_on: []}
        """
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until_status(pilot, runner, "lint", "failed")
        await until_status(pilot, runner, "svc", "ready")
        header = app.query_one(RunHeader)
        await until(
            pilot,
            lambda: " · done · services up · 0/2 ●1 ⚠1 · " in str(header.render()),
            what=f"done, the allowed failure counted apart: {str(header.render())!r}",
        )
        mark = next(
            span
            for span in header.render().spans
            if "⚠1" in str(header.render())[span.start : span.end]
        )
        assert mark.style == "yellow", mark
        row = app.query_one(StepTree).label_of("lint")
        assert row.plain.startswith("⚠ lint") and row.spans[0].style == "yellow", row.spans
        pane = main_pane(app)  # lint is selected: the first step
        await until(
            pilot,
            lambda: " · failed (allowed): exit 4" in str(pane.border_title),
            what=f"the title: {str(pane.border_title)!r}",
        )


async def test_header_does_not_say_running_while_a_service_waits_to_restart(orch):
    """The work is done and a service crashed: while it waits out its restart delay the run is
    as it was while the service was up ("done"). It said "running" for the delay and "done"
    for each start, flipping every second for a service that crashes every second."""
    from tui.widgets.run_header import RunHeader

    app, runner = orch(
        """
        steps:
          - name: svc
            type: shell
            background: true
            restart: always
            restart_delay: 30
            run: echo up; sleep 0.3; exit 3
          - {name: work, type: shell, run: 'true', depends_on: []}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        header = app.query_one(RunHeader)
        await until_status(pilot, runner, "work", "succeeded")
        await until(pilot, lambda: " · done · " in str(header.render()), what="done, svc up")
        await until_status(pilot, runner, "svc", "pending")  # crashed: its restart is due
        await until(pilot, lambda: app._run.steps["svc"].status == "pending", what="the app")
        await pilot.pause(0.1)  # a few refreshes of the header
        assert " · done · " in str(header.render()), str(header.render())
        # and counted: "1/2" and nothing else said what the other step was doing
        assert " · 1/2 ↻1 · " in str(header.render()), str(header.render())
        # and marked so in the tree, not as a step that never ran (○), with the time its
        # next start is due in (it showed its last start's duration)
        assert str(tree_label(app, "svc")).startswith("↻ svc in 30s "), tree_label(app, "svc")


async def test_a_service_waiting_to_restart_counts_its_delay_down(orch):
    """The tree says when a crashed service starts again, and counts it down (the run's real
    clock here): its row showed its last start's duration, which says nothing of that."""
    app, runner = orch(
        """
        steps:
          - {name: svc, type: shell, background: true, restart: always, restart_delay: 30,
             run: exit 3}
        """,
        clock=time.time,
    )
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app._run.steps["svc"].restarting, what="svc to crash")
        await until(pilot, lambda: " in " in str(tree_label(app, "svc")), what="its countdown")

        def left() -> int:  # the seconds its row says are left (a whole number from 10 s on)
            row = str(tree_label(app, "svc"))
            found = re.match(r"↻ svc in (\d+)s ", row)
            assert found, row
            return int(found.group(1))

        first = left()
        assert 10 <= first <= 30, first
        await until(pilot, lambda: left() < first, what=f"the delay counted down from {first}s")


async def test_header_says_the_run_failed_and_r_retries_once_every_step_has_ended(orch, tmp_path):
    """Every step has ended and one failed: the header says what state.json says (failed) and
    that r retries, not "waiting"; a retry that succeeds makes it succeeded. A
    continue_on_error failure does not fail the run: succeeded."""
    from tui.widgets.run_header import RunHeader

    app, runner = orch(
        f"""
        steps:
          - {{name: flaky, type: shell, run: '[ -f {tmp_path}/fixed ] || exit 3'}}
          - {{name: allowed, type: shell, run: exit 4, continue_on_error: true, depends_on: []}}
        """
    )
    async with app.run_test(size=SIZE) as pilot:
        header = app.query_one(RunHeader)
        await until_status(pilot, runner, "flaky", "failed")
        await until_status(pilot, runner, "allowed", "failed")
        run = await until(pilot, lambda: runner.snapshot().ended and runner.snapshot(), what="end")
        assert (run.status, run.exit_code) == ("failed", 1)  # as state.json says
        await until(
            pilot, lambda: " · failed · r retries · " in str(header.render()), what="failed"
        )
        (tmp_path / "fixed").write_text("")
        await pilot.press("r")  # flaky is selected: the first step
        await until_status(pilot, runner, "flaky", "succeeded")
        await until(
            pilot, lambda: " · succeeded · " in str(header.render()), what=str(header.render())
        )
