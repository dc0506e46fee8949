"""The Dash page: its layout and the one callback that updates it on every tick.

The callback never overlaps itself: it disables the ``dcc.Interval`` while its request is in
flight (``running=``), so the next tick comes ``interval_ms`` after the previous answer, however
slow the answer was. It sends no figure at all when the browser already shows the one it would
send, and several tabs asking for the same figure share the one already made.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .cache import CacheView, ColumnCache
from .figure import DEFAULT_MAX_POINTS, base_layout, column_numbers, make_figure
from .source import last_row
from .times import axis_to_epoch, format_time

if TYPE_CHECKING:  # pragma: no cover
    import dash

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


def _window(data: Any, tz_offset_s: int) -> tuple[float, float] | None:
    """The zoomed x window the browser stored, as ``(lo, hi)`` epoch seconds; None when there
    is none or it is not two dates (the store's content comes from the browser)."""
    if not isinstance(data, (list, tuple)) or len(data) != 2:
        return None
    lo, hi = (axis_to_epoch(v, tz_offset_s) for v in data)
    if lo is None or hi is None:
        return None
    return (lo, hi) if lo <= hi else (hi, lo)


def _column_options(width: int) -> list[dict[str, Any]]:
    return [{"label": f"v{i}", "value": i} for i in range(1, width + 1)]


def _selection(selected: list[Any], known: int, width: int) -> list[Any]:
    """The columns to keep selected when the number of columns changed from ``known`` to
    ``width``: all of them if all were (new columns join in), else those still there."""
    if known == 0 or set(range(1, known + 1)) <= set(selected):
        return list(range(1, width + 1))
    return [c for c in selected if isinstance(c, int) and c <= width]


def _status(view: CacheView, meta: dict[str, Any], x_range: tuple[float, float] | None) -> str:
    """The line under the title: rows, points sent, the zoom window, the last row's time."""
    parts = [f"{view.n:,} rows", f"{meta.get('points', 0):,} points shown"]
    if x_range:
        parts.append(
            f"zoomed to {format_time(x_range[0])} – {format_time(x_range[1])}"
            f" ({meta.get('window_rows', 0):,} rows)"
        )
    parts.append(f"last row {format_time(view.last_x)}")
    parts.append(f"updated {datetime.now():%H:%M:%S}")
    return " · ".join(parts)


class _Tick:
    """The update callback: what the page shows after a tick, a click on a column or a zoom.

    It remembers the last figure it made, by signature: other tabs asking for the same one get
    it without making it again (a figure of millions of rows costs milliseconds).
    """

    def __init__(self, source: Any, ctx_key: str, cache: ColumnCache, max_points: int) -> None:
        self.source, self.ctx_key, self.cache, self.max_points = source, ctx_key, cache, max_points
        self._lock = threading.Lock()
        self._last: tuple[str, dict[str, Any]] | None = None

    def __call__(
        self, _n: Any, selected: Any, window: Any, shown_options: Any, figsig: Any
    ) -> tuple[Any, ...]:
        from dash import no_update

        self.cache.sync(self.source, self.ctx_key)
        view = self.cache.view()
        new_options: Any = no_update
        new_value: Any = no_update
        selected = list(selected or [])
        known = len(shown_options or [])
        if known != view.width:
            new_options = _column_options(view.width)
            selected = new_value = _selection(selected, known, view.width)
        x_range = _window(window, view.tz_offset_s)
        columns = column_numbers(selected, view.width)
        sig = [
            view.generation,
            view.n,
            columns,
            list(x_range) if x_range else None,
            self.max_points,
        ]
        if isinstance(figsig, dict) and figsig.get("sig") == sig:  # the browser shows just that
            status = _status(view, figsig.get("meta") or {}, x_range)
            return no_update, status, new_options, new_value, no_update
        figure = self._figure(view, columns, x_range, repr(sig))
        meta = figure["layout"]["meta"]
        status = _status(view, meta, x_range)
        return figure, status, new_options, new_value, {"sig": sig, "meta": meta}

    def _figure(
        self, view: CacheView, columns: list[int], x_range: Any, sig: str
    ) -> dict[str, Any]:
        with self._lock:
            if self._last is not None and self._last[0] == sig:
                return self._last[1]
        figure = make_figure(view, columns, x_range, self.max_points)
        with self._lock:
            self._last = (sig, figure)
        return figure


def _layout(ctx_key: str, width: int, interval_ms: int) -> Any:
    """The page: title, column checklist, status line, graph, the tick and two stores
    (``xwindow``: the zoomed x range or None; ``figsig``: what the figure on screen shows)."""
    from dash import dcc, html

    options = _column_options(width)
    return html.Div(
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


def build_app(
    source: Any,
    ctx_key: str,
    *,
    interval_ms: int = 500,
    max_points: int = DEFAULT_MAX_POINTS,
) -> dash.Dash:
    """The Dash app for ``source[ctx_key]`` (a Context, a dict or a ``CtxFileSource``).

    Components: ``columns`` (Checklist of value columns), ``status``, ``graph``, ``tick``
    (Interval), ``xwindow`` (Store: the zoomed x range, or None), ``figsig`` (Store: what the
    figure on screen shows, to skip resending it). The cache is ``app.column_cache``.
    """
    import dash
    from dash import Input, Output, State

    cache = ColumnCache()
    app = dash.Dash(
        __name__,
        title=f"hello_dash: {ctx_key}",
        update_title=None,  # no "Updating..." flicker in the tab title on every tick
        add_log_handler=False,
        serve_locally=True,
    )
    app.column_cache = cache  # type: ignore[attr-defined]
    last = last_row(source, ctx_key)
    width = max(len(last) - 1, 0) if isinstance(last, (list, tuple)) else 0
    app.layout = _layout(ctx_key, width, interval_ms)
    app.clientside_callback(
        _WINDOW_JS,
        Output("xwindow", "data"),
        Input("graph", "relayoutData"),
        prevent_initial_call=True,
    )
    app.callback(
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
    )(_Tick(source, ctx_key, cache, max_points))
    return app
