"""When a background step counts as ready: ``ready: {port | log | ctx | delay}`` and its timeout.

The scheduler arms a check for each attempt of a background step and is called back, on its own
thread (through ``post``), with ``ready()`` or ``fail(reason)``; it decides there whether the
attempt is still the one waiting (a check may fire after the step ended). A port counts only
when the step's own process tree listens on it (core.ports): a stranger already on the port
made a step "ready" in milliseconds while its own server died with "Address already in use",
so such a step is not started at all (``port_taken``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from core.context import Context
from core.executors import Execution
from core.ports import answers, describe_holder, group_members, held_by, listeners, local_addresses
from core.recipe import Step
from core.steplog import StepLog
from core.workers import Workers

Callback = Callable[[], None]
PORT_POLL = 0.05  # polling a port: there is nothing to wait on
PORT_POLL_TAKEN = 0.25  # somebody else answers: /proc/net/tcp less often


class Readiness:
    """The ready checks of one run. ``post`` runs a callback on the scheduler's thread,
    ``after(delay, callback)`` there after ``delay`` seconds."""

    def __init__(
        self,
        ctx: Context,
        workers: Workers,
        post: Callable[[Callback], None],
        after: Callable[[float, Callback], None],
    ) -> None:
        self.ctx, self.workers, self.post, self.after = ctx, workers, post, after
        self._ctx_watch: dict[str, list[Callback]] = {}  # key -> who waits for it
        ctx.add_listener(self._on_ctx_write)

    @staticmethod
    def port_taken(step: Step) -> str | None:
        """Why a ``ready: {port: N}`` step cannot start: somebody already listens on N (its own
        server would die with "Address already in use" while the stranger answered for it)."""
        ready = step.ready
        if ready is None or ready.kind != "port":
            return None
        addresses = local_addresses(ready.host)
        if addresses is None:
            return None  # another machine: nobody's processes to see there
        port = int(ready.value)
        found = listeners(port, addresses) if answers(ready.host, port) else []
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
        what = f"{spec.kind} {spec.value}"
        self.after(spec.timeout, lambda: fail(f"not ready within {spec.timeout:g}s ({what})"))

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

    def _on_ctx_write(self, key: str) -> None:
        """A ctx key was written (any thread): its waiters are told, on the scheduler thread."""
        if self._ctx_watch.get(key):
            self.post(lambda: self._ctx_key_came(key))

    def _ctx_key_came(self, key: str) -> None:
        for ready in self._ctx_watch.pop(key, []):
            ready()


def _listens(execution: Execution, port: int, addresses: frozenset[str]) -> bool:
    """A LISTEN socket on ``port`` belongs to the step: its process group or session, or for a
    python step (a thread of the runner) the runner's own process."""
    found = listeners(port, addresses)
    if not found:
        return False
    pids = [os.getpid()] if execution.pid is None else group_members(execution.pid)
    return held_by(found, pids)
