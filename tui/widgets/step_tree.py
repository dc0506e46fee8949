"""The step tree: every step in recipe order with its status, and the run's sessions.

It owns the keys that act on the selection (skip, retry, stop, restart, attach) and shows only
those that apply to the selected step now (``check_action`` asks the runner), so the footer is a
truthful list of what can be done. ``r`` is retry on a step that ended and restart on a running
service: never both at once, so one key serves, and the footer names the one that applies.

A row too wide for the tree is cut with … (a step's name, keeping its duration and marks): the
tree never scrolls sideways, which moved every row and cut names without a mark. The full name
is the log pane's title.

A step's row is drawn from the tree's own table of labels (``render_label``), not from the
node's label: ``TreeNode.set_label`` queues a callback per node that scans the visible lines,
which for a run of thousands of steps changing a few hundred times a second kept the app busy
with nothing else. Here a change costs a Text and a repaint of that one line, and a 10,000-step
tree costs no label rendering to build (``get_label_width`` is a stored number).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text, TextType
from textual._loop import loop_last
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.strip import Strip
from textual.widgets import Tree
from textual.widgets._tree import _TreeLine
from textual.widgets.tree import TreeNode

from core.state import ACTIVE, FAILURES, Status, StepState
from tui.format import (
    HEALTH_GLYPHS,
    RESTARTING,
    count_key,
    format_duration,
    shown_health,
    status_icon,
    status_style,
)

#: Room kept in the tree's width for a duration (" 12m05s") beside the longest name.
DURATION_CELLS = 7
#: An unbegun step's row before its name: its icon and a space.
PENDING_CELLS = cell_len(status_icon(Status.PENDING)) + 1
#: A name cut to fit keeps at least this many cells, else the whole row is cut at its end
#: (a blocked step's long list of the failures it waits for goes first).
NAME_KEPT = 8
#: Rows (Texts) kept made: a few screens of the tree, not a Text per step of a big run.
LABELS_KEPT = 256
#: the keys of the selection's actions (what ``check_action`` asks the runner about)
STEP_ACTIONS = ("skip", "retry", "restart", "stop", "kill", "attach")


class StepTree(Tree[dict[str, Any]]):
    """Nodes carry ``{"kind": "step", "name": ...}`` or ``{"kind": "session", ...}``."""

    BINDINGS = [
        Binding("s", "skip", "Skip"),
        Binding("r", "retry", "Retry"),
        Binding("r", "restart", "Restart"),
        Binding("k", "stop", "Stop"),
        # on a step already stopping (taking its grace): `k` again kills it at once
        Binding("k", "kill", "Kill step"),
        Binding("a", "attach", "Attach"),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("f", "next_failed", "Next failed", show=False),
        Binding("F", "previous_failed", "Previous failed", show=False),
    ]

    class Selected(Message):
        """The highlighted step (or session) changed."""

        def __init__(self, data: dict[str, Any] | None) -> None:
            super().__init__()
            self.data = data

    class Action(Message):
        """The user asked for skip/retry/restart/stop/attach on the selection."""

        def __init__(self, action: str, data: dict[str, Any]) -> None:
            super().__init__()
            self.action = action
            self.data = data

    def __init__(
        self,
        steps: Iterable[StepState],
        allowed: Callable[[str], frozenset[str]],
        *,
        id: str | None = None,
    ) -> None:
        super().__init__("steps", id=id)
        self._allowed = allowed
        self._step_nodes: dict[str, TreeNode[dict[str, Any]]] = {}
        self._order: list[str] = []  # the step names in recipe order, and each one's place
        self._place: dict[str, int] = {}
        self._folded: list[str] = []  # the names casefolded, in that order (``g``: find_steps)
        self._sessions_node: TreeNode[dict[str, Any]] | None = None
        self._session_nodes: dict[tuple[str, str | None, str], TreeNode[dict[str, Any]]] = {}
        self._background: dict[str, bool] = {}
        #: each step's state and the time its row is drawn at; the row (a Text) is made as it
        #: is drawn and kept for the rows drawn lately only (``_labels``, at most LABELS_KEPT):
        #: a Text a step, with its spans, was half of what the app's full collections walked
        #: late in a 4,000-step run, and a 10,000-step tree shows 30 rows
        self._states: dict[str, tuple[StepState, float]] = {}
        self._labels: dict[str, Text] = {}
        self._widths: dict[str, int] = {}
        self._wanted = 0  # wanted_width: names do not change
        #: the rows as last walked (_build), and the shape they were walked for
        self._lines: list[_TreeLine[dict[str, Any]]] = []
        self._shape: tuple[int, bool, tuple[int, ...]] | None = None
        self._offered: frozenset[str] | None = None  # the keys the footer shows now
        self._row_style: Style | None = None  # the widget's style while its rows are painted
        self.show_root = False  # after the tables above: setting it builds the lines (_build)
        self.guide_depth = 2
        root = self.root
        for step in steps:
            name = step.name
            cells = cell_len(name)
            self._background[name] = step.background
            bg = 3 if step.background else 0  # " bg"
            self._wanted = max(self._wanted, 2 + cells + DURATION_CELLS + bg)
            self._states[name] = (step, 0.0)
            if _unbegun(step):
                self._widths[name] = PENDING_CELLS + cells + bg
            else:
                self._widths[name] = self._label(step, 0.0).cell_len
            # the node made as add_leaf makes it, without its invalidation of the whole tree
            # for each node (once below, for all)
            node = TreeNode(
                self, root, self._new_id(), Text(name), _node_data(step), expanded=False
            )
            node._allow_expand = False
            self._tree_nodes[node._id] = node
            root._children.append(node)
            self._step_nodes[name] = node
            self._place[name] = len(self._order)
            self._order.append(name)
            self._folded.append(name.casefold())
        self._invalidate()
        root.expand()

    def on_mount(self) -> None:
        if self._step_nodes:
            self.move_cursor(next(iter(self._step_nodes.values())))

    # -- labels ---------------------------------------------------------------------------------
    def update_steps(self, states: Iterable[StepState], now: float) -> None:
        """Redraw the rows of these steps (and only these) from their states.

        Only rows in view are repainted; one out of view has its cached line dropped, and is
        drawn anew when scrolled to (a scroll repaints the whole tree). A repaint of a line
        (``TreeNode.refresh``) leaves a dirty region on the tree that only a repaint of the
        whole tree clears: during a run of thousands of steps the tree kept one per step that
        changed out of view (objects the collector walks at every full pass), and the screen
        was asked for a refresh that had nothing to show."""
        top = self.scroll_offset.y
        bottom = top + self.size.height
        for state in states:
            name = state.name
            node = self._step_nodes.get(name)
            if node is not None:
                label = self._label(state, now)
                self._states[name] = (state, now)
                self._widths[name] = label.cell_len
                if top <= node._line < bottom:
                    self._keep_label(name, label)
                    node.refresh()  # this node's line: its cached strip is dropped, repainted
                else:
                    self._labels.pop(name, None)
                    node._updates += 1  # what TreeNode.refresh does, but the repaint

    def label_of(self, name: str) -> Text:
        """The row the tree shows for a step (its status icon, name, duration, marks)."""
        label = self._labels.get(name)
        if label is None:
            state, now = self._states[name]
            label = self._keep_label(name, self._label(state, now))
        return label

    def _keep_label(self, name: str, label: Text) -> Text:
        if len(self._labels) >= LABELS_KEPT:
            self._labels.clear()  # the rows in view are made again as they are drawn
        self._labels[name] = label
        return label

    def wanted_width(self) -> int:
        """Cells the widest row needs to show its name, a duration and its ``bg`` mark, or a
        session's row whole (its name, backend and tmux socket, under the group's guide)."""
        sessions = (
            max((node.label.cell_len for node in self._session_nodes.values()), default=0)
            + self.guide_depth
        )
        return max(self._wanted, sessions)

    def process_label(self, label: TextType) -> Text:
        """A one-line Text as it is: Tree splits every label into lines and copies the first,
        twice per node added (a step's name is one line: the recipe checker's rule)."""
        if isinstance(label, Text) and "\n" not in label.plain:
            return label
        return super().process_label(label)

    def _build(self) -> None:
        """Tree._build for this tree's shape (no root shown: the steps, then the Sessions group
        and its sessions), a step row's width read from the stored ones. Tree rebuilds its
        lines after every style update and resize (a dozen times while the app starts, and as
        the focus moves) though the rows stay the same: its own walk (a path list and a label
        width per row) made that a third of a 10,000-step tree's first paint. Here the rows
        are walked again only when the shape changed."""
        group = self._sessions_node
        shape = (
            len(self.root._children),
            group is not None and group._expanded,
            # which sessions, not how many: one killed and one made is another shape
            tuple(child._id for child in group._children) if group is not None else (),
        )
        if shape != self._shape:
            self._shape, self._lines = shape, self._walk()
        lines = self._lines
        width = max(self._widths.values(), default=0)
        if group is not None:
            width = max(width, self.get_label_width(group))
            for child in group._children if group._expanded else ():
                width = max(width, self.get_label_width(child) + self.guide_depth)
        self._tree_lines_cached = lines
        room = self.scrollable_content_region.width  # rows are cut to it: no sideways scroll
        self.virtual_size = Size(min(width, room) if lines else self.size.width, len(lines))
        if self.cursor_line != -1:  # as Tree keeps it: on its node, or none past the end
            if self.cursor_node is not None:
                self.cursor_line = self.cursor_node._line
            if self.cursor_line >= len(lines):
                self.cursor_line = -1

    def _walk(self) -> list[_TreeLine[dict[str, Any]]]:
        """The tree's rows in order, each node told its line."""
        lines: list[_TreeLine[dict[str, Any]]] = []
        for last, node in loop_last(self.root._children):
            node._line = len(lines)
            lines.append(_TreeLine([node], last))
            if node is self._sessions_node and node._expanded:
                for child_last, child in loop_last(node._children):
                    child._line = len(lines)
                    lines.append(_TreeLine([node, child], child_last))
        return lines

    def render_lines(self, crop: Region) -> list[Strip]:
        """Tree's, with the widget's style worked out once for the rows painted, not per row."""
        self._row_style = self.rich_style
        try:
            return super().render_lines(crop)
        finally:
            self._row_style = None

    def render_line(self, y: int) -> Strip:
        """Tree.render_line, which asks for ``rich_style`` at every row: a walk up the DOM that
        was half of the tree's painting when a key scrolls it (every row is repainted then)."""
        style = self._row_style if self._row_style is not None else self.rich_style
        scroll_x, scroll_y = self.scroll_offset
        return self._render_line(y + scroll_y, scroll_x, scroll_x + self.size.width, style)

    def render_label(self, node: TreeNode[dict[str, Any]], base_style: Style, style: Style) -> Text:
        data = node.data
        # a session's row is under the Sessions group: its guide takes guide_depth cells
        room = self.scrollable_content_region.width - (
            self.guide_depth if node.parent is not self.root else 0
        )
        if not data or data.get("kind") != "step":
            label = super().render_label(node, base_style, style)
            label.truncate(room, overflow="ellipsis")
            return label
        label = _fitted(self.label_of(data["name"]), data["name"], room)
        label.stylize(style)
        return Text.assemble(("", base_style), label)

    def get_label_width(self, node: TreeNode[dict[str, Any]]) -> int:
        data = node.data
        if not data or data.get("kind") != "step":
            return super().get_label_width(node)
        return self._widths[data["name"]]

    @staticmethod
    def _label(state: StepState, now: float) -> Text:
        status, mark = state.status, count_key(state)  # as the header counts it: ↻ too
        text = Text()
        text.append(status_icon(mark) + " ", style=status_style(mark))
        text.append(state.name, style="bold" if status in ACTIVE else "")
        if mark == RESTARTING and state.restart_due is not None:  # counted down, not its last run
            text.append(" in " + format_duration(max(0.0, state.restart_due - now)), style="yellow")
        elif state.started is not None:
            text.append(" " + format_duration((state.ended or now) - state.started), style="dim")
        if state.stopping:
            text.append(" stopping", style="yellow")
        if state.attempts - state.restarts > 1:  # the restarts have their own mark
            text.append(f" ×{state.attempts - state.restarts}", style="yellow")
        if state.restarts:
            text.append(f" ↻{state.restarts}", style="yellow")
        if (health := shown_health(state)) is not None:
            glyph = HEALTH_GLYPHS[health]
            text.append(" " + glyph.symbol, style=glyph.style)
        if state.background:
            text.append(" bg", style="cyan dim")
        if status == Status.BLOCKED and state.blocked_by:
            text.append(" ← " + ", ".join(state.blocked_by), style="dim red")
        return text

    def set_sessions(self, sessions: list[dict[str, Any]]) -> None:
        """Show the sessions the run's steps created and did not kill since (a Sessions group
        under the steps, gone with the last of them)."""
        listed = {_session_key(session) for session in sessions}
        for key in [key for key in self._session_nodes if key not in listed]:
            self._session_nodes.pop(key).remove()
        if not sessions:
            if self._sessions_node is not None:
                self._sessions_node.remove()
                self._sessions_node = None
            return
        if self._sessions_node is None:
            self._sessions_node = self.root.add("Sessions", data={"kind": "group"}, expand=True)
        for session in sessions:
            key = _session_key(session)
            label = _session_label(session, ended=False)
            node = self._session_nodes.get(key)
            if node is None:
                self._session_nodes[key] = self._sessions_node.add_leaf(
                    label, data={"kind": "session", **session}
                )
            else:
                node.set_label(label)
                node.data = {"kind": "session", **session}

    def mark_session(self, key: tuple[str, str | None, str], ended: bool) -> None:
        """Say on the session's row whether it has ended (killed from outside the run, seen by
        the mirror): a hollow mark, dimmed, and `a` is not offered on it."""
        node = self._session_nodes.get(key)
        if node is None or node.data is None or node.data.get("ended", False) == ended:
            return
        node.data = {**node.data, "ended": ended}
        node.set_label(_session_label(node.data, ended=ended))
        self.sync_bindings()

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
        self.sync_bindings()
        self.post_message(self.Selected(event.node.data))

    def sync_bindings(self) -> None:
        """Refresh the footer if the keys that apply to the selection changed.

        Only then: a refresh rebuilds the footer's widgets, which moving the cursor over a
        thousand steps of the same status would otherwise pay at every key press.
        """
        offered = self._applicable()
        if offered != self._offered:
            self._offered = offered
            self.refresh_bindings()

    def action_first(self) -> None:
        if self._step_nodes:
            self.move_cursor(next(iter(self._step_nodes.values())))

    def action_last(self) -> None:
        if self._step_nodes:
            self.move_cursor(list(self._step_nodes.values())[-1])

    def action_next_failed(self) -> None:
        self._select_failed(1)

    def action_previous_failed(self) -> None:
        self._select_failed(-1)

    def _select_failed(self, direction: int) -> None:
        """Select the next (1) or previous (-1) failed or timed-out step from the selection,
        wrapping around: the way to a 2,000-step run's failures. A blocked step is passed
        over: the failure it names is the one to look at. One pass over the steps per key
        press, none per event (the states are kept up to date for the rows already)."""
        count = len(self._order)
        here = self.selected_step
        start = self._place[here] if here is not None else (-1 if direction > 0 else count)
        for offset in range(1, count + 1):
            name = self._order[(start + direction * offset) % count]
            if self._states[name][0].status in FAILURES:
                self.move_cursor(self._step_nodes[name])
                return
        self.notify("no step has failed", timeout=2)

    def find_steps(self, text: str) -> list[int]:
        """The places (in recipe order) of the steps whose name contains ``text``, ignoring
        case (``g``, go to step): a substring test per name, nothing drawn; a few ms for
        10,000 steps, done once per change of the text."""
        folded = text.casefold()
        if not folded:
            return []
        return [place for place, name in enumerate(self._folded) if folded in name]

    @property
    def selected_place(self) -> int | None:
        """The selected step's place in recipe order (None on a session or the group)."""
        name = self.selected_step
        return None if name is None else self._place[name]

    def select_place(self, place: int) -> None:
        """Select the step at this place in recipe order, its row in the middle of the tree:
        the prompt of ``g`` covers the tree's bottom rows, where a row scrolled into view from
        below would be."""
        node = self._step_nodes[self._order[place]]
        self.move_cursor(node)
        region = self._get_label_region(node._line)
        if region is not None:
            self.scroll_to_region(
                region, animate=False, force=True, center=True, origin_visible=False, x_axis=False
            )

    # -- actions --------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in STEP_ACTIONS:
            return True
        return action in self._applicable()

    def _applicable(self) -> frozenset[str]:
        """Which of skip/retry/restart/stop/attach apply to the selection now."""
        data = self.selected
        if data is None:
            return frozenset()
        kind = data.get("kind")
        offered = set(self._allowed(data["name"])) if kind == "step" else set()
        if "stop" in offered and self._states[data["name"]][0].stopping:
            offered.symmetric_difference_update(("stop", "kill"))  # the stop asked again
        if (kind == "session" and not data.get("ended")) or (
            kind == "step" and data.get("type") == "session"
        ):
            offered.add("attach")
        return frozenset(offered)

    def _act(self, action: str) -> None:
        data = self.selected
        if data is not None:
            self.post_message(self.Action(action, data))

    def action_skip(self) -> None:
        self._act("skip")

    def action_retry(self) -> None:
        self._act("retry")

    def action_restart(self) -> None:
        self._act("restart")

    def action_stop(self) -> None:
        self._act("stop")

    def action_kill(self) -> None:
        self._act("kill")

    def action_attach(self) -> None:
        self._act("attach")


