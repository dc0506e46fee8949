import time, asyncio
from tests.tui_helpers import orch, until, until_status, selected, main_pane

async def test_flood(orch):
    app, runner = orch("""
    steps:
      - {name: flood, type: shell, cmd: seq, args: ["100000000"]}
      - {name: quiet, type: shell, run: echo quiet, depends_on: []}
    """)
    durations = []
    orig = app._drain
    def timed():
        t = time.perf_counter(); orig(); durations.append(time.perf_counter() - t)
    app._drain = timed
    async with app.run_test(size=(120, 36)) as pilot:
        # need to re-register timer? interval uses bound method captured at mount
        await until_status(pilot, runner, "flood", "running")
        t0 = time.perf_counter()
        lags = []
        while time.perf_counter() - t0 < 3:
            t = time.perf_counter(); await asyncio.sleep(0.01); lags.append(time.perf_counter() - t)
        print("loop lag max %.3f median %.3f n=%d" % (max(lags), sorted(lags)[len(lags)//2], len(lags)))
        print("drain n=%d max %.3f" % (len(durations), max(durations) if durations else -1))
        for key in ("down", "up", "down", "up"):
            t = time.perf_counter()
            app.screen._forward_event  # noop
            await pilot.press(key)
            t1 = time.perf_counter()
            await until(pilot, lambda: True)
            print(key, selected(app), "press took %.3f" % (t1 - t))
        await pilot.press("k")
