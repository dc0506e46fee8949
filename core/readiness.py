"""When a background step counts as ready: ``ready: {port | log | ctx | delay | http | cmd}`` and
its timeout.

The scheduler arms a check for each attempt of a background step and is called back, on its own
thread (through ``post``), with ``ready()`` or ``fail(reason)``; it decides there whether the
attempt is still the one waiting (a check may fire after the step ended). A port counts only
when the step's own process tree listens on it (core.ports): a stranger already on the port
made a step "ready" in milliseconds while its own server died with "Address already in use",
so such a step is not started at all (``port_taken``).

``http`` and ``cmd`` are tried (core.health's probes: no proxy, no redirects; ``bash -c`` in a
process group of its own) every ``interval`` on a worker thread until one passes, each try
bounded by ``TRY_LIMIT`` and what is left of the timeout; the timeout's reason says what the
last try answered. They stop as soon as the attempt no longer waits (it exited, is being
stopped, the run ends): a command being tried is killed then, group and all, and the run's end
waits for that (core.health.Commands), so no try is left for the end's clean-up to find.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from core.context import Context
from core.executors import Execution
from core.health import CANCEL_POLL, Commands, probe_http
from core.launch import Launcher
from core.ports import answers, describe_holder, group_members, held_by, listeners, local_addresses
from core.recipe import Step
from core.recipe.model import Readiness as ReadyCheck
from core.steplog import StepLog
from core.workers import Workers

Callback = Callable[[], None]
PORT_POLL = 0.05  # polling a port: there is nothing to wait on
PORT_POLL_TAKEN = 0.25  # somebody else answers: /proc/net/tcp less often
TRY_LIMIT = 5.0  # an http or cmd try: at most this long (or what is left of the timeout)


class Readiness:
    """The ready checks of one run. ``post`` runs a callback on the scheduler's thread,
    ``after(delay, callback)`` there after ``delay`` seconds."""

    def __init__(
        self,
        ctx: Context,
        workers: Workers,
        post: Callable[[Callback], None],
        after: Callable[[float, Callback], None],
        launcher: Launcher,
        commands: Commands,
    ) -> None:
        """``launcher``: a ``cmd``'s environment and folder, the step's; ``commands``: the
        run's, which runs it (and, at the run's end, stops it)."""
        self.ctx, self.workers, self.post, self.after = ctx, workers, post, after
        self.launcher, self.commands = launcher, commands
        self._ctx_watch: dict[str, list[Callback]] = {}  # key -> who waits for it
        ctx.add_listener(self._on_ctx_write)

    @staticmethod
    def port_taken(step: Step) -> str | None:
        """Why a ``ready: {port: N}`` (or ``{http: URL}`` on this machine) step cannot start:
        somebody already listens on N (its own server would die with "Address already in use"
        while the stranger answered for it)."""
        ready = step.ready
        where = None if ready is None else _listened(ready)
        if where is None:
            return None
        host, port = where
        addresses = local_addresses(host)
        if addresses is None:
            return None  # another machine: nobody's processes to see there
        found = listeners(port, addresses) if answers(host, port) else []
        if not found:
            return None
        return f"port {port} is already in use by {describe_holder(found[0])}"

    def arm(
        self,
        step: Step,
        execution: Execution,
        log: StepLog,
        waiting: Callable[[], bool],
        ready: Callback,
        fail: Callable[[str], None],
    ) -> None:
        """Check ``execution`` (an attempt of ``step``, writing to ``log``) for readiness, on the
        scheduler thread now: ``ready()`` when it is, ``fail(reason)`` when its timeout passes
        first or the check cannot be made. ``waiting()`` (any thread): whether the attempt still
        waits, so a port probe stops once it does not."""
        spec = step.ready
        if spec is None:
            ready()
            return
        if spec.kind == "log":
            log.watch(str(spec.value), lambda: self.post(ready))
        elif spec.kind == "ctx":
            key = str(spec.value)
            if key in self.ctx:
                ready()
                return
            self._ctx_watch.setdefault(key, []).append(ready)
        elif spec.kind == "delay":
            self.after(float(spec.value), ready)
        elif spec.kind == "port":
            self.workers.submit(self._probe_port, step, execution, waiting, ready, fail)
        answers = _Answers(f"cmd {_shown(spec.cmd)}" if spec.cmd else f"{spec.kind} {spec.value}")
        if spec.kind in ("http", "cmd"):
            self.workers.submit(self._try, step, waiting, ready, answers)
        self.after(
            spec.timeout, lambda: fail(f"not ready within {spec.timeout:g}s ({answers.last})")
        )

    def _probe_port(
        self,
        step: Step,
        execution: Execution,
        waiting: Callable[[], bool],
        ready: Callback,
        fail: Callable[[str], None],
    ) -> None:
        """Poll until the step itself listens on the port (another machine's port: until it
        answers), the attempt stops waiting, or readiness times out."""
        spec = step.ready
        assert spec is not None
        deadline = time.monotonic() + spec.timeout
        port, addresses = int(spec.value), local_addresses(spec.host)
        while waiting():
            pause = PORT_POLL
            try:
                if answers(spec.host, port):
                    if addresses is None or _listens(execution, port, addresses):
                        self.post(ready)
                        return
                    pause = PORT_POLL_TAKEN
            except ValueError as exc:  # a host that cannot even be looked up ("label too long")
                reason = f"cannot probe ready.port: host {spec.host!r}: {exc}"
                self.post(lambda reason=reason: fail(reason))
                return
            if time.monotonic() > deadline:
                return
            time.sleep(pause)

    def _try(
        self, step: Step, waiting: Callable[[], bool], ready: Callback, answers: _Answers
    ) -> None:
        """Try ``ready.http`` or ``ready.cmd`` every ``interval`` until it passes, the attempt
        stops waiting, the run ends or the timeout passes; ``answers`` keeps the last answer
        for the timeout's reason. A 2xx counts whoever gave it, once the port was free as the
        step started (``port_taken``): a server that daemonizes, or one in a container or on a
        Dask worker, is not in the step's process group, and the URL answering is what was
        asked for."""
        spec = step.ready
        assert spec is not None
        deadline = time.monotonic() + spec.timeout
        env: dict[str, str] = {}
        cwd, label = self.launcher.cwd(step), f"cmd {_shown(spec.cmd or '')}"
        if spec.cmd is not None:
            env = self.launcher.probe_env(step)

        def stopped() -> bool:
            return self.commands.closed or not waiting()

        while not stopped():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            limit = min(TRY_LIMIT, left)
            if spec.http is not None:
                why = probe_http(spec.http, limit)
            else:
                why = self.commands.run(
                    spec.cmd or "", limit, env, cwd, label=label, stopped=stopped
                )
            if stopped():
                return
            if why is None:
                self.post(ready)
                return
            answers.last = why
            pause_until = min(time.monotonic() + spec.interval, deadline)
            while not stopped() and (left := pause_until - time.monotonic()) > 0:
                time.sleep(min(left, CANCEL_POLL))

    def _on_ctx_write(self, key: str) -> None:
        """A ctx key was written (any thread): its waiters are told, on the scheduler thread."""
        if self._ctx_watch.get(key):
            self.post(lambda: self._ctx_key_came(key))

    def _ctx_key_came(self, key: str) -> None:
        for ready in self._ctx_watch.pop(key, []):
            ready()


def _listens(execution: Execution, port: int, addresses: frozenset[str]) -> bool:
    """A LISTEN socket on ``port`` belongs to the step: its process group or session, or for a
    python step the process it runs in: the runner's, or a Dask worker's on this machine."""
    found = listeners(port, addresses)
    if not found:
        return False
    worker = getattr(execution, "worker_pid", None)  # a step on a Dask worker of this machine
    if execution.pid is not None:
        pids = group_members(execution.pid)
    elif worker is not None:  # the worker (a python step) or a shell's group there
        pids = [worker, *group_members(worker)]
    else:  # a python step here: the runner's own process
        pids = [os.getpid()]
    return held_by(found, pids)


def _listened(spec: ReadyCheck) -> tuple[str, int] | None:
    """The host and port a ``ready`` check connects to: its port's, or its URL's (80 or 443
    when the URL names none); None for the other kinds, or a URL without a usable port."""
    if spec.port is not None:
        return spec.host, int(spec.port)
    if spec.http is None:
        return None
    from urllib.parse import urlsplit  # loaded by pathlib already: no start-up cost

    try:
        url = urlsplit(spec.http)
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        return None
    return (url.hostname or "", port) if url.hostname else None


class _Answers:
    """What an http or cmd try last answered (written by its worker, read at the timeout)."""

    def __init__(self, first: str) -> None:
        self.last = first  # before any answer: what is waited for


def _shown(command: str | None, width: int = 40) -> str:
    """A command as a reason quotes it: one line, long ones cut."""
    line = " ".join((command or "").split())
    return repr(line if len(line) <= width else line[: width - 3] + "...")