def _fitted(label: Text, name: str, room: int) -> Text:
    """A copy of a step's row in ``room`` cells: its name cut with … so that its duration and
    marks stay, or, with less than ``NAME_KEPT`` cells left for the name, the row cut at its end.
    """
    if label.cell_len <= room:
        return label.copy()
    start = label.plain.index(" ") + 1  # the name follows the status icon and a space
    head, cut, tail = label[:start], label[start : start + len(name)], label[start + len(name) :]
    left = room - head.cell_len - tail.cell_len
    if left < min(NAME_KEPT, cut.cell_len):
        head, cut, tail, left = Text(), label.copy(), Text(), room
    cut.truncate(left, overflow="ellipsis")
    return Text.assemble(head, cut, tail)


def _unbegun(step: StepState) -> bool:
    """A step whose row is its pending icon, its name and its ``bg`` mark, nothing more."""
    return (
        step.status == Status.PENDING
        and step.attempts == 0
        and step.started is None
        and step.restarts == 0
        and step.health is None
    )


def _node_data(step: StepState) -> dict[str, Any]:
    """A step's node: its name, and for a session step what attaching to the session needs."""
    data: dict[str, Any] = {"kind": "step", "name": step.name, "type": step.type}
    if step.session is not None:
        session = step.session
        data.update(backend=session.backend, session=session.name, socket=session.socket)
    return data


def _session_key(session: dict[str, Any]) -> tuple[str, str | None, str]:
    """What tells the run's sessions apart: backend, tmux socket and name (one name may be a
    session on two tmux servers)."""
    return session["backend"], session.get("socket"), session["name"]


def _session_label(session: dict[str, Any], ended: bool) -> Text:
    """A session's row: its mark (hollow once it has ended), name, backend and tmux socket."""
    socket = session.get("socket")
    where = f" {session['backend']}" + (f" -L {socket}" if socket else "")
    if ended:
        return Text.assemble(("□ ", "dim"), (session["name"], "dim"), (where, "dim"))
    return Text.assemble(("▣ ", "magenta"), session["name"], (where, "dim"))
