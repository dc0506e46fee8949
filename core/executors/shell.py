"""Shell steps: a program in its own process group, its output pumped byte for byte to the log.

``cmd`` + ``args`` are exec'd directly; only ``run`` goes through ``bash -c``, because the recipe
asked for a shell. stdin is /dev/null (the terminal belongs to the TUI), stdout and stderr share
one pipe so their order is kept. The run's OutputReactor (one thread for every step) copies the
pipe to the log and watches a pidfd, so the step ends when its process exits even if a
grandchild still holds the pipe: that output is drained briefly, then read on until the holder
exits or the run ends.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
from pathlib import Path

from core.context import Context, ContextValueError
from core.executors import OnExit, Outcome
from core.privatedir import HeldFile, PrivateDirError
from core.reactor import OutputReactor
from core.recipe import Step
from core.steplog import StepLog

PIPE_SIZE = 1 << 20  # a bigger pipe: fewer, larger reads when a step floods its output
F_SETPIPE_SZ = (
    1031  # fcntl.F_SETPIPE_SZ (Linux), named in fcntl only from Python 3.10 on some builds
)


def parse_ctx_out(path: HeldFile) -> dict[str, object]:
    """Read an ORCH_CTX_OUT file: one JSON object, or ``KEY=VALUE`` lines (values are strings).

    Read through the run's held ctx_out folder, never following a link (core.privatedir).
    Raises ValueError saying what is wrong and where, in the step's terms ("ORCH_CTX_OUT: line
    2: ..."): the file's own name is the runner's business, the user only knows the variable.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except PrivateDirError as exc:  # the step put a link or a FIFO in its place
        raise ValueError(f"ORCH_CTX_OUT: {exc.why}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"ORCH_CTX_OUT: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    stripped = text.strip()
    if not stripped:
        return {}
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"ORCH_CTX_OUT: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        return data  # text starting with { that parses is an object
    values: dict[str, object] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            shown = line if len(line) <= 60 else line[:60] + "..."
            raise ValueError(
                f"ORCH_CTX_OUT: line {number}: not KEY=VALUE or a JSON object: {shown!r}"
            )
        values[key] = value
    return values


class ShellExecution:
    """One attempt of a shell step."""

    native_thread_id = None

    def __init__(
        self,
        step: Step,
        *,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        log: StepLog,
        ctx: Context,
        ctx_out: HeldFile,
        reactor: OutputReactor,
        on_exit: OnExit,
    ) -> None:
        self.step = step
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log = log
        self.ctx = ctx
        self.ctx_out = ctx_out
        self.reactor = reactor
        self.on_exit = on_exit
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    def start(self) -> None:
        """Spawn the process; raises OSError (no such program, not executable, bad cwd)."""
        read_fd, write_fd = os.pipe()
        try:
            fcntl.fcntl(read_fd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # over /proc/sys/fs/pipe-max-size for this user: keep the default
            pass
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,  # its own group: our signals reach the whole tree
                close_fds=True,
            )
        except OSError as exc:
            os.close(read_fd)
            raise OSError(exc.errno, self._spawn_error(exc)) from None
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.pid = self.proc.pid
        self.reactor.watch(read_fd, self.pid, self.log, self._ended)

    def _spawn_error(self, exc: OSError) -> str:
        """Which path the system refused, as text: Popen names a bad cwd by its repr
        (``PosixPath('...')``), and a bare "No such file or directory" says neither which."""
        why = exc.strerror or str(exc)
        if exc.filename is not None and os.fspath(exc.filename) == os.fspath(self.cwd):
            return f"cwd {self.cwd}: {why}"
        return f"{self.argv[0]}: {why} (cwd {self.cwd})"

    def _ended(self) -> None:
        """Called by the reactor once the process has exited (its output copied or drained)."""
        assert self.proc is not None
        self.on_exit(self._outcome(self.proc.wait()))

    def _outcome(self, code: int) -> Outcome:
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return Outcome(None, signal=-code, error=f"killed by {name}")
        if code != 0:
            return Outcome(code, error=f"exit code {code}")
        try:
            values = parse_ctx_out(self.ctx_out)
        except ValueError as exc:
            return Outcome(0, error=f"step {self.step.name!r}: {exc}")
        try:
            self.ctx.update_from(values)
        except ContextValueError as exc:
            return Outcome(0, error=f"step {self.step.name!r}: ORCH_CTX_OUT: {exc}")
        return Outcome(0)

    def _signal(self, sig: int) -> None:
        if self.pid is None:
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, sig: int) -> None:
        self._signal(sig)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
