"""HeadlessReporter: plain lines off a terminal, a live view on one, and the final summary.

Each test writes a real run directory whose logs grow while events arrive, the way the runner
writes them, and reads what the reporter printed to an ``io.StringIO``.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import msgspec
import pytest
from rich.console import Console

from core.events import (
    ResourcesSampled,
    RunFinished,
    RunMessage,
    RunStarted,
    StepFinished,
    StepOutput,
    StepReady,
    StepStarted,
    StepStatus,
)
from core.rundir import RunDir
from core.state import RunState, Status, StepState
from core.text import clean
from tui.format import STATUS_GLYPHS, format_bytes, format_duration
from tui.headless import HeadlessReporter
from tui.headless.echo import CHUNK

T0 = 1_700_000_000.0
ANSI = re.compile(r"\x1b[\[\]()#;?]*(?:[0-9]{1,4}(?:;[0-9]{0,4})*)?[0-9A-ORZcf-nqry=><]")
STEPS = ["build", "lint", "test", "deploy", "dash"]
DEPS = {"build": [], "lint": [], "test": ["build"], "deploy": ["test"], "dash": []}
_FINISHED_FIELDS = ("status", "exit_code", "signal", "reason", "duration")


class Run:
    """A run directory plus a reporter fed with events, the logs growing as the runner writes.

    The run's control, as far as the reporter uses one (``run_dir``, ``subscribe``,
    ``snapshot``): it keeps the run's state as the runner would, so each step event carries the
    step's new state, numbers the events as the bus does, and ``close`` gives the reporter the
    final state a test made."""

    def __init__(self, run_dir: Path, **kwargs) -> None:
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.run_dir = RunDir(run_dir)
        self.out = io.StringIO()
        self.ts = T0
        self.seq = 0
        self.sizes: dict[str, int] = {}
        self.states: dict[str, StepState] = {}
        self.final = final_state({}, run_dir=str(run_dir))
        self.subscribers: list = []
        kwargs.setdefault("tty", False)
        stream = kwargs.pop("stream", self.out)
        self.reporter = HeadlessReporter(self, stream=stream, **kwargs)

    def subscribe(self, callback) -> None:
        self.subscribers.append(callback)

    def snapshot(self) -> RunState:
        return self.final

    def close(self, state: RunState) -> None:
        """The run is over: the reporter prints its summary of ``state``."""
        self.final = state
        self.reporter.close()

    def tick(self, dt: float = 0.1) -> float:
        self.ts += dt
        return self.ts

    def start(self, steps=STEPS, name: str = "demo") -> None:
        self.states = {
            name: StepState(
                name=name,
                type="python" if name == "dash" else "shell",
                index=index,
                background=name == "dash",
                depends_on=DEPS.get(name, []),
                retries=2 if name == "lint" else 0,
                log=f"logs/{name}.log",
            )
            for index, name in enumerate(steps)
        }
        state = RunState(
            run_id="20261125-120000-abcd",
            recipe="/work/recipes/demo.yaml",
            name=name,
            run_dir=str(self.run_dir.path),
            pid=1,
            status="running",
            started=self.ts,
            steps=dict(self.states),
        )
        self.handle(
            RunStarted(
                run_id=state.run_id,
                recipe=state.recipe,
                run_dir=state.run_dir,
                state=state,
                ts=self.ts,
            )
        )

    def step(self, kind, name: str, *, blocked_by: list[str] | None = None, **fields) -> None:
        """A step event as the runner sends it: with the step's new state."""
        ts = self.tick()
        state = self.states.get(name) or StepState(name=name, type="shell", index=99)
        if kind is StepStarted:
            changes = dict(status="running", attempts=fields["attempt"], started=ts, ended=None)
            changes.update(duration=None, exit_code=None, signal=None, reason=None)
        elif kind is StepReady:
            changes = dict(status="ready")
        elif kind is StepFinished:
            changes = {k: v for k, v in fields.items() if k in _FINISHED_FIELDS}
            changes.update(attempts=fields["attempt"], ended=ts)
        else:
            changes = dict(status=fields["status"], blocked_by=blocked_by or [])
        state = self.states[name] = msgspec.structs.replace(state, **changes)
        self.handle(kind(step=name, state=state, ts=ts, **fields))

    def handle(self, event) -> None:
        self.seq += 1
        event.seq = self.seq
        for callback in self.subscribers:
            callback(event)

    def write(self, step: str, data: bytes, *, event: bool = True) -> None:
        """Append to the step's log and, like the runner's ticker, announce it."""
        path = self.run_dir.log(step)
        with open(path, "ab") as fh:
            fh.write(data)
        self.sizes[step] = path.stat().st_size
        if event:
            self.handle(StepOutput(step=step, size=self.sizes[step], lines=[], lines_total=0))

    def output(self) -> str:
        return self.out.getvalue()

    def echoed(self, step: str) -> list[str]:
        prefix = f"{step} | "
        return [
            line[len(prefix) :] for line in self.output().split("\n") if line.startswith(prefix)
        ]


def final_state(steps: dict[str, dict], **run: object) -> RunState:
    """A run's final state from its steps' state.json entries (what a test does not say:
    the defaults)."""
    for index, (name, info) in enumerate(steps.items()):
        info.setdefault("name", name)
        info.setdefault("index", index)
        info.setdefault("type", "shell")
    document = {
        "run_id": "r",
        "recipe": "/work/recipes/demo.yaml",
        "name": "demo",
        "run_dir": "/work/.orch/runs/r",
        "pid": 1,
        **run,
        "steps": steps,
    }
    return RunState.from_dict(document)


