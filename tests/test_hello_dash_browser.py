"""hello_dash in a real browser (Playwright driving Debian's Chromium, headless).

The page loads, the plot holds points, it moves on as rows are appended to the ctx, a zoom asks
the server for that window, the column checkboxes change the traces, a slow server never gets two
ticks at once, and the console stays free of errors.

Needs the ``playwright`` Python package and ``/usr/bin/chromium`` (``apt-get install chromium``);
Playwright's own browser downloads are not used.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import pytest

from core.context import Context
from tests.conftest import wait_for
from tests.test_hello_dash import make_rows, port_is_free, serve  # noqa: F401  (serve: a fixture)
from tui.screenshots import CHROMIUM_ARGS

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.skipif(
        sync_playwright is None,
        reason="the playwright package is not installed (pip install playwright)",
    ),
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)",
    ),
]

#: The figure as the page holds it: trace names, point counts, x range (epoch ms as shown).
#: Typed-array traces keep the decoded array in ``_inputArray``.
FIGURE_JS = """
() => {
    const gd = document.querySelector('.js-plotly-plot');
    if (!gd || !gd.data) { return null; }
    const arr = v => (v && v._inputArray) ? v._inputArray : (v || []);
    return gd.data.map(t => {
        const x = arr(t.x);
        let lo = Infinity, hi = -Infinity;
        for (const v of x) { if (v < lo) lo = v; if (v > hi) hi = v; }
        return {name: t.name, type: t.type, n: x.length, y: arr(t.y).length, xmin: lo, xmax: hi};
    });
}
"""


@pytest.fixture
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


#: Counts the update requests dash-renderer sends (it uses fetch), and how many at once.
COUNT_UPDATES_JS = """
window.__updates = {sent: 0, inFlight: 0, peak: 0};
const realFetch = window.fetch;
window.fetch = function (url, options) {
    if (!String(url).includes('_dash-update-component')) { return realFetch.apply(this, arguments); }
    const u = window.__updates;
    u.sent += 1; u.inFlight += 1; u.peak = Math.max(u.peak, u.inFlight);
    return realFetch.apply(this, arguments).finally(() => { u.inFlight -= 1; });
};
"""


class Page:
    """A page on the dashboard, recording console errors and the update requests."""

    def __init__(self, browser: Any, url: str) -> None:
        self.page = browser.new_page()
        self.errors: list[str] = []
        self.page.on(
            "console",
            lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.add_init_script(COUNT_UPDATES_JS)
        self.page.goto(url)

    def updates(self) -> dict[str, int]:
        return self.page.evaluate("() => window.__updates")

    def figure(self) -> list[dict] | None:
        return self.page.evaluate(FIGURE_JS)

    def status(self) -> str:
        return self.page.inner_text("#status")

    def until(self, predicate, message: str, timeout: float = 20.0) -> Any:
        """Poll a Python predicate over the page state, with a deadline."""
        return wait_for(predicate, timeout=timeout, message=message, interval=0.05)


def test_dashboard_in_a_browser(serve, browser):  # noqa: F811
    ctx = Context()
    ctx["new_row"] = make_rows(1500, step=0.01)
    served = serve(ctx, ctx_key="new_row", interval_ms=200)
    served.wait_up()
    page = Page(browser, served.url("/"))

    # The page loads and the plot shows points: three scattergl traces, all 1500 rows each.
    fig = page.until(
        lambda: (f := page.figure()) and len(f) == 3 and all(t["n"] for t in f) and f,
        "three traces with points",
    )
    assert [t["name"] for t in fig] == ["v1", "v2", "v3"]
    assert {t["type"] for t in fig} == {"scattergl"}
    assert all(t["n"] == t["y"] == 1500 for t in fig)
    assert page.page.locator(".js-plotly-plot canvas").count() > 0
    assert page.page.locator(".legendtext").all_text_contents() == ["v1", "v2", "v3"]
    assert "1,500 rows" in page.status()
    assert page.page.title() == "hello_dash: new_row"

    # It moves on as rows are appended: the x max grows.
    xmax = fig[0]["xmax"]
    ctx.extend("new_row", make_rows(50, start=ctx["new_row"][-1][0] + 5))
    page.until(
        lambda: (f := page.figure()) and f[0]["xmax"] >= xmax + 5000, "the x max to grow by 5 s"
    )
    page.until(lambda: "1,550 rows" in page.status(), "the status to count the new rows")

    # Zoom as the user does (a relayout of the x range): the server sends that window only.
    rows = ctx["new_row"]
    page.page.evaluate(
        """([a, b]) => {
            const gd = document.querySelector('.js-plotly-plot');
            const r = gd._fullLayout.xaxis;
            return Plotly.relayout(gd, {'xaxis.range': [r.l2r(a), r.l2r(b)]});
        }""",
        [page.figure()[0]["xmin"] + 5_000, page.figure()[0]["xmin"] + 6_990],
    )
    zoomed = page.until(
        lambda: "zoomed to" in page.status() and (f := page.figure()) and f[0]["n"] < 1000 and f,
        "the zoomed window's points",
    )
    assert all(190 <= t["n"] <= 200 for t in zoomed), zoomed
    assert zoomed[0]["xmax"] - zoomed[0]["xmin"] <= 2000
    # Double-click equivalent: autorange brings the whole series back.
    page.page.evaluate(
        "() => Plotly.relayout(document.querySelector('.js-plotly-plot'), {'xaxis.autorange': true})"
    )
    page.until(
        lambda: "zoomed" not in page.status() and page.figure()[0]["n"] >= len(rows),
        "the whole series again",
    )

    # The column checkboxes: unticking v2 leaves v1 and v3.
    page.page.locator("#columns label", has_text="v2").click()
    page.until(lambda: [t["name"] for t in page.figure()] == ["v1", "v3"], "v2 to go away")

    assert page.errors == []
    page.page.close()
    served.stop_and_join(5.0)


class SlowSource(dict):
    """A ctx whose reads take a while: a dashboard server under load."""

    def rows_since(self, key: str, start: int) -> tuple[int, list]:
        time.sleep(0.4)  # simulated slowness, not synchronisation
        rows = self[key]
        return len(rows), rows[start:]


def test_a_slow_tick_never_overlaps_the_next(serve, browser):  # noqa: F811
    """The Interval is off while a tick is in flight: one request at a time, and still going."""
    source = SlowSource(new_row=make_rows(20))
    served = serve(source, ctx_key="new_row", interval_ms=50)
    served.wait_up()
    page = Page(browser, served.url("/"))
    page.until(lambda: page.updates()["sent"] >= 6, "six ticks", timeout=60)
    assert page.updates()["peak"] == 1
    assert page.errors == []
    page.page.close()
    served.stop_and_join(5.0)


def test_stopping_with_a_page_open(serve, browser):  # noqa: F811
    """A browser polling over a keep-alive connection does not keep the server alive."""
    ctx = Context({"new_row": make_rows(10)})
    served = serve(ctx, ctx_key="new_row", interval_ms=100)
    served.wait_up()
    page = Page(browser, served.url("/"))
    page.until(lambda: page.updates()["sent"] >= 3, "a few ticks")
    served.stop_and_join(5.0)
    assert port_is_free(served.port)
