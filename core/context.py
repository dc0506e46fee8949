"""The shared ctx: an in-memory JSON document that every step of a run reads and writes.

Python steps run as threads of the runner, so many writers may touch the ctx at once; one lock
guards it. Values are checked when they are stored, not when the ctx is saved, so a bad value
fails the step that wrote it with the key's name instead of breaking ctx.json later.

Usage, as in the seed workspace::

    ctx = Context()
    ctx["foo"] = 123
    env = expose_for_shell(ctx, ["foo"])
    # env["foo"] == "123"

Every key carries a version that grows on each write, so a viewer (the TUI's inspector, the
dashboard) can ask for only what changed since it last looked (``changed_since``).
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

import msgspec

_SCALARS = (str, int, float, bool, type(None))


def _as_plain_json(value: Any) -> Any:
    """A subclass of str, int, float, list or dict (numpy's ``str_`` and ``float64``, what a
    numpy mean returns) as that type. Anything else cannot be in ctx.json."""
    for base in (str, int, float, list, dict):
        if isinstance(value, base):
            return base(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__qualname__}")


_ENCODER = msgspec.json.Encoder(enc_hook=_as_plain_json)
#: A ctx value (or anything holding one) as JSON bytes: ctx.json and a Dask step's writes are
#: written with it, so a value the ctx took is one that each of them can write.
encode_json: Callable[[Any], bytes] = _ENCODER.encode


def _as_shown(value: Any) -> Any:
    """``_as_plain_json``, or, for a value no JSON holds (one a step changed in place, past the
    checks: ``ctx["rows"].append(np.int64(3))``), a string saying what it is and that ctx.json
    lacks it: a viewer shows the rest of the key, and where the culprit is."""
    try:
        return _as_plain_json(value)
    except TypeError:
        text = repr(value)
        text = text if len(text) <= 80 else text[:79] + "…"
        return f"<{text}: not JSON, its key left out of ctx.json>"


#: What the run daemon answers ``ctl ctx`` and the app's ctx inspector with.
encode_for_viewer: Callable[[Any], bytes] = msgspec.json.Encoder(enc_hook=_as_shown).encode


class ContextValueError(TypeError, ValueError):
    """A value that cannot live in the ctx (not JSON), naming the key it was meant for."""


class KeysLeftOut(ValueError):
    """The ctx as JSON (``data``) without the keys whose values JSON cannot hold, each with why
    (``problems``): a value a step changed in place (a numpy int appended to a list, past the
    checks) costs ctx.json that key, not every other key with it."""

    def __init__(self, data: bytes, problems: dict[str, str]) -> None:
        super().__init__(keys_and_problems(problems))
        self.data = data
        self.problems = problems


def keys_and_problems(problems: dict[str, str]) -> str:
    """``ctx['a']: why; ctx['b']: why``."""
    return "; ".join(f"ctx[{key!r}]: {why}" for key, why in problems.items())


#: How deep a ctx value may nest lists and objects. ctx.json must always be writable, and
#: orjson refuses to write past 254 levels (a value nested 300 deep once killed the thread that
#: saves the run's files); nothing a step shares needs more than a few.
MAX_DEPTH = 64
#: The integers orjson can write (JSON itself has no limit, but ctx.json must be writable).
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _checked(value: Any, key: str) -> Any:
    """``value`` checked (``_check_json``), as the ctx keeps it: its tuples as lists, which is
    what ctx.json, a step on a Dask worker and a resumed run give back. A tuple kept only here
    made a step's ``ctx["shape"] == (100, 3)`` true locally, false on a cluster or resumed."""
    return _untupled(value) if _check_json(value, key) else value


def _untupled(value: Any) -> Any:
    """A copy of ``value`` with lists for its tuples (nested at most ``MAX_DEPTH``: checked)."""
    if isinstance(value, (list, tuple)):
        return [_untupled(item) for item in value]
    if isinstance(value, dict):
        return {k: _untupled(item) for k, item in value.items()}
    return value


