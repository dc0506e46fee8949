"""A live Dash dashboard of ``ctx[ctx_key]``: rows ``[timestamp, v1, ..., vn]`` as time series.

Recipe (a background step: it serves until the run stops it)::

    - name: monitor_and_plot
      type: python
      module: scriptlets.python.apps.hello_dash
      background: true
      ready: {port: 8050}
      params:
        port: 8050
        ctx_key: new_row

Only this machine's browser gets in, and only with the run's token: the address it prints (in
the step's log, and in ``ctx[url_key]`` if given) carries a random ``?token=``, which the first
visit trades for a cookie; a request without either, or whose Host header is not the dashboard's
own loopback address (a web page reaching 127.0.0.1 through DNS rebinding), is answered 403.
``token: false`` turns the token off (the Host check stays).

CLI, standalone: plot the ctx.json of a run directory (re-read when it changes), or rows it makes
up itself (``--demo-rows`` to start with that many)::

    python scriptlets/python/apps/hello_dash.py --port 8050 --ctx_key new_row --run-dir .orch/runs/ID
    python scriptlets/python/apps/hello_dash.py --port 8050 --demo-rows 1000000

Built to stay fast on millions of rows. Each tick:

* pulls only the rows appended since the last tick (``Context.rows_since``) into numpy columns
  that grow geometrically (:class:`ColumnCache`), so converting is paid once per row;
* downsamples each trace to ``max_points`` on the server with MinMaxLTTB (``tsdownsample``),
  over the visible x window only when the user has zoomed, so zooming in reveals the detail;
* sends x (epoch milliseconds on a date axis) and y as base64 typed arrays (plotly.js ``bdata``),
  16 to 21 bytes a point instead of ~45 as JSON text, drawn with ``scattergl``;
* sends no figure at all when nothing changed since the previous tick;
* keeps zoom and pan across updates (a constant ``uirevision``);
* never overlaps: the update callback disables the ``dcc.Interval`` while its request is in
  flight (``running=``), so the next tick comes ``interval_ms`` after the previous answer.

dash, plotly, numpy and tsdownsample are imported only when the app is built, never at module
import: the runner imports step modules to validate a recipe, and that must stay fast.
"""

from __future__ import annotations

import argparse
import base64
import calendar
import errno
import hmac
import ipaddress
import itertools
import logging
import math
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import dash
    import numpy as np

DEFAULT_MAX_POINTS = 2000
#: Fewer points than this per trace is not a plot (and LTTB needs at least 3).
MIN_POINTS = 10
#: Constant, so the user's zoom, pan and legend clicks survive every update.
UIREVISION = "hello-dash"
#: Traces with at most this many points also draw markers.
MARKERS_UP_TO = 300

_LOG = logging.getLogger("hello_dash")


# ------------------------------------------------------------------------------------ sources
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


def _last_row(source: Any, key: str) -> Any:
    """The last row of ``source[key]``, or None (no such list, or empty)."""
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


# ------------------------------------------------------------------------------------ the cache
_ISO_RE = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?\s*$"
)


def _iso_to_epoch(text: str, *, as_utc: bool) -> float | None:
    """``YYYY-MM-DD[ HH[:MM[:SS[.f]]]]`` to epoch seconds (local time unless ``as_utc``)."""
    m = _ISO_RE.match(text)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(g) if g else 0 for g in m.groups()[:6])
    frac = float("0." + m.group(7)) if m.group(7) else 0.0
    try:
        if as_utc:
            return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) + frac
        return datetime(y, mo, d, h, mi, s).timestamp() + frac
    except (ValueError, OverflowError):
        return None


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
                epoch = _iso_to_epoch(value, as_utc=False)
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


# ------------------------------------------------------------------------------------ the figure
_downsamplers: dict[bool, Any] = {}


def _downsample(x: np.ndarray, y: np.ndarray, n_out: int, x_sorted: bool, has_nan: bool) -> Any:
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


def _typed_array(values: np.ndarray, *, allow_f4: bool = False) -> dict[str, str]:
    """A plotly.js typed-array spec ``{"dtype", "bdata"}`` (base64 of little-endian floats).

    With ``allow_f4``, float32 is used when it changes no value by more than a millionth of the
    values' span (invisible on any screen), which cuts the payload by a third.
    """
    import numpy as np

    a = np.ascontiguousarray(values, dtype="<f8")
    if allow_f4:
        with np.errstate(over="ignore", invalid="ignore"):
            a32 = a.astype("<f4")
            present = ~np.isnan(a)
            worst = float(np.abs(a32[present] - a[present]).max()) if present.any() else 0.0
            span = float(np.ptp(a[present])) if present.any() else 0.0
        if worst <= span * 1e-6:  # an overflow to inf is never <=; nor is any error at span 0
            return {"dtype": "f4", "bdata": base64.b64encode(a32.tobytes()).decode("ascii")}
    return {"dtype": "f8", "bdata": base64.b64encode(a.tobytes()).decode("ascii")}


