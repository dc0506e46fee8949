"""One tick's plotly figure, as a plain dict small enough to send twice a second.

x and y go out as base64 typed arrays (plotly.js ``bdata``), 16 to 21 bytes a point instead of
~45 as JSON text, drawn with ``scattergl``; each trace is downsampled to ``max_points``, over
the zoomed x window only when there is one, so zooming in reveals the detail. A constant
``uirevision`` keeps the user's zoom, pan and legend clicks across updates.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .cache import CacheView, ColumnCache, downsample
from .times import axis_ms

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

DEFAULT_MAX_POINTS = 2000
#: Fewer points than this per trace is not a plot (and LTTB needs at least 3).
MIN_POINTS = 10
#: Constant, so the user's zoom, pan and legend clicks survive every update.
UIREVISION = "hello-dash"
#: Traces with at most this many points also draw markers.
MARKERS_UP_TO = 300


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


def column_numbers(columns: Any, width: int) -> list[int]:
    """Selected columns as 1-based numbers (``2`` or ``"v2"``), in range, without duplicates:
    what the browser sends is not trusted to be any of these."""
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
    """The layout every figure shares, with ``message`` across the middle when there is nothing
    to plot (no rows yet, no column selected, an empty window)."""
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


def _rows_in(view: CacheView, x_range: Sequence[float] | None) -> tuple[Any, bool]:
    """The rows to plot, as an index into the view's columns, and whether their x is sorted.

    The whole series, or the zoomed window: found by binary search when x is sorted (a slice,
    no copy), by a scan otherwise (the indexes inside it, by position).
    """
    import numpy as np

    if x_range is None or not view.n:
        return slice(0, view.n), view.x_sorted
    lo, hi = sorted(float(v) for v in x_range)
    if view.x_sorted:
        lo_i = int(np.searchsorted(view.x, lo, side="left"))
        hi_i = int(np.searchsorted(view.x, hi, side="right"))
        return slice(lo_i, hi_i), True
    return np.flatnonzero((view.x >= lo) & (view.x <= hi)), False


def _trace(column: int, xs: np.ndarray, ys: np.ndarray, tz_offset_s: int) -> dict[str, Any]:
    """The ``scattergl`` trace of value column ``column`` (1-based), its points already chosen."""
    return {
        "type": "scattergl",
        "mode": "lines+markers" if len(ys) <= MARKERS_UP_TO else "lines",
        "name": f"v{column}",
        "x": _typed_array(axis_ms(xs, tz_offset_s)),
        "y": _typed_array(ys, allow_f4=True),
        "line": {"width": 1.5},
        "marker": {"size": 4},
    }


def _empty_message(view: CacheView, selected: list[int], window_rows: int) -> str | None:
    """Why the plot is empty, for the user; None when it is not."""
    if not view.n:
        return "waiting for rows…"
    if not selected:
        return "no column selected"
    if not window_rows:
        return "no rows in this window (double-click to reset)"
    return None


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
    view = cache.view() if isinstance(cache, ColumnCache) else cache
    n_out = max(int(max_points), MIN_POINTS)
    selected = column_numbers(columns, view.width)
    rows, x_sorted = _rows_in(view, x_range)
    window_x = view.x[rows]
    traces = []
    points = 0
    for c in selected:
        xs, ys = window_x, view.ys[c - 1][rows]
        idx = downsample(xs, ys, n_out, x_sorted, (c - 1) in view.nan_columns)
        if idx is not None:
            xs, ys = xs[idx], ys[idx]
        points += len(ys)
        traces.append(_trace(c, xs, ys, view.tz_offset_s))
    layout = base_layout(_empty_message(view, selected, len(window_x)))
    layout["meta"] = {"rows": view.n, "window_rows": len(window_x), "points": points}
    return {"data": traces, "layout": layout}
