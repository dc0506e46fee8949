"""The shared ctx: JSON only, safe under many writers, cheap appends, per-key versions."""

from __future__ import annotations

import json
import threading
import tracemalloc

import pytest

from core.context import Context, ContextValueError, KeysLeftOut, expose_for_shell


def test_set_get_and_expose_like_the_seed():
    ctx = Context()
    ctx["foo"] = 123
    env = expose_for_shell(ctx, ["foo"])
    assert env["foo"] == "123"
    assert ctx["foo"] == 123


def test_expose_keeps_strings_and_json_encodes_the_rest():
    ctx = Context({"s": "a b $HOME", "l": [1, "x"], "d": {"k": None}, "b": True})
    env = expose_for_shell(ctx, ["s", "l", "d", "b"])
    assert env == {"s": "a b $HOME", "l": '[1,"x"]', "d": '{"k":null}', "b": "true"}


def test_expose_of_a_missing_key_names_it():
    with pytest.raises(ValueError, match="expose: ctx has no key 'missing'"):
        expose_for_shell(Context({"s": "x"}), ["s", "missing"])


@pytest.mark.parametrize(
    "value", [object(), {1, 2}, b"bytes", float("nan"), {"a": [1, {2: "int key"}]}, 1j]
)
def test_non_json_value_is_refused_naming_the_key(value):
    ctx = Context()
    with pytest.raises(ContextValueError, match="'bad_key'"):
        ctx["bad_key"] = value
    assert "bad_key" not in ctx


def test_self_containing_value_is_refused():
    loop: list = []
    loop.append(loop)
    with pytest.raises(ContextValueError, match="contains itself"):
        Context()["x"] = loop


def test_a_value_shared_twice_is_not_a_cycle():
    row = [1, 2]
    ctx = Context()
    ctx["x"] = {"a": row, "b": [row, row]}
    assert json.loads(ctx.to_json_bytes()) == {"x": {"a": [1, 2], "b": [[1, 2], [1, 2]]}}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([[[0]]] * 2, None),
        (json.loads("[" * 64 + "]" * 64), None),
        (json.loads("[" * 65 + "]" * 65), "ctx['k']: the value is nested deeper than 64 levels"),
        ({"a": [1, 2**64]}, "ctx['k']: the value['a'][1] is an integer beyond 64 bits"),
        ([-(2**63), 2**64 - 1], None),
        ({"a": "x\udc80"}, "ctx['k']: the value['a'] holds a lone surrogate"),
        ({"a": {"\udc80": 1}}, "ctx['k']: the value['a'] has a key that holds a lone surrogate"),
        ({"a": [{1: 2}]}, "ctx['k']: the value['a'][0] has the key 1 (int)"),
    ],
    ids=["shallow", "64 deep", "65 deep", "big int", "64-bit ints", "surrogate", "key", "int key"],
)
def test_only_what_ctx_json_can_hold_is_stored(value, problem):
    """Refused when set, naming the key and where: never accepted and then unsaveable (a value
    300 deep once killed the thread that saves ctx.json)."""
    ctx = Context()
    if problem is None:
        ctx["k"] = value
        assert json.loads(ctx.to_json_bytes()) == {"k": value}
        return
    with pytest.raises(ContextValueError) as refused:
        ctx["k"] = value
    assert str(refused.value).startswith(problem), refused.value
    assert "k" not in ctx


def test_checking_a_big_value_costs_no_memory_of_its_own():
    rows = [[float(i), 1.0, 2.0] for i in range(200_000)]
    ctx = Context()
    tracemalloc.start()
    try:
        ctx["rows"] = rows
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak / 2**20:.0f} MiB to check 200,000 rows"


def test_append_does_not_copy_or_recheck_old_rows():
    ctx = Context()
    ctx["rows"] = []
    rows = ctx["rows"]
    for i in range(5):
        ctx.append("rows", [i, i * 2])
    assert ctx["rows"] is rows and rows[-1] == [4, 8]
    with pytest.raises(ContextValueError, match="'rows'"):
        ctx.append("rows", [object()])
    assert len(ctx["rows"]) == 5


def test_append_to_a_non_list_is_an_error():
    ctx = Context({"n": 1})
    with pytest.raises(ContextValueError, match="not a list"):
        ctx.append("n", 2)


def test_versions_tell_a_viewer_what_changed():
    ctx = Context()
    ctx["a"] = 1
    ctx["b"] = 2
    seen = ctx.version
    ctx["a"] = 3
    ctx.append("rows", [1])
    assert set(ctx.changed_since(seen)) == {"a", "rows"}
    assert ctx.key_version("a") > ctx.key_version("b")
    assert ctx.changed_since(ctx.version) == {}


def test_concurrent_writers_lose_nothing_and_snapshots_stay_consistent():
    ctx = Context()
    ctx["rows"] = []
    writers, per_writer = 8, 5000
    errors: list[BaseException] = []
    done = threading.Event()

    def write(w: int) -> None:
        try:
            for i in range(per_writer):
                ctx.append("rows", [w, i])
                ctx[f"w{w}"] = i
        except BaseException as exc:  # pragma: no cover - the assertion shows it
            errors.append(exc)

    def read() -> None:
        while not done.is_set():
            try:
                json.loads(ctx.to_json_bytes())
                list(ctx.items())
            except BaseException as exc:  # pragma: no cover
                errors.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    assert errors == []
    assert len(ctx["rows"]) == writers * per_writer
    assert all(ctx[f"w{w}"] == per_writer - 1 for w in range(writers))
    for w in range(writers):  # each writer's rows arrived in its own order
        mine = [i for (who, i) in ctx["rows"] if who == w]
        assert mine == list(range(per_writer))


def test_subclasses_of_json_types_are_saved_as_those_types():
    """numpy's ``str_`` (a str) and ``float64`` (a float), a str enum, an int or dict subclass:
    ctx.json holds their plain value. A value of no JSON type still says which it is."""
    import enum

    class Colour(enum.StrEnum):
        RED = "red"

    class Label(str):
        pass

    class Count(int):
        pass

    class Mean(float):  # numpy's float64 is one
        pass

    class Row(dict):
        pass

    ctx = Context()
    ctx["labels"] = [Label("a"), Colour.RED]
    ctx["n"] = Count(3)
    ctx["mean"] = Mean(1.5)
    ctx["row"] = Row(x=Label("b"))
    assert json.loads(ctx.to_json_bytes()) == {
        "labels": ["a", "red"],
        "n": 3,
        "mean": 1.5,
        "row": {"x": "b"},
    }

    class Opaque:
        pass

    ctx["rows"] = []
    ctx["rows"].append(Opaque())  # in place: not checked when set, refused when saved
    with pytest.raises(
        KeysLeftOut, match=r"ctx\['rows'\]: .*not JSON serializable: .*Opaque"
    ) as info:
        ctx.to_json_bytes()
    assert "rows" not in json.loads(info.value.data) and "mean" in json.loads(info.value.data)


def test_a_numpy_value_refused_says_how_to_store_it():
    """A numpy array or integer is no JSON type: the refusal says ``.tolist()`` makes one (a
    set has no such way)."""
    import numpy as np

    ctx = Context()
    for value, name in ((np.arange(3), "ndarray"), (np.int64(3), "int64")):
        with pytest.raises(ContextValueError) as info:
            ctx["x"] = value
        assert str(info.value) == (
            f"ctx['x']: the value has type {name}, which is not JSON-serialisable "
            "(use str, int, float, bool, None, list or dict: its .tolist() is one)"
        )
    with pytest.raises(ContextValueError, match=r"list or dict\)$"):
        ctx["x"] = {1, 2}
