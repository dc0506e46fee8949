"""System CPU and memory, and the selected step's process-tree CPU and RSS, as sparklines.

Fed by the runner's ``resources`` events (sampled on a core thread, never on the UI's), so a
slow /proc never freezes the screen.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from textual.app import ComposeResult
from textual.containers import Grid
from textual.widgets import Label, Sparkline

from tui.status import format_bytes_short

HISTORY = 60


class ResourceMeter(Grid):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._cpu: deque[float] = deque([0.0], maxlen=HISTORY)
        self._mem: deque[float] = deque([0.0], maxlen=HISTORY)
        self._step_cpu: dict[str, deque[float]] = {}
        self._step_rss: dict[str, deque[float]] = {}
        self._last: dict[str, Any] = {}
        self.step: str | None = None

    def compose(self) -> ComposeResult:
        yield Label("cpu", classes="meter-label")
        yield Sparkline(list(self._cpu), id="cpu-spark")
        yield Label("", id="cpu-value", classes="meter-value")
        yield Label("mem", classes="meter-label")
        yield Sparkline(list(self._mem), id="mem-spark")
        yield Label("", id="mem-value", classes="meter-value")
        yield Label("step", classes="meter-label", id="step-label")
        yield Sparkline([0.0], id="step-spark")
        yield Label("", id="step-value", classes="meter-value")

    def add_sample(self, sample: dict[str, Any]) -> None:
        self._cpu.append(float(sample.get("cpu_percent", 0.0)))
        self._mem.append(float(sample.get("mem_percent", 0.0)))
        self._last = sample
        for name, figures in (sample.get("steps") or {}).items():
            self._step_cpu.setdefault(name, deque(maxlen=HISTORY)).append(
                float(figures.get("cpu") or 0.0)
            )
            rss = figures.get("rss")
            if rss is not None:
                self._step_rss.setdefault(name, deque(maxlen=HISTORY)).append(float(rss))
        self._render_values()

    def show_step(self, name: str | None) -> None:
        self.step = name
        self._render_values()

    def _render_values(self) -> None:
        if not self.is_mounted:
            return
        self.query_one("#cpu-spark", Sparkline).data = list(self._cpu)
        self.query_one("#mem-spark", Sparkline).data = list(self._mem)
        self.query_one("#cpu-value", Label).update(f"{self._cpu[-1]:5.1f}%")
        used = self._last.get("mem_used")
        self.query_one("#mem-value", Label).update(
            f"{self._mem[-1]:4.0f}% {format_bytes_short(used)}"
            if used
            else f"{self._mem[-1]:5.1f}%"
        )
        cpu = self._step_cpu.get(self.step or "")
        figures = (self._last.get("steps") or {}).get(self.step or "")
        self.query_one("#step-spark", Sparkline).data = list(cpu) if cpu else [0.0]
        if figures:
            value = f"{figures.get('cpu') or 0.0:5.1f}%"
            if figures.get("rss") is not None:
                value = f"{figures.get('cpu') or 0.0:4.0f}% {format_bytes_short(figures['rss'])}"
        else:
            value = "  idle"
        self.query_one("#step-value", Label).update(value)
