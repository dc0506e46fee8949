"""The run directory: state.json, ctx.json, events.jsonl and logs/, written so a crash loses little.

The folder is made private and held open (core.privatedir): every file is created or replaced
through its descriptor, never by following a path another user could have changed.
state.json and ctx.json are replaced atomically (temporary file, fsync, rename), so a reader
never sees half a file. Writes are coalesced by a flusher thread: a thousand fast steps are not a
thousand fsyncs, yet what is on disk is at most ``interval`` seconds behind. A large ctx backs the
flusher off (the interval grows with the time a save takes) so saving never eats a whole core.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from core.events import Event, encode_event
from core.privatedir import PrivateDir
from core.state import FAILURES, Status

RUNS_DIR = Path(".orch") / "runs"
_log = logging.getLogger("orch.store")
#: What a file name cannot hold (or would turn into a path): '/', NUL and control characters.
_UNFIT = re.compile("[/\x00-\x1f\x7f-\x9f]")
#: File systems allow 255 bytes a name: room for "-N" and ".log" (a step name may be 512 bytes).
MAX_LOG_NAME_BYTES = 200


def atomic_write(folder: PrivateDir, name: str, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``name`` in ``folder`` so that readers see the old file or the new
    one, never a mix. The temporary file is new (O_EXCL: never a link someone left there)."""
    tmp = f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        fd = folder.create(tmp)
    except FileExistsError:  # left by a save of this thread that could not even clean up
        folder.unlink(tmp)
        fd = folder.create(tmp)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    except BaseException:  # a full disk: no half-written temporary file left behind
        try:
            folder.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)
    folder.replace(tmp, name)


def new_run_id() -> str:
    """Sortable and readable: 20261125-081502-3f9c."""
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid() & 0xFFFF:04x}"


def log_name(step: str, taken: set[str]) -> str:
    """A file name for a step's log: the step's own name, in whatever script it is written,
    with only what a file name cannot hold replaced ('/', NUL and other control characters,
    leading dots that would hide it), cut to ``MAX_LOG_NAME_BYTES`` of UTF-8, and unique
    within the run even where the file system folds case or Unicode forms (``taken`` holds
    the folded names already given)."""
    base = _UNFIT.sub("_", step).lstrip(".") or "step"
    name, n = _cut(base, MAX_LOG_NAME_BYTES), 1
    while _folded(name) in taken:
        n += 1
        suffix = f"-{n}"
        name = _cut(base, MAX_LOG_NAME_BYTES - len(suffix)) + suffix
    taken.add(_folded(name))
    return name + ".log"


def _cut(text: str, limit: int) -> str:
    """``text`` shortened to at most ``limit`` bytes of UTF-8, never inside a character."""
    return text.encode()[:limit].decode("utf-8", "ignore")