def _check_json(value: Any, key: str) -> bool:
    """Raise ContextValueError unless ``value`` can be saved in ctx.json: plain JSON (no NaN,
    string keys, no cycles), nested at most ``MAX_DEPTH`` levels, integers within 64 bits,
    text without lone surrogates. Whether it holds a tuple.

    Depth first with a stack of iterators, one per level (so at most ``MAX_DEPTH`` of them, and
    no stack overflow however deep the value): a million rows cost no memory of their own, and
    the path to a bad item ("the value[3]['x']") is only spelled out for the error.
    """
    if not isinstance(value, _CONTAINERS):
        problem = _scalar_problem(value)
        if problem is not None:
            raise ContextValueError(f"ctx[{key!r}]: the value {problem}")
        return False
    has_tuple = isinstance(value, tuple)
    stack = [_Level(value)]
    on_path = {id(value)}  # the lists and objects being inside of: a cycle comes back to one
    while stack:
        level = stack[-1]
        for k, item in level.items:
            if level.is_dict and (problem := _key_problem(k)) is not None:
                raise ContextValueError(f"ctx[{key!r}]: {_path(stack)} {problem}")
            if isinstance(item, _CONTAINERS):
                if len(stack) == MAX_DEPTH:
                    raise ContextValueError(
                        f"ctx[{key!r}]: the value is nested deeper than {MAX_DEPTH} levels"
                    )
                if id(item) in on_path:
                    problem = "contains itself"
                else:
                    has_tuple = has_tuple or isinstance(item, tuple)
                    level.key = k
                    stack.append(_Level(item))
                    on_path.add(id(item))
                    break
            else:
                problem = _scalar_problem(item)
            if problem is not None:
                raise ContextValueError(f"ctx[{key!r}]: {_path(stack, k)} {problem}")
        else:
            on_path.discard(id(stack.pop().container))
    return has_tuple


_CONTAINERS = (list, tuple, dict)


class _Level:
    """A list or object ``_check_json`` is inside of: its items still to check, and the key of
    the child it went into (for the path in an error)."""

    __slots__ = ("container", "is_dict", "items", "key")

    def __init__(self, container: list | tuple | dict) -> None:
        self.container = container
        self.is_dict = isinstance(container, dict)
        self.items: Iterator[tuple[Any, Any]] = (
            iter(container.items()) if self.is_dict else enumerate(container)  # type: ignore[union-attr]
        )
        self.key: Any = None


def _key_problem(k: Any) -> str | None:
    if not isinstance(k, str):
        return f"has the key {k!r} ({type(k).__name__}): JSON object keys must be strings"
    problem = _text_problem(k)
    return None if problem is None else f"has a key that {problem}"


def _scalar_problem(item: Any) -> str | None:
    """Why a value that is not a list or an object cannot be saved, or None."""
    if item is None or isinstance(item, bool):
        return None
    if isinstance(item, str):
        return _text_problem(item)
    if isinstance(item, float):
        if math.isfinite(item):
            return None
        return f"is {item!r}, not valid JSON (NaN and infinity are not)"
    if isinstance(item, int):
        if _INT_MIN <= item <= _INT_MAX:
            return None
        return "is an integer beyond 64 bits, which ctx.json cannot hold (store it as a string)"
    # numpy's arrays and scalars (np.int64) say how to become one
    hint = ": its .tolist() is one" if callable(getattr(item, "tolist", None)) else ""
    return (
        f"has type {type(item).__name__}, which is not JSON-serialisable "
        f"(use str, int, float, bool, None, list or dict{hint})"
    )


