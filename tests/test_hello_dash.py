"""scriptlets/python/apps/hello_dash.py against a real server: layout, the update callback over
HTTP (the payload built from ``/_dash-dependencies``, as the browser does), live rows, column
selection, zoom windows, stopping and the port, a taken port, a million rows, the CLI, and a run.

Also the pure parts (``ColumnCache``, ``make_figure``) on awkward data. Synchronisation is always
a poll with a deadline; times are printed, never asserted.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from http.client import HTTPConnection, HTTPResponse
from typing import Any

import numpy as np
import pytest

from core.context import Context
from scriptlets.python.apps import hello_dash as hd
from scriptlets.python.apps.dashboard.cache import ColumnCache
from scriptlets.python.apps.dashboard.figure import DEFAULT_MAX_POINTS, MARKERS_UP_TO, make_figure
from scriptlets.python.apps.dashboard.times import axis_to_epoch
from tests.conftest import PY, ROOT, free_port, run_recipe, wait_for, write_module

SCRIPT = ROOT / "scriptlets" / "python" / "apps" / "hello_dash.py"
TZ_OFFSET = time.localtime().tm_gmtoff


# ------------------------------------------------------------------------------------ helpers
def make_rows(count: int, n: int = 3, start: float | None = None, step: float = 0.01) -> list:
    start = time.time() - count * step if start is None else start
    t = start + step * np.arange(count)
    values = np.random.default_rng(count).random((count, n))
    return np.column_stack([t, values]).tolist()


def http(url: str, body: Any = None, timeout: float = 60) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def decode(spec: Any) -> np.ndarray:
    """A plotly typed-array spec (or a plain list) as a numpy array."""
    if isinstance(spec, dict):
        return np.frombuffer(base64.b64decode(spec["bdata"]), dtype="<" + spec["dtype"])
    return np.asarray(spec, dtype=float)


def trace_x_epoch(trace: dict) -> np.ndarray:
    """x of a trace back to epoch seconds (it is sent as local-time epoch milliseconds)."""
    return decode(trace["x"]) / 1000.0 - TZ_OFFSET


def local_axis_text(epoch: float) -> str:
    """How plotly's relayoutData names a point of the date axis: local wall time."""
    return datetime.fromtimestamp(epoch).isoformat(sep=" ", timespec="microseconds")


def rows_in_status(status: str) -> int:
    return int(status.split(" rows")[0].replace(",", ""))


class Tick:
    """One answer of the update callback."""

    def __init__(self, body: bytes, elapsed: float) -> None:
        self.body = body
        self.size = len(body)
        self.elapsed = elapsed
        response = json.loads(body)["response"]
        self.status: str = response["status"]["children"]
        self.figure: dict | None = response.get("graph", {}).get("figure")
        self.options = response.get("columns", {}).get("options")
        self.value = response.get("columns", {}).get("value")
        self.figsig = response.get("figsig", {}).get("data")

    @property
    def traces(self) -> list[dict]:
        assert self.figure is not None, "no figure in this answer"
        return self.figure["data"]


class DashClient:
    """Calls the graph's update callback the way dash-renderer does; ``url(path)`` is where
    (with the dashboard's token)."""

    def __init__(self, url: Callable[[str], str]) -> None:
        self.url = url
        status, body = http(url("/_dash-dependencies"))
        assert status == 200
        deps = json.loads(body)
        (self.callback,) = [
            d for d in deps if "graph.figure" in d["output"] and not d.get("clientside_function")
        ]
        self.outputs = []
        for out in self.callback["output"].strip(".").split("..."):
            component_id, prop = out.rsplit(".", 1)
            self.outputs.append({"id": component_id, "property": prop})
        self.n = 0

    def update(
        self,
        columns: list | None = None,
        xwindow: list | None = None,
        options: list | None = None,
        figsig: Any = None,
        changed: str = "tick.n_intervals",
    ) -> Tick:
        self.n += 1
        values = {
            "tick.n_intervals": self.n,
            "columns.value": columns if columns is not None else [1, 2, 3],
            "xwindow.data": xwindow,
            "columns.options": options
            if options is not None
            else [{"label": f"v{i}", "value": i} for i in (1, 2, 3)],
            "figsig.data": figsig,
        }

        def spec(dep: dict) -> dict:
            return {**dep, "value": values[f"{dep['id']}.{dep['property']}"]}

        payload = {
            "output": self.callback["output"],
            "outputs": self.outputs,
            "inputs": [spec(d) for d in self.callback["inputs"]],
            "state": [spec(d) for d in self.callback["state"]],
            "changedPropIds": [changed],
        }
        start = time.perf_counter()
        status, body = http(self.url("/_dash-update-component"), payload)
        elapsed = time.perf_counter() - start
        assert status == 200, body[:2000]
        return Tick(body, elapsed)