def _folded(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


class RunStore:
    """Owns one run directory. Thread-safe; the runner calls ``mark_*`` and the flusher writes.

    ``folder``, ``logs`` and ``ctx_out`` are the run directory, its logs/ and ctx_out/ (the
    shell steps' ORCH_CTX_OUT files), held open until ``close``. Raises PrivateDirError when the
    run directory, or a folder between ``below`` and it, is not private to this user (see
    ``PrivateDir.open``)."""

    def __init__(self, run_dir: Path, *, below: Path | None = None, interval: float = 0.25) -> None:
        self.run_dir = run_dir
        self.interval = interval
        self.folder = PrivateDir.open(run_dir, below=below)
        self._held = [self.folder]
        try:
            self.logs = self.folder.subdir("logs")
            self._held.append(self.logs)
            self.ctx_out = self.folder.subdir("ctx_out")
            self._held.append(self.ctx_out)
            # 0600 like every file of the run, whatever the umask: events carry the steps' output
            self._events: BinaryIO = os.fdopen(self.folder.append("events.jsonl"), "ab")
        except BaseException:
            self._close_folders()
            raise
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one writer at a time, so an old save never lands last
        self._wake = threading.Event()
        self._closed = False
        self._reported: set[str] = set()  # the files whose save failed, said once each
        self._on_error: Callable[[str], None] = _log.warning
        self._final_saved = False
        self._state_dirty = False
        self._state_fn: Callable[[], bytes] | None = None
        self._ctx_fn: Callable[[], bytes] | None = None
        self._ctx_version_fn: Callable[[], int] | None = None
        self._ctx_saved_version = -1
        self._ctx_next_due = 0.0
        self._thread = threading.Thread(target=self._flush_loop, name="orch-store", daemon=True)

    def start(
        self,
        state_fn: Callable[[], bytes],
        ctx_fn: Callable[[], bytes],
        ctx_version_fn: Callable[[], int],
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        """Begin coalesced saving; the callables produce the current state.json and ctx.json
        bytes on demand.
        ``on_error`` is told (once a file) what could not be saved; default: a log warning."""
        self._state_fn, self._ctx_fn, self._ctx_version_fn = state_fn, ctx_fn, ctx_version_fn
        if on_error is not None:
            self._on_error = on_error
        self._state_dirty = True
        self._thread.start()

    # -- events ---------------------------------------------------------------------------------
    def append_event(self, event: Event) -> None:
        line = encode_event(event) + b"\n"
        with self._lock:
            if not self._closed:
                self._events.write(line)

    # -- coalesced snapshots ----------------------------------------------------------------------
    def state_changed(self) -> None:
        self._state_dirty = True
        self._wake.set()

    def ctx_changed(self) -> None:
        self._wake.set()

    def _flush_loop(self) -> None:
        while not self._closed:
            self._wake.wait()
            if self._closed:
                break
            time.sleep(self.interval)  # coalescing window, not synchronisation
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # disk full, too many open files, a bug: never the end
                self._save_failed("state.json", exc)  # of this thread, which the run's end needs
                self._state_dirty = True
                self._wake.set()  # try again after the next interval

    def flush(self, *, final: bool = False) -> None:
        """Write whatever is dirty now. ``final`` also forces a state and ctx save.

        The state is taken *before* ``_flush_lock``: ``state_fn`` takes the runner's lock, and
        the runner calls ``close`` while holding it, so taking them in the other order here
        deadlocked the end of a run. Once the final save is written, later (older) snapshots
        from the flusher thread are dropped, so an old save still never lands last.
        """
        with self._lock:
            if not self._closed:
                try:
                    self._events.flush()
                except OSError as exc:
                    self._save_failed("events.jsonl", exc)
        state = None
        if (self._state_dirty or final) and self._state_fn is not None:
            self._state_dirty = False
            state = self._state_fn()
        with self._flush_lock:
            if self._final_saved:
                return
            # The ctx first (it was taken after the state, so it is as new or newer): a
            # state.json calling a step succeeded must never be on disk before the ctx.json
            # holding what that step wrote, or --resume-from after a crash would lose it.
            # Only the final save writes the state whatever happened to the ctx: a run must
            # end with its state on disk, and the error said what ctx.json lacks.
            ctx_saved = self._ctx_saved(final)
            if not ctx_saved and not final and state is not None:
                state = None  # the ctx save is not due yet, or failed: the state waits for it
                self._state_dirty = True
            if state is not None:
                atomic_write(self.folder, "state.json", state)
            if final:
                self._final_saved = True

    def _ctx_saved(self, final: bool) -> bool:
        """``_flush_ctx``; a ctx that cannot be saved (the disk, or a value a step changed in
        place into something JSON cannot hold) is reported and counts as not saved."""
        try:
            return self._flush_ctx(final)
        except Exception as exc:
            self._save_failed("ctx.json", exc)
            return False

    def _flush_ctx(self, final: bool) -> bool:
        """Save the ctx if it changed; False when it changed but its save is not due yet."""
        if self._ctx_fn is None or self._ctx_version_fn is None:
            return True
        version = self._ctx_version_fn()
        if version == self._ctx_saved_version:
            return True
        now = time.monotonic()
        if not final and now < self._ctx_next_due:
            self._wake.set()  # come back when it is due
            return False
        started = time.monotonic()
        data = self._ctx_fn()
        atomic_write(self.folder, "ctx.json", data)
        took = time.monotonic() - started
        self._ctx_saved_version = version
        # A ctx that takes 100 ms to save is saved at most every 0.5 s, and so on.
        self._ctx_next_due = time.monotonic() + max(0.0, 5 * took - self.interval)
        return True

    def _save_failed(self, name: str, exc: Exception) -> None:
        if name not in self._reported:  # once, not every interval
            self._reported.add(name)
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            self._on_error(f"cannot save {self.run_dir / name}: {why}")

    def close(self) -> None:
        """Final, synchronous save of everything; the directory is complete after this returns
        (unless the system refuses: then what could not be saved is logged, and the run still
        ends; a failed save must not leave the run hanging)."""
        try:
            self.flush(final=True)
        except Exception as exc:
            self._reported.discard("state.json")  # the final state is worth saying again
            self._save_failed("state.json", exc)
        with self._lock:
            self._closed = True
            try:
                self._events.flush()
                os.fsync(self._events.fileno())
            except OSError as exc:
                self._save_failed("events.jsonl", exc)
            try:
                self._events.close()
            except OSError:  # what the flush above could not write: already reported
                pass
        with self._flush_lock:  # a save of the flusher thread may still be using them
            self._final_saved = True  # even if the final save failed: nothing saves after
            self._close_folders()
        self._wake.set()

    def _close_folders(self) -> None:
        for folder in self._held:
            folder.close()


@dataclass(frozen=True)
class PastRun:
    """An earlier run of a recipe, as its state.json tells it."""

    run_dir: Path
    state: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.state.get("run_id") or self.run_dir.name)

    def restored_steps(self) -> set[str]:
        """Steps this run skipped because it resumed after them from a run that had done them
        (recorded as ``resumed_from``: such a source was checked, see ``find_resume_point``)."""
        source = self.state.get("resumed_from")
        names = list(self.state.get("steps") or {})  # recipe order
        if not isinstance(source, dict) or source.get("step") not in names:
            return set()
        return set(names[: names.index(source["step"])])

    def not_done(self, names: list[str]) -> str | None:
        """How the first of ``names`` whose work this run's ctx lacks ended, or None if all did.

        Done: succeeded; stopped (a background step that was ready, stopped with the run); an
        allowed failure (continue_on_error: the run went on without its output by design);
        restored from an earlier run (``restored_steps``). Not done: anything else, a step
        left out by --skip/--only above all, which never wrote its part of the ctx.
        """
        steps = self.state.get("steps") or {}
        restored = self.restored_steps()
        for name in names:
            step = steps.get(name)
            if not isinstance(step, dict):
                return f"{name!r} is not in it"
            status = step.get("status")
            allowed = status in FAILURES and step.get("allowed")
            if status in (Status.SUCCEEDED, Status.STOPPED) or allowed or name in restored:
                continue
            reason = f" ({step['reason']})" if step.get("reason") else ""
            return f"{name!r} is {status}{reason}"
        return None


@dataclass(frozen=True)
class ResumePoint:
    """What --resume-from STEP restores: the ctx of ``run_id``, whose steps before STEP did
    their work."""

    step: str
    ctx: dict[str, Any]
    run_id: str
    run_dir: Path

    def record(self) -> dict[str, str]:
        """state.json's ``resumed_from``."""
        return {"run_id": self.run_id, "run_dir": str(self.run_dir), "step": self.step}


class ResumeError(Exception):
    """No earlier run can be resumed from; the message says which and why."""


def past_runs(recipe: Path, roots: list[Path], *, exclude: Path | None = None) -> list[PastRun]:
    """This user's runs of ``recipe`` under ``roots``, newest (by state.json start) first.

    Only what no other user could have made or changed counts: a root that is not safe, a run
    folder that is not this user's own (or is a link), a state.json that is not a regular file
    of this user's are passed over (core.privatedir); another user's ctx is not ours to restore.
    """
    target = str(recipe.resolve())
    skip = exclude.resolve() if exclude is not None else None
    found: dict[Path, tuple[float, PastRun]] = {}
    for root in roots:
        try:
            folder = PrivateDir.open(root, below=root, create=False)
        except OSError:  # not there, or not safe
            continue
        with folder:
            base = Path(os.path.realpath(folder.path))
            for name in folder.names():
                run_dir = base / name
                if run_dir == skip or run_dir in found:
                    continue
                try:
                    with folder.subdir(name, create=False) as run_folder:
                        state = json.loads(run_folder.read("state.json"))
                except (OSError, ValueError):
                    continue
                if not isinstance(state, dict) or state.get("recipe") != target:
                    continue
                found[run_dir] = (float(state.get("started") or 0), PastRun(run_dir, state))
    return [run for _, run in sorted(found.values(), key=lambda item: item[0], reverse=True)]


def find_resume_point(
    recipe: Path, step: str, before: list[str], roots: list[Path], *, exclude: Path | None = None
) -> ResumePoint:
    """The ctx of the newest run in which every step of ``before`` (those ahead of ``step`` in
    the recipe) did its work: a newer run that skipped or failed one of them never wrote its
    part of the ctx, and resuming from it would run ``step`` on a ctx it was not meant for."""
    runs = past_runs(recipe, roots, exclude=exclude)
    if not runs:
        where = " or ".join(str(r) for r in roots)
        raise ResumeError(f"no earlier run of {recipe.name} under {where}")
    for run in runs:
        if run.not_done(before) is None:
            try:
                with PrivateDir.open(run.run_dir, below=run.run_dir.parent, create=False) as d:
                    ctx = json.loads(d.read("ctx.json"))
            except (OSError, ValueError) as exc:
                raise ResumeError(f"cannot read {run.run_dir / 'ctx.json'}: {exc}") from None
            return ResumePoint(step, ctx, run.run_id, run.run_dir)
    newest = runs[0]
    raise ResumeError(
        f"no earlier run of {recipe.name} in which every step before {step!r} succeeded; "
        f"in the newest, {newest.run_id} ({newest.run_dir}), {newest.not_done(before)}"
    )
