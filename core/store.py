"""Writing a run's state.json, ctx.json and events.jsonl (core.rundir knows where), so that a
crash loses little, and finding an earlier run to resume from.

The folder is made private and held open (core.privatedir): every file is created or replaced
through its descriptor, never by following a path another user could have changed.
state.json and ctx.json are replaced atomically (temporary file, fsync, rename), so a reader
never sees half a file. Writes are coalesced by a flusher thread: a thousand fast steps are not a
thousand fsyncs, yet what is on disk (events.jsonl too) is at most ``interval`` seconds behind. A
large ctx backs the flusher off (the interval grows with the time a save takes) so saving never
eats a whole core.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from core.context import KeysLeftOut, keys_and_problems
from core.diskspace import RESERVE_BASE, DiskSpace, disk_is_full
from core.events import Event, RunFinished, encode_event, encode_events
from core.log import get_logger
from core.privatedir import PrivateDir
from core.rundir import CTX, EVENTS, STATE, RunDir, list_runs
from core.state import FAILURES, Status

_log = get_logger("orch.store")
#: bytes of events' lines buffered before they are written (at the latest at each flush)
EVENTS_BUFFER = 64 * 1024
#: events' lines kept for another try while events.jsonl cannot be written (past it: dropped)
EVENTS_HELD = 16 << 20


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


class RunStore:
    """Owns one run directory. Thread-safe; the runner calls ``mark_*`` and the flusher writes.

    ``run_dir`` is a created run folder (``RunDir.create``), held open: the store writes
    through it, and closes it on ``close``."""

    def __init__(self, run_dir: RunDir, *, interval: float = 0.25) -> None:
        assert run_dir.folder is not None, "not a created run folder"
        self.run_dir = run_dir
        self.folder = run_dir.folder
        self.interval = interval
        try:
            # 0600 like every file of the run, whatever the umask: events carry the steps' output
            self._events_fd = self.folder.append(EVENTS)
        except BaseException:
            run_dir.close()
            raise
        #: events' lines not written yet (written past EVENTS_BUFFER, and at each flush): a
        #: buffer of our own, so that a full disk drops it instead of writing it later
        self._events_buf: list[bytes] = []
        self._events_buffered = 0
        #: the folder's disk: its reserve, and whether it was found full (core.diskspace)
        self.space = DiskSpace(self.folder)
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
        self._ctx_synced = True  # the last ctx.json save was fsynced (save_now's is not)
        #: forced saves (save_now, the final one) so far: a snapshot the flusher took before
        #: one of them is older than what it wrote, and is not written after it
        self._forced = 0
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
        self._save_first_state()
        self._state_dirty = True
        self._thread.start()

    def abandon(self, *, folder_too: bool) -> None:
        """The run could not start (core.runner.RunStartError): nothing more is saved, and
        what this store wrote goes with the run folder's first files (``RunDir.discard``)."""
        with self._lock:
            self._closed = True
            os.close(self._events_fd)
        with self._flush_lock:
            self._final_saved = True
            self.space.release()
            self.run_dir.discard(folder_too=folder_too)
        self._wake.set()

    def _save_first_state(self) -> None:
        """state.json now, before any step starts, not one ``interval`` later: a run killed
        (SIGKILL) in its first instant must still be a run folder that ``runs`` and ``ctl``
        show as died. No fsync: a killed process loses no page cache, and the flusher's next
        save (the state is left dirty, the ctx not marked saved) is fsynced as every other.
        The ctx is written first, as every save orders them: ``--resume-from`` takes the
        newest run's ctx.json, and a resumed run's state relies on the ctx it restored."""
        assert self._state_fn is not None
        size = 0
        try:
            if self._ctx_fn is not None:  # the ctx first, as in every save: a resume reads it
                ctx = self._ctx_fn()
                size += len(ctx)
                atomic_write(self.folder, CTX, ctx, fsync=False)
            state = self._state_fn()
            size += len(state)
            atomic_write(self.folder, STATE, state, fsync=False)
        except Exception as exc:  # the disk: said once, and the flusher tries again
            if not self.space.trip(exc, STATE):  # a full disk is said as such, once
                self._save_failed(STATE, exc)
        # room for these two files' saves kept whatever fills the disk (core.diskspace)
        if not self.space.full:
            self.space.reserve(RESERVE_BASE + 2 * size)

    # -- events ---------------------------------------------------------------------------------
    def append_events(self, events: list[Event]) -> None:
        """Buffer the events' lines, and have the flusher write them within ``interval``:
        readers of events.jsonl (``ctl events``) must not wait for the next state change, which
        an idle run printing now and then may never make. Still one write per interval, not per
        event. Encoded all at once (the bus records what was published meanwhile); an event
        that cannot be encoded (a reason with a lone surrogate) is left out, not its batch.

        The run's end is written at once: the bus hands a batch to the run's clients once it is
        recorded here, and ``ctl wait`` returns on its ``run_finished``, after which a script
        reads events.jsonl (it came up to ``interval`` later, for a run kept open)."""
        if self.space.full:  # the disk is full: state.json and ctx.json take what is left
            return
        try:
            data = encode_events(events)
        except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
            data = b"".join(_lines(events))
        with self._lock:
            if not self._closed:
                self._events_buf.append(data)
                self._events_buffered += len(data)
                if self._events_buffered >= EVENTS_BUFFER or _ends_the_run(events):
                    self._write_events()
        if not self._wake.is_set():  # set already in a flood: a read, not the Event's lock
            self._wake.set()

    def _write_events(self) -> None:
        """Write the buffered events' lines (under ``_lock``). A full disk drops what is left
        and every later event; another error is said once and tried again."""
        if not self._events_buf:
            return
        data = b"".join(self._events_buf)
        self._events_buf.clear()
        self._events_buffered = 0
        if self.space.full:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._events_fd, view) :]
        except OSError as exc:
            if not self.space.trip(exc, EVENTS):  # a full disk: the rest is dropped
                self._save_failed(EVENTS, exc)
                if len(view) <= EVENTS_HELD:  # tried again; an error that lasts (EIO, a
                    self._events_buf.append(bytes(view))  # file size limit) costs no more
                    self._events_buffered = len(view)  # memory than this

    # -- coalesced snapshots ----------------------------------------------------------------------
    def state_changed(self) -> None:
        self._state_dirty = True
        if not self._wake.is_set():  # twice a step: a read, not the Event's lock and notify
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
                self._save_failed(STATE, exc)  # of this thread, which the run's end needs
                self._state_dirty = True
                self._wake.set()  # try again after the next interval

    def save_now(self) -> None:
        """state.json and ctx.json now, whatever their timers, and not yet fsynced (the final
        save or the next one is): the run has just ended, and a client told so next (``ctl
        wait`` returns, a script reads ctx.json) must find them saying so, not as they were
        up to ``interval`` before (a run of a few steps: as it began, ctx.json empty)."""
        try:
            self.flush(now=True)
        except Exception as exc:  # the disk: said once; the flusher tries again
            self._save_failed(STATE, exc)
            self._state_dirty = True
            self._wake.set()

    def flush(self, *, final: bool = False, now: bool = False) -> None:
        """Write whatever is dirty now. ``final`` also forces a state and ctx save (fsynced),
        and is the last; ``now`` forces them too, not fsynced (``save_now``).

        The state is taken *before* ``_flush_lock``: ``state_fn`` takes the runner's lock, and
        the runner calls ``close`` while holding it, so taking them in the other order here
        deadlocked the end of a run. Once the final save is written, later (older) snapshots
        from the flusher thread are dropped, so an old save still never lands last.
        """
        with self._lock:
            if not self._closed:
                self._write_events()
        state = None
        forced = final or now
        if forced:
            self._forced += 1  # on the runner's thread, under its lock: one at a time
        taken = self._forced
        if (self._state_dirty or forced) and self._state_fn is not None:
            self._state_dirty = False
            state = self._state_fn()
        with self._flush_lock:
            if self._final_saved:
                return
            if state is not None and not forced and taken != self._forced:
                # save_now wrote a newer state meanwhile (the run's end, which ``ctl wait``
                # answers): this older one must not land over it
                state = None
                self._state_dirty = True
                self._wake.set()
            # The ctx first (it was taken after the state, so it is as new or newer): a
            # state.json calling a step succeeded must never be on disk before the ctx.json
            # holding what that step wrote, or --resume-from after a crash would lose it.
            # Only the final save writes the state whatever happened to the ctx: a run must
            # end with its state on disk, and the error said what ctx.json lacks.
            ctx_saved = self._ctx_saved(forced, fsync=not now)
            if not ctx_saved and not final and state is not None:
                state = None  # the ctx save is not due yet, or failed: the state waits for it
                self._state_dirty = True
            if state is not None:
                self._save(STATE, state, fsync=not now)
            if final:
                self._final_saved = True

    def _ctx_saved(self, final: bool, *, fsync: bool = True) -> bool:
        """``_flush_ctx``; a ctx that cannot be saved (the disk, or a value a step changed in
        place into something JSON cannot hold) is reported and counts as not saved."""
        try:
            return self._flush_ctx(final, fsync=fsync)
        except Exception as exc:
            self._save_failed(CTX, exc)
            return False

    def _flush_ctx(self, final: bool, *, fsync: bool = True) -> bool:
        """Save the ctx if it changed; False when it changed but its save is not due yet."""
        if self._ctx_fn is None or self._ctx_version_fn is None:
            return True
        version = self._ctx_version_fn()
        if version == self._ctx_saved_version and (self._ctx_synced or not fsync):
            return True  # saved already (a save to be fsynced fsyncs one save_now did not)
        now = time.monotonic()
        if not final and now < self._ctx_next_due:
            self._wake.set()  # come back when it is due
            return False
        started = time.monotonic()
        try:
            data = self._ctx_fn()
        except KeysLeftOut as partial:  # the rest is saved; what is not, said once a key
            data = partial.data
            self._left_out(partial)
        self._save(CTX, data, fsync=fsync)
        took = time.monotonic() - started
        self._ctx_saved_version, self._ctx_synced = version, fsync
        # A ctx that takes 100 ms to save is saved at most every 0.5 s, and so on.
        self._ctx_next_due = time.monotonic() + max(0.0, 5 * took - self.interval)
        return True

    def _save(self, name: str, data: bytes, *, fsync: bool = True) -> None:
        """``atomic_write``; the first time the disk is found full, once more: that gave the
        reserve back (core.diskspace), for these files alone."""
        try:
            atomic_write(self.folder, name, data, fsync=fsync)
        except OSError as exc:
            if self.space.full or not self.space.trip(exc, name):
                raise
            atomic_write(self.folder, name, data, fsync=fsync)

    def _left_out(self, partial: KeysLeftOut) -> None:
        """Say which keys ctx.json was saved without, each once (not every interval)."""
        new = {k: why for k, why in partial.problems.items() if f"{CTX}[{k}]" not in self._reported}
        if new:
            self._reported.update(f"{CTX}[{k}]" for k in new)
            self._on_error(f"{self.run_dir.path / CTX} saved without {keys_and_problems(new)}")

    def _save_failed(self, name: str, exc: Exception) -> None:
        if name not in self._reported:  # once, not every interval
            self._reported.add(name)
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            held = disk_is_full(exc) and self.space.full
            even = " even with the space held back for it" if held else ""
            self._on_error(f"cannot save {self.run_dir.path / name}{even}: {why}")

    def close(self) -> None:
        """Final, synchronous save of everything; the directory is complete after this returns
        (unless the system refuses: then what could not be saved is logged, and the run still
        ends; a failed save must not leave the run hanging)."""
        try:
            self.flush(final=True)
        except Exception as exc:
            self._reported.discard(STATE)  # the final state is worth saying again
            self._save_failed(STATE, exc)
        with self._lock:
            self._closed = True
            try:
                self._write_events()
                os.fsync(self._events_fd)
            except OSError as exc:
                self._save_failed(EVENTS, exc)
            os.close(self._events_fd)
        with self._flush_lock:  # a save of the flusher thread may still be using them
            self._final_saved = True  # even if the final save failed: nothing saves after
            self.space.release()
            self.run_dir.close()
        self._wake.set()