class Served:
    """``hello_dash.run`` in a thread on a free port, until ``stop_and_join``; with a token of
    its own unless ``token`` is given."""

    def __init__(self, source: Any, **params: Any) -> None:
        self.port = params.pop("port", None) or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = params.setdefault("token", secrets.token_urlsafe(12))
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._go, args=(source,), kwargs={"port": self.port, **params}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/") -> str:
        """``path`` on the dashboard, with its token."""
        return f"{self.base}{path}?token={self.token}" if self.token else self.base + path

    def _go(self, source: Any, **params: Any) -> None:
        try:
            hd.run(source, stop=self.stop, **params)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def wait_up(self) -> DashClient:
        def up() -> bool:
            assert self.error is None, self.error
            return http(self.url("/_dash-layout"), timeout=5)[0] == 200

        wait_for(up, timeout=30, message=f"the dashboard on port {self.port}")
        return DashClient(self.url)

    def stop_and_join(self, timeout: float = 2.0) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"run() still going {timeout}s after stop"
        assert self.error is None, self.error


@pytest.fixture
def serve():
    started: list[Served] = []

    def start(source: Any, **params: Any) -> Served:
        served = Served(source, **params)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop.set()
        served.thread.join(10)


def port_is_free(port: int) -> bool:
    """A new server can listen there (SO_REUSEADDR, as every server, werkzeug included, binds)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


# ------------------------------------------------------------------------------------ basics
@pytest.mark.parametrize("how", ["file", "module"])
def test_help(how, tmp_path):
    """As a file from any folder (its package found next to it), or as a module from the repo."""
    command, cwd = {
        "file": ([PY, str(SCRIPT)], tmp_path),
        "module": ([PY, "-m", "scriptlets.python.apps.hello_dash"], ROOT),
    }[how]
    result = subprocess.run(
        [*command, "--help"], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for option in ("--port", "--ctx_key", "--host", "--run-dir", "--demo-rows"):
        assert option in result.stdout


def test_import_does_not_import_dash():
    code = (
        "import sys, scriptlets.python.apps.hello_dash as m; "
        "heavy = {'dash', 'plotly', 'numpy', 'tsdownsample', 'flask', 'werkzeug'} & set(sys.modules); "
        "assert not heavy, heavy; assert callable(m.run)"
    )
    result = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------ live server
def test_live_dashboard_over_http(serve):
    ctx = Context()
    ctx["new_row"] = make_rows(500)
    served = serve(ctx, ctx_key="new_row")
    client = served.wait_up()

    # The layout: a title, the column selector (already knowing v1..v3), status, graph, interval.
    status, body = http(served.url("/_dash-layout"))
    assert status == 200
    layout = json.loads(body)
    text = json.dumps(layout)
    for component_id in ('"graph"', '"columns"', '"status"', '"tick"', '"title"'):
        assert component_id in text
    assert '"Graph"' in text and '"Checklist"' in text and '"Interval"' in text
    assert "ctx['new_row']" in text
    assert all(f'"label": "v{i}"' in text for i in (1, 2, 3))

    # A tick: every column as a scattergl trace with all 500 points, x on a date axis.
    tick = client.update()
    assert rows_in_status(tick.status) == 500
    assert "1,500 points shown" in tick.status
    assert [t["name"] for t in tick.traces] == ["v1", "v2", "v3"]
    assert {t["type"] for t in tick.traces} == {"scattergl"}
    assert tick.figure["layout"]["xaxis"]["type"] == "date"
    assert tick.figure["layout"]["uirevision"]
    rows = ctx["new_row"]
    for i, trace in enumerate(tick.traces, start=1):
        assert np.allclose(trace_x_epoch(trace), [r[0] for r in rows], atol=1e-3)
        assert np.allclose(decode(trace["y"]), [r[i] for r in rows], atol=1e-6)

    # Rows appended to the ctx show up in the next tick: the count and the last x.
    more = make_rows(100, start=rows[-1][0] + 1)
    ctx.extend("new_row", more)
    tick = client.update()
    assert rows_in_status(tick.status) == 600
    last = more[-1][0]
    assert abs(trace_x_epoch(tick.traces[0])[-1] - last) < 1e-3
    assert (
        f"last row {datetime.fromtimestamp(last).isoformat(sep=' ', timespec='milliseconds')}"
        in (tick.status)
    )

    # Nothing new: the figure is not sent again (its signature matches), the status still is.
    same = client.update(figsig=tick.figsig)
    assert same.figure is None and same.size < 2000
    assert rows_in_status(same.status) == 600 and "1,800 points shown" in same.status

    # Another column selection: one trace, column 2's values.
    tick = client.update(columns=[2], changed="columns.value")
    assert [t["name"] for t in tick.traces] == ["v2"]
    assert np.allclose(decode(tick.traces[0]["y"]), [r[2] for r in ctx["new_row"]], atol=1e-6)
    assert "600 points shown" in tick.status
    assert client.update(columns=[], changed="columns.value").traces == []

    # A zoom window (as plotly reports it: local date strings): only rows inside it.
    all_rows = ctx["new_row"]
    lo, hi = all_rows[100][0], all_rows[199][0]
    tick = client.update(
        xwindow=[local_axis_text(lo - 0.001), local_axis_text(hi + 0.001)], changed="xwindow.data"
    )
    for trace in tick.traces:
        xs = trace_x_epoch(trace)
        assert len(xs) == 100
        assert xs.min() >= lo - 0.002 and xs.max() <= hi + 0.002
    assert "zoomed to" in tick.status and "(100 rows)" in tick.status
    # Autorange again (double-click): the whole series.
    tick = client.update(xwindow=None, changed="xwindow.data")
    assert "zoomed" not in tick.status
    assert [len(decode(t["x"])) for t in tick.traces] == [600, 600, 600]

    # Stop: run() returns promptly, the port is free at once and nothing answers there.
    served.stop_and_join(2.0)
    assert port_is_free(served.port)
    with pytest.raises(OSError):
        http(served.url("/_dash-layout"), timeout=2)


def test_answers_are_serialised_with_orjson(serve, monkeypatch):
    """Dash hands the answer to plotly's JSON encoder, which picks orjson when installed.

    The body is orjson's bytes with plotly's HTML-safe escapes (``/`` as ``\\u002f`` and so
    on); compared byte for byte once those are undone, as a size ratio drifted with how many
    slashes the base64 data happened to hold."""
    import orjson
    from plotly.io._json import _swap_orjson

    real_dumps = orjson.dumps
    encoded: list[bytes] = []

    def counting_dumps(obj: Any, *args: Any, **kwargs: Any) -> bytes:
        out = real_dumps(obj, *args, **kwargs)
        if isinstance(obj, dict) and "response" in obj:
            encoded.append(out)
        return out

    monkeypatch.setattr(orjson, "dumps", counting_dumps)
    served = serve({"new_row": make_rows(100)}, ctx_key="new_row")
    tick = served.wait_up().update()
    body = tick.body.decode()
    for unsafe, escaped in _swap_orjson:
        body = body.replace(escaped, unsafe)
    assert encoded and body.encode() == encoded[-1]
    served.stop_and_join()


def test_new_columns_and_an_empty_start(serve):
    """Started before any rows: the selector fills in (all selected) when rows arrive."""
    ctx = Context({"new_row": []})
    served = serve(ctx, ctx_key="new_row", interval_ms=100)
    client = served.wait_up()
    tick = client.update(columns=[], options=[])
    assert rows_in_status(tick.status) == 0
    assert tick.traces == []
    assert "waiting for rows" in json.dumps(tick.figure["layout"])

    ctx.extend("new_row", make_rows(10, n=2))
    tick = client.update(columns=[], options=[])
    assert tick.options == [{"label": "v1", "value": 1}, {"label": "v2", "value": 2}]
    assert tick.value == [1, 2]
    assert [t["name"] for t in tick.traces] == ["v1", "v2"]

    # A wider row adds a column, selected too since all were.
    ctx.append("new_row", [time.time(), 1.0, 2.0, 3.0])
    tick = client.update(columns=[1, 2], options=tick.options)
    assert tick.value == [1, 2, 3]
    assert [t["name"] for t in tick.traces] == ["v1", "v2", "v3"]
    served.stop_and_join()


def get(
    served: Served, path: str, host: str | None = None, cookie: str | None = None
) -> HTTPResponse:
    """GET ``path`` with this ``Host`` header (default: as the URL) and cookie; the response,
    its body read into ``body``."""
    conn = HTTPConnection("127.0.0.1", served.port, timeout=30)
    headers = {k: v for k, v in (("Host", host), ("Cookie", cookie)) if v is not None}
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.body = response.read()
        return response
    finally:
        conn.close()


def test_only_this_machines_pages_with_the_token_get_in(serve):
    """A web page that reaches 127.0.0.1 under its own name (DNS rebinding) sends that name as
    Host; a request without the token or its cookie comes from someone who was not given the
    address. Both get 403, and a browser given the address keeps the token in a cookie."""
    served = serve({"new_row": make_rows(10)}, ctx_key="new_row")
    served.wait_up()
    port, token = served.port, served.token
    for path in ("/_dash-layout", "/_dash-layout?token=not-the-token", "/"):
        refused = get(served, path)
        assert refused.status == 403, path
        assert b"needs its token" in refused.body
    rebound = get(served, f"/_dash-layout?token={token}", host=f"rebound.example:{port}")
    assert rebound.status == 403
    assert b"Host 'rebound.example:" in rebound.body
    for name in ("127.0.0.1", "localhost", "[::1]"):
        assert get(served, f"/_dash-layout?token={token}", host=f"{name}:{port}").status == 200

    first = get(served, f"/?token={token}")  # the address printed in the step's log
    assert (first.status, first.getheader("Location")) == (303, "/")
    cookie = first.getheader("Set-Cookie")
    assert cookie.startswith(f"hello_dash_{port}={token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    for path in ("/", "/_dash-layout", "/_dash-dependencies"):
        assert get(served, path, cookie=f"hello_dash_{port}={token}").status == 200, path
    assert get(served, "/", cookie=f"hello_dash_{port}=guess").status == 403


def test_without_a_token_the_host_is_still_checked(serve):
    served = serve({"new_row": make_rows(10)}, ctx_key="new_row", token=False)
    served.wait_up()
    assert get(served, "/_dash-layout").status == 200
    assert get(served, "/_dash-layout", host=f"rebound.example:{served.port}").status == 403


def test_idle_client_connections_do_not_hold_up_stopping(serve):
    """A client that connected but sent nothing (a browser's spare connection) is cut off."""
    served = serve({"new_row": make_rows(10)}, ctx_key="new_row")
    served.wait_up()
    idle = socket.create_connection(("127.0.0.1", served.port))
    try:
        wait_for(lambda: http(served.url("/_dash-layout"))[0] == 200, message="served")
        served.stop_and_join(2.0)
        idle.settimeout(5)
        assert idle.recv(1) == b""  # closed by the server
    finally:
        idle.close()
    assert port_is_free(served.port)


def test_taken_port_is_a_clear_error_naming_who_holds_it():
    """One line (SystemExit: a step fails with it, no traceback) that names the holder: here
    this test's own process."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as info:
            hd.run(Context(), port=port, stop=threading.Event())
    assert str(info.value.code).startswith(
        f"port {port} on 127.0.0.1 is already in use by pid {os.getpid()} ("
    ), info.value.code


def test_a_holder_not_found_is_said_with_how_to_find_it():
    """When /proc names nobody (the port freed meanwhile, or not seen from here), the line
    says which command does."""
    from scriptlets.python.apps.dashboard.server import in_use

    port = free_port()
    assert in_use("127.0.0.1", port) == (
        f"port {port} on 127.0.0.1 is already in use (ss -ltnp 'sport = :{port}' names who holds it)"
    )


def test_bad_parameters_fail_before_serving():
    with pytest.raises(ValueError, match="port"):
        hd.run({}, port=70000, stop=threading.Event())
    with pytest.raises(ValueError, match="max_points"):
        hd.run({}, port=free_port(), max_points=2, stop=threading.Event())


def test_million_rows_tick_is_small(serve):
    """1,000,000 rows: at most max_points points per trace and under 150 KB per tick."""
    source = {"new_row": make_rows(1_000_000, step=0.001)}
    served = serve(source, ctx_key="new_row")
    client = served.wait_up()
    first = client.update()
    ticks = []
    for _ in range(5):  # a new row before each tick, as live data does: no cached figure
        source["new_row"].append([source["new_row"][-1][0] + 0.001, 0.5, 0.5, 0.5])
        ticks.append(client.update())
    for tick in [first, *ticks]:
        assert rows_in_status(tick.status) >= 1_000_000
        assert len(tick.traces) == 3
        for trace in tick.traces:
            assert 0 < len(decode(trace["x"])) <= DEFAULT_MAX_POINTS
            assert len(decode(trace["y"])) == len(decode(trace["x"]))
        assert tick.size < 150 * 1024
    times = sorted(t.elapsed for t in ticks)
    print(
        f"\n1M rows over HTTP: first tick {first.elapsed * 1000:.0f} ms (converts every row), "
        f"then median {times[len(times) // 2] * 1000:.1f} ms, {ticks[-1].size / 1024:.1f} KB"
    )

    # Zoomed into 1,500 rows: every one of them is sent (detail), only those.
    lo, hi = source["new_row"][500_000][0], source["new_row"][501_499][0]
    tick = client.update(xwindow=[local_axis_text(lo - 1e-4), local_axis_text(hi + 1e-4)])
    for trace in tick.traces:
        xs = trace_x_epoch(trace)
        assert len(xs) == 1500
        assert xs.min() >= lo - 1e-3 and xs.max() <= hi + 1e-3
    served.stop_and_join(5.0)


@pytest.mark.parametrize("count", [10_000, 100_000, 1_000_000])
def test_tick_cost_without_http(count):
    """What the benchmark measures: make_figure on a warm cache, and its JSON size."""
    import orjson

    rows = make_rows(count, step=0.001)
    cache = ColumnCache()
    start = time.perf_counter()
    cache.add_rows(rows)
    convert = time.perf_counter() - start
    times = []
    for _ in range(5):
        start = time.perf_counter()
        payload = orjson.dumps(make_figure(cache, [1, 2, 3]))
        times.append(time.perf_counter() - start)
    more = make_rows(250, start=cache.view().last_x + 1)
    start = time.perf_counter()
    cache.add_rows(more)
    incremental = time.perf_counter() - start
    print(
        f"\n{count:>9,} rows: figure+json {sorted(times)[2] * 1000:.1f} ms, "
        f"{len(payload) / 1024:.1f} KB; first conversion {convert * 1000:.0f} ms; "
        f"+250 rows {incremental * 1000:.2f} ms"
    )
    assert len(payload) < 150 * 1024


# ------------------------------------------------------------------------------------ pure parts
def test_cache_converts_only_new_rows_and_restarts_on_a_new_list():
    ctx = Context({"k": make_rows(5)})
    cache = ColumnCache()
    assert cache.sync(ctx, "k") == 5
    assert cache.sync(ctx, "k") == 0
    ctx.extend("k", make_rows(3, start=time.time() + 1))
    assert cache.sync(ctx, "k") == 3
    assert len(cache) == 8
    generation = cache.view().generation
    ctx["k"] = make_rows(2)  # replaced by a shorter list: start over
    assert cache.sync(ctx, "k") == 2
    assert len(cache) == 2 and cache.view().generation == generation + 1
    assert cache.sync({"other": 1}, "k") == 0  # not a list: nothing


def test_cache_grows_past_its_capacity():
    cache = ColumnCache(capacity=16)
    rows = make_rows(1000)
    for i in range(0, 1000, 7):
        cache.add_rows(rows[i : i + 7])
    view = cache.view()
    assert view.n == 1000 and view.x_sorted
    assert np.array_equal(view.x, [r[0] for r in rows])
    assert np.array_equal(view.ys[2], [r[3] for r in rows])


def test_cache_copes_with_ragged_and_non_numeric_rows():
    now = time.time()
    cache = ColumnCache()
    cache.add_rows([[now, 1.0], [now + 1, None, 5], [now + 2, "2.5", "x", 7], "junk", [now + 4]])
    view = cache.view()
    assert view.n == 5 and view.width == 3
    assert np.isnan(view.x[3]) and not view.x_sorted
    assert view.ys[0][0] == 1.0 and np.isnan(view.ys[0][1]) and view.ys[0][2] == 2.5
    assert np.isnan(view.ys[2][0]) and view.ys[2][2] == 7
    assert view.nan_columns == {0, 1, 2}
    figure = make_figure(cache, [1, 2, 3])
    assert [t["name"] for t in figure["data"]] == ["v1", "v2", "v3"]


@pytest.fixture
def india_time(monkeypatch):
    """The process's local time is UTC+5:30 for the test (a POSIX TZ: no tz database needed),
    so that local time and UTC differ whatever the machine's zone."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_time_column_reads_iso_dates(india_time):
    """ISO 8601 text in the time column: local time, unless it names its offset."""
    noon = datetime(2024, 6, 10, 12).timestamp()
    assert noon == datetime(2024, 6, 10, 6, 30, tzinfo=UTC).timestamp()
    noon_utc = datetime(2024, 6, 10, 12, tzinfo=UTC).timestamp()
    cache = ColumnCache()
    cache.add_rows(
        [
            ["2024-06-10 12:00:00", 1],
            ["2024-06-10T12:00:01.5", 2],
            [" 2024-06-10 12:00 ", 3],
            ["2024-06-10", 4],
            ["2024-06-10T12:00:00Z", 5],
            ["2024-06-10T14:00:00+02:00", 6],
            ["10/06/2024 12:00", 7],
        ]
    )
    x = cache.view().x
    assert list(x[:4]) == pytest.approx(
        [noon, noon + 1.5, noon, datetime(2024, 6, 10).timestamp()], abs=1e-3
    )
    assert list(x[4:6]) == pytest.approx([noon_utc, noon_utc], abs=1e-3)
    assert np.isnan(x[6])


def test_unsorted_x_falls_back_to_downsampling_by_position():
    rows = make_rows(20_000)
    rng = np.random.default_rng(1)
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    cache = ColumnCache()
    cache.add_rows(shuffled)
    assert not cache.view().x_sorted
    figure = make_figure(cache, [1], max_points=500)
    assert len(decode(figure["data"][0]["x"])) == 500
    lo, hi = rows[1000][0], rows[1199][0]
    zoomed = make_figure(cache, ["v1"], x_range=(lo, hi), max_points=500)
    xs = trace_x_epoch(zoomed["data"][0])
    assert len(xs) == 200 and xs.min() >= lo - 1e-3 and xs.max() <= hi + 1e-3


def test_make_figure_downsamples_keeping_extremes():
    count = 50_000
    t = time.time() - count + np.arange(count, dtype=float)
    y = np.sin(np.arange(count) / 500.0)
    y[12_345] = 40.0  # a spike that a stride would likely miss
    cache = ColumnCache()
    cache.add_rows(np.column_stack([t, y]).tolist())
    figure = make_figure(cache, [1], max_points=300)
    trace = figure["data"][0]
    ys = decode(trace["y"])
    assert len(ys) == 300 and ys.max() == 40.0
    assert trace["mode"] == "lines+markers" or len(ys) > MARKERS_UP_TO
    assert figure["layout"]["meta"] == {"rows": count, "window_rows": count, "points": 300}
    # f8 when float32 would change the values visibly (a big offset, a tiny span)
    cache2 = ColumnCache()
    cache2.add_rows([[t[i], 1e9 + i * 1e-3] for i in range(50)])
    spec = make_figure(cache2, [1])["data"][0]["y"]
    assert spec["dtype"] == "f8"
    assert np.allclose(decode(spec), [1e9 + i * 1e-3 for i in range(50)], rtol=0, atol=1e-7)


def test_make_figure_edge_cases():
    empty = make_figure(ColumnCache(), [1, 2])
    assert empty["data"] == [] and "waiting for rows" in json.dumps(empty["layout"])
    cache = ColumnCache()
    cache.add_rows(make_rows(50))
    assert [t["name"] for t in make_figure(cache, ["v3", 1, 9, "bad", 1])["data"]] == [
        "v3",
        "v1",
    ]
    nothing = make_figure(cache, [1], x_range=(0, 1))  # 1970: no rows there
    assert len(nothing["data"][0]["x"]["bdata"]) == 0
    assert "no rows in this window" in json.dumps(nothing["layout"])
    assert "no column selected" in json.dumps(make_figure(cache, [])["layout"])


def test_axis_values_round_trip():
    epoch = 1_718_000_000.25
    assert axis_to_epoch(local_axis_text(epoch), TZ_OFFSET) == pytest.approx(epoch, abs=1e-4)
    shown_ms = (epoch + TZ_OFFSET) * 1000
    assert axis_to_epoch(shown_ms, TZ_OFFSET) == pytest.approx(epoch)
    midnight_utc = datetime(2024, 6, 10, tzinfo=UTC).timestamp()
    assert axis_to_epoch("2024-06-10", 0) == midnight_utc
    assert axis_to_epoch("2024-06-10 00:00", 3600) == midnight_utc - 3600
    assert axis_to_epoch("not a date", 0) is None
    assert axis_to_epoch(None, 0) is None


# ------------------------------------------------------------------------------------ CLI
class Cli:
    """``hello_dash.py ARGS`` with its output collected as it comes (the address it prints
    carries the token every request needs)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [PY, str(SCRIPT), *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._collect, args=(stream, into), daemon=True)
            for stream, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def address(self) -> str:
        """The address it printed: ``http://127.0.0.1:PORT/?token=...``."""

        def printed() -> str | None:
            assert self.proc.poll() is None, "".join(self.err)
            found = re.search(r"Dash is running on (\S+)", "".join(self.out))
            return found.group(1) if found else None

        return wait_for(printed, timeout=60, message="the CLI's address")

    def wait_up(self) -> DashClient:
        base, _, query = self.address().partition("/?")

        def url(path: str) -> str:
            return f"{base}{path}?{query}"

        wait_for(lambda: http(url("/_dash-layout"), timeout=5)[0] == 200, 60, "the dashboard")
        return DashClient(url)

    def interrupt(self) -> tuple[str, str]:
        """Ctrl-C; its output and errors."""
        try:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for reader in self._readers:
                reader.join(5)
        return "".join(self.out), "".join(self.err)


def test_cli_demo_and_ctrl_c():
    port = free_port()
    cli = Cli("--port", str(port), "--demo-rows", "300", "--interval_ms", "100")
    try:
        client = cli.wait_up()
        first = rows_in_status(client.update().status)
        assert first >= 300
        wait_for(
            lambda: rows_in_status(client.update().status) > first, message="demo rows to grow"
        )
    finally:
        out, err = cli.interrupt()
    assert cli.proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert f"http://127.0.0.1:{port}/?token=" in out
    assert port_is_free(port)


def test_cli_plots_a_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def save(rows: list) -> None:  # as the runner does: a temporary file, then a rename
        tmp = run_dir / "ctx.json.tmp"
        tmp.write_text(json.dumps({"new_row": rows, "other": 1}))
        os.replace(tmp, run_dir / "ctx.json")

    rows = make_rows(50)
    save(rows)
    port = free_port()
    cli = Cli("--port", str(port), "--ctx_key", "new_row", "--run-dir", str(run_dir))
    try:
        client = cli.wait_up()
        assert rows_in_status(client.update().status) == 50
        save(rows + make_rows(30, start=rows[-1][0] + 1))
        wait_for(lambda: rows_in_status(client.update().status) == 80, message="the new ctx.json")
    finally:
        out, err = cli.interrupt()
    assert cli.proc.returncode == 0, err


def test_cli_taken_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [PY, str(SCRIPT), "--port", str(port)], capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"hello_dash: port {port} on 127.0.0.1 is already in use by pid {os.getpid()} ("
    ), result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------ in a run
