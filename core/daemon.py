"""The run daemon: one run in a process of its own, served on the run folder's socket, so the run
outlives the terminal that started it (``orch-tui RECIPE`` on a terminal, ``--detach``).

``python -P -m core.daemon '{"recipe", "handshake_fd", "options_fd"}'``, started by tui/spawn.py
in a new session with stdin, stdout and stderr on /dev/null, the write end of a pipe,
``handshake_fd``, and the read end of another, ``options_fd``. The daemon loads the recipe
itself (the same file the client checks meanwhile: it does not take the client's objects), then
reads the run's options (DaemonArgs as JSON, to the end of that pipe: nothing there means the
client called the run off, and the daemon leaves having made nothing), makes the run folder,
sends its own stdout and stderr to ``<run-dir>/daemon.log``,
binds the socket, starts the runner and then writes ONE line to the pipe (core.protocol's JSON):
``{"ok": true, "run_id", "run_dir", "socket", "pid"}``, or on any failure before that
``{"ok": false, "code": 2, "error": "one line"}``.

Then it serves until the runner is finished: after ``close`` or ``stop_run`` from a client, or
at once when no step can run with ``exit_when_done``, or when its run folder is deleted under
it. SIGTERM and SIGINT stop the run (a second kills at once), SIGHUP is ignored (it has no
terminal). The socket goes as it exits. If the daemon dies however (SIGKILL), the runner's
watchdog process kills every step's tree.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec

from core import protocol as proto
from core.control import interrupted_by
from core.limits import limit_words
from core.log import configure
from core.rundir import DEBUG_LOG, create_problem

EXIT_USAGE = 2


class LaunchArgs(msgspec.Struct):
    """The command line of the daemon: what it needs before the client's checks are done."""

    recipe: str
    handshake_fd: int
    options_fd: int


class DaemonArgs(msgspec.Struct, kw_only=True):
    """What the client checked and hands on: the run's options (tui/cli.py's)."""

    run_dir: str | None = None
    jobs: int | None = None
    executor: str | None = None  # --executor: the run's Dask cluster (core.cluster)
    only: list[str] | None = None
    skip: list[str] | None = None
    resume: dict[str, str] | None = None  # ResumePoint.record(): step, run_id, run_dir
    keep_alive: bool = False
    debug: bool = False
    exit_when_done: bool = False