def _lines(events: list[Event]) -> list[bytes]:
    """The events' lines one by one, without those that cannot be encoded (logged)."""
    lines = []
    for event in events:
        try:
            lines.append(encode_event(event) + b"\n")
        except (TypeError, ValueError) as exc:
            _log.error("could not record event %s: %s", event.kind, exc)
    return lines


class PastRun(msgspec.Struct, frozen=True):
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


class ResumePoint(msgspec.Struct, frozen=True):
    """What --resume-from STEP restores: the ctx of ``run_id``, whose steps before STEP did
    their work."""

    step: str
    ctx: dict[str, Any]
    run_id: str
    run_dir: Path

    def record(self) -> dict[str, str]:
        """state.json's ``resumed_from``."""
        return {"run_id": self.run_id, "run_dir": str(self.run_dir), "step": self.step}

    @classmethod
    def load(cls, step: str, run_id: str, run_dir: Path) -> ResumePoint:
        """The point from ``record``'s fields: the ctx read from that run's folder (the run
        daemon is handed these, not the ctx). Raises ResumeError when it cannot be read."""
        try:
            with RunDir.open(run_dir) as folder:
                ctx = folder.read_json(CTX)
        except (OSError, ValueError) as exc:
            raise ResumeError(f"cannot read {RunDir(run_dir).ctx}: {exc}") from None
        return cls(step, ctx, run_id, run_dir)


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
        for run_dir in list_runs(root):
            if run_dir.path == skip or run_dir.path in found:
                continue
            try:
                state = run_dir.read_json(STATE)
            except (OSError, ValueError):
                continue
            if not isinstance(state, dict) or state.get("recipe") != target:
                continue
            past = PastRun(run_dir.path, state)
            found[run_dir.path] = (float(state.get("started") or 0), past)
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
            return ResumePoint.load(step, run.run_id, run.run_dir)
    newest = runs[0]
    raise ResumeError(
        f"no earlier run of {recipe.name} in which every step before {step!r} succeeded; "
        f"in the newest, {newest.run_id} ({newest.run_dir}), {newest.not_done(before)}"
    )


def _ends_the_run(events: list[Event]) -> bool:
    """The batch holds the run's end (anywhere: a chatty service's output may follow it)."""
    return any(type(event) is RunFinished for event in events)
