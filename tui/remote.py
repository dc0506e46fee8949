"""The TUI as a client of a run daemon: ``orch-tui RECIPE`` on a terminal (after tui/spawn.py
started the daemon) and ``orch-tui attach`` of a live run.

Leaving the app either detaches (``d``, or the terminal closing: the daemon and the run go on,
untouched) or ends the run (``q`` when nothing runs, ``y`` at the question): then the client
closes the run and waits for the daemon to finish it, so what it prints last is the run's end.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from core.client import DaemonGone, ProtocolError, RemoteControl, connect

if TYPE_CHECKING:
    from tui.spawn import Launch

#: How long quitting waits for the daemon to exit once the run is over.
CLOSE_TIMEOUT = 60.0
#: How long a daemon that went away is given to be seen to exit (how it ended then said).
GONE_PATIENCE = 2.0


def run_attached(target: Path, timeout: float = 5.0, launch: Launch | None = None) -> int:
    """The app on the run daemon of the run folder ``target``, until it quits or detaches;
    the exit code (the run's, when it was ended here). ``timeout``: for its answer;
    ``launch``: the daemon, when this process started it (how it ended is then known)."""
    from tui.app import make_app

    try:
        control = connect(target, client="tui", timeout=timeout)
    except (DaemonGone, ProtocolError) as exc:
        how = None if launch is None else launch.ended(GONE_PATIENCE)
        if how is None:
            print(f"orch-tui: {exc}", file=sys.stderr)
            return 2
        where = os.path.relpath(target)
        print(
            f"orch-tui: the run daemon died as the run started ({how}); see {where}/daemon.log",
            file=sys.stderr,
        )
        return 1
    app = make_app(control, detachable=True)

    def on_signal(signum: int, _frame) -> None:
        if signum == signal.SIGHUP:
            # The terminal is gone: Textual cannot restore it and its shutdown may block on
            # writing to it. Detach: the run goes on in its daemon, nothing to tell anyone.
            threading.Thread(target=_hang_up, args=(control,), daemon=True).start()
            return
        app.call_later(app.interrupt)  # SIGTERM: stop the run, as Ctrl-C does headless

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    threading.Thread(target=_follow_daemon, args=(control, app), daemon=True).start()
    try:
        app.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if app.detached:
        control.close()
        print(
            f"orch-tui: detached from run {control.run_id}; orch-tui attach {control.run_id} comes back"
        )
        return 0
    return _end_run(control, launch)


def _end_run(control: RemoteControl, launch: Launch | None = None) -> int:
    """The app quit: close the run (if the app did not already) and wait for its daemon to
    finish it; tell how it ended."""
    if control.gone is None:
        try:
            control.command("close")
            control.wait()  # the run's end: as long as its steps' graces take
        except DaemonGone:
            pass
        control.wait_gone(CLOSE_TIMEOUT)  # then its daemon's exit
    final = control.wait(0)
    where = os.path.relpath(control.run_dir.path)
    if final is None:  # gone without saying it closed: killed, or crashed
        how = None if launch is None else launch.ended(GONE_PATIENCE)
        gone = (
            control.gone if how is None else f"the run daemon died ({how}) without ending the run"
        )
        said = f"orch-tui: {gone}; see {where}/daemon.log"
        code = 1
    else:
        said = f"orch-tui: run {control.run_id} {control.snapshot().status}; logs in {where}"
        code = final
    try:
        print(said)
        sys.stdout.flush()
    except OSError:  # the terminal is gone
        pass
    control.close()
    return code


def _follow_daemon(control: RemoteControl, app) -> None:
    """The daemon went away (the run was stopped from elsewhere, or it died): the app has
    nothing left to show live."""
    control.wait_gone()
    try:
        app.call_from_thread(app.exit, control.wait(0) or 0)
    except RuntimeError:  # the app is not running (it quit first)
        pass


def _hang_up(control: RemoteControl) -> None:
    control.close()
    os._exit(0)
