"""`type: session` steps: create, recreate, send, kill or detach one multiplexer session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.rundir import RunDir
from core.sessions.base import SessionError, get_backend, validate_session_name

ACTIONS = ("create", "recreate", "send", "kill", "detach")


def session_log_path(
    log: bool | str | None, *, action: str, run_dir: Path, session: str
) -> Path | None:
    """Where a create/recreate step's session logs, or None.

    `True` -> `run_dir/sessions/<session>.log`; a string -> that path, a relative one taken
    relative to `run_dir`; `False` -> no log; `None` (not given) -> a log for `recreate` (as
    `screen_script.sh -r` did), none for `create`. The backend makes the folder and the file
    (`prepare_log_path`).
    """
    if log is None:
        log = action == "recreate"
    if log is False:
        return None
    if log is True:
        return RunDir(run_dir).session_log(session)
    if not isinstance(log, str) or not log.strip():
        raise SessionError(f"invalid log setting {log!r}: use true or a path")
    path = Path(log).expanduser()
    if not path.is_absolute():
        path = Path(run_dir) / path
    return path.absolute()


def run_session_step(
    *,
    backend: str,
    action: str,
    session: str,
    command: str | None,
    log: bool | str | None,
    socket: str | None,
    run_dir: Path,
    step_name: str,
    write: Callable[[str], None],
    env: dict[str, str],
    cwd: Path | None = None,
) -> None:
    """Perform one session action, writing a line about it with `write`.

    Raises SessionError (one line, for the step's failure) when the action fails. `env` is given
    to a created session (it should carry ORCH_RUN_ID, which `orch-tui sessions` shows), and
    its shell starts in `cwd` (None: where the multiplexer starts it).
    """
    if action not in ACTIONS:
        raise SessionError(f"step '{step_name}': unknown session action {action!r}")
    validate_session_name(session)
    multiplexer = get_backend(backend, socket=socket)
    if not multiplexer.available():
        raise SessionError(multiplexer.install_hint)
    kind = f"{multiplexer.name} session '{session}'"

    if action in ("create", "recreate"):
        log_path = session_log_path(log, action=action, run_dir=run_dir, session=session)
        if multiplexer.exists(session):
            if action == "create":
                raise SessionError(f"session '{session}' exists; use action: recreate")
            multiplexer.kill(session)
            write(f"killed {kind}")
        info = multiplexer.create(session, log_path=log_path, env=dict(env), cwd=cwd)
        line = f"created {kind}"
        if info.pid is not None:
            line += f" (pid {info.pid})"
        if log_path is not None:
            line += f", logging to {log_path}"
        write(line)
        if command:
            multiplexer.send(session, command)
            write(f"sent {len(command.encode())} bytes to '{session}'")
    elif action == "send":
        if command is None or command == "":
            raise SessionError(f"step '{step_name}': action send needs a command")
        multiplexer.send(session, command)
        write(f"sent {len(command.encode())} bytes to '{session}'")
    elif action == "kill":
        multiplexer.kill(session)
        write(f"killed {kind}")
    else:  # detach
        multiplexer.detach(session)
        write(f"detached {kind} (reattach with: {' '.join(multiplexer.attach_argv(session))})")
