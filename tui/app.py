"""The Textual app: a client of a run's control (core.control), nothing more.

It uses only the ``RunControl`` it is given: the run's state, its events, its commands and reads
of the ctx; it never sees the runner. On a terminal the run is in another process (a run daemon,
core.daemon) and the control is its socket's client: then the app may detach (``d``), leaving
the run going; in tests it is an in-process runner's LocalControl.

Events arrive on the run's event thread; they are only appended to a deque there. A timer on the
UI side drains the deque 15 times a second and applies the whole batch at once, so a step
printing half a million lines a second costs the UI a file read per tick, not a message per line.
The deque holds at most ``INBOX_EVENTS``: while the UI does not drain it (the user in a session
attached with ``a``, which blocks the UI's loop until the multiplexer detaches, for hours maybe),
the events past that are dropped for a mark, and the drain takes the run's state then instead,
as a client the daemon resyncs.

The app keeps a mirror of the run (``RunState``: a snapshot, then every event applied; a step's
event carries its whole new state), so a tick costs what changed in it: it never asks for the
whole state again and never walks every step. Running steps' durations are redrawn about once a
second, from a set of the running ones.
"""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import events, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen

from core import events as ev
from core.client import DaemonGone
from core.state import (
    ACTIVE,
    WAITING,
    RunState,
    SessionRef,
    Status,
    StepState,
    allowed_actions,
    waiting_to_restart,
)
from core.text import clean
from tui.format import count_key, counted, display_path, run_words, step_ending
from tui.screens.confirm_quit import ConfirmQuit
from tui.screens.goto import GotoPrompt
from tui.screens.help import HelpScreen
from tui.screens.search import SearchPrompt
from tui.screens.sessions import SessionsScreen
from tui.screens.steps import StepsScreen
from tui.widgets import (
    CtxInspector,
    KeysFooter,
    LogPane,
    ResourceMeter,
    RunHeader,
    SessionMirror,
    StepTree,
)
from tui.widgets.session_mirror import MirroredSession

REFRESH_HZ = 15
CTX_REFRESH_SECONDS = 0.5
DURATION_REFRESH_SECONDS = 1.0
TREE_CHROME = 6  # the tree's border, padding and vertical scrollbar, in columns
MESSAGES_AT_ONCE = 3  # the run's messages an app shows as it follows a snapshot (the rest: a count)
#: events that change the run (not a step): the keys offered may change with them (closing)
RUN_EVENTS = (ev.RunFinished, ev.RunReopened, ev.RunClosing)
#: events the app holds undrained at most; past them it takes the run's state when it drains
#: (an app left in a session with ``a`` for an hour held every event of it: 1 MB a minute, for
#: a few chatty services, and all of it applied one by one when it came back)
INBOX_EVENTS = 10_000


class _Behind:
    """The mark in the app's inbox for events it dropped: the drain takes a snapshot."""


if TYPE_CHECKING:
    from core.control import RunControl


class OrchApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "orch-tui"
    # app.tcss: under 100 columns a pinned log goes under the main one; under 30 rows the
    # meter and the ctx give their rows to the tree and the logs (c brings the ctx back)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]
    BINDINGS = [
        Binding("q", "quit_app", "Quit"),
        # while the run stops (`y`): its steps killed at once, as a second Ctrl-C headless
        Binding("q", "kill_now", "Kill now"),
        Binding("d", "detach", "Detach"),
        # Textual quits on Ctrl+Q without asking and only shows a toast on Ctrl+C: both do what
        # q does here (Ctrl+C still copies text selected with the mouse: the screen's binding)
        Binding("ctrl+q", "quit_app", "Quit", show=False, priority=True),
        Binding("ctrl+q", "kill_now", "Kill now", show=False, priority=True),
        Binding("ctrl+c", "quit_app", "Quit", show=False),
        Binding("ctrl+c", "kill_now", "Kill now", show=False),
        Binding("question_mark", "help", "Help"),
        # one key, two words: check_action offers the one that applies to the selected step
        Binding("p", "pin", "Pin log"),
        Binding("p", "unpin", "Unpin log"),
        Binding("S", "sessions", "Sessions"),
        Binding("c", "toggle_ctx", "ctx", show=False),
        # the log pane has these keys too; here they reach it from the step tree
        Binding("slash", "search", "Search", show=False),
        Binding("n", "next_match", "Next"),  # shown while a search is on (check_action)
        Binding("N", "previous_match", "Prev match", show=False),
        Binding("w", "toggle_wrap", "Wrap", show=False),
        # the tree has these too; here they reach it from a log or the ctx (they did nothing)
        Binding("f", "next_failed", "Next failed", show=False),
        Binding("F", "previous_failed", "Previous failed", show=False),
        # from any pane of the steps screen (the keys typed right behind it: on_key)
        Binding("g", "goto", "Go to step", show=False),
        # a past run (read-only): the keys that would change it say why they do nothing
        Binding("s,r,k", "read_only", show=False),
    ]
    #: actions on the steps screen's panes: not offered while another screen is on top
    MAIN_SCREEN_ACTIONS = frozenset(
        {
            "pin",
            "unpin",
            "toggle_ctx",
            "search",
            "next_match",
            "previous_match",
            "toggle_wrap",
            "next_failed",
            "previous_failed",
            "goto",
        }
    )
    #: actions that open a screen: none once the app is ending (`y`, `d`: one opened as it
    #: exits is composed no more, and crashed it)
    SCREEN_ACTIONS = frozenset({"help", "sessions", "search", "goto", "command_palette"})
    #: what ``exit`` returns after ``d``: the run goes on (``detached`` says so too)
    DETACHED = 0

    def __init__(
        self,
        control: RunControl,
        *,
        clock: Callable[[], float] = time.time,
        start: Callable[[], None] | None = None,
        detachable: bool = False,
    ) -> None:
        """``control``: the run; ``start``: called once the app follows the run's events (who
        built the run starts it: the command line passes the runner's ``start``);
        ``detachable``: the run is in another process, and goes on when the app leaves it."""
        super().__init__()
        # While the app runs, Textual's stand-ins for stdout and stderr have no ``encoding``;
        # libtmux reads it as it is imported, which in a client of a run daemon happens first
        # in the app (the session mirror's first copy of a tmux window).
        self._capture_stdout.encoding = self._capture_stderr.encoding = "utf-8"
        self.control = control
        self.read_only = getattr(control, "read_only", False)  # a past run: core.recorded
        self.detachable = detachable
        self.detached = False
        self.clock = clock
        self._start = start
        # events, and a whole RunState when a client that fell behind was resynced, or the
        # mark of events dropped while the app did not drain (``_receive``)
        self._inbox: deque[ev.Event | RunState | _Behind] = deque()
        # The run as its events tell it (a mirror: core.state), from a snapshot taken as the app
        # subscribes; the counts per status and the live (running/ready) steps follow it.
        self._run: RunState = control.snapshot()
        # The snapshot, the recipe and Textual's modules live as long as the app: out of the
        # collector's sight before compose makes a node per step, or a 10,000-step tree pays
        # full collections over all of them (about a third of its first paint).
        gc.freeze()
        self._counts: dict[str, int] = {}
        self._live: set[str] = set()
        self._changed: set[str] = set()  # rows to redraw at the end of this tick
        self._durations_drawn = 0.0  # monotonic time the live rows' durations were last drawn
        self._dirty_logs: set[str] = set()
        self._ctx_dirty = False
        self._ctx_refreshed = 0.0
        self._quitting = False
        self._killing = False  # q again while the run stops: every step killed at once
        self._said = 0  # the seq of the newest message of the run's shown (a toast each)
        self._sessions: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self._pinned: str | None = None  # the step whose log the second pane keeps
        self._on_pinned = False  # the pinned step is selected: the footer offers `p Unpin log`
        self._selection_due = False  # the panes are to follow a new selection after a refresh
        self._goto = ""  # the text `g` last went to a step with: the prompt opens with it

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield StepTree(self._run.steps.values(), self._allowed, id="steps")
                yield ResourceMeter(id="meter")
            with Vertical(id="right"):
                yield SessionMirror(id="mirror")  # a selected session's window, above its log
                with Horizontal(id="logs"):
                    yield LogPane(id="log-main")
                    yield LogPane(id="log-pinned")
                yield CtxInspector(self.control, id="ctx")
        yield KeysFooter()

    def on_mount(self) -> None:
        self._size_classes()
        for pane in self.query(LogPane):
            pane.empty_hint = self._empty_hint
        self.query_one("#log-pinned", LogPane).display = False
        self.query_one(StepTree).border_title = "steps"
        # called on the event thread: append only
        self.control.subscribe(self._receive, on_resync=self._receive)
        self._follow(self.control.snapshot())
        # What exists now (Textual, the widgets, a node per step, the recipe) lives as long as
        # the app: out of the collector's sight, a full collection during a run of thousands of
        # steps stops every thread (the runner's too) for tens of ms instead of 50-150 ms.
        gc.freeze()
        if self._start is not None:
            self._start()
        self.set_interval(1 / REFRESH_HZ, self._drain)
        self.query_one(StepTree).focus()
        self._show_selected()
        self._refresh_header()

    def _size_classes(self) -> None:
        """The screen's breakpoint classes (app.tcss) for the app's size, before its first
        paint. Textual sets them as the screen handles its first Resize, which comes after that
        paint: every widget was restyled and the whole screen painted again (60-90 ms of the
        event loop on a busy machine) while the first keys waited."""
        screen, (width, height) = self.screen, self.size
        sizes = ((width, self.HORIZONTAL_BREAKPOINTS), (height, self.VERTICAL_BREAKPOINTS))
        classes = {name: False for _, breakpoints in sizes for _, name in breakpoints}
        for size, breakpoints in sizes:
            classes.update(dict.fromkeys(screen._get_breakpoint_classes(size, breakpoints), True))
        # the screen's styles are computed as it is first shown (ScreenResume): not here too
        screen.update_classes(classes, update=False)

    def get_default_screen(self) -> StepsScreen:
        return StepsScreen(id="_default")

    def on_unmount(self) -> None:
        gc.unfreeze()  # collectable again: another app in this process (tests) starts afresh

    def on_resize(self, event: events.Resize) -> None:
        self._fit_tree(event.size.width)

    def _fit_tree(self, screen_width: int) -> None:
        """The tree as wide as its widest row (name, duration, bg mark), within limits.

        At least 30 % of the screen (26 to 48 columns), at most half of it, so that at 80
        columns names are not cut while the log keeps the larger part.
        """
        wanted = self.query_one(StepTree).wanted_width() + TREE_CHROME
        least = min(48, max(26, screen_width * 3 // 10))
        self.query_one("#left").styles.width = max(least, min(wanted, screen_width // 2))

    # -- the event batch ----------------------------------------------------------------------------
    def _receive(self, item: ev.Event | RunState) -> None:
        """On the event thread (the only one that appends): keep ``item`` for the drain; past
        ``INBOX_EVENTS`` undrained, drop them all for a mark. The drain pops meanwhile, from
        the other end: it may take some of them first, which the state it takes then holds,
        or find the inbox empty between the clear and the mark (the mark waits a tick)."""
        inbox = self._inbox
        inbox.append(item)
        if len(inbox) > INBOX_EVENTS:
            inbox.clear()
            inbox.append(_Behind())

    def _follow(self, run: RunState, *, every: bool = False) -> None:
        """Start from this snapshot (as the app subscribes, and on a resync): the counts and
        live steps from it, and every row that is not pending drawn (a pending one is
        already, unless ``every``: a resync's rows were drawn from an older state). What the
        run said that this app has not shown (before it attached, or while it fell behind) is
        shown now: those messages come as no event; the newest few, and how to see the rest
        (a run that said fifty things covered the panes with fifty toasts)."""
        unsaid = [note for note in run.messages if note.seq > self._said]
        if len(unsaid) > MESSAGES_AT_ONCE:
            earlier = counted(len(unsaid) - MESSAGES_AT_ONCE, "earlier message")
            self._say(0, "info", f"{earlier}: orch-tui ctl {run.run_id} events")
            unsaid = unsaid[-MESSAGES_AT_ONCE:]
        for note in unsaid:
            self._say(note.seq, note.level, note.text)
        self._run = run
        self._counts, self._live = {}, set()
        for name, state in run.steps.items():
            self._count(count_key(state), 1)
            if _is_live(state):
                self._live.add(name)
        drawn = [s for s in run.steps.values() if every or s.status != Status.PENDING]
        self.query_one(StepTree).update_steps(drawn, self.clock())
        self._sessions = {}  # what the session steps that ended before made, in their order
        made = [s for s in run.steps.values() if s.session and s.status == Status.SUCCEEDED]
        for state in sorted(made, key=lambda s: s.ended or 0.0):
            self._note_session(state.session)
        self._show_sessions()

    def _show_sessions(self) -> None:
        """The tree's Sessions group as ``_sessions`` says, the tree widened for their rows (a
        tmux session's socket was cut at 80 columns: `r12u_tmx tmux -L …`)."""
        self.query_one(StepTree).set_sessions(list(self._sessions.values()))
        self._fit_tree(self.size.width)

    def _drain(self) -> None:
        if not self.is_running:  # shutting down: the widgets are being removed
            return
        inbox, run = self._inbox, self._run
        samples = []
        run_changed = False
        while True:
            try:
                event = inbox.popleft()
            except IndexError:  # empty: also when ``_receive`` cleared it since it was looked at
                break
            if isinstance(event, _Behind):  # dropped undrained: the run as it is now holds
                event = self.control.snapshot()  # them (the events after it: skipped by seq)
            if isinstance(event, RunState):  # resynced: the events missed are in it
                self._follow(event, every=True)
                run, run_changed = self._run, True
                # what the panes show may have ended meanwhile, its last lines unread
                self._dirty_logs.update(self._live, (p.step for p in self.query(LogPane) if p.step))
                continue
            if event.seq <= run.seq:
                continue  # already in the snapshot the app started from
            if isinstance(event, ev.StepEvent):
                old = run.steps[event.step]
                run.apply(event)
                self._step_changed(event.step, old, event.state)
                if isinstance(event, ev.StepFinished):
                    self._dirty_logs.add(event.step)
                    if event.status == Status.SUCCEEDED and event.state.session is not None:
                        self._note_session(event.state.session)
                        self._show_sessions()
                continue
            run.apply(event)
            if isinstance(event, ev.StepOutput):
                self._dirty_logs.add(event.step)
            elif isinstance(event, ev.CtxChanged):
                self._ctx_dirty = True
            elif isinstance(event, ev.ResourcesSampled):
                samples.append(event)
            elif isinstance(event, ev.RunMessage):
                self._say(event.seq, event.level, event.text)
            elif isinstance(event, RUN_EVENTS):
                run_changed = True
        self._redraw_rows(run_changed)
        for pane in self.query(LogPane):
            state = run.steps.get(pane.step or "")
            if pane.step in self._dirty_logs or (state and state.status == Status.RUNNING):
                pane.poll()
            pane.show_ending(step_ending(state))  # a skip or retry changes it with no output
        self._dirty_logs.clear()
        meter = self.query_one(ResourceMeter)
        for sample in samples:
            meter.add_sample(sample.to_dict())
        if self._ctx_dirty and time.monotonic() - self._ctx_refreshed >= CTX_REFRESH_SECONDS:
            self._ctx_dirty = False
            self._ctx_refreshed = time.monotonic()
            self.query_one(CtxInspector).refresh_keys()
        self._refresh_header()

    def _say(self, seq: int, level: str, text: str) -> None:
        """A message of the run's (its event's ``seq``; 0: the app's own), as a toast, once: a
        snapshot taken as the message was kept may hold it and its event both."""
        if seq:
            if seq <= self._said:
                return
            self._said = seq
        self.notify(
            clean(text),  # it may quote a step's words: no escapes, no markup
            severity="warning" if level != "info" else "information",
            markup=False,
        )

    def _step_changed(self, name: str, old: StepState, new: StepState) -> None:
        """A step's new state in the counts and the live set; its row is due."""
        self._count(count_key(old), -1)
        self._count(count_key(new), 1)
        if _is_live(new):
            self._live.add(name)
        else:
            self._live.discard(name)
        self._changed.add(name)

    def _count(self, status: str, delta: int) -> None:
        self._counts[status] = self._counts.get(status, 0) + delta

    def _redraw_rows(self, run_changed: bool) -> None:
        """Redraw the rows that changed, and the live ones' durations about once a second."""
        if self._live and time.monotonic() - self._durations_drawn >= DURATION_REFRESH_SECONDS:
            self._durations_drawn = time.monotonic()
            self._changed |= self._live
        tree = self.query_one(StepTree)
        if self._changed:
            steps = self._run.steps
            tree.update_steps([steps[name] for name in self._changed], self.clock())
        # the keys offered depend on the selected step's status (and on the run's: closing)
        if run_changed or tree.selected_step in self._changed:
            tree.sync_bindings()
        self._changed.clear()

    def _allowed(self, name: str) -> frozenset[str]:
        """Which of skip/retry/stop/restart apply to the step now, from the app's mirror of the
        run."""
        if self.read_only:
            return frozenset()
        return allowed_actions(self._run.steps[name], self._run)

    def _note_session(self, session: SessionRef) -> None:
        """What a session step that succeeded did: its session joins the tree's Sessions group
        (or, killed, leaves it); the caller redraws the group."""
        key = (session.backend, session.socket, session.name)  # one name on two tmux servers
        if session.action == "kill":
            self._sessions.pop(key, None)
            return
        log = self._sessions.get(key, {}).get("log")  # a send or detach step keeps the log
        if session.action in ("create", "recreate"):
            log = None if session.log is None else Path(session.log)
        self._sessions[key] = {
            "backend": session.backend,
            "name": session.name,
            "socket": session.socket,
            "state": "detached",
            "log": log,
        }

    def _run_state(self) -> tuple[str, str]:
        """The header's words for the run: its state, and what may be done about it."""
        if self._quitting:
            return "stopping", ""
        return run_words(self._run, self._counts, final=self._run.closing or self.read_only)

    def _refresh_header(self) -> None:
        run = self._run
        elapsed = ((run.ended or self.clock()) - run.started) if run.started else 0.0
        run_state, hint = self._run_state()
        self.query_one(RunHeader).show(  # the clock stops at the run's end
            recipe=clean(run.name),
            run_state=run_state,
            hint=hint,
            counts=self._counts,
            total=len(run.steps),
            elapsed=elapsed,
            note=self._read_only_note() if self.read_only else "",
        )

    def _read_only_note(self) -> str:
        """A past run's end, in the header: its exit code, or that its daemon died."""
        run = self._run
        ended = "the daemon is gone" if getattr(self.control, "died", False) else None
        if ended is None and run.exit_code is not None:
            ended = f"exit {run.exit_code}"
        return " · ".join(filter(None, (ended, "read-only")))

    # -- selection and logs ---------------------------------------------------------------------
    def on_step_tree_selected(self, message: StepTree.Selected) -> None:
        """The panes follow the selection once the tree's new cursor row is on screen: a key's
        move is then a frame of two tree rows, not one that waits for the selected step's log to
        be read and the log pane, the mirror and the meter to be repainted (during a big run
        that frame took 30-130 ms where the cursor's took 3-15). Keys that come faster than
        frames (a held Down) load the panes once, for the step the cursor is on by then."""
        if not self._selection_due:
            self._selection_due = True
            self.call_after_refresh(self._follow_selection)

    def _follow_selection(self) -> None:
        self._selection_due = False
        self._show_selected()

    def on_session_mirror_seen(self, message: SessionMirror.Seen) -> None:
        session = message.session
        key = (session.backend, session.socket, session.name)
        self.query_one(StepTree).mark_session(key, message.ended)

    def _show_selected(self) -> None:
        screen = self.screen
        if isinstance(screen, GotoPrompt):  # the panes follow the steps the prompt goes to
            screen = self.screen_stack[0]
        trees = screen.query(StepTree) if self.is_running else None
        if not trees:  # shutting down, or another screen is on top: nothing to show
            return
        tree = trees.first()
        name = tree.selected_step
        data = tree.selected
        pane = self.query_one("#log-main", LogPane)
        session = None
        pane.show_ending(step_ending(self._run.steps.get(name or "")))
        if name is not None:
            pane.show(name, self._log_path(name))
        elif data and data.get("kind") == "session":
            # text typed into a session raises no step event: the pane watches the file itself
            pane.show(f"session {data['name']}", data.get("log"), live=True)
            session = MirroredSession(data["backend"], data["name"], data.get("socket"))
        self.query_one("#mirror", SessionMirror).show_session(session)
        self._show_pinned()
        self.query_one(ResourceMeter).show_step(name)

    def _log_path(self, name: str) -> Path:
        return self.control.run_dir.log(name)

    def _empty_hint(self, step: str | None, path: Path | None) -> str:
        """What an empty log pane says: the log file is missing or empty, and the step is..."""
        if step is None:
            return ""
        state = self._run.steps.get(step)
        if state is None:  # a session's pane
            if path is None:
                return "no log: `log: true` on the session's step keeps one"
            return "waiting for output…"
        if state.status in WAITING:
            return f"{state.status}: no output yet"
        if state.status in ACTIVE:
            return "waiting for output…"
        if state.status == Status.SKIPPED and state.reason:  # --skip, --only, a resume, `s`
            reason = state.reason
            return reason if reason.startswith("skipped") else f"skipped: {reason}"
        return "no output"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Pinning, searching and the ctx toggle act on the steps screen only: hidden elsewhere."""
        if action == "read_only":
            return self.read_only
        if action == "detach":  # not once the run stops: the app waits for its end
            return self.detachable and not self._quitting
        if action == "quit_app":
            return not self._quitting
        if action == "kill_now":
            return self._quitting and not self._killing
        if action in self.SCREEN_ACTIONS and (self._quitting or self.detached):
            return False
        if action in self.MAIN_SCREEN_ACTIONS and self.screen is not self.screen_stack[0]:
            return False
        if action in ("pin", "unpin"):
            return self._selected_is_pinned() == (action == "unpin")
        if action in ("next_match", "previous_match"):  # while the pane they act on searches
            return self._search_pane().check_action(action, parameters)
        return True

    def action_next_failed(self) -> None:
        self.query_one(StepTree).action_next_failed()

    def action_previous_failed(self) -> None:
        self.query_one(StepTree).action_previous_failed()

    def on_key(self, event: events.Key) -> None:
        """A key that comes back unused from a pane of the steps screen while a prompt opened
        by a key typed before it is on top (``g``, then a name, in one burst): the pane had
        the focus as the key was queued. It goes to the prompt (``type_ahead``): keys keep
        their order, and were lost (no binding of the steps screen applies under a prompt)."""
        type_ahead = getattr(self.screen, "type_ahead", None)
        if type_ahead is not None and type_ahead(event):
            event.stop()
            event.prevent_default()

    def action_goto(self) -> None:
        """`g`: go to a step by a part of its name (tui.screens.goto); the focus comes back
        to the pane that had it."""

        def done(text: str | None) -> None:
            if text is not None:
                self._goto = text

        self.push_screen(GotoPrompt(self.query_one(StepTree), self._goto), done)

    def action_read_only(self) -> None:
        self.notify("read-only: this run is over, nothing can change it", severity="warning")

    def action_pin(self) -> None:
        """Pin the selected step's log beside the main pane: `p` on another step pins that one
        instead, `p` on the pinned step unpins it (``action_unpin``: the footer says which)."""
        name = self.query_one(StepTree).selected_step
        if name is None:
            self.notify("select a step to pin its log", severity="warning")
            return
        self._pinned = name
        self.notify(f"pinned {name}: its log stays beside the selected step's", timeout=3)
        self._show_pinned()

    def action_unpin(self) -> None:
        """`p` on the pinned step: its pane goes, the main pane has the room again."""
        if self._pinned is not None:
            self.notify(f"unpinned {self._pinned}", timeout=2)
            self._pinned = None
        self._show_pinned()

    def _show_pinned(self) -> None:
        """The pinned pane never repeats the main one: hidden while its step is selected."""
        pinned = self.query_one("#log-pinned", LogPane)
        self._sync_pin_key()
        if self._pinned is None:
            pinned.display = False
            pinned.show(None, None)
            return
        pinned.show(self._pinned, self._log_path(self._pinned))
        pinned.show_ending(step_ending(self._run.steps.get(self._pinned)))
        pinned.display = self.query_one("#log-main", LogPane).step != self._pinned

    def _sync_pin_key(self) -> None:
        """`p Pin log` or `p Unpin log`: the footer is refreshed only when that changes, not
        at every move of the cursor."""
        on_pinned = self._selected_is_pinned()
        if on_pinned != self._on_pinned:
            self._on_pinned = on_pinned
            self.refresh_bindings()

    def _selected_is_pinned(self) -> bool:
        """Whether `p` unpins: read from the tree's cursor, not from the footer's last refresh,
        which follows the selection a message later: a `p` typed right behind a Down (both in
        the queue before the tree says it moved) acts on the step moved to, not the one left."""
        trees = self.screen.query(StepTree)
        return (
            self._pinned is not None and bool(trees) and trees.first().selected_step == self._pinned
        )

    def _search_pane(self) -> LogPane:
        """The pane `/`, `n`, `N` and `w` act on: the focused log pane, else the selected
        step's."""
        focused = self.focused
        return focused if isinstance(focused, LogPane) else self.query_one("#log-main", LogPane)

    def action_search(self) -> None:
        self._prompt_search(self._search_pane())

    def action_next_match(self) -> None:
        self._search_pane().action_next_match()

    def action_previous_match(self) -> None:
        self._search_pane().action_previous_match()

    def action_toggle_wrap(self) -> None:
        self._search_pane().action_toggle_wrap()

    def on_log_pane_search_requested(self, message: LogPane.SearchRequested) -> None:
        self._prompt_search(message.pane)

    def _prompt_search(self, pane: LogPane) -> None:
        def done(text: str | None) -> None:
            if text is None:
                return
            if not pane.search(text) and text:
                where = "in the log"
                lines, truncated = pane.searched
                if truncated and pane.path is not None:  # past the history a pause loads
                    where = (
                        f"in the log's last {lines:,} lines (all of it: {display_path(pane.path)})"
                    )
                self.notify(f"{text!r} not found {where}", severity="warning", markup=False)

        self.push_screen(SearchPrompt(pane._search or ""), done)

    # -- commands -------------------------------------------------------------------------------
    def on_step_tree_action(self, message: StepTree.Action) -> None:
        data = message.data
        if message.action == "attach":
            if data.get("kind") == "session":
                self.attach(data["backend"], data["name"], data.get("socket"))
            elif data.get("type") == "session":
                self.attach(data["backend"], data["session"], data.get("socket"))
            return
        name = data.get("name")
        if data.get("kind") != "step" or name is None:
            return
        # `k` on a step that takes its grace: the runner's stop, asked again, kills it now
        command = "stop" if message.action == "kill" else message.action
        try:
            reply = self.control.command(command, name)
        except DaemonGone as exc:  # killed: the app leaves once it has seen it go
            self.notify(clean(str(exc)), severity="error", markup=False)
            return
        if not reply.ok:  # the step changed since the key was offered
            self.notify(clean(reply.message), severity="warning", markup=False)
            return
        if message.action in ("retry", "restart"):  # the new start is what to see, even paused
            for pane in self.query(LogPane):
                if pane.step == name:
                    pane.action_follow()
        if message.action == "kill":
            self.notify(f"killing {name} now (SIGKILL)", timeout=3)
            return
        self.notify(f"{message.action}: {name}", timeout=2)

    def attach(self, backend_name: str, session: str, socket: str | None = None) -> None:
        """Hand the terminal to the multiplexer; detaching comes back here."""
        from core.sessions.base import SessionError, get_backend
        from tui.handover import import_libtmux, wait_until_shown

        import_libtmux()
        try:
            backend = get_backend(backend_name, socket=socket)
            if not backend.available():
                raise SessionError(
                    f"{backend_name} is not installed (apt-get install {backend_name})"
                )
            if not backend.exists(session):
                raise SessionError(f"no {backend_name} session named {session!r}")
            argv = backend.attach_argv(session)
        except SessionError as exc:
            self.notify(str(exc), title="cannot attach", severity="error")
            return
        try:
            with self.suspend():
                print(
                    f"\norch-tui: attaching to {session}; {backend.come_back_hint()}\n",
                    flush=True,
                )
                # tmux drops what the terminal has not read yet: the message must be shown first
                wait_until_shown(sys.__stdin__.fileno(), sys.__stdout__.fileno())
                result = subprocess.run(argv, check=False)
        except Exception as exc:  # SuspendNotSupported under a headless driver, OSError
            self.notify(f"cannot attach here: {exc or type(exc).__name__}", severity="error")
            return
        self.refresh(layout=True)
        if result.returncode != 0:
            self.notify(f"{' '.join(argv)} exited with {result.returncode}", severity="warning")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_sessions(self) -> None:
        self.push_screen(SessionsScreen())

    def action_toggle_ctx(self) -> None:
        ctx = self.query_one(CtxInspector)
        ctx.display = not ctx.display

    def _running_steps(self) -> list[str]:
        """The steps quitting would stop: those running, and the services waiting out their
        restart delay (due to start again: q ended the run at once, unasked, when such a
        service was all the run had)."""
        return [
            f"{n} (restarting)" if waiting_to_restart(s) else n
            for n, s in self._run.steps.items()
            if _is_live(s)
        ]

    def action_quit_app(self) -> None:
        if self._quitting or isinstance(self.screen, ConfirmQuit):  # asked already
            return
        if self.read_only:  # a past run: nothing to stop
            self.exit(0)
            return
        running = self._running_steps()
        if not running or self.control.wait(0) is not None:  # nothing runs, or the run is over
            self._begin_shutdown()
            return

        def answered(answer: str | None) -> None:
            if answer == "stop":
                self._begin_shutdown()
            elif answer == "detach":
                self.action_detach()

        self.push_screen(ConfirmQuit(running, detachable=self.detachable), answered)

    def action_detach(self) -> None:
        """Leave the run going (its daemon goes on without a terminal); ``orch-tui attach``
        comes back to it."""
        if self.detachable and not self._quitting:
            self.detached = True
            self.exit(self.DETACHED)

    def action_kill_now(self) -> None:
        """``q`` (Ctrl+C) again while the run stops: its steps are killed at once, whatever
        their turn and grace (``stop-run --force``), as a second Ctrl-C does headless. The
        app showed ``q Quit`` then and did nothing, for as long as a stack's graces took."""
        if not self._quitting or self._killing:
            return
        self._killing = True
        self.refresh_bindings()
        try:
            self.control.command("stop_run", force=True)
        except DaemonGone:
            return  # nothing left to kill: _close_runner exits
        self.notify("killing every step now (SIGKILL)", timeout=3)

    def _begin_shutdown(self) -> None:
        self._quitting = True
        self._refresh_header()
        self.refresh_bindings()  # q kills at once from now on; d is no more
        self._close_runner()

    @work(thread=True, exclusive=True, group="shutdown")
    def _close_runner(self) -> None:
        """Close the run and wait for its end, however long its steps' graces take (``q``
        kills them meanwhile): the app gave up after 60 s, and the command line then said
        ``orch-tui: None; see .../daemon.log``, exit 1, of a run its daemon was still ending."""
        try:
            if self.control.wait(0) is None:
                self.control.command("close")
                self.control.wait()
            code = self.control.wait(0)
        except DaemonGone:  # killed meanwhile: the command line says so as the app exits
            code = None
        self.call_from_thread(self.exit, code if code is not None else 0)

    def interrupt(self) -> None:
        """SIGTERM/SIGHUP to the app: stop everything as Ctrl-C would headless, then exit 130;
        a second one while the run stops kills its steps at once, as headless."""
        if self._quitting:
            self.action_kill_now()
            return
        self._quitting = True
        self.refresh_bindings()
        if isinstance(self.screen, ConfirmQuit):  # its d and y apply no more: the run stops
            self.pop_screen()
        try:
            self.control.command("stop_run", signal=signal.SIGTERM)  # the note says so
        except DaemonGone:
            pass  # nothing left to stop: _close_runner exits
        self._close_runner()

    # -- command palette --------------------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            if command.title == "Keys":  # ours below: the whole key reference
                continue
            if command.title == "Quit":  # Textual's quits at once: ours asks while steps run
                command = SystemCommand(
                    "Quit", "Quit (asks first while steps run)", self.action_quit_app
                )
            yield command
        if self.detachable:
            yield SystemCommand(
                "Detach", "Leave the run going; orch-tui attach comes back", self.action_detach
            )
        tree = self.query_one(StepTree)
        yield SystemCommand("Go to step", "Select a step by a part of its name", self.action_goto)
        name = tree.selected_step
        if name is not None:
            allowed = self._allowed(name)
            if "skip" in allowed:
                yield SystemCommand(f"Skip {name}", "Skip the selected step", tree.action_skip)
            if "retry" in allowed:
                yield SystemCommand(
                    f"Retry {name}", "Run the selected step again", tree.action_retry
                )
            if "restart" in allowed:
                yield SystemCommand(
                    f"Restart {name}",
                    "Stop the running service, start it again",
                    tree.action_restart,
                )
            if "stop" in allowed:
                yield SystemCommand(
                    f"Stop {name}", "Stop the selected running step", tree.action_stop
                )
        if tree.check_action("attach", ()):
            yield SystemCommand(
                "Attach to session", "Hand the terminal to the session", tree.action_attach
            )
        yield SystemCommand(
            "Sessions", "All screen and tmux sessions on this machine", self.action_sessions
        )
        if self._on_pinned:
            yield SystemCommand(
                "Unpin log", "Close the selected step's pinned log", self.action_unpin
            )
        else:
            yield SystemCommand(
                "Pin log", "Pin the selected step's log beside the others", self.action_pin
            )
        yield SystemCommand("Toggle ctx", "Show or hide the ctx inspector", self.action_toggle_ctx)
        yield SystemCommand("Keys", "The key reference", self.action_help)


def make_app(
    control: RunControl,
    *,
    clock: Callable[[], float] = time.time,
    start: Callable[[], None] | None = None,
    detachable: bool = False,
) -> OrchApp:
    """Build the app around a run (tests pass a runner with a fixed clock and sampler)."""
    return OrchApp(control, clock=clock, start=start, detachable=detachable)


def _is_live(state: StepState) -> bool:
    """Running, or a service about to start again: what quitting stops, and a row whose time
    moves (redrawn about once a second: a duration, or what is left of a restart delay)."""
    return state.status in ACTIVE or waiting_to_restart(state)
