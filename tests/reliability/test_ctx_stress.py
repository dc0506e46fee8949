"""The ctx under 8 writer threads and readers: nothing lost, nothing torn, no iteration errors.

Writers set keys and append to lists (their own and a shared one); readers take snapshots,
serialise with ``to_json_bytes`` (what the store saves), iterate and look up as a dict user
would. Every snapshot must be a state the ctx really was in: each writer's list a prefix of
0..n, its counter never ahead of its list, every length and counter monotonic across snapshots.
Then the same through a real run: 8 python steps at once writing the ctx while the store saves
it, and ctx.json at the end holds every write.
"""

from __future__ import annotations

import json
import threading

from core.context import Context
from tests.conftest import run_recipe, write_module

WRITERS = 8
ROUNDS = 3000


def test_ctx_under_8_writers_and_readers(faults):
    ctx = Context({"shared": []})
    start = threading.Barrier(WRITERS + 2)
    errors: list[BaseException] = []
    done = threading.Event()
    checked = {"snapshots": 0, "json": 0}

    def writer(t: int) -> None:
        try:
            start.wait()
            for i in range(ROUNDS):
                ctx.append(f"list{t}", i)  # first the row ...
                ctx[f"count{t}"] = i  # ... then the counter: never ahead of the list
                ctx.append("shared", [t, i])
                if i % 100 == 0:
                    ctx.extend(f"batch{t}", range(i, i + 10))
                    ctx[f"key{t}_{i}"] = {"t": t, "i": i, "nested": [i, {"deep": "x"}]}
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def check(snap: dict, previous: dict) -> None:
        for t in range(WRITERS):
            rows = snap.get(f"list{t}", [])
            assert rows == list(range(len(rows))), f"list{t} torn"
            count = snap.get(f"count{t}")
            if count is not None:
                assert count < len(rows), f"count{t}={count} ahead of list{t} ({len(rows)})"
            before = previous.get(f"list{t}", [])
            assert len(rows) >= len(before), f"list{t} shrank"
            if count is not None and previous.get(f"count{t}") is not None:
                assert count >= previous[f"count{t}"], f"count{t} went back"
            batch = snap.get(f"batch{t}", [])
            assert len(batch) % 10 == 0, f"batch{t} holds a partial extend"
        assert len(snap["shared"]) >= len(previous.get("shared", []))

    def reader(kind: str) -> None:
        previous: dict = {}
        try:
            start.wait()
            while not done.is_set():
                if kind == "snapshot":
                    snap = ctx.snapshot()
                    checked["snapshots"] += 1
                else:
                    snap = json.loads(ctx.to_json_bytes())
                    checked["json"] += 1
                    # a dict user's view: iterate, look up, size, membership
                    for key in ctx:
                        _ = ctx[key]
                    _ = len(ctx), "shared" in ctx, dict(ctx.items()), ctx.changed_since(0)
                check(snap, previous)
                previous = snap
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(WRITERS)]
    readers = [
        threading.Thread(target=reader, args=("snapshot",)),
        threading.Thread(target=reader, args=("json",)),
    ]
    for thread in threads + readers:
        thread.start()
    for thread in threads:
        thread.join(60)
    done.set()
    for thread in readers:
        thread.join(60)
    assert not errors, errors[:3]

    writes = WRITERS * ROUNDS * 3 + WRITERS * (ROUNDS // 100) * 2
    faults.tried("8 ctx writer threads + 2 readers")
    final = ctx.snapshot()
    for t in range(WRITERS):
        assert final[f"list{t}"] == list(range(ROUNDS))
        assert final[f"count{t}"] == ROUNDS - 1
        assert len(final[f"batch{t}"]) == 10 * (ROUNDS // 100)
        assert all(f"key{t}_{i}" in final for i in range(0, ROUNDS, 100))
    shared = final["shared"]
    assert len(shared) == WRITERS * ROUNDS
    for t in range(WRITERS):  # each writer's rows in its own order, none lost
        assert [i for w, i in shared if w == t] == list(range(ROUNDS))
    assert ctx.version == writes + 1  # every write counted once, and the initial key
    assert json.loads(ctx.to_json_bytes()) == final
    print(
        f"\n{writes} writes by {WRITERS} threads; {checked['snapshots']} snapshots and "
        f"{checked['json']} JSON dumps checked"
    )
    faults.survived("8 ctx writer threads + 2 readers")


STEP = """
def write(ctx, t, n):
    for i in range(n):
        ctx.append("rows", [t, i])
        ctx[f"last{t}"] = i
        ctx.append(f"own{t}", i)
"""


def test_8_python_steps_writing_the_ctx_while_it_is_saved(tmp_path, faults):
    module = write_module(tmp_path, STEP)
    n = 25000
    steps = "\n".join(
        f"  - {{name: w{t}, type: python, depends_on: [], module: {module}, function: write,"
        f" params: {{t: {t}, n: {n}}}}}"
        for t in range(WRITERS)
    )
    faults.tried("8 parallel python steps writing the ctx while saved")
    result = run_recipe(tmp_path, f"jobs: {WRITERS}\nsteps:\n{steps}\n", timeout=60)
    assert result.code == 0, result.steps
    ctx = result.ctx  # ctx.json, as saved at the end
    assert len(ctx["rows"]) == WRITERS * n
    for t in range(WRITERS):
        assert ctx[f"last{t}"] == n - 1
        assert ctx[f"own{t}"] == list(range(n))
        assert [i for w, i in ctx["rows"] if w == t] == list(range(n))
    saves = [e for e in result.events if e["type"] == "ctx_changed"]
    assert len(saves) >= 2, "the ctx was saved while the steps were writing it"
    print(f"\n{WRITERS * n * 3} writes from 8 steps; {len(saves)} coalesced ctx events")
    faults.survived("8 parallel python steps writing the ctx while saved")
