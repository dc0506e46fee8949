"""tmux sessions, driven through libtmux's `Server.cmd` (tmux's own commands, argv lists).

tmux's habits, and what this module does about them:

- `-t NAME` matches name prefixes (libtmux's `kill_session(name)` too): sessions are targeted
  as `=NAME` (exact match), panes as `=NAME:` (the session's current window).
- libtmux's `send_keys` drops text that starts with `-`: text goes through
  `send-keys -t =NAME: -l -- TEXT` (literal, after `--`), Enter through a separate `send-keys`.
- `pipe-pane` runs its argument with `sh -c` after expanding `#` formats (tmux 3.x: and
  strftime `%` escapes): the log path goes in as printf octal escapes, which none of them touch.
- the interactive shell may drop what is typed before it is up: `create` waits until the pane
  shows something (`capture-pane`) before the first `send`.
- the run that created a session is kept in the session option `@orch_run_id` (and the shell
  gets `ORCH_RUN_ID` in its environment).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

from libtmux import Server
from libtmux import exc as tmux_exc

from core.recipe import SOCKET_NAME_PATTERN
from core.sessions.base import (
    CAPTURE_TIMEOUT,
    READY_TIMEOUT,
    RUN_ID_ENV,
    SessionBackend,
    SessionError,
    SessionInfo,
    validate_session_name,
    wait_until,
    without_blank_rows,
)
from core.watchdog import unmarked_environ

_SOCKET_NAME_RE = re.compile(SOCKET_NAME_PATTERN)
_FIELDS = "#{session_attached}|#{session_created}|#{pane_pid}|#{@orch_run_id}|#{session_name}"
_NO_SERVER = (
    "no server running",
    "error connecting to",
    "failed to connect to",
    "server exited unexpectedly",
)
#: characters per send-keys: a tmux command must fit in one message
_SEND_CHUNK = 2000
#: seconds a `new-session` may take (it may start the server): a hung one fails the step
NEW_SESSION_TIMEOUT = 30.0
#: tmux sets these for the session's own shell; copies of the caller's would point elsewhere
_SERVER_OWNED_ENV = frozenset({"TMUX", "TMUX_PANE"})
#: the bytes of a log path that go into pipe-pane's command as they are
_PLAIN_PATH_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._-")


def _log_pipe(log: Path) -> str:
    """The pipe-pane command appending the pane's output to `log`.

    tmux expands `#` formats (3.x: strftime `%` escapes too) in it before `sh -c` runs it, so
    the path holds no byte any of them would change: printf rebuilds it from octal escapes.
    Trailing line breaks stay outside the `$(...)`, which would drop them.
    """
    path = os.fsencode(log)
    kept = path.rstrip(b"\n")
    escaped = "".join(chr(b) if b in _PLAIN_PATH_BYTES else f"\\{b:03o}" for b in kept)
    line_breaks = "\n" * (len(path) - len(kept))
    return f"cat >> \"$(printf '{escaped}'){line_breaks}\""


def _failure(name: str, command: str, code: int, err: list[str]) -> SessionError:
    """The one-line error for a tmux command about session `name` that exited with `code`."""
    detail = err[0] if err else f"exit code {code}"
    if "can't find" in detail or "no such session" in detail or _no_server(detail):
        return SessionError(f"no tmux session named '{name}'")
    return SessionError(f"tmux {command} failed for session '{name}': {detail}")


def _no_server(detail: str) -> bool:
    """True when tmux's error says no server runs on the socket (so no session exists)."""
    return any(marker in detail for marker in _NO_SERVER)


def socket_dir() -> Path:
    """Where tmux keeps this user's server sockets: `$TMUX_TMPDIR/tmux-UID`, else /tmp/tmux-UID."""
    return Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"


def server_sockets() -> list[str]:
    """The `-L` names of every tmux server of this user: "default" first, then each socket
    found in `socket_dir()`, sorted. Named explicitly: inside tmux, a command without `-L`
    goes to the enclosing server, which would be listed twice. A socket left by a server that
    has ended lists no sessions."""
    try:
        entries = list(socket_dir().iterdir())
    except OSError:
        entries = []
    names = set()
    for entry in entries:
        try:
            is_socket = stat.S_ISSOCK(entry.lstat().st_mode)
        except OSError:
            continue
        if is_socket and entry.name != "default" and _SOCKET_NAME_RE.fullmatch(entry.name):
            names.add(entry.name)
    return ["default", *sorted(names)]


