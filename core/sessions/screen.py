"""GNU screen sessions, driven through screen's command line (argv lists, never a shell).

screen's own habits, and what this module does about them:

- `-S NAME` matches name *prefixes* (`-S web` may hit `web-frontend`): every command targets
  `PID.NAME`, resolved from `screen -ls` by exact name.
- `screen -ls` exits 1 even when sessions exist, ends some lines in CRLF, and screen 5 drops the
  date column: the output is parsed (by tab-separated fields), the exit code ignored. Sessions
  listed "(Dead ???)" whose server process is gone are wiped (`screen -wipe PID.NAME`); none
  are listed.
- `-X` returns before the server has run the command, and exits 0 when the command failed:
  results are checked afterwards (the session list, a file the server writes). `-Q` is not
  used: it answers through a temporary socket `PID.NAME-queryA` in the socket directory, which a
  concurrent `screen -ls` lists as a session (filtered out here) and disturbs.
- `stuff` expands `$VAR`, `^X` and backslashes, and it is a busy loop in the server: screen 4.9
  runs `while (n) LayProcess(&s, &n);` until the window's 4 KiB input buffer takes the text. That
  buffer only drains into the window's tty when the server gets back to its event loop, so a
  `stuff` arriving while the buffer is full (the program in the window is not reading fast
  enough: bash redrawing a 30 KB line, a program that is busy) spins at 100% CPU forever; once
  its socket's backlog is full every client blocks connecting to it, `screen -ls` included (for
  the whole socket directory). `stuff` is never used. Text (with its Enter, "\\r") is written to a
  private 0600 file and typed with one server command, `eval "readbuf FILE" "paste ."
  "writebuf ECHO"`: a paste never loops (the server feeds the rest as the tty drains), the text
  arrives byte for byte, is not interleaved with another sender's, and the echo proves the
  server read it before the file is removed. The text goes in one paste, not in pieces: a new
  `readbuf` or `paste` throws away what is left of a paste still being fed. For the same reason
  `send` first waits until the window's tty input queue is less than half full (the previous
  paste has been taken), and fails when the program in the window stops reading.
- `screen -dmS` returns before the session's socket exists, and a command typed before the shell
  is up may be lost: `create` waits for the session to be listed, then for its window to show
  something (a hardcopy that is not blank), before the first `send`.
- logs are flushed every 10 s by default: `logfile flush 0` after creation; `%` in a log path is
  a screen escape (doubled); screen creates logs 0644 (the file is created 0600 beforehand, its
  missing directories 0700).
- `$SCREENDIR` from the environment is respected (read at each call).
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from core.privatedir import PrivateDir
from core.sessions.base import (
    CAPTURE_TIMEOUT,
    READY_TIMEOUT,
    RUN_ID_ENV,
    SessionBackend,
    SessionError,
    SessionInfo,
    private_tempdir,
    validate_session_name,
    wait_until,
    without_blank_rows,
)
from core.watchdog import unmarked_environ

_SOCKET_DIR_RE = re.compile(r"(?:\d+ Sockets? in|No Sockets found in) (.+?)\.?$")
_TARGET_RE = re.compile(r"(\d+)\.(.+)")
_QUERY_SOCKET_RE = re.compile(r".+-query[A-Za-z]")
_COMMAND_TIMEOUT = 10.0
#: a send waits while the window's tty holds this many unread bytes (half of Linux's 4 KiB
#: input queue): a fuller queue means screen may still be feeding the previous paste
_INPUT_QUEUE_BUSY = 2048
#: unread bytes are sampled this many times in a row, 10 ms apart, below the mark before a send
#: goes on (a queue the program just emptied refills from screen within a few milliseconds)
_INPUT_QUEUE_CALM_SAMPLES = 4
#: screen's input buffer per window (IOSIZE): a longer paste is fed in turns of its event loop
_SCREEN_INPUT_BUFFER = 4096
#: how long a send of a longer text waits for the first of it to show on the tty
_ARRIVAL_WAIT = 0.5


@dataclass(frozen=True)
class _Entry:
    """One line of `screen -ls`."""

    pid: int
    name: str
    status: str  # "Detached", "Attached", "Multi, attached", "Dead ???", ...

    @property
    def target(self) -> str:
        return f"{self.pid}.{self.name}"

    @property
    def dead(self) -> bool:
        status = self.status.lower()
        return "dead" in status or "unreachable" in status


def parse_screen_ls(output: str) -> tuple[list[_Entry], str | None]:
    """Parse `screen -ls` output into its entries and the socket directory it names."""
    entries: list[_Entry] = []
    socket_dir = None
    for raw in output.splitlines():
        line = raw.rstrip("\r\n")
        if line.startswith("\t"):
            fields = [f for f in line.strip().split("\t") if f]
            match = _TARGET_RE.fullmatch(fields[0]) if fields else None
            if match is None:
                continue
            status = fields[-1].strip("()") if len(fields) > 1 else ""
            entries.append(_Entry(int(match.group(1)), match.group(2), status))
            continue
        found = _SOCKET_DIR_RE.search(line.strip())
        if found:
            socket_dir = found.group(1)
    # `screen -Q` (anyone's) answers through a temporary socket PID.NAME-queryX beside the
    # session's own PID.NAME: not a session
    names = {(e.pid, e.name) for e in entries}
    entries = [
        e
        for e in entries
        if not (_QUERY_SOCKET_RE.fullmatch(e.name) and (e.pid, e.name[:-7]) in names)
    ]
    return entries, socket_dir


def _screen_process_alive(pid: int) -> bool:
    """True when `pid` is a running screen process (its socket is not stale, just busy)."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and "screen" in process.name().lower()
    except Exception:
        return False


