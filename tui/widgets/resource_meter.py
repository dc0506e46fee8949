"""System CPU and memory, and the selected step's process-tree CPU and RSS, as sparklines.

Fed by the runner's ``resources`` events (sampled on a core thread, never on the UI's), so a
slow /proc never freezes the screen.

Every figure is a share of the whole machine, drawn on a fixed 0-100 % scale: CPU of all cores
(the runner reports a step's CPU like ``top``, 100 per busy core, so it is divided by the number
of cores here), memory of the machine's total. Textual's Sparkline scales each series to its own
minimum and maximum, which drew 3 % memory as near-full bars and an idle step as a full block.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid
from textual.widget import Widget
from textual.widgets import Label

from tui.format import format_bytes_short

HISTORY = 60
BARS = "▁▂▃▄▅▆▇█"
CORES = os.cpu_count() or 1


class Bars(Widget):
    """A sparkline on a fixed scale, newest sample on the right, one column per sample.

    Zero draws a dim ``▁`` (a sample, at rest), anything above zero at least a full-colour
    ``▁``, ``top`` and beyond a full block; columns without a sample stay blank.
    """

    DEFAULT_CSS = """
    Bars {
        height: 1;
        color: $primary;
    }
    """

    def __init__(self, top: float = 100.0, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.top = top
        self._values: list[float] = []

    @property
    def values(self) -> list[float]:
        return self._values

    def set_values(self, values: Iterable[float]) -> None:
        values = list(values)
        if values != self._values:
            self._values = values
            self.refresh()

    def render(self) -> Text:
        width = self.size.width
        shown = self._values[-width:] if width else []
        text = Text(" " * (width - len(shown)))
        for value in shown:
            if value <= 0:
                text.append(BARS[0], style="dim")
            else:
                level = math.ceil(value / self.top * len(BARS))
                text.append(BARS[min(level, len(BARS)) - 1])
        return text


class ResourceMeter(Grid):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._cpu: deque[float] = deque(maxlen=HISTORY)
        self._mem: deque[float] = deque(maxlen=HISTORY)
        self._step_cpu: dict[str, deque[float]] = {}
        self._last: dict[str, Any] = {}
        self.step: str | None = None

    def compose(self) -> ComposeResult:
        yield Label("cpu", classes="meter-label")
        yield Bars(id="cpu-spark")
        yield Label("", id="cpu-value", classes="meter-value")
        yield Label("mem", classes="meter-label")
        yield Bars(id="mem-spark")
        yield Label("", id="mem-value", classes="meter-value")
        yield Label("step", classes="meter-label", id="step-label")
        yield Bars(id="step-spark")
        yield Label("", id="step-value", classes="meter-value")

    def on_mount(self) -> None:
        self.border_title = "resources · % of machine"
        self._render_values()

    def add_sample(self, sample: dict[str, Any]) -> None:
        self._cpu.append(float(sample.get("cpu_percent", 0.0)))
        self._mem.append(float(sample.get("mem_percent", 0.0)))
        self._last = sample
        for name, figures in (sample.get("steps") or {}).items():
            self._step_cpu.setdefault(name, deque(maxlen=HISTORY)).append(
                float(figures.get("cpu") or 0.0) / CORES
            )
        self._render_values()

    def show_step(self, name: str | None) -> None:
        self.step = name
        self._render_values()

    def _render_values(self) -> None:
        if not self.is_mounted:
            return
        self.query_one("#cpu-spark", Bars).set_values(self._cpu)
        self.query_one("#mem-spark", Bars).set_values(self._mem)
        self.query_one("#step-spark", Bars).set_values(self._step_cpu.get(self.step or "", ()))
        cpu = f"{self._cpu[-1]:5.1f}%" if self._cpu else ""
        mem = ""
        if self._mem:
            used = self._last.get("mem_used")
            mem = (
                f"{self._mem[-1]:4.0f}% {format_bytes_short(used)}"
                if used
                else f"{self._mem[-1]:5.1f}%"
            )
        self._set_value("#cpu-value", cpu)
        self._set_value("#mem-value", mem)
        self._set_value("#step-value", self._step_value())

    def _step_value(self) -> str:
        figures = (self._last.get("steps") or {}).get(self.step or "")
        if not figures:
            return "  idle"
        share = float(figures.get("cpu") or 0.0) / CORES
        if figures.get("rss") is None:
            return f"{share:5.1f}%"
        return f"{share:4.0f}% {format_bytes_short(figures['rss'])}"

    def _set_value(self, selector: str, text: str) -> None:
        """Set a value's text; its grid cell has a fixed width, so no layout pass is needed."""
        label = self.query_one(selector, Label)
        if str(label.content) != text:
            label.update(text, layout=False)
