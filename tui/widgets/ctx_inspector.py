"""The ctx as a collapsible JSON tree, updated as keys change, never a million nodes.

It reads the ctx through the run's control (``ctx_keys``, ``ctx_value``), never the ctx itself.
Only keys whose version moved are read again and rebuilt. A long list shows its length and its
last rows (only those are read), a deep or wide value is cut with a count of what is not shown:
the inspector costs the same whether a list holds ten rows or ten million.

Numbers are shown as JSON prints them (every digit: ``repr``), and one that looks like an epoch
time in seconds (2000-01-01 to 2100-01-01) gets its local time beside it, dim.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from core.client import DaemonGone
from core.control import RunControl
from core.text import clean

TAIL_ROWS = 20
MAX_CHILDREN = 50
MAX_DEPTH = 6
MAX_SCALAR = 120
MAX_KEY = 60
EPOCH_FROM = 946_684_800  # 2000-01-01 UTC
EPOCH_TO = 4_102_444_800  # 2100-01-01 UTC


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _time_hint(value: float) -> str | None:
    """``2026-11-29 21:40:00`` (local time) for a number that looks like epoch seconds."""
    if EPOCH_FROM <= value < EPOCH_TO:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return None


def _number(value: float) -> Text:
    text = Text(repr(value), style="cyan")
    hint = _time_hint(value)
    if hint is not None:
        text.append(f"  ({hint})", style="dim")
    return text


def _scalar(value: Any) -> Text:
    if isinstance(value, str):
        shown = value if len(value) <= MAX_SCALAR else value[:MAX_SCALAR] + "…"
        return Text(json.dumps(shown, ensure_ascii=False), style="green")
    if isinstance(value, bool) or value is None:
        return Text(json.dumps(value), style="magenta")
    if _is_number(value):
        return _number(value)
    return Text(str(value), style="cyan")


def _compact_row(values: list[Any]) -> Text:
    """A short list of scalars on one line, each time-like number with its hint after it."""
    text = Text("[", style="cyan")
    for i, value in enumerate(values):
        if i:
            text.append(", ")
        if _is_number(value):
            text.append(repr(value))
            hint = _time_hint(value)
            if hint is not None:
                text.append(f" ({hint})", style="dim")
        else:
            text.append(json.dumps(value, ensure_ascii=False))
    text.append("]")
    text.truncate(MAX_SCALAR, overflow="ellipsis")
    return text


def _key_text(key: str) -> str:
    """A key as one row's text: a key is any text a step chose. A newline, return or tab in it
    is shown as JSON writes it (a newline once broke the row: its value drawn on a line the
    tree never shows), other controls are removed, and a key past MAX_KEY characters is cut
    with an ellipsis, so its value stays in view."""
    text = str(key)
    if not text.isprintable():
        text = clean(text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return text if len(text) <= MAX_KEY else text[: MAX_KEY - 1] + "…"


def _key_label(key: str, value: Any, *, length: int | None = None) -> Text:
    label = Text(_key_text(key), style="bold")
    if isinstance(value, dict):
        label.append(f" {{{len(value)}}}", style="dim")
    elif isinstance(value, list) or length is not None:
        label.append(f" [{length if length is not None else len(value):,}]", style="dim")
    else:
        label.append(": ")
        scalar = _scalar(value)  # text a step wrote (C1 controls survive JSON quoting)
        label.append(clean(scalar.plain), style=scalar.style)
    return label


class CtxInspector(Tree[str]):
    def __init__(self, control: RunControl, *, id: str | None = None) -> None:
        super().__init__("ctx", id=id)
        self.control = control
        self._versions: dict[str, int] = {}
        self._key_nodes: dict[str, TreeNode[str]] = {}
        self.root.expand()
        self.guide_depth = 2

    def on_mount(self) -> None:
        self.refresh_keys()

    def refresh_keys(self) -> None:
        """Rebuild the nodes of keys whose version changed; add new keys, drop deleted ones.
        A run daemon gone meanwhile leaves the tree as it was: the app is told and leaves."""
        try:
            keys = self.control.ctx_keys()
        except DaemonGone:
            return
        for key in list(self._key_nodes):
            if key not in keys:
                self._key_nodes.pop(key).remove()
                self._versions.pop(key, None)
        for key, version in keys.items():
            if self._versions.get(key) == version:
                continue
            self._versions[key] = version
            self._build_key(key)
        noun = "key" if len(keys) == 1 else "keys"
        self.root.set_label(Text.assemble(("ctx", "bold"), (f"  {len(keys)} {noun}", "dim")))

    def expand_key(self, key: str) -> None:
        node = self._key_nodes.get(key)
        if node is not None:
            node.expand()

    def _build_key(self, key: str) -> None:
        try:
            shown = self.control.ctx_value(key, tail=TAIL_ROWS)
        except (KeyError, DaemonGone):
            return
        value, length = shown.value, shown.length
        node = self._key_nodes.get(key)
        expanded = node.is_expanded if node is not None else False
        if length is not None:  # a long list: its last rows
            rows = value
            label = _key_label(key, rows, length=length)
            if node is None:
                node = self._key_nodes[key] = self.root.add(label, data=key)
            else:
                node.set_label(label)
                node.remove_children()
            node.add_leaf(Text(f"… {length - len(rows):,} earlier rows", style="dim italic"))
            for i, row in enumerate(rows, start=length - len(rows)):
                self._add_value(node, f"[{i}]", row, 1)
        else:
            label = _key_label(key, value)
            if node is None:
                node = self._key_nodes[key] = self.root.add(label, data=key)
            else:
                node.set_label(label)
                node.remove_children()
            self._add_json_children(node, value, 1)
        node.allow_expand = isinstance(value, (list, dict)) and bool(value)
        if expanded:
            node.expand()

    def _add_json_children(self, node: TreeNode[str], value: Any, depth: int) -> None:
        if isinstance(value, dict):
            items: list[tuple[str, Any]] = list(value.items())
        elif isinstance(value, list):
            items = [(f"[{i}]", v) for i, v in enumerate(value)]
        else:
            return
        for name, child in items[:MAX_CHILDREN]:
            self._add_value(node, name, child, depth)
        if len(items) > MAX_CHILDREN:
            node.add_leaf(Text(f"… {len(items) - MAX_CHILDREN:,} more", style="dim italic"))

    def _add_value(self, parent: TreeNode[str], name: str, value: Any, depth: int) -> None:
        if isinstance(value, (dict, list)) and value:
            if depth >= MAX_DEPTH:
                parent.add_leaf(_key_label(name, value).append(" …", style="dim"))
                return
            if (
                isinstance(value, list)
                and len(value) <= 8
                and not any(isinstance(v, (dict, list)) for v in value)
            ):  # a short row of scalars reads best on one line
                text = Text(f"{name}: ", style="bold")
                text.append_text(_compact_row(value))
                parent.add_leaf(text)
                return
            child = parent.add(_key_label(name, value))
            self._add_json_children(child, value, depth + 1)
        else:
            parent.add_leaf(_key_label(name, value))