def _read_run_id(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = RUN_ID_ENV.encode() + b"="
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode("utf-8", "replace")
    return None


def _created(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except Exception:
        return None


def _window_ttys(server_pid: int) -> list[str]:
    """The ttys of the session's windows, e.g. ["/dev/pts/3"]: the standard input of the
    server's children (psutil's `terminal()` caches the ttys that existed at its first call)."""
    ttys = []
    try:
        children = psutil.Process(server_pid).children()
    except psutil.Error:
        return []
    for child in children:
        try:
            tty = os.readlink(f"/proc/{child.pid}/fd/0")
        except OSError:
            continue
        if tty.startswith(("/dev/pts/", "/dev/tty")) and tty not in ttys:
            ttys.append(tty)
    return ttys


def _unread_input(ttys: list[str]) -> int:
    """The most bytes waiting to be read on any of `ttys` (FIONREAD); 0 when none can be read.

    Opening a window's tty (the same user's) to ask is harmless: nothing is read from it.
    """
    most = 0
    for tty in ttys:
        try:
            fd = os.open(tty, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            unread = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            unread = 0
        finally:
            os.close(fd)
        most = max(most, unread)
    return most


def _read_nonempty(path: Path) -> bytes | None:
    """The file's bytes, or None while it is missing or empty (being written)."""
    try:
        return path.read_bytes() or None
    except FileNotFoundError:
        return None


def _size(folder: PrivateDir, name: str) -> int:
    """The size of the file `name` in `folder` (a link is not followed)."""
    return os.stat(name, dir_fd=folder.fd, follow_symlinks=False).st_size


def _same_text(echo: bytes | None, sent: bytes) -> bool:
    """True when `echo` (what `writebuf` wrote) is the buffer `sent` was read into.

    screen's buffer files swap line ends: `readbuf` turns a lone "\\n" into "\\r" and `writebuf`
    a lone "\\r" into "\\n" (each byte for one byte), so both are compared with "\\n" for either.
    """
    return echo is not None and echo.replace(b"\r", b"\n") == sent.replace(b"\r", b"\n")


def _escape_log_path(path: Path) -> str:
    """screen expands `%` escapes in log file names; `%%` is a literal `%`."""
    return str(path).replace("%", "%%")


class ScreenBackend(SessionBackend):
    """GNU screen (4.6 or later: logging uses `-L -Logfile`)."""

    name = "screen"
    binary = "screen"
    install_hint = "GNU screen is not installed (apt-get install screen)"
    detach_keys = "Ctrl-a d"
    nested_detach_keys = "Ctrl-a a d"
    inside_env = "STY"

    def __init__(self, *, ready_timeout: float = READY_TIMEOUT) -> None:
        self.ready_timeout = ready_timeout

    # -- running screen ---------------------------------------------------------------------

    def _run(
        self,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = _COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        binary = self._require_binary()
        try:
            return subprocess.run(
                [binary, *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                env=env,
                cwd=cwd,
                timeout=timeout,
            )
        except FileNotFoundError:
            raise SessionError(self.install_hint) from None
        except subprocess.TimeoutExpired:
            raise SessionError(
                f"screen {' '.join(args[:3])} did not answer in {timeout:g} s"
            ) from None

    def _x(self, target: str, *command: str, timeout: float = _COMMAND_TIMEOUT) -> None:
        """Send one command to a session with -X (asynchronous: check the effect yourself)."""
        result = self._run(["-S", target, "-X", *command], timeout=timeout)
        if result.returncode != 0:
            name = target.split(".", 1)[1]
            message = (result.stdout + result.stderr).strip().splitlines()
            if any("No screen session found" in m for m in message):
                raise SessionError(f"no screen session named '{name}'")
            detail = message[-1] if message else f"exit code {result.returncode}"
            raise SessionError(f"screen {command[0]} failed for session '{name}': {detail}")

    def _entries(self) -> tuple[list[_Entry], str | None]:
        result = self._run(["-ls"])  # exits 1 even when sessions exist
        entries, socket_dir = parse_screen_ls(result.stdout + result.stderr)
        live = []
        for entry in entries:
            if entry.dead and not _screen_process_alive(entry.pid):
                self._run(["-wipe", entry.target])
            elif not entry.dead:
                live.append(entry)
        return live, socket_dir

    def _targets(self, name: str) -> list[str]:
        validate_session_name(name)
        return [e.target for e in self._entries()[0] if e.name == name]

    def _target(self, name: str) -> str:
        """The one live session named exactly `name`, as PID.NAME."""
        targets = self._targets(name)
        if not targets:
            raise SessionError(f"no screen session named '{name}'")
        if len(targets) > 1:
            pids = ", ".join(t.split(".", 1)[0] for t in targets)
            raise SessionError(
                f"{len(targets)} screen sessions are named '{name}' (pids {pids}); kill the extra ones"
            )
        return targets[0]

    # -- the backend API ---------------------------------------------------------------------

    def list(self) -> list[SessionInfo]:
        entries, socket_dir = self._entries()
        sessions = []
        for entry in entries:
            sessions.append(
                SessionInfo(
                    name=entry.name,
                    backend=self.name,
                    state="attached" if "attached" in entry.status.lower() else "detached",
                    pid=entry.pid,
                    created=_created(entry.pid),
                    run_id=_read_run_id(entry.pid),
                    socket=os.path.join(socket_dir, entry.target) if socket_dir else None,
                )
            )
        return sessions

    def exists(self, name: str) -> bool:
        return bool(self._targets(name))

    def _start(self, name: str, log: Path | None, cwd: Path | None, env: dict[str, str]) -> None:
        args = ["-dmS", name]
        if log is not None:
            args = ["-L", "-Logfile", _escape_log_path(log), *args]
        # the session outlives the run: its server does not carry the run's marker
        result = self._run(args, env={**(unmarked_environ() or os.environ), **env}, cwd=cwd)
        if result.returncode != 0:
            detail = (result.stdout + result.stderr).strip().replace("\r", "")
            raise SessionError(f"screen could not create session '{name}': {detail}")
        # -dm returns before the session's socket exists
        targets = wait_until(lambda: self._targets(name), self.ready_timeout)
        if not targets:
            raise SessionError(f"screen session '{name}' did not start")
        target = targets[0]
        if log is not None:
            self._x(target, "logfile", "flush", "0")
        if not self.wait_ready(name, self.ready_timeout) and target not in self._targets(name):
            raise SessionError(f"screen session '{name}' ended right after it started")

    def wait_ready(self, name: str, timeout: float = READY_TIMEOUT) -> bool:
        target = self._target(name)
        deadline = time.monotonic() + timeout

        def shows_something() -> bool:
            remaining = max(deadline - time.monotonic(), 0.01)
            with private_tempdir("orch-screen-") as directory:
                # a copy not written in half a second (the window not made yet?) is asked again
                copy = self._hardcopy(target, directory, wait=min(0.5, remaining))
            if copy is None and target not in self._targets(name):
                raise SessionError(f"screen session '{name}' ended while starting")
            return bool(copy and copy.strip())

        try:
            return bool(wait_until(shows_something, timeout))
        except SessionError:  # the session is gone
            return False

    def capture(self, name: str, *, timeout: float = CAPTURE_TIMEOUT) -> str:
        """`hardcopy` of the session's window: plain text, screen keeps no colours in it."""
        target = self._target(name)
        with private_tempdir("orch-screen-") as directory:
            copy = self._hardcopy(target, directory, wait=timeout, client_timeout=timeout)
        if copy is None:
            if target not in self._targets(name):
                raise SessionError(f"no screen session named '{name}'")
            raise SessionError(f"screen did not copy session '{name}' in {timeout:g} s")
        return without_blank_rows(copy)

    def _hardcopy(
        self,
        target: str,
        directory: Path,
        *,
        wait: float,
        client_timeout: float = _COMMAND_TIMEOUT,
    ) -> str | None:
        """What the session's window shows, as the server copies it into `directory` (a fresh
        folder of ours nobody else can write to); None if the copy is not done `wait` seconds
        after the client asking for it returned (SessionError if it takes `client_timeout`).

        The server opens the copy with `fopen(path, "w")`, which follows a symbolic link: the
        file is created here first (O_EXCL, O_NOFOLLOW: never one already there) and read back
        without following links. A second copy into `done` follows in the same command: the
        server writes them in turn, so once `done` has something the first one is complete.
        """
        try:
            with PrivateDir.open(directory, create=False) as folder:
                for name in ("screen", "done"):
                    os.close(folder.create(name))
                self._x(
                    target,
                    "eval",
                    f"hardcopy {directory / 'screen'}",
                    f"hardcopy {directory / 'done'}",
                    timeout=client_timeout,
                )
                if not wait_until(lambda: _size(folder, "done") > 0, wait):
                    return None
                return folder.read("screen").decode("utf-8", "replace")
        except OSError as exc:  # PrivateDirError included
            raise SessionError(f"cannot copy the screen of session {target}: {exc}") from None

    def send(self, name: str, text: str, *, enter: bool = True) -> None:
        target = self._target(name)
        data = text.encode("utf-8", "surrogateescape") + (b"\r" if enter else b"")
        if not data:
            return
        ttys = _window_ttys(int(target.split(".", 1)[0]))
        self._wait_for_input_room(name, ttys)
        with private_tempdir("orch-screen-") as directory:
            buffer, echo = directory / "text", directory / "echo"
            fd = os.open(buffer, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            # the server writes the buffer back once it has read it: proof that the text went
            # in whole, and that the file may be removed
            self._x(target, "eval", f"readbuf {buffer}", "paste .", f"writebuf {echo}")
            if not wait_until(lambda: _same_text(_read_nonempty(echo), data), self.ready_timeout):
                if target not in self._targets(name):
                    raise SessionError(f"screen session '{name}' ended while text was sent to it")
                raise SessionError(f"screen did not take the text for session '{name}' in time")
        if len(data) > _SCREEN_INPUT_BUFFER:
            # the server types the rest in later turns of its loop: until it shows on the tty,
            # the next send would find the queue empty and cut it off
            wait_until(lambda: _unread_input(ttys) > 0, _ARRIVAL_WAIT)

    def _wait_for_input_room(self, name: str, ttys: list[str]) -> None:
        """Wait until the session's windows have read most of what was typed into them.

        A paste still being fed would be cut off by the next one. screen keeps feeding it only
        while the tty's input queue is full, so a queue found less than half full a few times
        in a row means it is done. A queue that stops moving means the program in the window
        does not read: SessionError after `ready_timeout`, rather than text thrown away.
        """
        calm, last, moved = 0, -1, time.monotonic()
        while calm < _INPUT_QUEUE_CALM_SAMPLES:
            unread = _unread_input(ttys)
            calm = calm + 1 if unread < _INPUT_QUEUE_BUSY else 0
            now = time.monotonic()
            if unread != last:
                last, moved = unread, now
            elif calm == 0 and now - moved > self.ready_timeout:
                raise SessionError(
                    f"screen session '{name}' is not reading its input"
                    f" ({unread} bytes typed into it are still waiting)"
                )
            if calm < _INPUT_QUEUE_CALM_SAMPLES:
                time.sleep(0.01)

    def kill(self, name: str) -> None:
        targets = self._targets(name)
        if not targets:
            raise SessionError(f"no screen session named '{name}'")
        for target in targets:
            self._run(["-S", target, "-X", "quit"])
        if wait_until(lambda: not self._targets(name), self.ready_timeout):
            return
        for target in self._targets(name):  # quit ignored (a hung server?): ask the server to end
            try:
                os.kill(int(target.split(".", 1)[0]), signal.SIGTERM)
            except OSError:
                pass
        if not wait_until(lambda: not self._targets(name), self.ready_timeout):
            raise SessionError(f"screen session '{name}' did not end")

    def detach(self, name: str) -> None:
        target = self._target(name)
        info = self.get(name)
        if info is None or info.state != "attached":
            return
        self._run(["-d", target])
        if not wait_until(lambda: (i := self.get(name)) is None or i.state == "detached", 5.0):
            raise SessionError(f"screen session '{name}' is still attached")

    def attach_argv(self, name: str, *, steal: bool = False) -> list[str]:
        """`screen -r PID.NAME`; `steal`: `screen -d -r PID.NAME` (detach the other terminal).

        A session attached elsewhere without `steal` is shared: `screen -x PID.NAME`.
        """
        binary = self._require_binary()
        target = self._target(name)
        if steal:
            return [binary, "-d", "-r", target]
        info = self.get(name)
        if info is not None and info.state == "attached":
            return [binary, "-x", target]
        return [binary, "-r", target]