def _column_numbers(columns: Any, width: int) -> list[int]:
    """Selected columns as 1-based numbers (``2`` or ``"v2"``), in range, without duplicates."""
    out: list[int] = []
    for c in columns or []:
        if isinstance(c, str):
            c = c[1:] if c[:1] in "vV" else c
            try:
                c = int(c)
            except ValueError:
                continue
        if isinstance(c, bool) or not isinstance(c, int):
            continue
        if 1 <= c <= width and c not in out:
            out.append(c)
    return out


def base_layout(message: str | None = None) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "uirevision": UIREVISION,
        "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
        "xaxis": {"type": "date", "title": {"text": "time"}},
        "yaxis": {"title": {"text": "value"}},
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "showlegend": True,
    }
    if message:
        layout["annotations"] = [
            {
                "text": message,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "showarrow": False,
                "font": {"size": 16, "color": "#888"},
            }
        ]
    return layout


def make_figure(
    cache: ColumnCache | CacheView,
    columns: Sequence[int | str],
    x_range: Sequence[float] | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
) -> dict[str, Any]:
    """The plotly figure dict of one tick: a ``scattergl`` trace per selected column.

    ``columns``: value columns, 1-based (``1`` or ``"v1"`` is the column after the timestamp).
    ``x_range``: ``(start, end)`` in epoch seconds: only rows inside it are plotted (the user has
    zoomed), downsampled to ``max_points`` like the whole series otherwise. x goes out as epoch
    milliseconds shifted to local time on a date axis, x and y as base64 typed arrays.
    ``layout.meta`` holds ``rows`` (total), ``window_rows`` and ``points`` (sent, all traces).
    """
    import numpy as np

    view = cache.view() if isinstance(cache, ColumnCache) else cache
    n_out = max(int(max_points), MIN_POINTS)
    selected = _column_numbers(columns, view.width)
    x = view.x
    lo_i, hi_i, picked = 0, view.n, None
    if x_range is not None and view.n:
        lo, hi = sorted(float(v) for v in x_range)
        if view.x_sorted:
            lo_i = int(np.searchsorted(x, lo, side="left"))
            hi_i = int(np.searchsorted(x, hi, side="right"))
        else:
            picked = np.flatnonzero((x >= lo) & (x <= hi))
    xs_all = x[picked] if picked is not None else x[lo_i:hi_i]
    window_rows = len(xs_all)
    x_sorted = view.x_sorted and picked is None
    offset_ms = view.tz_offset_s * 1000.0

    traces = []
    points = 0
    for c in selected:
        y = view.ys[c - 1]
        ys = y[picked] if picked is not None else y[lo_i:hi_i]
        xs = xs_all
        idx = _downsample(xs, ys, n_out, x_sorted, (c - 1) in view.nan_columns)
        if idx is not None:
            xs, ys = xs[idx], ys[idx]
        points += len(ys)
        traces.append(
            {
                "type": "scattergl",
                "mode": "lines+markers" if len(ys) <= MARKERS_UP_TO else "lines",
                "name": f"v{c}",
                "x": _typed_array(xs * 1000.0 + offset_ms),
                "y": _typed_array(ys, allow_f4=True),
                "line": {"width": 1.5},
                "marker": {"size": 4},
            }
        )

    message = None
    if not view.n:
        message = "waiting for rows…"
    elif not selected:
        message = "no column selected"
    elif not window_rows:
        message = "no rows in this window (double-click to reset)"
    layout = base_layout(message)
    layout["meta"] = {"rows": view.n, "window_rows": window_rows, "points": points}
    return {"data": traces, "layout": layout}


