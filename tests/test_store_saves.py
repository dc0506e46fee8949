"""The run store's saves at a run's end (core.store.RunStore): what ``ctl wait`` answers next
must be on disk, no older snapshot may land after it, and what the end wrote is fsynced."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from core import store as store_module
from core.rundir import RunDir
from core.store import RunStore


def _store(tmp_path: Path) -> RunStore:
    run_dir = RunDir.create(tmp_path / "run", tmp_path, "run-1")
    return RunStore(run_dir, interval=3600)  # the flusher saves only when told to here


def test_an_older_snapshot_never_lands_after_the_runs_end_was_saved(tmp_path):
    """The flusher takes the state, then writes it; if the run ended in between (its end saved
    at once by ``save_now``, then told to ``ctl wait``), the older "running" landed over it:
    a script's ``ctl wait; cat state.json`` read running. Found by the review, reproduced
    here by pausing the flusher right after its snapshot."""
    state = {"status": "running"}
    took, ended = threading.Event(), threading.Event()

    def state_fn() -> bytes:
        data = json.dumps(state).encode()
        if threading.current_thread().name == "flusher":
            took.set()
            ended.wait(10)  # the run's end comes now, after this snapshot
        return data

    store = _store(tmp_path)
    store.start(state_fn, lambda: b"{}", lambda: 0)
    store.state_changed()
    flusher = threading.Thread(target=store.flush, name="flusher")
    flusher.start()
    try:
        assert took.wait(10)
        state["status"] = "succeeded"
        store.save_now()
        saved = json.loads((tmp_path / "run" / "state.json").read_text())
        assert saved == {"status": "succeeded"}
    finally:
        ended.set()
        flusher.join(10)
    assert json.loads((tmp_path / "run" / "state.json").read_text()) == {"status": "succeeded"}
    store.close()
    assert json.loads((tmp_path / "run" / "state.json").read_text()) == {"status": "succeeded"}


def test_the_ctx_the_run_ended_with_is_fsynced_by_the_final_save(tmp_path, monkeypatch):
    """``save_now`` writes ctx.json without an fsync (the final save fsyncs); the final save
    then found the ctx unchanged and skipped it, so the ctx the steps wrote was never fsynced
    while a state.json saying "succeeded" was: after a power cut, a succeeded run with an
    empty ctx (the store's rule is the reverse: never a state ahead of its ctx on disk)."""
    writes: list[tuple[str, bool]] = []
    real = store_module.atomic_write

    def recorded(folder, name, data, *, fsync=True):
        writes.append((name, fsync))
        real(folder, name, data, fsync=fsync)

    monkeypatch.setattr(store_module, "atomic_write", recorded)
    ctx = {"version": 0, "data": b"{}"}
    store = _store(tmp_path)
    store.start(lambda: b'{"status": "running"}', lambda: ctx["data"], lambda: ctx["version"])
    ctx.update(version=1, data=b'{"answer": 42}')
    store.save_now()
    ended_at = len(writes)
    store.close()
    assert ("ctx.json", False) in writes[:ended_at]
    assert ("ctx.json", True) in writes[ended_at:], writes
    assert json.loads((tmp_path / "run" / "ctx.json").read_text()) == {"answer": 42}
