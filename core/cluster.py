"""The run's Dask cluster (``--executor`` / ``executor:``): started or reached before any step
runs, checked, and closed with the run.

``dask-local://N`` starts a LocalCluster of N worker processes (one thread each, so N CPU-bound
python steps run side by side, out of the GIL's way) for this run alone; ``dask://HOST:PORT``
(``dask+tls://`` with Dask's own security configuration) uses a running scheduler. Either way,
before anything runs: the scheduler must answer (Dask's ``distributed.comm.timeouts.connect``),
there must be a worker, the versions that matter (``SAME_VERSIONS``) must agree, and every
worker must import orch-tui's worker code and each cluster step's module; otherwise
``ClusterError``, which the command line turns into exit 2.

On a cluster we start, a task whose worker dies is not run again (``allowed-failures: 0``): the
step fails "worker lost", and retrying is orch-tui's business (``retries:``), not Dask's.

``distributed`` is imported here only inside functions: a run without an executor never loads it.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from core.log import get_logger
from core.recipe.kinds import EXECUTOR_PATTERN

if TYPE_CHECKING:
    from core.recipe import Recipe

_log = get_logger("orch.cluster")

#: seconds to wait for a first worker of an existing scheduler
WORKER_WAIT = 30.0
#: where a cluster we start listens (scheduler, nannies, workers, their HTTP servers): nothing
#: of a run is reachable from another machine unless the user set that up
LOOPBACK = "127.0.0.1"

Handler = Callable[[int, list[Any]], None]


class ClusterError(Exception):
    """The cluster cannot run this recipe: one line for the user, exit 2."""


@dataclass(frozen=True)
class ExecutorSpec:
    """A parsed ``--executor``: ``workers`` for dask-local://N, else the scheduler's address."""

    url: str
    workers: int | None = None
    address: str | None = None


def parse_executor(url: str) -> ExecutorSpec:
    """ValueError with the accepted forms for anything else."""
    if not re.fullmatch(EXECUTOR_PATTERN, url):
        raise ValueError(
            f"--executor {url!r}: expected dask-local://N (N workers) or dask://HOST:PORT "
            "(or dask+tls://HOST:PORT)"
        )
    scheme, rest = url.split("://", 1)
    if scheme == "dask-local":
        return ExecutorSpec(url, workers=int(rest))
    return ExecutorSpec(url, address=("tls://" if scheme == "dask+tls" else "tcp://") + rest)


def cluster_modules(recipe: Recipe) -> dict[str, str]:
    """``{step: module}`` of the python steps that run on the cluster."""
    return {
        s.name: s.module for s in recipe.steps if s.type == "python" and s.on_cluster and s.module
    }