def axis_to_epoch(value: Any, tz_offset_s: int) -> float | None:
    """A date-axis value from plotly (``"2024-06-10 12:34:56.789"`` or milliseconds) as epoch
    seconds, undoing the local-time shift of :func:`make_figure`."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        ms = float(value)
    elif isinstance(value, str):
        shown = _iso_to_epoch(value, as_utc=True)
        if shown is None:
            return None
        ms = shown * 1000.0
    else:
        return None
    if not math.isfinite(ms):
        return None
    return ms / 1000.0 - tz_offset_s


def _window(data: Any, tz_offset_s: int) -> tuple[float, float] | None:
    if not isinstance(data, (list, tuple)) or len(data) != 2:
        return None
    lo, hi = (axis_to_epoch(v, tz_offset_s) for v in data)
    if lo is None or hi is None:
        return None
    return (lo, hi) if lo <= hi else (hi, lo)


def _fmt_time(epoch: float | None) -> str:
    if epoch is None or not math.isfinite(epoch):
        return "-"
    try:
        return datetime.fromtimestamp(epoch).isoformat(sep=" ", timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return f"{epoch:g}"


# ------------------------------------------------------------------------------------ the app
#: Clientside: turn the graph's relayoutData into the x window to plot, or None (autorange).
#: relayoutData holds only the last change, so a y-only zoom must not forget the x window.
_WINDOW_JS = """
function(relayout) {
    const keep = window.dash_clientside.no_update;
    if (!relayout) { return keep; }
    if (relayout["xaxis.autorange"] === true) { return null; }
    let r0 = relayout["xaxis.range[0]"], r1 = relayout["xaxis.range[1]"];
    const r = relayout["xaxis.range"];
    if (r0 === undefined && Array.isArray(r)) { r0 = r[0]; r1 = r[1]; }
    if (r0 === undefined || r1 === undefined) { return keep; }
    return [r0, r1];
}
"""


def build_app(
    source: Any,
    ctx_key: str,
    *,
    interval_ms: int = 500,
    max_points: int = DEFAULT_MAX_POINTS,
) -> dash.Dash:
    """The Dash app for ``source[ctx_key]`` (a Context, a dict or a :class:`CtxFileSource`).

    Components: ``columns`` (Checklist of value columns), ``status``, ``graph``, ``tick``
    (Interval), ``xwindow`` (Store: the zoomed x range, or None), ``figsig`` (Store: what the
    figure on screen shows, to skip resending it). The cache is ``app.column_cache``.
    """
    import dash
    from dash import Input, Output, State, dcc, html, no_update

    cache = ColumnCache()
    app = dash.Dash(
        __name__,
        title=f"hello_dash: {ctx_key}",
        update_title=None,  # no "Updating..." flicker in the tab title on every tick
        add_log_handler=False,
        serve_locally=True,
    )
    app.column_cache = cache  # type: ignore[attr-defined]

    last = _last_row(source, ctx_key)
    width = max(len(last) - 1, 0) if isinstance(last, (list, tuple)) else 0
    options = [{"label": f"v{i}", "value": i} for i in range(1, width + 1)]

    app.layout = html.Div(
        [
            html.H2(f"ctx[{ctx_key!r}]", id="title", style={"margin": "0 0 0.4em 0"}),
            html.Div(
                [
                    html.Span("columns: ", style={"marginRight": "0.5em"}),
                    dcc.Checklist(
                        id="columns",
                        options=options,
                        value=[o["value"] for o in options],
                        inline=True,
                        inputStyle={"marginRight": "0.25em"},
                        labelStyle={"marginRight": "1em"},
                    ),
                ],
                style={"display": "flex", "alignItems": "center"},
            ),
            html.Div(
                id="status", children="loading…", style={"color": "#555", "margin": "0.4em 0"}
            ),
            dcc.Graph(
                id="graph",
                figure={"data": [], "layout": base_layout("loading…")},
                config={"displaylogo": False, "scrollZoom": True},
                style={"height": "75vh"},
            ),
            dcc.Interval(id="tick", interval=int(interval_ms), n_intervals=0),
            dcc.Store(id="xwindow", data=None),
            dcc.Store(id="figsig", data=None),
        ],
        style={"fontFamily": "system-ui, sans-serif", "padding": "0.8em"},
    )

    app.clientside_callback(
        _WINDOW_JS,
        Output("xwindow", "data"),
        Input("graph", "relayoutData"),
        prevent_initial_call=True,
    )

    memo: dict[str, dict[str, Any]] = {}  # the last figure made, by its signature
    memo_lock = threading.Lock()

    @app.callback(
        Output("graph", "figure"),
        Output("status", "children"),
        Output("columns", "options"),
        Output("columns", "value"),
        Output("figsig", "data"),
        Input("tick", "n_intervals"),
        Input("columns", "value"),
        Input("xwindow", "data"),
        State("columns", "options"),
        State("figsig", "data"),
        # In-flight protection: the Interval is disabled while this request runs and
        # re-enabled (its timer restarted) when the answer is in, so ticks never pile up.
        running=[(Output("tick", "disabled"), True, False)],
    )
    def update(_n: Any, selected: Any, window: Any, shown_options: Any, figsig: Any) -> tuple:
        cache.sync(source, ctx_key)
        view = cache.view()
        new_options: Any = no_update
        new_value: Any = no_update
        selected = list(selected or [])
        known = len(shown_options or [])
        if known != view.width:
            new_options = [{"label": f"v{i}", "value": i} for i in range(1, view.width + 1)]
            if known == 0 or set(range(1, known + 1)) <= set(selected):
                selected = list(range(1, view.width + 1))  # had all: new columns join in
            else:
                selected = [c for c in selected if isinstance(c, int) and c <= view.width]
            new_value = selected

        x_range = _window(window, view.tz_offset_s)
        columns = _column_numbers(selected, view.width)
        sig = [view.generation, view.n, columns, list(x_range) if x_range else None, max_points]
        if isinstance(figsig, dict) and figsig.get("sig") == sig:
            figure: Any = no_update  # this browser already shows exactly that
            meta = figsig.get("meta") or {}
            new_sig: Any = no_update
        else:
            with memo_lock:  # other tabs asking for the same figure get the one already made
                figure = memo.get(repr(sig))
            if figure is None:
                figure = make_figure(view, columns, x_range, max_points)
                with memo_lock:
                    memo.clear()
                    memo[repr(sig)] = figure
            meta = figure["layout"]["meta"]
            new_sig = {"sig": sig, "meta": meta}

        parts = [f"{view.n:,} rows", f"{meta.get('points', 0):,} points shown"]
        if x_range:
            parts.append(
                f"zoomed to {_fmt_time(x_range[0])} – {_fmt_time(x_range[1])}"
                f" ({meta.get('window_rows', 0):,} rows)"
            )
        parts.append(f"last row {_fmt_time(view.last_x)}")
        parts.append(f"updated {datetime.now():%H:%M:%S}")
        return figure, " · ".join(parts), new_options, new_value, new_sig

    return app


# ------------------------------------------------------------------------------------ serving
class _Connections:
    """Open client connections, so that stopping can end them.

    werkzeug answers ``Connection: close``, but a connection that is open and idle (browsers open
    spare ones ahead of time) keeps its request thread waiting for a request line, and
    ``server_close`` joins those threads: without this, stopping could hang until the client
    gives up on the connection.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.closing = False

    def add(self, conn: socket.socket) -> bool:
        with self._lock:
            if self.closing:
                return False
            self._open.add(conn)
            return True

    def discard(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.discard(conn)

    def close_all(self) -> None:
        with self._lock:
            self.closing = True
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _handler_class(conns: _Connections, log: logging.Logger, requests: bool) -> type:
    from werkzeug.serving import WSGIRequestHandler

    class Handler(WSGIRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            if not conns.add(self.connection):
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def handle_one_request(self) -> None:
            super().handle_one_request()
            if conns.closing:
                self.close_connection = True

        def finish(self) -> None:
            conns.discard(self.connection)
            super().finish()

        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            if requests:  # a line per browser poll: only when debugging
                log.debug("%s %s %s", self.command, self.path, code)

        def log(self, type: str, message: str, *args: Any) -> None:
            log.info("http %s: %s", type, message % args if args else message)

    return Handler


def _allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The Host headers a request to a dashboard on a loopback address may carry: this
    machine's loopback names, with the port. A web page whose own name resolves to 127.0.0.1
    (DNS rebinding) sends its own name and is refused. None for any other interface: the names
    it is reached by cannot be known here (the token guards it)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        return None
    names = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}
    allowed = {f"{name}:{port}" for name in names}
    if port == 80:  # the default port is left out of the Host header
        allowed |= names
    return frozenset(allowed)


def _guard(server: Any, host: str, port: int, token: str | None) -> None:
    """Answer 403 to a request with a foreign Host header and, with a ``token``, to one that
    carries neither the token (``?token=``) nor its cookie. The first visit with the token
    gets the cookie and is sent on to ``/``, so the token leaves the address bar."""
    import flask

    allowed = _allowed_hosts(host, port)
    cookie = f"hello_dash_{port}"  # per port: browsers share cookies between a host's ports

    def refuse(why: str) -> Any:
        return flask.Response(f"hello_dash: {why}\n", status=403, mimetype="text/plain")

    def holds(given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), token.encode())  # type: ignore[union-attr]

    @server.before_request
    def check() -> Any:
        request = flask.request
        if allowed is not None and request.host.lower() not in allowed:
            return refuse(f"Host {request.host!r} is not this dashboard's address")
        if token is None or holds(request.cookies.get(cookie)):
            return None
        if not holds(request.args.get("token")):
            return refuse(
                "this dashboard needs its token: open the address it printed (in the log of "
                "the step that runs it), which ends in ?token=..."
            )
        if request.method == "GET" and request.path == "/":
            response = flask.redirect("/", code=303)
            response.set_cookie(cookie, token, httponly=True, samesite="Strict")
            return response
        return None