def _text_problem(text: str) -> str | None:
    """Text must be encodable as UTF-8 for ctx.json: a lone surrogate (``"\\udc80"``, from
    decoding bytes with ``surrogateescape``) is not."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return (
            "holds a lone surrogate, which is not UTF-8 text (decode bytes with errors='replace')"
        )
    return None


def _path(stack: list[_Level], *last: Any) -> str:
    """Where in the value the check is (``the value[3]['x']``), for an error."""
    keys = [*(level.key for level in stack[:-1]), *last]
    return "the value" + "".join(f"[{k!r}]" for k in keys)


def _check_key(key: Any) -> None:
    if not isinstance(key, str):
        raise ContextValueError(f"ctx keys must be strings, got {type(key).__name__} {key!r}")
    problem = _text_problem(key)
    if problem is not None:
        raise ContextValueError(f"ctx[{key!r}]: the key {problem}")


class Context(MutableMapping[str, Any]):
    """A thread-safe mapping of str -> JSON value, with per-key versions.

    ``ctx[key]`` returns the stored object itself (no copy: a list of a million rows stays one
    list); change lists through ``append``/``extend`` or by assigning, so the version moves and
    viewers notice.
    """

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self._lock = threading.RLock()
        self._data: dict[str, Any] = {}
        self._versions: dict[str, int] = {}
        self._version = 0
        self._listeners: list[Callable[[str], None]] = []
        if initial:
            for key, value in initial.items():
                self[key] = value

    # -- mapping protocol -------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        with self._lock:
            return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        _check_key(key)
        value = _checked(value, key)
        with self._lock:
            self._data[key] = value
            self._bump(key)

    def __delitem__(self, key: str) -> None:
        with self._lock:
            del self._data[key]
            self._bump(key)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._data))

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __repr__(self) -> str:
        with self._lock:
            return f"Context({len(self._data)} keys, version {self._version})"

    # -- list values --------------------------------------------------------------------------
    def append(self, key: str, row: Any) -> int:
        """Append ``row`` to the list at ``key`` in place; return the new length.

        Only the new row is checked; the list is not copied. A missing key starts a new list.
        """
        row = _checked(row, key)
        with self._lock:
            target = self._list_at(key, "append")
            target.append(row)
            self._bump(key)
            return len(target)

    def extend(self, key: str, rows: Iterable[Any]) -> int:
        """Append many rows under one lock and one version bump."""
        rows = _checked(list(rows), key)
        with self._lock:
            target = self._list_at(key, "extend")
            target.extend(rows)
            self._bump(key)
            return len(target)

    def _list_at(self, key: str, verb: str) -> list[Any]:
        """The list at ``key`` (a new one if the key is missing), under the lock; a value of
        another kind is not replaced: ContextValueError, saying what ``verb`` cannot do."""
        target = self._data.get(key)
        if target is None:
            target = self._data[key] = []
        elif not isinstance(target, list):
            raise ContextValueError(
                f"ctx[{key!r}] holds a value of type {type(target).__name__}, not a list: cannot {verb}"
            )
        return target

    def rows_since(self, key: str, start: int) -> tuple[int, list[Any]]:
        """Rows ``start:`` of the list at ``key`` (copied) and its length: incremental readers."""
        with self._lock:
            value = self._data.get(key)
            if not isinstance(value, list):
                return 0, []
            return len(value), value[start:]

    # -- versions ------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """Grows by one on every write to any key."""
        return self._version

    def key_version(self, key: str) -> int:
        with self._lock:
            return self._versions.get(key, 0)

    def key_versions(self) -> dict[str, int]:
        """Every key with its version: what a viewer compares to know what to read again."""
        with self._lock:
            return {k: self._versions[k] for k in self._data}

    def view(self, key: str, tail: int | None = None) -> tuple[int, Any, int | None]:
        """(version, value, None) for ``key``; a list longer than ``tail`` as (version, its last
        ``tail`` rows (copied), its length). Under one hold of the lock, so the version is the
        value's. KeyError when the key is not there."""
        with self._lock:
            value = self._data[key]
            version = self._versions.get(key, 0)
            if tail is not None and isinstance(value, list) and len(value) > tail:
                return version, value[-tail:] if tail > 0 else [], len(value)
            return version, value, None

    def changed_since(self, version: int) -> dict[str, int]:
        """Keys written after ``version`` (including deleted ones), with their versions."""
        with self._lock:
            return {k: v for k, v in self._versions.items() if v > version}

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(key)`` after each write, outside nothing: keep it cheap and safe."""
        with self._lock:
            self._listeners.append(callback)

    def _bump(self, key: str) -> None:
        self._version += 1
        self._versions[key] = self._version
        for callback in self._listeners:
            callback(key)

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """A consistent copy: the dict and each list value copied (shallow) under the lock.

        Rows are shared, not copied, which is safe because rows are only ever appended whole.
        """
        with self._lock:
            return {k: (list(v) if isinstance(v, list) else v) for k, v in self._data.items()}

    def to_json_bytes(self) -> bytes:
        """The ctx as JSON bytes; serialised outside the lock so writers are not held up.
        KeysLeftOut (holding the rest) when some values cannot be written.

        msgspec, not orjson: as fast on big snapshots, and every run imports msgspec anyway,
        while orjson's import brings dataclasses and inspect, ~10 ms of a one-step run's start.
        """
        snapshot = self.snapshot()
        try:
            return encode_json(snapshot)
        except (TypeError, ValueError):
            raise _without_unwritable(snapshot) from None

    def snapshot_at(self, keys: Iterable[str] | None = None) -> tuple[dict[str, Any], int]:
        """A snapshot (of ``keys`` only, when given; missing ones left out) and the version it
        is of, taken together: what a step on a cluster gets, and the base its writes are
        checked against (``set_unless_changed``)."""
        with self._lock:
            snap = self.snapshot()
            if keys is not None:
                snap = {k: snap[k] for k in keys if k in snap}
            return snap, self._version

    def set_unless_changed(self, key: str, value: Any, since: int, *, delete: bool = False) -> int:
        """Set (or delete) ``key`` only if nothing wrote it after version ``since``; the key's new
        version, or -1 when it had changed. A step on a cluster writes a copy of the ctx: a set
        over someone else's newer write would silently undo it."""
        with self._lock:
            if self._versions.get(key, 0) > since:
                return -1
            if delete:
                del self[key]
            else:
                self[key] = value
            return self._versions[key]

    def update_from(self, values: dict[str, Any]) -> None:
        """Set many keys — used to merge a shell step's ORCH_CTX_OUT. All are checked first:
        a bad value merges nothing, not the keys before it."""
        checked = {}
        for key, value in values.items():
            _check_key(key)
            checked[key] = _checked(value, key)
        with self._lock:
            for key, value in checked.items():
                self._data[key] = value
                self._bump(key)