def test_in_a_run_as_a_background_step(tmp_path):
    """ready: {port}, a step that reads the page (at the address, token and all, the dashboard
    put in the ctx), then the run stops the dashboard: port free."""
    port = free_port()
    probe = write_module(
        tmp_path,
        """
        import urllib.request

        def run(ctx):
            address = ctx["dash_url"].replace("/?", "/_dash-layout?")
            with urllib.request.urlopen(address, timeout=30) as r:
                body = r.read()
            return r.status if b'"graph"' in body else body[:300].decode()
        """,
    )
    done = run_recipe(
        tmp_path,
        f"""
        ctx:
          new_row: [[1718000000.0, 1.0, 2.0], [1718000001.0, 1.5, 2.5]]
        steps:
          - name: dash
            type: python
            module: scriptlets.python.apps.hello_dash
            background: true
            ready: {{ctx: dash_url, timeout: 60}}
            params: {{port: {port}, ctx_key: new_row, url_key: dash_url}}
          - name: probe
            type: python
            module: {probe}
            output: probed
        """,
        timeout=90,
    )
    assert done.code == 0, (done.steps, done.log("dash"))
    assert done.ctx["probed"] == 200
    assert done.steps["dash"]["status"] == "stopped"
    assert done.ctx["dash_url"].startswith(f"http://127.0.0.1:{port}/?token=")  # on by default
    assert f"Dash is running on {done.ctx['dash_url']}".encode() in done.log("dash")
    assert port_is_free(port)