def _token(token: bool | str) -> str | None:
    """The run's token: a new random one (True), none (False), or the one given."""
    if token is True:
        return secrets.token_urlsafe(24)
    if token is False:
        return None
    if not isinstance(token, str) or not re.fullmatch(r"[A-Za-z0-9_-]{8,}", token):
        raise ValueError(
            f"token must be true, false or at least 8 letters, digits, '-' or '_', got {token!r}"
        )
    return token


def _orch_debug() -> bool:
    return os.environ.get("ORCH_DEBUG", "") not in ("", "0")


def _check_port(host: str, port: int) -> None:
    """Fail with a clear message when ``host:port`` cannot be listened on (werkzeug would print
    to stderr and ``sys.exit(1)``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    fam, kind, proto, _, addr = infos[0]
    with socket.socket(fam, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what the server does
        try:
            probe.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise RuntimeError(f"port {port} on {host} is already in use") from None
            raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def run(
    ctx: Any,
    port: int = 8050,
    ctx_key: str = "new_row",
    host: str = "127.0.0.1",
    stop: threading.Event | None = None,
    log: logging.Logger | None = None,
    interval_ms: int = 500,
    max_points: int = DEFAULT_MAX_POINTS,
    debug: bool | None = None,
    token: bool | str = True,
    url_key: str | None = None,
) -> None:
    """Serve the dashboard of ``ctx[ctx_key]`` on ``http://host:port/`` until ``stop`` is set.

    Then the server is shut down and its socket closed, so the port is free at once. A port in
    use raises ``RuntimeError("port N on HOST is already in use")``. ``debug`` logs every HTTP
    request (the browser polls twice a second); by default it is on when ``ORCH_DEBUG`` is
    set, as ``orch-tui --debug`` does for its steps. ``token``: a random one (True), none
    (False) or this one (a string); the address with it is printed, and stored in
    ``ctx[url_key]`` if given, so a later step can show or use it.
    """
    log = log or _LOG
    if debug is None:
        debug = _orch_debug()
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number from 0 to 65535, got {port!r}")
    if not isinstance(ctx_key, str) or not ctx_key:
        raise ValueError(f"ctx_key must be a non-empty string, got {ctx_key!r}")
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, (int, float)):
        raise ValueError(f"interval_ms must be a number, got {interval_ms!r}")
    if not interval_ms >= 50:
        raise ValueError(f"interval_ms must be >= 50, got {interval_ms!r}")
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < MIN_POINTS:
        raise ValueError(f"max_points must be a whole number >= {MIN_POINTS}, got {max_points!r}")
    if url_key is not None and (not isinstance(url_key, str) or not url_key):
        raise ValueError(f"url_key must be a non-empty string, got {url_key!r}")
    secret = _token(token)

    from werkzeug.serving import make_server

    app = build_app(ctx, ctx_key, interval_ms=int(interval_ms), max_points=max_points)
    app.server.logger = log  # Flask logs callback exceptions here: the step's log
    _check_port(host, port)
    conns = _Connections()
    try:
        server = make_server(
            host,
            port,
            app.server,
            threaded=True,
            request_handler=_handler_class(conns, log, bool(debug)),
        )
    except (SystemExit, OSError):  # werkzeug exits on a bind error; the probe missed a race
        raise RuntimeError(f"port {port} on {host} is already in use") from None
    server.log = lambda type, message, *args: log.error(message, *args)  # type: ignore[method-assign]
    _guard(app.server, host, server.port, secret)

    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},
        name=f"hello_dash:{server.port}",
        daemon=True,
    )
    thread.start()
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{server.port}/" + (f"?token={secret}" if secret else "")
    print(f"Dash is running on {url} (ctx key {ctx_key!r})", flush=True)
    if url_key is not None:
        ctx[url_key] = url
    try:
        (stop if stop is not None else threading.Event()).wait()
    finally:
        server.shutdown()  # the accept loop ends (within poll_interval)
        conns.close_all()  # client connections are cut (an answer in the making is dropped)
        server.server_close()  # closes the listening socket; joins the request threads
        thread.join(5)
        log.info("hello_dash on port %d stopped", server.port)


# ------------------------------------------------------------------------------------ the CLI
def _demo_rows(count: int, n: int, spacing: float) -> list[list[float]]:
    """``count`` rows of ``n`` random walks, the last one now, ``spacing`` seconds apart."""
    import numpy as np

    if count <= 0:
        return []
    rng = np.random.default_rng()
    t = time.time() - spacing * np.arange(count - 1, -1, -1, dtype=np.float64)
    values = np.cumsum(rng.normal(0, 1, size=(count, n)), axis=0)
    return np.column_stack([t, values]).tolist()


def _demo_feeder(
    ctx: dict[str, Any], key: str, n: int, interval: float, stop: threading.Event
) -> None:
    """Append a row of ``n`` random walks to ``ctx[key]`` every ``interval`` seconds."""
    import random

    rows = ctx.setdefault(key, [])
    level = list(rows[-1][1:]) if rows else [0.0] * n
    level += [0.0] * (n - len(level))
    while not stop.wait(interval):
        level = [v + random.gauss(0, 1) for v in level[:n]]
        rows.append([time.time(), *level])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Live Dash plot of ctx[CTX_KEY] rows [timestamp, v1, ..., vn]: from the "
        "ctx.json of a run directory, or from rows it generates itself."
    )
    parser.add_argument("--port", type=int, default=8050, help="port (default: 8050)")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    parser.add_argument("--ctx_key", default="new_row", help="ctx key to plot (default: new_row)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument(
        "--run-dir",
        metavar="DIR",
        help="plot DIR/ctx.json of an orch-tui run, re-read when it changes",
    )
    src.add_argument(
        "--demo-rows",
        type=int,
        default=1000,
        metavar="N",
        help="without --run-dir: start with N generated rows (default: 1000), then add more",
    )
    parser.add_argument("--demo-n", type=int, default=3, help="values per demo row (default: 3)")
    parser.add_argument(
        "--demo-interval",
        type=float,
        default=0.2,
        metavar="SEC",
        help="seconds between new demo rows (default: 0.2)",
    )
    parser.add_argument(
        "--interval_ms", type=int, default=500, help="refresh period (default: 500)"
    )
    parser.add_argument(
        "--max_points",
        type=int,
        default=DEFAULT_MAX_POINTS,
        help=f"points per trace sent to the browser (default: {DEFAULT_MAX_POINTS})",
    )
    parser.add_argument(
        "--debug", action="store_true", help="log every HTTP request (default: $ORCH_DEBUG)"
    )
    parser.add_argument(
        "--no-token",
        action="store_true",
        help="no token in the address: any local user's browser gets in (the Host check stays)",
    )
    args = parser.parse_args(argv)
    if args.demo_rows < 0 or args.demo_n < 1 or not args.demo_interval > 0:
        parser.error("--demo-rows must be >= 0, --demo-n >= 1 and --demo-interval > 0")

    debug = args.debug or _orch_debug()
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    source: Any
    if args.run_dir:
        path = Path(args.run_dir)
        if path.is_dir():
            path = path / "ctx.json"
        elif not path.name.endswith(".json"):
            parser.error(f"--run-dir {args.run_dir}: no such directory")
        source = CtxFileSource(path)
        print(f"plotting ctx[{args.ctx_key!r}] from {path}", flush=True)
    else:
        source = {args.ctx_key: _demo_rows(args.demo_rows, args.demo_n, args.demo_interval)}
        threading.Thread(
            target=_demo_feeder,
            args=(source, args.ctx_key, args.demo_n, args.demo_interval, stop),
            name="hello_dash-demo",
            daemon=True,
        ).start()
    try:
        run(
            source,
            port=args.port,
            ctx_key=args.ctx_key,
            host=args.host,
            stop=stop,
            interval_ms=args.interval_ms,
            max_points=args.max_points,
            debug=debug,
            token=not args.no_token,
        )
    except (RuntimeError, ValueError) as exc:
        print(f"hello_dash: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