def _block_sigint() -> set[int] | None:
    """Block SIGINT in this thread if it is the main one (where Python runs its handler); the
    mask before, or None (another thread: nothing to hold back)."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return None
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}))


def _restore_mask(mask: set[int] | None) -> None:
    """The mask ``_block_sigint`` returned; a SIGINT that came meanwhile is delivered now."""
    import signal

    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class _WaitCutShort(logging.Filter):
    """Drops the scheduler's report of a step's stop watcher's ``Event.wait`` that the close
    of the cluster cancelled (``distributed.event - ERROR`` and a 13-line CancelledError
    traceback on stderr, at the end of every dask-local run with a python step): the wait is
    a poll (core.executors.on_worker.StopWatch) and being cut short is its normal end."""

    def filter(self, record: logging.LogRecord) -> bool:
        import asyncio

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)


def open_cluster(url: str | None, recipe: Recipe) -> Cluster | None:
    """The cluster for ``url`` (``--executor``, else the recipe's ``executor:``), started and
    checked; None without one, or when no step would run on it."""
    url = url or recipe.executor
    if url is None or not any(s.on_cluster for s in recipe.steps):
        return None
    try:
        spec = parse_executor(url)
    except ValueError as exc:
        raise ClusterError(str(exc)) from None
    cluster = Cluster.start(spec)
    try:
        cluster.check(recipe)
    except BaseException:
        cluster.close()
        raise
    return cluster


#: what must be the same here and on every worker: what pickles the task and its result, and
#: orch-tui's own worker code (Dask itself only warns about a mismatch)
SAME_VERSIONS = ("python", "dask", "distributed", "cloudpickle", "msgpack", "orch-tui")


def _version(packages: dict[str, str | None], name: str) -> str | None:
    value = packages.get(name)
    if name == "python" and value:
        return ".".join(value.split(".")[:2])  # 3.11.7.final.0: a patch release pickles alike
    return value


def version_skew(versions: dict[str, Any]) -> str | None:
    """The first package whose version differs between this machine and a worker, said in one
    line; None when they agree (``Client.get_versions``'s answer)."""
    here = versions["client"]["packages"]
    for worker, info in sorted(versions["workers"].items()):
        there = (info or {}).get("packages", {})
        for name in SAME_VERSIONS:
            mine, theirs = _version(here, name), _version(there, name)
            if mine != theirs:
                return f"{name} {mine} here, {theirs} on worker {worker}"
    return None


def _children_ignore_cwd() -> None:
    """Make the Python processes multiprocessing starts (Dask's workers, its resource tracker)
    run with ``-P``: they are ``python -c``, which looks in the current folder first for what
    it imports as it starts (multiprocessing itself), and a run started in /tmp would import
    another user's ``multiprocessing.py`` there. Their flags are the ones this process was
    started with (``util._args_from_interpreter_flags``, for spawn, forkserver and the
    tracker alike); the daemon has -P already, the ``orch-tui`` script not. Once per process."""
    from multiprocessing import util

    flags = util._args_from_interpreter_flags
    if "-P" not in flags():
        util._args_from_interpreter_flags = lambda: [*flags(), "-P"]


def _run_key() -> Any:
    """A TLS key and certificate made in memory for one cluster (``Security.temporary``).
    It needs ``cryptography``, in the ``dask`` extra since the cluster had TLS: an older
    install of orch-tui[dask] lacks it, which is ClusterError (one line, exit 2)."""
    from distributed.security import Security

    try:
        return Security.temporary()
    except ImportError:
        raise ClusterError(
            "dask-local needs the Python package cryptography (its TLS key): "
            "pip install 'orch-tui[dask]'"
        ) from None


def _local_cluster(workers: int, scratch: str) -> Any:
    """A LocalCluster of ``workers`` one-thread worker processes that only this run can use.

    It listens on 127.0.0.1, where every local user can connect: over plain TCP another
    user's client could run any code in its workers, as us. So TLS both ways, with a key and
    certificate made in memory for this cluster alone (``Security.temporary``; the workers get
    them through their spawn pipe), and no HTTP pages (the scheduler's show the workers' logs).

    Its servers keep their files in ``scratch``, a private folder of the run's: each puts its
    folder first on ``sys.path`` (the scheduler in this process too), and Dask's default is
    ``dask-scratch-space`` in the temp folder, the same for every user: whoever made it first,
    writable, had their modules imported by everybody's runs."""
    import dask
    from distributed import LocalCluster

    security = _run_key()
    _children_ignore_cwd()
    quiet = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []}
    with dask.config.set({"distributed.scheduler.allowed-failures": 0, **quiet}):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host=LOOPBACK,
            security=security,
            dashboard_address=None,
            # the scheduler serves HTTP even without a dashboard, on 8787 unless told
            scheduler_kwargs={"dashboard_address": f"{LOOPBACK}:0", "local_directory": scratch},
            local_directory=scratch,
            silence_logs=logging.ERROR,
            preload=["core.executors.on_worker"],  # its dask_setup: a Ctrl-C is not theirs
        )


