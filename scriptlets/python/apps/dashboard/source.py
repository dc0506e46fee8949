"""Where the rows come from: the run's live ``Context``, a plain dict, or a run's ctx.json.

The dashboard reads only through :func:`read_rows` and :func:`last_row`, so the three sources
look alike to it and a tick copies only the rows appended since the previous one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def read_rows(source: Any, key: str, start: int) -> tuple[int, list[Any]]:
    """``(length, rows[start:])`` of the list at ``source[key]``; ``(0, [])`` when it is no list.

    A ``core.context.Context`` (or anything with ``rows_since``) copies just the new rows under
    its lock; a plain mapping is sliced directly.
    """
    rows_since = getattr(source, "rows_since", None)
    if callable(rows_since):
        return rows_since(key, start)
    value = source.get(key) if isinstance(source, Mapping) else None
    if not isinstance(value, list):
        return 0, []
    length = len(value)  # read once: another thread may be appending
    return length, value[start:length]


def last_row(source: Any, key: str) -> Any:
    """The last row of ``source[key]``, or None (no such list, or empty): its width gives the
    columns the page offers before the first tick."""
    tail = getattr(source, "tail", None)
    try:
        if callable(tail):
            _, rows = tail(key, 1)
        elif isinstance(source, Mapping) and isinstance(source.get(key), list):
            rows = source[key][-1:]
        else:
            return None
    except (KeyError, TypeError, ValueError):  # Context.tail: missing key, or not a list
        return None
    return rows[-1] if rows else None


class CtxFileSource:
    """The ctx.json of a run directory as a source: re-read whenever its mtime or size changes.

    The runner replaces ctx.json atomically, so a read never sees half a file; a file that is
    missing (the run has not saved it yet) or unreadable counts as empty until it is readable.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._data: dict[str, Any] = {}

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except OSError:
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        try:
            raw = self.path.read_bytes()
            try:
                import orjson

                data = orjson.loads(raw)
            except ImportError:  # pragma: no cover - orjson is a dependency
                import json

                data = json.loads(raw)
        except (OSError, ValueError):
            return
        if isinstance(data, dict):
            self._data, self._stamp = data, stamp

    def rows_since(self, key: str, start: int) -> tuple[int, list[Any]]:
        with self._lock:
            self._refresh()
            return read_rows(self._data, key, start)

    def tail(self, key: str, n: int) -> tuple[int, list[Any]]:
        with self._lock:
            self._refresh()
            value = self._data.get(key)
            if not isinstance(value, list):
                return 0, []
            return len(value), value[-n:] if n > 0 else []
