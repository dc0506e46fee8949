"""Shell steps: a program in its own process group, its output pumped byte for byte to the log.

``cmd`` + ``args`` are exec'd directly; only ``run`` goes through ``bash -c``, because the recipe
asked for a shell. stdin is /dev/null (the terminal belongs to the TUI), stdout and stderr share
one pipe so their order is kept. The run's OutputReactor (one thread for every step) copies the
pipe to the log and watches a pidfd, so the step ends when its process exits even if a
grandchild still holds the pipe: that output is drained briefly, then read on until the holder
exits or the run ends.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
from pathlib import Path

from core.context import MAX_DEPTH, Context, ContextValueError
from core.executors.base import LaunchContext, OnExit, Outcome
from core.privatedir import HeldFile, PrivateDirError, TooLarge
from core.reactor import OutputReactor
from core.recipe import Step
from core.steplog import StepLog
from core.workers import Workers

PIPE_SIZE = 1 << 20  # a bigger pipe: fewer, larger reads when a step floods its output
F_SETPIPE_SZ = (
    1031  # fcntl.F_SETPIPE_SZ (Linux), named in fcntl only from Python 3.10 on some builds
)


#: The largest ORCH_CTX_OUT merged. The ctx lives in the runner's memory and is saved to
#: ctx.json as it changes; bigger data belongs in a file whose path the step puts in the ctx.
CTX_OUT_LIMIT = 64 * 1024 * 1024


def parse_ctx_out(path: HeldFile) -> dict[str, object]:
    """Read an ORCH_CTX_OUT file: one JSON object, or ``KEY=VALUE`` lines (values are strings).

    Read through the run's held ctx_out folder, never following a link (core.privatedir).
    Raises ValueError saying what is wrong and where, in the step's terms ("ORCH_CTX_OUT: line
    2: ..."): the file's own name is the runner's business, the user only knows the variable.
    """
    data = _read_ctx_out(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"ORCH_CTX_OUT: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    stripped = text.strip()
    if not stripped:
        return {}
    if stripped.startswith("{"):
        import json  # here: only a step that writes its ctx as JSON needs the decoder

        try:
            return json.loads(stripped)  # text starting with { that parses is an object
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"ORCH_CTX_OUT: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        except RecursionError:  # thousands of levels: the decoder gives up before we can look
            raise ValueError(f"ORCH_CTX_OUT: nested deeper than {MAX_DEPTH} levels") from None
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


def _read_ctx_out(path: HeldFile) -> bytes:
    """The file's bytes, read through the run's held ctx_out folder: a regular file of this
    user's (not a link the step put in its place, not a FIFO that would hang the step's end),
    within ``CTX_OUT_LIMIT`` (its size is looked at before anything is read; a step once wrote
    a gigabyte)."""
    try:
        return path.read_bytes(limit=CTX_OUT_LIMIT)
    except FileNotFoundError:
        return b""
    except PrivateDirError as exc:
        raise ValueError(f"ORCH_CTX_OUT: {exc.why}") from None
    except TooLarge as exc:
        raise ValueError(_too_big(exc.size)) from None
    except OSError as exc:
        raise ValueError(f"ORCH_CTX_OUT: cannot read it: {exc.strerror}") from None


def _too_big(size: int) -> str:
    return (
        f"ORCH_CTX_OUT: {size / 2**20:.1f} MiB, over the limit of {CTX_OUT_LIMIT // 2**20} MiB "
        "(write large data to a file and put its path in the ctx)"
    )


def spawn_error(exc: OSError, argv: list[str], cwd: Path) -> str:
    """Which path the system refused, as text: Popen names a bad cwd by its repr
    (``PosixPath('...')``), and a bare "No such file or directory" says neither which."""
    why = exc.strerror or str(exc)
    if exc.filename is not None and os.fspath(exc.filename) == os.fspath(cwd):
        return f"cwd {cwd}: {why}"
    if any(c.isspace() for c in argv[0]) and exc.errno == errno.ENOENT:
        from core.recipe.checks import one_program_hint  # only this mistake needs it

        return f"{argv[0]}: {why} (cwd {cwd}){one_program_hint(argv[0])}"
    return f"{argv[0]}: {why} (cwd {cwd})"


def exit_outcome(code: int) -> Outcome:
    """A step process's end (``Popen.wait``'s code: negative for a signal) as an Outcome."""
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return Outcome(None, signal=-code, error=f"killed by {name}")
    if code != 0:
        return Outcome(code, error=f"exit code {code}")
    return Outcome(0)


def merge_ctx_out(step: str, ctx_out: HeldFile, ctx: Context) -> Outcome:
    """A succeeded step's ORCH_CTX_OUT merged into ``ctx``: its success, or a failure saying
    why. On a Dask worker ``ctx`` is the step's recording copy, whose writes go back to the
    runner (core.executors.on_worker).

    Whatever goes wrong, the step ends: an exception escaping here once left a finished
    step "running" until a second signal.
    """
    where = f"step {step!r}: "
    try:
        values = parse_ctx_out(ctx_out)
        ctx.update_from(values)
    except ContextValueError as exc:
        return Outcome(0, error=f"{where}ORCH_CTX_OUT: {exc}")
    except ValueError as exc:
        return Outcome(0, error=f"{where}{exc}")
    except Exception as exc:  # MemoryError, a bug: still the step's end, never a hang
        return Outcome(0, error=f"{where}ORCH_CTX_OUT: {type(exc).__name__}: {exc}")
    return Outcome(0)


class ShellExecution:
    """One attempt of a shell step."""

    native_thread_id = None
    kill_abandons = False

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
        workers: Workers,
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
        self.workers = workers
        self.on_exit = on_exit
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    @classmethod
    def create(
        cls, step: Step, log: StepLog, attempt: int, context: LaunchContext, on_exit: OnExit
    ) -> ShellExecution:
        """The attempt's process, to be started, with its ORCH_CTX_OUT in its environment
        (ValueError: a ctx key it exposes that cannot be put in one)."""
        launcher = context.launcher
        ctx_out = launcher.ctx_out(step, attempt)
        return cls(
            step,
            argv=launcher.argv(step),
            env=launcher.shell_env(step, ctx_out),
            cwd=launcher.cwd(step),
            log=log,
            ctx=context.ctx,
            ctx_out=ctx_out,
            reactor=context.reactor,
            workers=context.workers,
            on_exit=on_exit,
        )

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
            raise OSError(exc.errno, spawn_error(exc, self.argv, self.cwd)) from None
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.pid = self.proc.pid
        self.reactor.watch(read_fd, self.pid, self.log, self._ended)

    def _ended(self) -> None:
        """Called by the reactor once the process has exited (its output copied or drained).

        Merging an ORCH_CTX_OUT (up to ``CTX_OUT_LIMIT`` of JSON) is done on a worker: the
        reactor's thread copies every other step's output, and a merge there once froze them
        all for seconds.
        """
        assert self.proc is not None
        code = self.proc.wait()
        if code == 0 and not self.ctx_out.untouched():
            self.workers.submit(
                lambda: self.on_exit(merge_ctx_out(self.step.name, self.ctx_out, self.ctx))
            )
        else:
            self.on_exit(exit_outcome(code))

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