class StartError(Exception):
    """The run cannot start: the message goes to the client, which exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def main(argv: list[str]) -> int:
    launch = msgspec.json.decode(argv[0], type=LaunchArgs)
    handshake = os.fdopen(launch.handshake_fd, "wb")
    loaded = _load(launch.recipe)
    options = _read_all(launch.options_fd)
    if not options:  # called off: the client found the recipe or its options wrong
        return 0
    try:
        if isinstance(loaded, BaseException):
            raise loaded
        runner, server = _start(loaded, msgspec.json.decode(options, type=DaemonArgs))
    except StartError as exc:
        _tell(handshake, {"ok": False, "code": exc.code, "error": str(exc)})
        return exc.code
    except BaseException as exc:
        words = limit_words(exc)
        error = f"internal error: {_line(exc)}" if words is None else words
        _tell(handshake, {"ok": False, "code": 1, "error": error})
        raise
    run_dir = runner.rundir
    _tell(
        handshake,
        {
            "ok": True,
            "run_id": runner.run_id,
            "run_dir": str(run_dir.path),
            "socket": str(run_dir.socket),
            "pid": os.getpid(),
        },
    )
    try:
        code = _serve(runner)
    finally:
        server.close(str(runner.status), runner.exit_code)
        run_dir.close()
    return code


def _load(path: str):
    """The recipe, loaded (and what the run needs imported) while the client checks it; or
    the StartError or exception to answer with once the options came."""
    try:
        import core.runner  # noqa: F401 - the imports _start makes: paid here, meanwhile
        import core.server  # noqa: F401
        from core.recipe import RecipeError, load_recipe
    except Exception as exc:
        return exc
    try:
        return load_recipe(path)
    except RecipeError as exc:
        return StartError(f"recipe {_line(exc)}")
    except Exception as exc:
        return exc


def _read_all(fd: int) -> bytes:
    """What the client wrote on the options pipe, to its end."""
    with os.fdopen(fd, "rb") as pipe:
        return pipe.read()


def _start(recipe, args: DaemonArgs):
    """The runner built and started, its socket served; StartError for what the user must fix."""
    from core.control import LocalControl
    from core.resources import ResourceSampler
    from core.runner import Runner, RunStartError
    from core.server import RunServer
    from core.store import ResumeError, ResumePoint

    point = args.resume
    try:
        resume = (
            ResumePoint.load(point["step"], point["run_id"], Path(point["run_dir"]))
            if point
            else None
        )
    except ResumeError as exc:
        raise StartError(f"--resume-from: {exc}") from None
    run_dir = Path(args.run_dir) if args.run_dir is not None else None
    cluster = _open_cluster(recipe, args.executor)
    try:
        runner = Runner(
            recipe,
            cluster=cluster,
            run_dir=run_dir,
            jobs=args.jobs,
            only=args.only,
            skip=args.skip,
            resume=resume,
            interactive=not args.exit_when_done,
            keep_alive=args.keep_alive,
            sampler=ResourceSampler(),
            own_process=True,
            say_warnings=True,
        )
    except OSError as exc:
        if cluster is not None:
            cluster.close()
        raise StartError(create_problem(exc, run_dir)) from None
    _log_to(runner.rundir, args.debug)
    try:
        server = RunServer(
            LocalControl(runner), runner.rundir, run_id=runner.run_id, stays_open=runner.interactive
        )
        server.start()
    except OSError as exc:  # nothing ran: what the run made goes
        runner.abandon()
        words = limit_words(exc)
        if words is not None:
            raise StartError(f"cannot start the run: {words}") from None
        raise StartError(f"cannot serve the run on {runner.rundir.socket}: {_line(exc)}") from None
    _handle_signals(runner)
    try:
        runner.start()
    except RunStartError as exc:  # nothing ran: exit 2, the run's folder removed
        server.close("failed", None)
        raise StartError(str(exc)) from None
    return runner, server


def _open_cluster(recipe, executor: str | None):
    """The run's Dask cluster, or None; StartError (exit 2) if it cannot run the recipe."""
    if executor is None and recipe.executor is None:
        return None
    from core.cluster import ClusterError, open_cluster

    try:
        return open_cluster(executor, recipe)
    except ClusterError as exc:
        raise StartError(str(exc)) from None


def _log_to(run_dir, debug: bool) -> None:
    """fd 1 and 2 (what a python step or a library prints, a traceback) to daemon.log, and the
    runner's log lines with them; with --debug, its verbose lines to debug.log, as a run in
    the TUI's process had them."""
    fd = run_dir.open_daemon_log()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    stream = os.fdopen(run_dir.folder.append(DEBUG_LOG), "a") if debug else sys.stderr
    formatter = logging.Formatter("%(asctime)s orch-tui %(levelname)s %(name)s: %(message)s")
    configure(stream, formatter, level=logging.INFO, debug=debug)  # not a step's libraries'


def _handle_signals(runner) -> None:
    """SIGTERM/SIGINT stop the run, a second kills at once; SIGHUP is nothing to a daemon."""
    signals = 0

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal signals
        signals += 1
        logging.getLogger("orch.daemon").info("%s: stopping the run", signal.Signals(signum).name)
        if signals == 1:
            runner.stop_run(signum, note=interrupted_by(signum))
        else:
            runner.stop_run(signal.SIGKILL, force=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _serve(runner) -> int:
    """Until the runner has finished (the main thread stays free for the signal handlers).

    A run whose folder was deleted meanwhile is stopped, as ``stop-run`` would: no client can
    reach its socket again, nor see it in ``runs``, and its steps would go on unseen, for good.
    """
    stopping = False
    while (code := runner.wait(0.5)) is None:
        if not stopping and runner.rundir.removed():
            stopping = True
            logging.getLogger("orch.daemon").warning("the run folder was removed: stopping")
            runner.stop_run(note="run stopped (its run folder was removed)")
    return code


def _tell(handshake, message: dict[str, Any]) -> None:
    """The one line of the start handshake; the client may be gone (it gave up): no matter."""
    try:
        handshake.write(proto.encode(message))
        handshake.close()
    except OSError:
        pass


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
