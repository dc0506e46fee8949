"""A running service's ``health`` checks: a TCP port, an HTTP URL or a shell command, every
``interval``, each bounded by ``timeout``.

Each up service has a ``HealthMonitor`` on a worker thread of its own (core.workers): a check
may take up to its timeout, and the scheduler's thread must never wait for one. The monitor
tells the scheduler (``report``, which posts to its thread) only when the health changes:
healthy after a check passed, unhealthy after ``failures`` checks in a row failed (not counting
those in the ``start_period`` after it is up, nor, for a restart, those before the first that
passed within its ``ready`` timeout). Then it ends: the scheduler restarts or fails the
service, and a new start gets a new monitor.

The http check does not follow redirects (a 3xx answer is healthy, as the server answered) and
uses no proxy from the environment (the URL is the service's own, usually on this machine).
The cmd check runs in a process group of its own, which is killed when it times out, and
whatever it left in its group is killed when it ends: a check never leaves anything behind.
One running when its service's start ends is killed then; the run's ``Commands`` (shared with
the ``ready: {cmd}`` tries, core.readiness) lets the run's end wait for that, so no check is
taken for a step's leftover ("stopped 1 process that steps left running").
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.recipe import HealthCheck
from core.state import Health
from core.workers import Workers

#: told of a change: the new health, and the last check's result for the user
Report = Callable[[Health, "str | None"], None]
#: a check: why it failed (None: it passed); given what says it is no longer wanted
Probe = Callable[[Callable[[], bool]], "str | None"]
CANCEL_POLL = 0.05  # how often a command being run looks whether it is still wanted
CLOSE_WAIT = 2.0  # the run's end waits this long at most for its commands to be killed


class Commands:
    """The check commands (``health: {cmd}``, ``ready: {cmd}``) of one run: ``run`` runs one
    (``probe_cmd``), ``close`` (the run's end) stops those running, waits for them to be
    killed (they look every ``CANCEL_POLL`` seconds), and runs no more."""

    def __init__(self) -> None:
        self.closed = False
        self._running = 0
        self._done = threading.Condition()

    def run(
        self,
        command: str,
        timeout: float,
        env: Mapping[str, str],
        cwd: Path,
        *,
        label: str = "check",
        stopped: Callable[[], bool] = lambda: False,
    ) -> str | None:
        """``probe_cmd``, cut short when ``stopped()`` says so or the run ends."""
        with self._done:
            if self.closed:
                return f"{label} cancelled"
            self._running += 1
        try:
            return probe_cmd(
                command, timeout, env, cwd, label=label, cancelled=lambda: self.closed or stopped()
            )
        finally:
            with self._done:
                self._running -= 1
                self._done.notify_all()

    def close(self) -> None:
        with self._done:
            self.closed = True
            self._done.wait_for(lambda: self._running == 0, CLOSE_WAIT)


class HealthMonitor:
    """The checks of one start of a service (``probe`` says why a check failed, None if it
    passed)."""

    def __init__(
        self,
        spec: HealthCheck,
        probe: Probe,
        report: Report,
        *,
        settle: float = 0.0,
    ) -> None:
        """``settle``: seconds during which failures do not count either, unless a check has
        passed: the time a restart (up at once, no ready check) gets to come up, as its first
        start had until its ready check passed."""
        self.spec, self.probe, self.report = spec, probe, report
        self._stopped = threading.Event()
        now = time.monotonic()
        self._grace_until = now + spec.start_period
        self._settle_until = now + settle

    def start(self, workers: Workers) -> None:
        workers.submit(self._run)

    def stop(self) -> None:
        """This start of the service ended: no more checks, no more reports."""
        self._stopped.set()

    def _run(self) -> None:
        health, failed = Health.UNKNOWN, 0
        while not self._stopped.is_set():
            why = self.probe(self._stopped.is_set)
            if self._stopped.is_set():
                return
            if why is None:
                failed, self._settle_until = 0, 0.0
                if health != Health.HEALTHY:
                    health = Health.HEALTHY
                    self.report(health, None)
            elif time.monotonic() >= max(self._grace_until, self._settle_until):
                failed += 1
                if failed >= self.spec.failures:
                    row = f"{failed} checks in a row" if failed > 1 else "1 check"
                    self.report(Health.UNHEALTHY, f"{why} ({row})")
                    return
            self._stopped.wait(self.spec.interval)


def make_probe(spec: HealthCheck, env: Mapping[str, str], cwd: Path, commands: Commands) -> Probe:
    """The check ``spec`` names, as a call that says why it failed (None: it passed); a cmd
    is run by the run's ``commands``."""
    timeout = spec.timeout
    if spec.port is not None:
        port = spec.port
        return lambda stopped: probe_port(port, timeout)
    if spec.http is not None:
        url = spec.http
        return lambda stopped: probe_http(url, timeout)
    command = spec.cmd or ""
    return lambda stopped: commands.run(command, timeout, env, cwd, stopped=stopped)


def probe_port(port: int, timeout: float) -> str | None:
    import socket  # here: a run without a port check does not load it (~2 ms of start-up)

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return None
    except TimeoutError:
        return f"port {port}: no answer within {timeout:g}s"
    except OSError as exc:
        return f"port {port}: {exc.strerror or exc}"


def probe_http(url: str, timeout: float) -> str | None:
    import urllib.error  # only a service with an http check needs urllib

    try:
        with _opener().open(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # 4xx/5xx, and 3xx: redirects are not followed
        status = exc.code
        exc.close()
    except urllib.error.URLError as exc:
        reason = exc.reason
        return f"{url}: {getattr(reason, 'strerror', None) or reason}"
    except TimeoutError:
        return f"{url}: no answer within {timeout:g}s"
    except (OSError, ValueError) as exc:  # a reset connection, a malformed answer
        return f"{url}: {exc}"
    return None if 200 <= status < 400 else f"{url}: HTTP {status}"


_OPENER: Any = None


def _opener() -> Any:
    """urllib without proxies and without following redirects (built once)."""
    global _OPENER
    if _OPENER is None:
        import urllib.request

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None  # urllib then raises HTTPError with the 3xx code

        _OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    return _OPENER


def probe_cmd(
    command: str,
    timeout: float,
    env: Mapping[str, str],
    cwd: Path,
    *,
    label: str = "check",
    cancelled: Callable[[], bool] | None = None,
) -> str | None:
    """``bash -c command`` in its own process group; killed, group and all, at ``timeout``, or
    as soon as ``cancelled()`` says so (looked at every ``CANCEL_POLL`` seconds). ``label``
    names the command in what it says: "check exit code 1"."""
    try:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        return f"cannot run the {label}: {exc.strerror or exc}"
    try:
        exited = _wait_unreaped(proc, timeout, cancelled)
        # The leader is not reaped yet, so its group id is still ours to signal: whatever the
        # check left behind goes with it (and all of it, when it ran out of time).
        _kill_group(proc.pid)
    finally:
        code = proc.wait()
    if exited is None:
        return f"{label} cancelled"
    if not exited:
        return f"{label} timed out after {timeout:g}s"
    return None if code == 0 else f"{label} exit code {code}"


def _wait_unreaped(
    proc: subprocess.Popen[bytes], timeout: float, cancelled: Callable[[], bool] | None = None
) -> bool | None:
    """Wait up to ``timeout`` for ``proc`` to exit, leaving it a zombie; True if it did, None
    if ``cancelled()`` said to stop first. A pidfd says so without reaping it."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:  # no pidfd (Linux < 5.3): reaped, and its group id is only likely ours
        fd = None
    try:
        poller = select.poll()
        if fd is not None:
            poller.register(fd, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            wait = left if cancelled is None else min(left, CANCEL_POLL)
            if fd is not None:
                if poller.poll(wait * 1000):
                    return True
            else:
                try:
                    proc.wait(wait)
                    return True
                except subprocess.TimeoutExpired:
                    pass
            if cancelled is not None and cancelled():
                return None
    finally:
        if fd is not None:
            os.close(fd)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
