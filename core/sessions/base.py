"""What every multiplexer backend offers: the session model, the errors, name checks.

A backend drives one multiplexer (GNU screen or tmux) for the runner's `type: session` steps,
`orch-tui sessions` and the TUI's attach key. Sessions are always targeted by their exact name,
and text sent to them arrives byte for byte.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from core.privatedir import PrivateDir, PrivateDirError, nearest_existing
from core.recipe import SESSION_NAME_PATTERN

_SESSION_NAME_RE = re.compile(SESSION_NAME_PATTERN)

#: The environment variable a run passes to the sessions it creates; `list()` reads it back.
RUN_ID_ENV = "ORCH_RUN_ID"

#: How long `create` waits for the session's shell to show something (its prompt) before the
#: first `send`; typed too early, a command may be lost.
READY_TIMEOUT = 5.0

#: How long `capture` waits for the multiplexer: a server that hangs (stopped, or spinning)
#: costs the caller this much, and the client asking it is killed.
CAPTURE_TIMEOUT = 5.0

SessionState = Literal["attached", "detached"]


class SessionError(Exception):
    """A session operation failed; the message is one line meant for the user."""


@dataclass
class SessionInfo:
    """One multiplexer session as `list()` sees it.

    `state` is "attached" when some terminal (anywhere) is attached to it. `pid` is the screen
    server's pid, or for tmux the pid of the session's active pane. `created` is a Unix time.
    `run_id` is the orch-tui run that created it (from `ORCH_RUN_ID`), when known. `socket` is
    the screen socket file, or the tmux socket name (`None`: the default server).
    """

    name: str
    backend: str
    state: SessionState
    pid: int | None = None
    created: float | None = None
    run_id: str | None = None
    socket: str | None = None

    @property
    def server(self) -> str:
        """The tmux server as the user names it: its `-L` socket name, or "default"; "" for
        screen (one server per session)."""
        return (self.socket or "default") if self.backend == "tmux" else ""


def validate_session_name(name: str) -> str:
    """Return `name` if it is a valid session name, else raise SessionError."""
    if not isinstance(name, str) or not _SESSION_NAME_RE.fullmatch(name):
        raise SessionError(f"invalid session name {name!r}: must match {SESSION_NAME_PATTERN}")
    return name


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02) -> object:
    """Poll `predicate` until it returns something truthy (returned) or `timeout` passes (None).

    The interval grows from `interval` to 0.1 s so short waits stay short and long ones stay cheap.
    """
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.1)


def prepare_log_path(log_path: Path | str) -> Path:
    """Make `log_path` absolute, create its missing folders (0700) and the file (0600).

    The multiplexer opens the file by its path afterwards, so nothing another user controls is
    accepted on the way (core.privatedir): not a symlink, not a file or folder of theirs, not a
    folder above it that they could write to (the sticky /tmp is fine). Multiplexers create
    their logs world-readable (0644); a private file created beforehand keeps its mode because
    they open it for appending.
    """
    path = Path(log_path).expanduser().absolute()
    try:
        with PrivateDir.open(path.parent, below=nearest_existing(path.parent)) as folder:
            os.close(folder.append(path.name))
    except PrivateDirError as exc:
        raise SessionError(str(exc)) from None
    except OSError as exc:
        raise SessionError(f"cannot open log file {path}: {exc.strerror or exc}") from None
    return path


def without_blank_rows(screen: str) -> str:
    """A captured screen without the blank rows below its last text: a fresh shell's prompt
    is one row, not the window's 24."""
    rows = screen.splitlines()
    while rows and not rows[-1].strip():
        rows.pop()
    return "\n".join(rows)


_PLAIN_PATH_RE = re.compile(r"[A-Za-z0-9_./-]+")


@contextmanager
def private_tempdir(prefix: str) -> Iterator[Path]:
    """A fresh 0700 directory, removed afterwards, whose path has no characters a multiplexer
    command parser could expand (`$`, `~`, `%`, `^`, `\\`, spaces, quotes)."""
    base = tempfile.gettempdir()
    if not _PLAIN_PATH_RE.fullmatch(base):
        base = "/tmp"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=base) as directory:
        yield Path(directory)