class TmuxBackend(SessionBackend):
    """tmux through libtmux, on the default server or on the `-L` socket `socket`."""

    name = "tmux"
    binary = "tmux"
    install_hint = "tmux is not installed (apt-get install tmux)"
    detach_keys = "Ctrl-b d"
    nested_detach_keys = "Ctrl-b Ctrl-b d"
    inside_env = "TMUX"

    def __init__(self, *, socket: str | None = None, ready_timeout: float = READY_TIMEOUT) -> None:
        if socket is not None and (not _SOCKET_NAME_RE.fullmatch(socket) or not socket.strip(".")):
            raise SessionError(
                f"invalid tmux socket name {socket!r}: must match {SOCKET_NAME_PATTERN}"
                " and not be only dots"
            )
        self.socket = socket
        self.ready_timeout = ready_timeout
        self.server = Server(socket_name=socket)

    # -- running tmux ------------------------------------------------------------------------

    def _cmd(self, *args: str) -> tuple[int, list[str], list[str]]:
        self._require_binary()
        try:
            result = self.server.cmd(*args)
        except tmux_exc.TmuxCommandNotFound:
            raise SessionError(self.install_hint) from None
        return result.returncode, list(result.stdout), list(result.stderr)

    def _check(self, name: str, *args: str) -> list[str]:
        """Run a tmux command about session `name`; SessionError (one line) if it fails."""
        code, out, err = self._cmd(*args)
        if code != 0:
            raise _failure(name, args[0], code, err)
        return out

    def _cmd_bounded(
        self, timeout: float, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`_cmd` for a caller that must not hang with the server (libtmux waits forever): the
        client is killed after `timeout` seconds (SessionError). `env`: the client's
        environment (default: this process's)."""
        argv = [self._require_binary(), *(["-L", self.socket] if self.socket else []), *args]
        try:
            return subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                encoding="utf-8",
                errors="replace",
                timeout=timeout,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise SessionError(f"tmux {args[0]} did not answer in {timeout:g} s") from None

    def _require_session(self, name: str) -> None:
        if not self.exists(name):
            raise SessionError(f"no tmux session named '{name}'")

    # -- the backend API ---------------------------------------------------------------------

    def list(self) -> list[SessionInfo]:
        code, out, err = self._cmd("list-sessions", "-F", _FIELDS)
        if code != 0:
            detail = " ".join(err)
            if not err or _no_server(detail):
                return []
            raise SessionError(f"tmux list-sessions failed: {detail}")
        sessions = []
        for line in out:
            parts = line.split("|", 4)
            if len(parts) != 5:
                continue
            attached, created, pane_pid, run_id, name = parts
            sessions.append(
                SessionInfo(
                    name=name,
                    backend=self.name,
                    state="attached" if attached not in ("", "0") else "detached",
                    pid=int(pane_pid) if pane_pid.isdigit() else None,
                    created=float(created) if created.isdigit() else None,
                    run_id=run_id or None,
                    socket=self.socket,
                )
            )
        return sessions

    def exists(self, name: str) -> bool:
        validate_session_name(name)
        code, _, _ = self._cmd("has-session", "-t", f"={name}")
        return code == 0

    def _start(self, name: str, log: Path | None, cwd: Path | None, env: dict[str, str]) -> None:
        args = ["new-session", "-d", "-s", name]
        if cwd is not None:
            args += ["-c", str(Path(cwd).absolute())]
        for key, value in env.items():
            if key not in _SERVER_OWNED_ENV:
                args += ["-e", f"{key}={value}"]
        # the session outlives the run: the server this may start, whose environment its
        # shells get, does not carry the run's marker
        result = self._cmd_bounded(NEW_SESSION_TIMEOUT, *args, env=unmarked_environ())
        code, err = result.returncode, result.stderr.splitlines()
        if code != 0:
            detail = err[0] if err else f"exit code {code}"
            raise SessionError(f"tmux could not create session '{name}': {detail}")
        run_id = env.get(RUN_ID_ENV)
        if run_id:
            self._check(name, "set-option", "-t", f"={name}:", "@orch_run_id", run_id)
        if log is not None:
            self._check(name, "pipe-pane", "-o", "-t", f"={name}:", _log_pipe(log))
        if not self.wait_ready(name, self.ready_timeout) and not self.exists(name):
            raise SessionError(f"tmux session '{name}' ended right after it started")

    def wait_ready(self, name: str, timeout: float = READY_TIMEOUT) -> bool:
        validate_session_name(name)

        def shows_something() -> bool:
            code, out, _ = self._cmd("capture-pane", "-p", "-t", f"={name}:")
            if code != 0:
                raise SessionError(f"tmux session '{name}' ended while starting")
            return any(line.strip() for line in out)

        try:
            return bool(wait_until(shows_something, timeout, interval=0.03))
        except SessionError:
            return False

    def capture(self, name: str, *, timeout: float = CAPTURE_TIMEOUT) -> str:
        """`capture-pane -p -e`: the active pane of the session's current window, colours kept."""
        validate_session_name(name)
        result = self._cmd_bounded(timeout, "capture-pane", "-p", "-e", "-t", f"={name}:")
        if result.returncode != 0:
            raise _failure(name, "capture-pane", result.returncode, result.stderr.splitlines())
        return without_blank_rows(result.stdout)

    def send(self, name: str, text: str, *, enter: bool = True) -> None:
        self._require_session(name)
        target = f"={name}:"
        for start in range(0, len(text), _SEND_CHUNK):
            chunk = text[start : start + _SEND_CHUNK]
            self._check(name, "send-keys", "-t", target, "-l", "--", chunk)
        if enter:
            self._check(name, "send-keys", "-t", target, "Enter")

    def kill(self, name: str) -> None:
        self._require_session(name)
        self._check(name, "kill-session", "-t", f"={name}")
        if self.exists(name):
            raise SessionError(f"tmux session '{name}' did not end")

    def detach(self, name: str) -> None:
        info = self.get(name)
        if info is None:
            raise SessionError(f"no tmux session named '{name}'")
        if info.state != "attached":
            return
        self._check(name, "detach-client", "-s", f"={name}")
        if not wait_until(lambda: (i := self.get(name)) is None or i.state == "detached", 5.0):
            raise SessionError(f"tmux session '{name}' is still attached")

    def _socket_path(self) -> Path:
        return socket_dir() / (self.socket or "default")

    def _inside_same_server(self) -> bool:
        current = os.environ.get("TMUX", "")
        if not current:
            return False
        socket_path = current.split(",", 1)[0]
        try:
            return os.path.samefile(socket_path, self._socket_path())
        except OSError:
            return False

    def _own_session(self) -> str | None:
        """The session of this server holding this process's pane ($TMUX_PANE), if any."""
        pane = os.environ.get("TMUX_PANE")
        if not pane:
            return None
        code, out, _ = self._cmd("display-message", "-p", "-t", pane, "#{session_name}")
        return out[0] if code == 0 and out else None

    def come_back_hint(self) -> str:
        """On this process's own server ``attach_argv`` switches the client: back with the
        previous-session key, as detaching would leave tmux altogether."""
        if self._inside_same_server():
            return "Ctrl-b ( comes back (tmux's previous session)"
        return super().come_back_hint()

    def attach_argv(self, name: str, *, steal: bool = False) -> list[str]:
        """`tmux [-L socket] attach-session [-d] -t =NAME` (`steal`: `-d` detaches the others).

        Inside tmux ($TMUX set): on the same server the current client switches to the session
        instead (`tmux switch-client -t =NAME`, which returns at once; the user comes back with
        the prefix key and `L` or `(`); on another server tmux refuses to nest unless $TMUX is
        unset, so the argv starts with `env -u TMUX`. The session this process runs in is
        refused (SessionError): one is there already, and tmux would only say "no current
        client" when no client shows it.
        """
        self._require_session(name)
        base = [shutil.which(self.binary) or self.binary]
        if self.socket:
            base += ["-L", self.socket]
        if self._inside_same_server():
            if self._own_session() == name:
                raise SessionError(f"orch-tui runs in tmux session '{name}': you are in it already")
            return [*base, "switch-client", "-t", f"={name}"]
        argv = [*base, "attach-session", *(["-d"] if steal else []), "-t", f"={name}"]
        if os.environ.get("TMUX"):
            return ["env", "-u", "TMUX", *argv]
        return argv
