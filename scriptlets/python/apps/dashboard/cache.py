"""The rows as numeric columns, converted once, and the few points of them worth sending.

A tick must not pay for the whole series: :class:`ColumnCache` converts only the rows appended
since the previous tick into numpy columns that grow geometrically, and :func:`downsample`
picks at most a few thousand points that keep each trace's shape (MinMaxLTTB), whatever the
number of rows. numpy and tsdownsample are imported when first used, never at import.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .source import read_rows
from .times import iso_to_epoch

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


def _number(value: Any, *, is_time: bool = False) -> float:
    """A ctx cell as a float: numbers as they are, numeric strings parsed, the rest NaN.

    In the time column an ISO date string (local time) counts as its epoch seconds.
    """
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            if is_time:
                epoch = iso_to_epoch(value, as_utc=False)
                if epoch is not None:
                    return epoch
    return math.nan


def _to_matrix(rows: list[Any]) -> np.ndarray:
    """Rows as a float64 ``(len(rows), width)`` matrix; missing or non-numeric cells are NaN.

    Fast path (rows of equal length holding numbers): one ``np.fromiter`` over the flattened
    rows, about 3x faster than ``np.array(rows)``. Anything else goes cell by cell.
    """
    import numpy as np

    k = len(rows)
    try:
        widths = set(map(len, rows))
        if len(widths) == 1 and set(map(type, rows)) <= {list, tuple}:
            w = widths.pop()
            flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=k * w)
            return flat.reshape(k, w)
    except (TypeError, ValueError):
        pass
    cells = [r if isinstance(r, (list, tuple)) else [] for r in rows]
    w = max(map(len, cells), default=0)
    out = np.full((k, w), np.nan)
    for i, row in enumerate(cells):
        for j, value in enumerate(row):
            out[i, j] = _number(value, is_time=j == 0)
    return out


@dataclass(frozen=True)
class CacheView:
    """A consistent, read-only look at a :class:`ColumnCache` (arrays are views, not copies)."""

    n: int
    x: np.ndarray  # epoch seconds, length n
    ys: tuple[np.ndarray, ...]  # one array per value column, length n
    x_sorted: bool  # x never decreases (and has no NaN): windows by binary search, LTTB by x
    nan_columns: frozenset[int]  # 0-based indexes of value columns holding a NaN
    generation: int  # grows when the cache starts over (the ctx list was replaced)
    tz_offset_s: int  # added to x for display, so the date axis shows local wall time

    @property
    def width(self) -> int:
        return len(self.ys)

    @property
    def last_x(self) -> float | None:
        return float(self.x[self.n - 1]) if self.n else None


class ColumnCache:
    """Numeric columns of ``ctx[key]``, converted incrementally and grown geometrically.

    ``sync(source, key)`` converts only the rows appended since the previous call; when the list
    got shorter (replaced, e.g. by ``ctx_init`` with ``overwrite``) the cache starts over. Rows may
    be ragged: a wider row adds columns (NaN before it), a shorter one leaves NaN.
    Thread-safe: ticks from several browser tabs may run at once.
    """

    def __init__(self, capacity: int = 1024) -> None:
        import numpy as np

        self._np = np
        self._lock = threading.Lock()
        self._capacity = max(int(capacity), 16)
        self._x = np.empty(self._capacity)
        self._ys: list[np.ndarray] = []
        self._n = 0
        self._sorted = True
        self._nan_columns: set[int] = set()
        self._generation = 0
        self.tz_offset_s = int(time.localtime().tm_gmtoff)

    def __len__(self) -> int:
        return self._n

    def sync(self, source: Any, key: str) -> int:
        """Pull the rows appended to ``source[key]`` since the last sync; return how many."""
        with self._lock:
            length, rows = read_rows(source, key, self._n)
            if length < self._n:
                self._reset()
                length, rows = read_rows(source, key, 0)
            if rows:
                self._add(rows)
            return len(rows)

    def add_rows(self, rows: Sequence[Any]) -> None:
        """Append rows directly (benchmarks, tests)."""
        with self._lock:
            if rows:
                self._add(list(rows))

    def view(self) -> CacheView:
        with self._lock:
            n = self._n
            return CacheView(
                n=n,
                x=self._x[:n],
                ys=tuple(y[:n] for y in self._ys),
                x_sorted=self._sorted,
                nan_columns=frozenset(self._nan_columns),
                generation=self._generation,
                tz_offset_s=self.tz_offset_s,
            )

    # -- internals (lock held) ----------------------------------------------------------------
    def _reset(self) -> None:
        np = self._np
        self._x = np.empty(self._capacity)
        self._ys = []
        self._n = 0
        self._sorted = True
        self._nan_columns = set()
        self._generation += 1

    def _grow(self, needed: int) -> None:
        np = self._np
        capacity = len(self._x)
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        n = self._n

        def grown(a: np.ndarray) -> np.ndarray:
            b = np.empty(capacity)
            b[:n] = a[:n]
            return b

        # New arrays: views handed out earlier keep pointing at the old ones, still valid.
        self._x = grown(self._x)
        self._ys = [grown(y) for y in self._ys]

    def _add(self, rows: list[Any]) -> None:
        np = self._np
        m = _to_matrix(rows)
        k, w = m.shape
        n = self._n
        self._grow(n + k)
        while len(self._ys) < w - 1:  # a wider row: a new column, NaN for the rows before it
            col = np.empty(len(self._x))
            col[:n] = np.nan
            if n:
                self._nan_columns.add(len(self._ys))
            self._ys.append(col)
        chunk_x = m[:, 0] if w else np.full(k, np.nan)
        self._x[n : n + k] = chunk_x
        for j, y in enumerate(self._ys):
            if j + 1 < w:
                values = m[:, j + 1]
                y[n : n + k] = values
                if j not in self._nan_columns and np.isnan(values).any():
                    self._nan_columns.add(j)
            else:
                y[n : n + k] = np.nan
                self._nan_columns.add(j)
        if self._sorted:
            self._sorted = bool(
                not np.isnan(chunk_x).any()
                and (n == 0 or chunk_x[0] >= self._x[n - 1])
                and (k < 2 or (np.diff(chunk_x) >= 0).all())
            )
        self._n = n + k


_downsamplers: dict[bool, Any] = {}  # one of each kind (with NaN or without), made on first use


def downsample(x: np.ndarray, y: np.ndarray, n_out: int, x_sorted: bool, has_nan: bool) -> Any:
    """Indexes of at most ``n_out`` points of ``y`` that keep its shape (MinMaxLTTB), or None
    when it is short enough already. Unsorted x is downsampled by position instead (LTTB on an
    unsorted x gives garbage)."""
    if len(y) <= n_out:
        return None
    ds = _downsamplers.get(has_nan)
    if ds is None:
        from tsdownsample import MinMaxLTTBDownsampler, NaNMinMaxLTTBDownsampler

        ds = _downsamplers[has_nan] = (
            NaNMinMaxLTTBDownsampler() if has_nan else MinMaxLTTBDownsampler()
        )
    if x_sorted:
        return ds.downsample(x, y, n_out=n_out)
    return ds.downsample(y, n_out=n_out)