class SessionBackend(ABC):
    """A terminal multiplexer, driven by exact session names.

    Every method that names a session checks the name first (SessionError if invalid); `send`,
    `kill` and `detach` raise SessionError when the session does not exist.
    """

    #: "screen" or "tmux"
    name: ClassVar[str]
    #: the binary looked up on PATH
    binary: ClassVar[str]
    #: what to tell the user when the binary is missing
    install_hint: ClassVar[str]
    #: the keys that detach from an attached session, as shown to the user
    detach_keys: ClassVar[str]
    #: the same keys through an outer session of this multiplexer, whose prefix key takes the
    #: first one: pressed twice (tmux's C-b C-b, screen's C-a a) it reaches the inner session
    nested_detach_keys: ClassVar[str]
    #: the environment variable this multiplexer sets in its windows ($TMUX, $STY)
    inside_env: ClassVar[str]

    def come_back_hint(self) -> str:
        """How the user gets back to orch-tui from ``attach_argv``'s client, as shown before it
        takes the terminal. Inside this multiplexer the client is nested: the plain detach keys
        would detach the user's own outer session, not come back."""
        if os.environ.get(self.inside_env):
            keys = f"{self.nested_detach_keys} (nested in your {self.name}: prefix key twice)"
        else:
            keys = self.detach_keys
        return f"detach with {keys} to come back"

    def available(self) -> bool:
        """True when the multiplexer's binary is on PATH."""
        return shutil.which(self.binary) is not None

    def _require_binary(self) -> str:
        path = shutil.which(self.binary)
        if path is None:
            raise SessionError(self.install_hint)
        return path

    @abstractmethod
    def list(self) -> list[SessionInfo]:
        """All sessions of this backend (for screen: in $SCREENDIR or the default socket dir)."""

    def get(self, name: str) -> SessionInfo | None:
        """The session named exactly `name`, or None."""
        validate_session_name(name)
        for info in self.list():
            if info.name == name:
                return info
        return None

    def exists(self, name: str) -> bool:
        """True when a session named exactly `name` exists."""
        return self.get(name) is not None

    def create(
        self,
        name: str,
        *,
        log_path: Path | None = None,
        command: str | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> SessionInfo:
        """Start a detached session running the user's shell and wait until it is ready.

        `log_path`: everything the session shows is appended there, flushed promptly.
        `command`: typed into the shell once it is ready (as `send` does), so the session
        outlives it. `env`: added to the inherited environment (`ORCH_RUN_ID` is recorded).
        Raises SessionError if the session already exists or does not start.
        """
        validate_session_name(name)
        self._require_binary()
        if cwd is not None and not Path(cwd).is_dir():
            raise SessionError(f"working directory {cwd} does not exist")
        if self.exists(name):
            raise SessionError(f"{self.name} session '{name}' already exists")
        log = prepare_log_path(log_path) if log_path is not None else None
        self._start(name, log, cwd, env or {})
        if command:
            self.send(name, command)
        info = self.get(name)
        if info is None:
            raise SessionError(f"{self.name} session '{name}' ended right after it started")
        return info

    @abstractmethod
    def _start(self, name: str, log: Path | None, cwd: Path | None, env: dict[str, str]) -> None:
        """`create` without its checks: start the session (its log file, made private, already
        exists) and wait until it is ready; SessionError if it does not start."""

    @abstractmethod
    def wait_ready(self, name: str, timeout: float = READY_TIMEOUT) -> bool:
        """Wait until the session's screen shows something (the shell's prompt); False on timeout."""

    @abstractmethod
    def capture(self, name: str, *, timeout: float = CAPTURE_TIMEOUT) -> str:
        """What the session's (current) window shows now, a line per row, without the blank
        rows under its text.

        tmux keeps the colours as SGR escape codes; screen's copy is plain text. Either may hold
        whatever the program in the window printed: clean it (core.text.clean) before showing
        it. SessionError when the session does not exist or the multiplexer does not answer
        within `timeout` seconds (its client is killed).
        """

    @abstractmethod
    def send(self, name: str, text: str, *, enter: bool = True) -> None:
        """Type `text` into the session exactly as given; `enter` then presses Enter ("\\r")."""

    @abstractmethod
    def kill(self, name: str) -> None:
        """End the session (and everything running in it)."""

    @abstractmethod
    def detach(self, name: str) -> None:
        """Detach every terminal attached to the session (a no-op when none is)."""

    @abstractmethod
    def attach_argv(self, name: str, *, steal: bool = False) -> list[str]:
        """The argv to exec, with the terminal handed over, to attach to the session.

        `steal`: detach other terminals attached to it first.
        """


def list_sessions(
    backends: Iterable[str] = ("screen", "tmux"), *, socket: str | None = None
) -> tuple[list[SessionInfo], list[str]]:
    """(sessions, problems): the sessions of each backend, for tmux on every server of the user
    (the default one and each `-L` socket; only `socket` when given), each server's by name
    (a multiplexer lists them in an order of its own). A multiplexer that is not installed or
    a server that fails is a problem (one line), the others are still listed."""
    sessions: list[SessionInfo] = []
    problems: list[str] = []
    for name in backends:
        sockets: list[str | None] = [None]
        if name == "tmux":
            from core.sessions.tmux import server_sockets

            sockets = [socket] if socket else list(server_sockets())
        for server in sockets:
            backend = get_backend(name, socket=server)
            if not backend.available():
                problems.append(backend.install_hint)
                break
            try:
                sessions.extend(sorted(backend.list(), key=lambda info: info.name))
            except SessionError as exc:
                problems.append(str(exc))
    return sessions, problems


def get_backend(name: str, *, socket: str | None = None) -> SessionBackend:
    """The backend called `name` ("screen" or "tmux"); `socket` is a tmux `-L` socket name."""
    if name == "screen":
        if socket is not None:
            raise SessionError("socket is a tmux option; screen sessions live in $SCREENDIR")
        from core.sessions.screen import ScreenBackend

        return ScreenBackend()
    if name == "tmux":
        from core.sessions.tmux import TmuxBackend

        return TmuxBackend(socket=socket)
    raise SessionError(f"unknown session backend {name!r}: use screen or tmux")