def _without_unwritable(snapshot: dict[str, Any]) -> KeysLeftOut:
    """The snapshot written key by key (only once a whole save failed), leaving out the keys
    whose values cannot be written."""
    problems: dict[str, str] = {}
    for key, value in snapshot.items():
        try:
            encode_json(value)
        except (TypeError, ValueError) as exc:
            problems[key] = str(exc)
    rest = {key: value for key, value in snapshot.items() if key not in problems}
    return KeysLeftOut(encode_json(rest), problems)


def shell_value(value: Any) -> str:
    """How a ctx value looks in an environment variable: strings as-is, anything else as JSON."""
    if isinstance(value, str):
        return value
    import json  # here: most runs expose no ctx value that is not a string

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class ExposeError(ValueError):
    """A key named in ``expose:`` that the ctx does not hold."""


def _env_entry_limit() -> int | None:
    """The bytes Linux takes in one environment entry (``KEY=VALUE`` and its NUL): 32 pages,
    MAX_ARG_STRLEN. Past it exec fails with E2BIG, "Argument list too long"."""
    return 32 * os.sysconf("SC_PAGE_SIZE") if sys.platform.startswith("linux") else None


ENV_ENTRY_LIMIT = _env_entry_limit()


def _check_env_size(key: str, text: str) -> None:
    """A value one environment variable cannot hold fails the step naming it: exec's own error
    ("bash: Argument list too long") names neither the key nor the environment."""
    size = len(text.encode("utf-8", "surrogateescape"))
    if ENV_ENTRY_LIMIT is not None and len(key.encode()) + size + 2 > ENV_ENTRY_LIMIT:
        raise ContextValueError(
            f"expose: ctx[{key!r}] is {size:,} bytes as an environment variable, more than the "
            f"{ENV_ENTRY_LIMIT:,} one may hold: write it to a file and expose the file's path"
        )


def expose_for_shell(ctx: Context | dict[str, Any], keys: Iterable[str]) -> dict[str, str]:
    """Environment entries for the given ctx keys.

    A missing key raises ExposeError rather than leaving the variable unset: a step run
    without a value it asked for fails later and far from the cause (often with a shell's
    "unbound variable", or silently with an empty string).

    Values travel as environment values, never through a shell, so no quoting is involved: a
    value of ``$(rm -rf ~)`` arrives as those characters.
    """
    env: dict[str, str] = {}
    for key in keys:
        try:
            value = ctx[key]
        except KeyError:
            raise ExposeError(f"expose: ctx has no key {key!r}") from None
        text = shell_value(value)
        if "\x00" in text:
            raise ContextValueError(f"ctx[{key!r}] holds a NUL byte: it cannot be exported")
        _check_env_size(key, text)
        env[key] = text
    return env