@pytest.mark.parametrize("debug", ["", "1"], ids=["quiet", "ORCH_DEBUG=1"])
def test_requests_are_logged_only_when_debugging(tmp_path, monkeypatch, debug):
    """The browser polls twice a second: a log line each only under orch-tui --debug."""
    monkeypatch.setenv("ORCH_DEBUG", debug)  # what orch-tui --debug sets for its steps
    port = free_port()
    poller = write_module(
        tmp_path,
        f"""
        import urllib.request

        def run(ctx):
            for _ in range(5):
                address = "http://127.0.0.1:{port}/_dash-layout?token=a-test-token"
                with urllib.request.urlopen(address, timeout=30):
                    pass
        """,
    )
    done = run_recipe(
        tmp_path,
        f"""
        steps:
          - name: dash
            type: python
            module: scriptlets.python.apps.hello_dash
            background: true
            ready: {{port: {port}, timeout: 60}}
            params: {{port: {port}, token: a-test-token}}
          - {{name: poll, type: python, module: {poller}}}
        """,
        timeout=90,
    )
    assert done.code == 0, (done.steps, done.log("dash"))
    requests = [line for line in done.log("dash").splitlines() if b"/_dash-layout" in line]
    assert len(requests) == (5 if debug else 0), done.log("dash")


def test_in_a_run_a_taken_port_fails_the_step(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_recipe(
            tmp_path,
            f"""
            steps:
              - name: dash
                type: python
                module: scriptlets.python.apps.hello_dash
                params: {{port: {port}}}
            """,
            timeout=60,
        )
    assert done.code == 1
    assert done.steps["dash"]["status"] == "failed"
    line = f"port {port} on 127.0.0.1 is already in use by pid {os.getpid()} ("
    assert done.steps["dash"]["reason"].startswith(line), done.steps["dash"]
    log = done.log("dash").decode()
    assert log.startswith(line) and len(log.splitlines()) == 1, log  # no traceback


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q", "-s"]))