class Cluster:
    """A Dask client (and the LocalCluster, if we started it) for one run, and the run's topic:
    every batch a step's task sends (core.executors.on_worker) is handed to the handler
    registered for its task key."""

    def __init__(
        self, spec: ExecutorSpec, client: Any, local: Any = None, scratch: str | None = None
    ) -> None:
        """``local``: the LocalCluster we started, with its private ``scratch`` folder."""
        self.spec, self.client, self._local, self.scratch = spec, client, local, scratch
        self.topic = f"orch-{uuid.uuid4().hex}"
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        client.subscribe_topic(self.topic, self._on_event)

    @classmethod
    def start(cls, spec: ExecutorSpec) -> Cluster:
        from distributed import Client

        # A python step gets a copy of the ctx in its task (README: ``reads:`` ships less): a
        # big one made Dask print six lines, "UserWarning: Sending large graph of size ...",
        # into the run's output, unprefixed, about nothing the recipe wrote.
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        if not _log.isEnabledFor(logging.DEBUG):  # Dask's INFO lines would crowd a CI log
            logging.getLogger("distributed").setLevel(logging.WARNING)
            events = logging.getLogger("distributed.event")
            if not any(isinstance(f, _WaitCutShort) for f in events.filters):
                events.addFilter(_WaitCutShort())
        if spec.workers is not None:
            import shutil
            import tempfile

            scratch = tempfile.mkdtemp(prefix="orch-dask-")  # 0700, new: ours alone
            # No Ctrl-C in this thread while the cluster starts: one then cut its start short
            # and left it half made (Dask's exit hook closing it: "AssertionError:
            # Status.init" tracebacks; its scratch removed under it). Held back here, it comes
            # once the cluster is whole: below, where it is closed as it should be.
            blocked = _block_sigint()
            try:
                local = _local_cluster(spec.workers, scratch)
                try:
                    _restore_mask(blocked)
                    return cls(spec, Client(local), local, scratch)
                except BaseException:
                    local.close()
                    raise
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise
            finally:
                _restore_mask(blocked)
        try:
            client = Client(spec.address)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {spec.url}: {exc}") from None
        return cls(spec, client)

    def check(self, recipe: Recipe) -> None:
        """ClusterError unless the cluster can run the recipe's cluster steps (module doc)."""
        from core.executors import on_worker

        client = self.client
        if self._local is None:
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT)
            except TimeoutError:
                raise ClusterError(
                    f"the Dask scheduler at {self.spec.url} has no workers "
                    f"(waited {WORKER_WAIT:g}s)"
                ) from None
        skew = version_skew(client.get_versions(packages=["orch-tui"]))
        if skew is not None:
            raise ClusterError(f"version skew on the Dask cluster {self.spec.url}: {skew}")
        workspace, modules = str(recipe.workspace), cluster_modules(recipe)
        try:
            answers = client.run(on_worker.check_worker, workspace, modules)
        except Exception as exc:
            raise ClusterError(
                f"the Dask workers cannot run orch-tui's worker code ({type(exc).__name__}: "
                f"{exc}): install orch-tui[dask] on them"
            ) from None
        for worker, problems in sorted(answers.items()):
            if problems:
                raise ClusterError(f"Dask worker {worker}: {problems[0]}")

    # ------------------------------------------------------------------ tasks
    def task_key(self, step: str, attempt: int) -> str:
        """Unique per attempt (Dask would hand back a finished task of the same key)."""
        return f"orch-{step}-attempt-{attempt}-{uuid.uuid4().hex[:8]}"

    def listen(self, key: str, handler: Handler) -> None:
        with self._lock:
            self._handlers[key] = handler

    def forget(self, key: str) -> None:
        with self._lock:
            self._handlers.pop(key, None)

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        """On the client's event loop: a batch of a step's output and ctx writes."""
        msg = event[1]
        with self._lock:
            handler = self._handlers.get(msg.get("k"))
        if handler is not None:
            try:
                handler(msg["n"], orjson.loads(msg["i"]))
            except Exception:
                _log.exception("handling a batch of %s failed", msg.get("k"))

    def set_event(self, name: str) -> None:
        """Set the distributed Event ``name`` (a step's ``stop``)."""
        from distributed import Event

        Event(name, client=self.client).set()

    def clear_event(self, name: str) -> None:
        """The scheduler forgets an Event once it is cleared and nobody waits on it."""
        from distributed import Event

        Event(name, client=self.client).clear()

    def close(self) -> None:
        """Cancel what is left, disconnect, stop the LocalCluster's workers (a step that ignored
        ``stop`` goes with them; on a scheduler we did not start, it is left to its worker)."""
        try:
            self.client.unsubscribe_topic(self.topic)
        except Exception:
            pass
        self.client.close()
        if self._local is not None:
            self._local.close()
        if self.scratch is not None:
            import shutil

            shutil.rmtree(self.scratch, ignore_errors=True)