def state_for(run: Run, statuses: dict[str, dict], status: str = "failed") -> RunState:
    steps = {}
    for name in STEPS:
        info = {
            "status": "succeeded",
            "type": "shell",
            "background": False,
            "attempts": 1,
            "exit_code": 0,
            "signal": None,
            "reason": None,
            "started": T0 + 1,
            "ended": T0 + 2,
            "duration": 1.0,
            "allowed": False,
            "blocked_by": [],
            "peak_cpu": 12.0,
            "peak_rss": 50 * 1024 * 1024,
            "log": f"logs/{name}.log",
        }
        info.update(statuses.get(name, {}))
        steps[name] = info
    return final_state(
        steps,
        run_id="20261125-120000-abcd",
        run_dir=str(run.run_dir.path),
        status=status,
        exit_code=1 if status == "failed" else 0,
        started=T0,
        ended=T0 + 4.2,
    )


def expected_lines(data: bytes) -> list[str]:
    """What the plain echo of a log should be: one display line per log line."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    result = []
    for raw in lines:
        raw = re.sub(rb"\x1b\[[0-9;]*[A-Za-z]", b"", raw).rstrip(b"\r")
        raw = raw[raw.rfind(b"\r") + 1 :]
        result.append(raw.decode("utf-8", "replace"))
    return result


def messy_log(n: int = 3000) -> bytes:
    """Thousands of lines with everything a real log has: colours, bad bytes, a progress bar."""
    parts = []
    for i in range(n):
        if i % 500 == 7:
            parts.append(b"\x1b[32mok\x1b[0m test_%d \x1b[1;31mFAILED\x1b[0m\n" % i)
        elif i % 500 == 100:
            parts.append(b"latin-1 caf\xe9 and broken \xff\xfe bytes %d\n" % i)
        elif i % 500 == 200:
            parts.append(b"".join(b"\rprogress %3d%%" % p for p in range(0, 101, 10)) + b"\r\n")
        elif i % 500 == 300:
            parts.append(b"windows line %d\r\n" % i)
        elif i % 500 == 400:
            parts.append("unicode ✓ naïve — %d\n".encode() % i)
        else:
            parts.append(b"line %d: some ordinary output\n" % i)
    parts.append(b"final line without newline")
    return b"".join(parts)


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run(tmp_path / "run")


# -- the echo of output --------------------------------------------------------------------------
def test_plain_echo_every_line_in_order(run: Run) -> None:
    data = messy_log()
    run.start()
    run.step(StepStarted, "build", attempt=1, pid=123)
    # Written in odd-sized pieces: lines, escape sequences and UTF-8 characters get cut in two.
    pieces = [data[i : i + 997] for i in range(0, len(data), 997)]
    for piece in pieces:
        run.write("build", piece)
    run.step(StepFinished, "build", status="succeeded", attempt=1, duration=1.2)

    assert run.echoed("build") == expected_lines(data)
    assert run.echoed("build")[-1] == "final line without newline"
    assert "progress 100%" in run.echoed("build")
    assert "progress  50%" not in run.output()
    out = run.output()
    assert "\x1b" not in out and "\r" not in out
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out)
    # the finish line comes after the last output line
    assert out.index("final line without newline") < out.index("build succeeded in 1.2s")


def test_partial_lines_wait_until_complete(run: Run) -> None:
    run.start()
    run.step(StepStarted, "build", attempt=1)
    run.write("build", b"hel")
    assert run.echoed("build") == []
    run.write("build", b"lo\ncaf\xc3")  # a UTF-8 character cut in two
    assert run.echoed("build") == ["hello"]
    run.write("build", b"\xa9\n")
    assert run.echoed("build") == ["hello", "café"]
    run.write("build", b"\n\n")  # empty lines are lines too
    assert run.echoed("build") == ["hello", "café", "", ""]


def test_interleaved_steps_keep_their_order(run: Run) -> None:
    run.start()
    for name in ("build", "lint"):
        run.step(StepStarted, name, attempt=1)
    for i in range(300):
        run.write("build", b"b%d\n" % i)
        run.write("lint", b"l%d\n" % i, event=i % 7 == 0)  # lint's events are coalesced
    run.step(StepFinished, "lint", status="succeeded", attempt=1, duration=1)
    assert run.echoed("build") == [f"b{i}" for i in range(300)]
    assert run.echoed("lint") == [f"l{i}" for i in range(300)]


def test_output_after_finish_and_at_close_is_not_lost(run: Run) -> None:
    run.start()
    run.step(StepStarted, "build", attempt=1)
    run.write("build", b"one\ntwo", event=False)  # no StepOutput before StepFinished
    run.step(StepFinished, "build", status="succeeded", attempt=1, duration=1)
    run.step(StepStarted, "dash", attempt=1)
    run.write("dash", b"serving\nstill partial", event=False)
    run.close(state_for(run, {}, status="succeeded"))
    assert run.echoed("build") == ["one", "two"]
    assert run.echoed("dash") == ["serving", "still partial"]


def test_retry_line_comes_before_the_next_attempts_output(run: Run) -> None:
    # The runner may start the next attempt before the reporter reads the log: what that
    # attempt writes must wait for the events that announce it.
    run.start()
    run.step(StepStarted, "lint", attempt=1)
    run.write("lint", b"failing\n")
    ended_at = run.sizes["lint"]
    run.write("lint", b"--- attempt 2 ---\nfailing again\n", event=False)
    run.step(
        StepFinished,
        "lint",
        status="failed",
        attempt=1,
        exit_code=1,
        duration=0.1,
        will_retry=True,
        log_size=ended_at,
    )
    run.step(StepStarted, "lint", attempt=2)
    run.handle(StepOutput(step="lint", size=run.sizes["lint"], lines=[], lines_total=0))
    lines = run.output().splitlines()
    retry = next(i for i, line in enumerate(lines) if "retrying (attempt 2" in line)
    assert [i for i, line in enumerate(lines) if line.startswith("lint | ")] == [
        retry - 1,
        retry + 2,
        retry + 3,
    ], lines
    assert run.echoed("lint") == ["failing", "--- attempt 2 ---", "failing again"]


def test_missing_or_replaced_log_does_not_raise(run: Run) -> None:
    run.start()
    run.handle(StepOutput(step="build", size=10, lines=["x"], lines_total=1))  # no file yet
    run.handle(StepOutput(step="unknown", size=10, lines=["x"], lines_total=1))  # no such step
    run.write("build", b"first attempt line\n")
    run.run_dir.log("build").write_bytes(b"new\n")  # replaced by a shorter file
    run.write("build", b"")
    assert run.echoed("build") == ["first attempt line", "new"]


def test_echo_off(tmp_path: Path) -> None:
    run = Run(tmp_path / "run", echo_output=False)
    run.start()
    run.step(StepStarted, "build", attempt=1)
    run.write("build", b"secret output\n" * 10 + b"the error\n")
    run.step(StepFinished, "build", status="failed", attempt=1, exit_code=2)
    assert run.echoed("build") == []
    run.close(state_for(run, {"build": {"status": "failed", "exit_code": 2}}))
    assert "  build | the error" in run.output()  # the summary still shows the log's tail


def test_many_lines_all_counted(run: Run) -> None:
    """A speed sanity check without timing: 200,000 lines go through, each exactly once."""
    n = 200_000
    run.start()
    run.step(StepStarted, "build", attempt=1)
    block = 20_000
    for start in range(0, n, block):
        run.write("build", b"".join(b"row %d\n" % i for i in range(start, start + block)))
    run.step(StepFinished, "build", status="succeeded", attempt=1, duration=1)
    lines = run.echoed("build")
    assert len(lines) == n
    assert lines[0] == "row 0" and lines[-1] == f"row {n - 1}"
    assert lines[12345] == "row 12345"


def test_output_many_reads_long_loses_and_splits_no_line(run: Run) -> None:
    """Output announced at once that takes several reads: the lines a read's end cuts come
    whole (a UTF-8 character and a progress line cut too), and a line longer than a read
    comes in pieces of a read, every byte of it."""
    body = b"".join(b"line %d %s\n" % (i, b"x" * (i % 97)) for i in range(10_000))
    pad = b"p" * (CHUNK - len(body) - len(b"50%\rcaf\xc3") - 1) + b"\n"
    data = body + pad + b"50%\rcaf\xc3\xa9 100%\n"  # the first read ends inside the "é"
    huge = b"H" * (2 * CHUNK + 123)
    run.start()
    run.step(StepStarted, "build", attempt=1)
    run.write("build", data + huge + b"\nafter\n" + body)
    run.step(StepFinished, "build", status="succeeded", attempt=1, duration=1)
    lines = run.echoed("build")
    shown = expected_lines(data)
    assert lines[: len(shown)] == shown and shown[-1] == "café 100%"
    pieces = lines[len(shown) : lines.index("after")]
    assert "".join(pieces) == huge.decode() and max(map(len, pieces)) == CHUNK
    assert lines[lines.index("after") + 1 :] == expected_lines(body)


# -- event lines ------------------------------------------------------------------------------------
def test_plain_event_lines(run: Run) -> None:
    run.start()
    run.step(StepStatus, "deploy", status="skipped", reason="--skip")
    run.step(StepStarted, "build", attempt=1)
    run.step(StepStarted, "dash", attempt=1)
    run.step(StepReady, "dash")
    run.step(StepStarted, "lint", attempt=1)
    run.step(
        StepFinished, "lint", status="failed", attempt=1, exit_code=1, duration=0.3, will_retry=True
    )
    run.step(StepStatus, "lint", status="pending", reason="retrying in 1s")
    run.step(StepStarted, "lint", attempt=2)
    run.step(StepFinished, "lint", status="succeeded", attempt=2, duration=2)
    run.step(StepFinished, "build", status="timed_out", attempt=1, signal=15, duration=5.01)
    run.step(StepStatus, "test", status="blocked", reason="blocked by build")
    run.handle(RunMessage(level="warning", text="cannot skip it", step="dash", ts=run.tick()))
    run.handle(ResourcesSampled(cpu_percent=10, mem_percent=20, mem_used=1, steps={}))
    run.step(StepFinished, "dash", status="stopped", attempt=1, duration=9)
    run.handle(RunFinished(status="failed", exit_code=1, counts={}, ts=run.tick()))
    lines = [line for line in run.output().splitlines() if " | " not in line]
    clock = r"\d\d:\d\d:\d\d "
    expected = [
        r"» run 20261125-120000-abcd of /work/recipes/demo.yaml: 5 steps, logs in .*logs",
        r"↷ deploy skipped \(--skip\)",
        r"▶ build started",
        r"▶ dash started",
        r"● dash ready",
        r"▶ lint started",
        r"↻ lint failed, retrying \(attempt 2 of 3\) — exit 1, after 0.3s",
        r"▶ lint started \(attempt 2 of 3\)",
        r"✓ lint succeeded in 2.0s \(attempt 2 of 3\)",
        r"⏱ build timed out after 5.0s",
        r"⊘ test blocked by build",
        r"⚠ warning: dash: cannot skip it",
        r"■ dash stopped after 9.0s",
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(clock + pattern, line), (line, pattern)


def test_failure_line_and_blocked_without_reason(run: Run) -> None:
    run.start()
    run.step(StepStarted, "build", attempt=1)
    run.step(StepFinished, "build", status="failed", attempt=1, exit_code=1, duration=0.3)
    run.step(StepStatus, "test", status="blocked", blocked_by=["build"])
    run.step(StepStatus, "deploy", status="blocked", blocked_by=["build"])
    out = run.output()
    assert "✗ build failed (exit 1) in 0.3s" in out
    assert "⊘ test blocked by build" in out
    assert "⊘ deploy blocked by build" in out  # the root failure the runner names


def test_a_blocked_step_is_said_once_however_its_roots_grow(run: Run) -> None:
    """Ctrl-C in a 2,000-step run: each step cut short is one more root of what it blocks, and
    a join of them was said again each time, with every name (five lines of 100 names and more
    for one step). It is said once, its first roots, at most 20 named."""
    run.start()
    roots = [f"fan{i:04d}" for i in range(30)]
    run.step(StepStatus, "join", status="blocked", blocked_by=roots[:1])
    for grown in range(2, 31):
        run.step(StepStatus, "join", status="blocked", blocked_by=roots[:grown])
    run.step(StepStatus, "wide", status="blocked", blocked_by=roots)
    lines = [line for line in run.output().splitlines() if "blocked by" in line]
    assert [line.split(" ", 1)[1] for line in lines] == [
        "⊘ join blocked by fan0000",
        "⊘ wide blocked by " + ", ".join(roots[:20]) + " and 10 more",
    ]


# -- summary ----------------------------------------------------------------------------------------
def test_summary_root_failure_before_blocked(run: Run) -> None:
    run.start()
    run.step(StepStarted, "build", attempt=1)
    run.write("build", b"".join(b"compiling %d\n" % i for i in range(50)) + b"error: boom\n")
    run.step(StepFinished, "build", status="failed", attempt=1, exit_code=1, duration=0.3)
    run.step(StepStatus, "test", status="blocked", reason="blocked by build")
    run.step(StepStatus, "deploy", status="blocked", reason="blocked by build")
    state = state_for(
        run,
        {
            "build": {"status": "failed", "exit_code": 1, "duration": 0.3},
            "test": {
                "status": "blocked",
                "blocked_by": ["build"],
                "attempts": 0,
                "exit_code": None,
            },
            "deploy": {"status": "blocked", "blocked_by": ["build"], "attempts": 0},
            "lint": {"status": "failed", "exit_code": 3, "allowed": True},
            "dash": {"status": "stopped", "background": True, "exit_code": None, "signal": 15},
        },
    )
    run.close(state)
    out = run.output()
    summary = out[out.index("demo — run 20261125-120000-abcd") :]
    assert "\x1b" not in out
    root = summary.index("root failure: build (exit 1) — see ")
    assert "logs/build.log" in summary[root : summary.index("\n", root)]
    blocked = summary.index("blocked by build: test, deploy")
    assert root < blocked
    tail = summary[root:blocked]
    assert "  build | error: boom" in tail
    assert "  build | compiling 41" in tail and "compiling 40\n" not in tail  # the last 10 lines
    assert "allowed failure: lint (exit 3) — it printed nothing" in summary
    assert summary.rstrip().endswith(
        "run failed: 1 failed, 1 failed (allowed), 2 blocked, 1 stopped in 4.2s"
    )
    table = summary[: summary.index("root failure")]
    for name in STEPS:
        assert re.search(rf"^{name}\s", table, re.M), name
    assert re.search(r"^build\s+✗ failed\s+0.3s\s+1\s+1\s+12%\s+50.0 MiB", table, re.M)
    assert re.search(r"^dash\s+■ stopped\s+1.0s\s+1\s+SIGTERM", table, re.M)
    # an allowed failure's mark is not a failure's ✗ (told apart without colour too)
    assert re.search(r"^lint\s+⚠ failed \(allowed\)\s", table, re.M)
    assert not any(line != line.rstrip() for line in summary.splitlines())


def test_summary_of_a_failure_that_printed_nothing_points_to_no_log(run: Run) -> None:
    """A step's log is made by its first output: a silent failure has no file to send the
    reader to, and the summary says so instead of naming a path that does not exist."""
    run.start()
    run.step(StepStarted, "build", attempt=1)
    run.step(StepFinished, "build", status="failed", attempt=1, exit_code=1)
    run.close(state_for(run, {"build": {"status": "failed", "exit_code": 1}}))
    assert not run.run_dir.log("build").exists()
    assert "root failure: build (exit 1) — it printed nothing\n" in run.output()
    assert "logs/build.log" not in run.output()


def test_summary_success_and_interrupted(tmp_path: Path) -> None:
    ok = Run(tmp_path / "ok")
    ok.close(state_for(ok, {}, status="succeeded"))  # no events at all: still a summary
    assert ok.output().rstrip().endswith("run succeeded: 5 succeeded in 4.2s")
    assert "root failure" not in ok.output()

    stopped = Run(tmp_path / "int")
    state = state_for(
        stopped,
        {"deploy": {"status": "cancelled", "exit_code": None}, "dash": {"status": "stopped"}},
        status="interrupted",
    )
    stopped.close(state)
    assert (
        stopped.output()
        .rstrip()
        .endswith("run interrupted: 1 cancelled, 1 stopped, 3 succeeded in 4.2s")
    )


def test_ascii_stream_gets_ascii_fallbacks(tmp_path: Path) -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii", errors="strict", newline="\n")
    run = Run(tmp_path / "run", stream=stream)
    run.start()
    run.step(StepStarted, "build", attempt=1)
    run.write("build", "naïve ✓ output\n".encode())
    run.step(StepFinished, "build", status="failed", attempt=1, exit_code=1)
    run.step(StepStatus, "test", status="blocked", reason="blocked by build")
    run.close(state_for(run, {"build": {"status": "failed", "exit_code": 1}}))
    stream.flush()
    text = raw.getvalue().decode("ascii")
    assert "> build started" in text
    assert "x build failed (exit 1)" in text
    assert "- test blocked by build" in text
    assert "build | na?ve ? output" in text
    assert "root failure: build (exit 1) - see" in text


def test_color_off_a_terminal_only_when_asked(tmp_path: Path) -> None:
    plain = Run(tmp_path / "a")
    plain.start()
    plain.step(StepStarted, "build", attempt=1)
    assert "\x1b" not in plain.output()
    coloured = Run(tmp_path / "b", color=True)
    coloured.start()
    coloured.step(StepStarted, "build", attempt=1)
    coloured.write("build", b"\x1b[31mred\x1b[0m\n")
    out = coloured.output()
    assert "\x1b[" in out
    assert ANSI.sub("", out).splitlines()[-1] == "build | red"


# -- on a terminal ------------------------------------------------------------------------------------
def test_tty_mode_renders(tmp_path: Path) -> None:
    run = Run(tmp_path / "run", tty=True, width=250, refresh_per_second=50)
    assert run.reporter.tty
    run.start()
    run.step(StepStarted, "build", attempt=1, pid=1)
    run.step(StepStarted, "dash", attempt=1)
    run.handle(
        ResourcesSampled(
            cpu_percent=10,
            mem_percent=20,
            mem_used=1,
            steps={"build": {"cpu": 99.0, "rss": 10 * 1024 * 1024}},
        )
    )
    run.write("build", messy_log(50))
    run.step(StepReady, "dash")
    # far more than a terminal can show: capped, with a pointer to the log
    run.write("build", b"".join(b"flood %d\n" % i for i in range(20_000)))
    run.step(StepFinished, "build", status="failed", attempt=1, exit_code=1)
    run.step(StepStatus, "test", status="blocked", reason="blocked by build")
    run.handle(RunFinished(status="failed", exit_code=1, counts={}, ts=run.tick()))
    run.close(
        state_for(
            run,
            {
                "build": {"status": "failed", "exit_code": 1},
                "test": {"status": "blocked", "blocked_by": ["build"]},
                "deploy": {"status": "blocked", "blocked_by": ["build"]},
            },
        )
    )
    out = run.output()
    assert "\x1b[" in out  # a terminal gets colours and cursor movement
    text = ANSI.sub("", out)
    for name in STEPS:
        assert name in text
    assert "build | line 1: some ordinary output" in text
    assert "build | flood 19999" in text
    assert "build | flood 100\n" not in text
    assert re.search(r"build \| … \d+ more lines in \S*logs/build\.log", text)
    assert "root failure: build (exit 1)" in text
    assert "run failed:" in text


def test_tty_live_view_many_steps(tmp_path: Path) -> None:
    names = [f"step{i:03d}" for i in range(120)]
    run = Run(tmp_path / "run", tty=True, width=80)
    run.start(names)
    for name in names[:5]:
        run.step(StepStarted, name, attempt=1)
    view = run.reporter._render_live()  # what the refresh thread draws: no taller than the screen
    console = run.reporter._rich.console
    assert console is not None
    height = console.size.height
    screen = Console(file=io.StringIO(), width=80, height=height, color_system=None)
    screen.print(view)
    drawn = screen.file.getvalue()
    assert len(drawn.splitlines()) <= height
    assert "step000" in drawn and "step004" in drawn  # running steps are always shown
    assert re.search(r"… and \d+ more: \d+ pending", drawn)
    run.close(final_state({name: {} for name in names}, status="interrupted"))


def _live_drawn(run: Run, width: int = 120) -> str:
    """The live view as the refresh thread would draw it now, without its codes."""
    screen = Console(file=io.StringIO(), width=width, height=40, color_system=None)
    screen.print(run.reporter._render_live())
    return screen.file.getvalue()


def test_tty_live_view_header_is_one_row_naming_the_recipe(tmp_path: Path) -> None:
    """The live view's top row names the recipe by its `name:`, as the summary under it does
    (it said the file's stem, `demo`, until the last frame), and stays one row at 80 columns:
    a long name is cut, the run id and the counts kept (the last frame, left on the terminal,
    wrapped its figures onto a second row)."""
    run = Run(tmp_path / "run", tty=True, width=80)
    run.start(name="nightly build, tests and the live dashboard of the lab")
    run.step(StepStarted, "build", attempt=1, pid=1)
    run.step(StepFinished, "build", status="failed", attempt=1, exit_code=1)
    rows = _live_drawn(run, width=80).splitlines()
    assert rows[0].startswith("nightly build, tests") and "…" in rows[0], rows[:2]
    assert "20261125-120000-abcd · 0/5 done · 1 failed · " in rows[0], rows[0]
    assert rows[1].split()[1] == "build", rows[:2]  # the first step's row, not the header's end
    run.close(state_for(run, {"build": {"status": "failed", "exit_code": 1}}, status="failed"))


def _step_row(drawn: str, name: str) -> str:
    return next(line for line in drawn.splitlines() if f" {name} " in line)


def _tty_echoed(run: Run, name: str) -> list[str]:
    """The lines echoed for the step on the terminal, without their codes."""
    prefix = f"{name} | "
    text = ANSI.sub("", run.output())
    return [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]


def test_tty_lines_do_not_each_redraw_the_live_view(tmp_path: Path) -> None:
    """Headless on a terminal, the lines printed above the live view are printed at its
    redraws, not one at a time: each print under Rich's live view draws the view again below
    it, and a 2,000-step run (three lines a step) took 31 s on a terminal against 2.4 s into a
    pipe, all of it drawing the view. Every line is there, in order."""
    names = [f"s{i:03d}" for i in range(500)]
    run = Run(tmp_path / "run", tty=True, width=80)
    run.start(names)
    for name in names:
        run.step(StepStarted, name, attempt=1, pid=1)
        run.write(name, f"hello from {name}\n".encode())
        run.step(StepFinished, name, status="succeeded", attempt=1, exit_code=0)
    run.close(final_state({n: {"status": "succeeded"} for n in names}, status="succeeded"))
    text = ANSI.sub("", run.output())
    frames = text.count("20261125-120000-abcd · ")  # the live view's top row, once a frame
    assert frames < len(names) // 2, f"{frames} frames drawn for {3 * len(names)} lines"
    echoed = [line for line in text.splitlines() if " | hello from " in line]
    assert echoed == [f"{n} | hello from {n}" for n in names]
    finished = [m.group(1) for m in re.finditer(r"✓ (s\d{3}) succeeded", text)]
    assert finished == names


def _until_echoed(run: Run, name: str, lines: list[str]) -> None:
    """Wait until the terminal shows these lines echoed for the step, and only these: under
    the live view they are printed at its next redraw (an eighth of a second)."""
    deadline = time.monotonic() + 5
    while _tty_echoed(run, name) != lines and time.monotonic() < deadline:
        time.sleep(0.01)  # a polling interval: the live view's thread prints meanwhile
    assert _tty_echoed(run, name) == lines


def test_tty_live_view_shows_a_progress_bar_as_it_moves(tmp_path: Path) -> None:
    """A step drawing a \r progress bar without a newline: the live view shows its newest
    frame on the step's row at each output; the echo above it stays whole lines only."""
    run = Run(tmp_path / "run", tty=True, width=120)
    run.start()
    run.step(StepStarted, "build", attempt=1, pid=1)
    run.write("build", b"fetching\n\rdownload  10% [#    ]")
    assert "download  10% [#    ]" in _step_row(_live_drawn(run), "build")
    run.write("build", b"\rdownload  60% [###  ]\r")  # tqdm's way: the \r before the next
    row = _step_row(_live_drawn(run), "build")
    assert "download  60% [###  ]" in row and "10%" not in row
    _until_echoed(run, "build", ["fetching"])  # no partial line echoed
    run.write("build", b"\rdownload 100% [#####]\ndone")
    row = _step_row(_live_drawn(run), "build")
    assert "done" in row and "download" not in row
    _until_echoed(run, "build", ["fetching", "download 100% [#####]"])
    run.step(StepFinished, "build", status="succeeded", attempt=1, exit_code=0)
    assert "done" not in _step_row(_live_drawn(run), "build")  # a finished step shows none
    _until_echoed(run, "build", ["fetching", "download 100% [#####]", "done"])
    run.close(state_for(run, {}, status="succeeded"))


# -- helpers --------------------------------------------------------------------------------------------
def test_formatting_helpers() -> None:
    assert format_duration(None) == "-"
    assert format_duration(0.34) == "0.3s"
    assert format_duration(5.01) == "5.0s"
    assert format_duration(1.25) == "1.2s"
    assert format_duration(12.5) == "13s"
    assert format_duration(59.6) == "1m00s"  # not "60s"
    assert format_duration(125) == "2m05s"
    assert format_duration(3725) == "1h02m"
    assert format_bytes(None) == "-"
    assert format_bytes(512) == "512 B"
    assert format_bytes(50 * 1024 * 1024) == "50.0 MiB"
    assert clean(b"a\x1b[1mb\x1b[0m\x07c\rd\r\ne\x1b]0;title\x07") == "d\ne"
    assert clean(b"a\x1b[1mb", keep_sgr=True) == "a\x1b[1mb"


def test_summary_of_a_large_run_lists_what_needs_reading(tmp_path: Path) -> None:
    """Sixty steps: the table keeps the failure and the slowest, and says how many it left out."""
    run = Run(tmp_path / "big")
    names = [f"s{i:02d}" for i in range(60)]
    run.start(steps=names)
    steps = {}
    for i, name in enumerate(names):
        steps[name] = {
            "status": "failed" if name == "s07" else "succeeded",
            "type": "shell",
            "background": False,
            "attempts": 1,
            "exit_code": 1 if name == "s07" else 0,
            "signal": None,
            "reason": None,
            "started": T0,
            "ended": T0 + (5.0 if name == "s42" else 0.01 * i),
            "duration": None,
            "allowed": False,
            "blocked_by": [],
            "peak_cpu": None,
            "peak_rss": None,
            "log": f"logs/{name}.log",
        }
    run.close(final_state(steps, name="big", status="failed", started=T0, ended=T0 + 6))
    out = run.output()
    rows = [n for n in names if re.search(rf"^{n}\s", out, re.M)]
    assert "s07" in rows and "s42" in rows  # the failure, and the slowest step
    assert len(rows) == 11
    assert "and 49 more steps that succeeded or were skipped" in out


def _big_state(statuses: dict[str, dict], count: int) -> RunState:
    """A finished run of ``count`` succeeded steps (step i took i ms, in a shuffled order)."""
    steps = {}
    for i in range(count):
        name = f"s{(i * 7919) % count:04d}"  # recipe order is not duration order
        took = ((i * 7919) % count) / 1000
        steps[name] = {
            "status": "succeeded",
            "attempts": 1,
            "exit_code": 0,
            "started": T0,
            "ended": T0 + took,
            "duration": took,
            "log": f"logs/{name}.log",
        }
        steps[name].update(statuses.get(name, {}))
    return final_state(steps, name="big", status="failed", started=T0)


def test_summary_of_a_2000_step_run_lists_failures_then_the_slowest(tmp_path: Path) -> None:
    run = Run(tmp_path / "big")
    failed = {"status": "failed", "exit_code": 1, "duration": 0.001}
    state = _big_state(
        {"s1500": failed, "s0003": {**failed, "status": "blocked", "blocked_by": ["s1500"]}},
        2000,
    )
    run.close(state)
    out = run.output()
    table = out[out.index("big — run r") : out.index("and 1988 more")]
    rows = [m.group(1) for m in re.finditer(r"^(s\d{4})\s", table, re.M)]
    slowest = [f"s{n:04d}" for n in range(1999, 1989, -1)]
    assert rows == ["s1500", "s0003", *slowest], rows
    assert "… and 1988 more steps that succeeded or were skipped, none slower than" in out


def test_summary_of_a_failure_that_blocked_2000_steps_names_20_of_them(tmp_path: Path) -> None:
    """A failure early in a 2,000-step run blocks the rest: the summary's "blocked by" line
    names the first 20 and counts the others. It named all 1,998 on one line of 14,000
    characters (each blocked step had had a line of its own as it was blocked)."""
    run = Run(tmp_path / "big")
    blocked = {"status": "blocked", "blocked_by": ["s0001"], "attempts": 0, "exit_code": None}
    statuses = {f"s{i:04d}": dict(blocked) for i in range(2, 2000)}
    statuses["s0001"] = {"status": "failed", "exit_code": 1, "duration": 0.001}
    run.close(_big_state(statuses, 2000))
    out = run.output()
    line = next(x for x in out.splitlines() if x.startswith("blocked by s0001"))
    match = re.fullmatch(
        r"blocked by s0001 \(1,998 steps\): (.*) … and 1,978 more \(every step is in .*state\.json\)",
        line,
    )
    assert match, line
    named = match.group(1).split(", ")
    assert len(named) == 20 and set(named) <= set(statuses) - {"s0001"}, named

    few = Run(tmp_path / "few")  # a short list stays whole
    few.close(_big_state({"s0001": statuses["s0001"], "s0005": blocked}, 100))
    assert "blocked by s0001: s0005\n" in few.output()


def test_summary_rows_stay_on_one_line(tmp_path: Path) -> None:
    """On a terminal a long reason is cut with an ellipsis at the screen's edge; the figures
    are kept."""
    reason = "cannot start: " + ", ".join(["a very long reason"] * 40)
    statuses = {
        "build": {"status": "failed", "exit_code": 1, "reason": reason},
        "test": {"status": "blocked", "blocked_by": ["build"]},
    }
    for width in (80, 120):
        run = Run(tmp_path / f"w{width}", tty=True, width=width)
        run.close(state_for(run, statuses))
        text = ANSI.sub("", run.output())
        table = text[text.index("demo — run") : text.index("root failure")]
        rows = [line for line in table.splitlines() if re.match(r"(build|test|lint|deploy) ", line)]
        assert len(rows) == 4, table
        assert all(len(row.rstrip()) <= width for row in rows), table
        assert re.search(r"^build +✗ failed +1.0s +1 +1 .*cannot start.*…$", table, re.M)
    plain = Run(tmp_path / "plain")
    plain.close(state_for(plain, statuses))
    out = plain.output()
    row = next(line for line in out.splitlines() if line.startswith("build "))
    # off a terminal (a CI log, a file, a pipe) every cell is whole, however long
    assert row.endswith(reason) and "12%" in row and "50.0 MiB" in row, row
    assert f"root failure: build (exit 1, {reason})" in out  # the whole reason, below


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
@pytest.mark.parametrize(
    ("title", "names"),
    [
        ("demo — run 20261125-120000-abcd", ["build", "test"]),
        ("a recipe whose name is long enough to wrap the title " * 3, ["x" * 70, "漢字のステップ"]),
        ("one", ["naïve-e\u0301tape", "😀 emoji " * 6]),
    ],
)
def test_plain_summary_table_is_drawn_as_rich_draws_it(encoding, title, names) -> None:
    """Off a terminal the table is drawn without Rich, and reads as Rich draws it on one:
    the same widths, cuts, ellipses, box (ASCII when the stream cannot encode it) and title."""
    from rich import box
    from rich.table import Table as RichTable
    from rich.text import Text

    from tui.headless.table import Table, render_plain

    rows = [
        [(name, ""), ("✓ succeeded", ""), ("1.0s", ""), (f"{i}", ""), ("note " * i * 9, "")]
        for i, name in enumerate(names)
    ]
    table = Table(
        title=title,
        headers=["step", "status", "duration", "attempts", "note"],
        justify=["left", "left", "right", "right", "left"],
        limits=[30, None, None, None, 25],
        rows=rows,
    )
    rich = RichTable(
        title=title,
        box=box.SIMPLE_HEAD,
        title_justify="left",
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for header, justify, limit in zip(table.headers, table.justify, table.limits, strict=True):
        rich.add_column(header, justify=justify, max_width=limit)
    for row in rows:
        rich.add_row(*(Text(text, no_wrap=True, overflow="ellipsis") for text, _ in row))

    raw = io.BytesIO()
    sink = io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="\n")
    console = Console(file=sink, width=100, color_system=None, force_terminal=False)
    console.print(rich)
    sink.flush()
    drawn = [line.rstrip() for line in raw.getvalue().decode(encoding).splitlines()]
    plain = render_plain(table, ascii_box=encoding == "ascii")
    plain = [line.encode(encoding, "replace").decode(encoding) for line in plain]
    assert plain == drawn


@pytest.mark.parametrize("status", list(Status))
def test_the_tree_and_the_summary_mark_a_status_alike(tmp_path: Path, status: Status) -> None:
    """A cancelled step was ■ magenta in the app and ⊗ yellow in the CI log: one glyph and one
    colour per status now, whichever face shows it."""
    from tui.widgets.step_tree import StepTree

    run = Run(tmp_path / "run")
    run.close(final_state({"s": {"status": str(status)}}, status="failed"))
    row = next(line for line in run.output().splitlines() if line.startswith("s "))
    label = StepTree._label(StepState(name="s", type="shell", index=0, status=status), T0)
    tree_glyph = label.plain.split()[0]
    assert row.split()[1] == tree_glyph
    assert str(label.spans[0].style) == STATUS_GLYPHS[status].style


def test_summary_of_a_large_run_of_instant_steps(tmp_path: Path) -> None:
    """Sixty no-op python steps can each take no measurable time (started == ended): the
    summary still lists them as the slowest (a tie) instead of failing with an internal error
    on an empty table."""
    run = Run(tmp_path / "instant")
    state = _big_state({}, 60)
    for step in state.steps.values():
        step.ended = step.started
        step.duration = 0.0
    state.status = "succeeded"
    run.close(state)
    out = run.output()
    table = out[out.index("big — run r") : out.index("and 50 more")]
    assert len(re.findall(r"^s\d{4}\s", table, re.M)) == 10
    assert "run succeeded" in out


def test_lines_under_the_live_view_keep_their_order_when_its_redraw_is_slow() -> None:
    """The live view's thread takes the lines printed since its last redraw and prints them;
    a line that came meanwhile, and the summary once the view stopped, were printed at once
    by another thread, ahead of that batch (seen by the review: the last step's end and the
    summary above the lines before them). They wait for it now."""
    import threading

    from rich.text import Text

    from tui.headless.live import RichPrinter
    from tui.headless.terminal import Terminal

    buf = io.StringIO()
    printer = RichPrinter(Terminal(buf, "utf-8"), color=False, width=80)
    printing, go = threading.Event(), threading.Event()
    real_print = printer.console.print

    def slow_batch(*args, **kw):
        if threading.current_thread().name == "orch-live" and not go.is_set():
            printing.set()
            go.wait(10)  # a big batch to a busy terminal
        return real_print(*args, **kw)

    printer.console.print = slow_batch  # type: ignore[method-assign]
    printer.start_live(lambda: Text("LIVE VIEW"), refresh_per_second=8)
    for i in range(5):
        printer.line(f"line {i}")
    assert printing.wait(10), "the live view's thread never printed"

    def the_end() -> None:
        printer.line("line 5")
        printer.stop_live()
        printer.line("SUMMARY")

    ending = threading.Thread(target=the_end)
    ending.start()
    ending.join(1.0)  # the old code printed line 5 and the summary now, ahead of the batch
    go.set()
    ending.join(10)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "\n", buf.getvalue())
    lines = [line for line in plain.splitlines() if line.startswith(("line", "SUMMARY"))]
    assert lines == [f"line {i}" for i in range(6)] + ["SUMMARY"]
