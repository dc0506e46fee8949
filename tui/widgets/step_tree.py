"""The step tree: every step in recipe order with its status, and the run's sessions.

It owns the keys that act on the selection (skip, retry, stop, attach) and shows only those that
apply to the selected step now (``check_action`` asks the runner), so the footer is a truthful
list of what can be done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from tui.status import STATUS_STYLE, format_duration, status_icon


class StepTree(Tree[dict[str, Any]]):
    """Nodes carry ``{"kind": "step", "name": ...}`` or ``{"kind": "session", ...}``."""

    BINDINGS = [
        Binding("s", "skip", "Skip"),
        Binding("r", "retry", "Retry"),
        Binding("k", "stop", "Stop"),
        Binding("a", "attach", "Attach"),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
    ]

    class Selected(Message):
        """The highlighted step (or session) changed."""

        def __init__(self, data: dict[str, Any] | None) -> None:
            super().__init__()
            self.data = data

    class Action(Message):
        """The user asked for skip/retry/stop/attach on the selection."""

        def __init__(self, action: str, data: dict[str, Any]) -> None:
            super().__init__()
            self.action = action
            self.data = data

    def __init__(
        self,
        steps: list[dict[str, Any]],
        allowed: Callable[[str], frozenset[str]],
        *,
        id: str | None = None,
    ) -> None:
        super().__init__("steps", id=id)
        self.show_root = False
        self.guide_depth = 2
        self._allowed = allowed
        self._step_nodes: dict[str, TreeNode[dict[str, Any]]] = {}
        self._sessions_node: TreeNode[dict[str, Any]] | None = None
        self._session_nodes: dict[tuple[str, str], TreeNode[dict[str, Any]]] = {}
        self._info: dict[str, dict[str, Any]] = {}
        for info in steps:
            self._info[info["name"]] = info
            node = self.root.add_leaf(info["name"], data={"kind": "step", **info})
            self._step_nodes[info["name"]] = node
        self.root.expand()

    def on_mount(self) -> None:
        if self._step_nodes:
            self.move_cursor(next(iter(self._step_nodes.values())))

    # -- labels ---------------------------------------------------------------------------------
    def update_step(self, name: str, state: dict[str, Any], now: float) -> None:
        node = self._step_nodes.get(name)
        if node is None:
            return
        node.set_label(self._label(name, state, now))

    def _label(self, name: str, state: dict[str, Any], now: float) -> Text:
        status = state.get("status", "pending")
        info = self._info[name]
        text = Text()
        text.append(status_icon(status) + " ", style=STATUS_STYLE.get(status, ""))
        text.append(name, style="bold" if status in ("running", "ready") else "")
        started, ended = state.get("started"), state.get("ended")
        if started is not None:
            text.append(" " + format_duration((ended or now) - started), style="dim")
        attempts = state.get("attempts", 0)
        if attempts > 1:
            text.append(f" ×{attempts}", style="yellow")
        if info.get("background"):
            text.append(" bg", style="cyan dim")
        if status == "blocked" and state.get("blocked_by"):
            text.append(" ← " + ", ".join(state["blocked_by"]), style="dim red")
        return text

    def set_sessions(self, sessions: list[dict[str, Any]]) -> None:
        """Show the sessions the run's steps created (a Sessions group under the steps)."""
        if not sessions:
            return
        if self._sessions_node is None:
            self._sessions_node = self.root.add("Sessions", data={"kind": "group"}, expand=True)
        for session in sessions:
            key = (session["backend"], session["name"])
            label = Text.assemble(
                ("▣ ", "magenta"), session["name"], (f" {session['backend']}", "dim")
            )
            node = self._session_nodes.get(key)
            if node is None:
                self._session_nodes[key] = self._sessions_node.add_leaf(
                    label, data={"kind": "session", **session}
                )
            else:
                node.set_label(label)
                node.data = {"kind": "session", **session}

    # -- selection ------------------------------------------------------------------------------
    @property
    def selected(self) -> dict[str, Any] | None:
        node = self.cursor_node
        return node.data if node is not None else None

    @property
    def selected_step(self) -> str | None:
        data = self.selected
        return data["name"] if data and data.get("kind") == "step" else None

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        event.stop()
        self.refresh_bindings()
        self.post_message(self.Selected(event.node.data))

    def action_first(self) -> None:
        if self._step_nodes:
            self.move_cursor(next(iter(self._step_nodes.values())))

    def action_last(self) -> None:
        if self._step_nodes:
            self.move_cursor(list(self._step_nodes.values())[-1])

    # -- actions --------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in ("skip", "retry", "stop", "attach"):
            return True
        data = self.selected
        if data is None:
            return False
        if action == "attach":
            return data.get("kind") == "session" or (
                data.get("kind") == "step" and data.get("type") == "session"
            )
        if data.get("kind") != "step":
            return False
        return action in self._allowed(data["name"])

    def _act(self, action: str) -> None:
        data = self.selected
        if data is not None:
            self.post_message(self.Action(action, data))

    def action_skip(self) -> None:
        self._act("skip")

    def action_retry(self) -> None:
        self._act("retry")

    def action_stop(self) -> None:
        self._act("stop")

    def action_attach(self) -> None:
        self._act("attach")
