"""What a screen or tmux session shows now: its window, mirrored live above the session's log.

Selecting a session in the step tree shows this pane on top and the session's log under it (the
log is the scrollback), so every session can be watched without attaching; `a` attaches to type.

Twice a second, only while the pane is shown and its screen is the one on top, a worker thread
asks the multiplexer for a copy of the window (tmux ``capture-pane -e``, colours kept; screen
``hardcopy``, plain text). Never on the event loop: a server that hangs would freeze the app;
one capture at a time, and a client that does not answer is killed at the backend's timeout.
The pane repaints only when the copy changed. A session that has ended says so and is no longer
asked (selecting it again asks once more).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from rich.segment import Segment
from rich.text import Text
from textual import work
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer
from textual.worker import Worker, WorkerState

from core.text import clean
from tui.widgets._strips import note_strip

POLL_SECONDS = 0.5
_GROUP = "session-mirror"


@dataclass(frozen=True)
class MirroredSession:
    """The session a mirror shows: its backend ("screen" or "tmux"), name and tmux socket."""

    backend: str
    name: str
    socket: str | None = None


@dataclass(frozen=True)
class Capture:
    """One look at the session, made in the worker thread.

    ``screen``: the copy as the multiplexer gave it (None when it failed); ``lines``: it
    cleaned and parsed, or None when it is the copy the pane already shows. ``error``: why
    there is no copy; ``ended``: because the session no longer exists.
    """

    session: MirroredSession
    screen: str | None = None
    lines: list[Text] | None = None
    error: str | None = None
    ended: bool = False


def take_capture(session: MirroredSession, previous: str | None) -> Capture:
    """Copy the session's window now (blocking: run it in a worker thread)."""
    from core.sessions import SessionError, get_backend

    try:
        backend = get_backend(session.backend, socket=session.socket)
        screen = backend.capture(session.name)
    except SessionError as exc:
        return Capture(session, error=str(exc), ended=_gone(session))
    if screen == previous:
        return Capture(session, screen)
    # colour codes kept for Text.from_ansi, every other escape sequence and control removed
    return Capture(session, screen, Text.from_ansi(clean(screen, keep_sgr=True)).split("\n"))


def _gone(session: MirroredSession) -> bool:
    """True when the session is known not to exist (not when the multiplexer cannot say)."""
    from core.sessions import SessionError, get_backend

    try:
        return not get_backend(session.backend, socket=session.socket).exists(session.name)
    except SessionError:
        return False


class SessionMirror(ScrollView, can_focus=True):
    """The window of one session, live. ``show_session`` picks it (None hides the pane).

    As tall as the window's text, at most half the column; the bottom rows (where the cursor
    usually is) stay in view when it is taller, unless the user scrolled up.
    """

    class Seen(Message):
        """What the pane found of its session: there (a copy came) or ended. Posted once a
        selection, and when the session ends: the tree marks the session's row."""

        def __init__(self, session: MirroredSession, ended: bool) -> None:
            super().__init__()
            self.session = session
            self.ended = ended

    DEFAULT_CSS = """
    SessionMirror {
        display: none;
        height: auto;
        max-height: 50%;
        border: round $primary 50%;
        border-subtitle-color: $text-muted;
        scrollbar-size-vertical: 1;
    }
    SessionMirror:focus {
        border: round $accent;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.session: MirroredSession | None = None
        self.captures = 0  # captures started: a pane that is not shown starts none
        self._lines: list[Text] = []
        self._screen: str | None = None  # the copy shown, to skip repainting an unchanged one
        self._note = ""  # the dim line shown while there is no copy
        self._problem = ""  # why the last capture failed, in the subtitle
        self._ended = False
        #: the bottom rows kept in view: off while the user has scrolled up. Kept as a flag, not
        #: read off the scroll position, since a resize moves the bottom without scrolling
        self._follow = True
        self._busy = False  # a capture is under way
        self._told = False  # Seen posted for this selection's first copy
        self._strips: dict[int, Strip] = {}
        self._timer: Timer | None = None
        self._polling = False

    def on_mount(self) -> None:
        self._timer = self.set_interval(POLL_SECONDS, self._poll, pause=not self._polling)

    @property
    def lines(self) -> list[Text]:
        """The window's rows as last copied (blank rows under the text left out)."""
        return self._lines

    @property
    def note(self) -> str:
        """What the pane says instead of a copy: waiting for the first one, or ended."""
        return self._note

    @property
    def polling(self) -> bool:
        """True while the pane asks the multiplexer for copies."""
        return self._polling

    # -- what to show ---------------------------------------------------------------------------
    def show_session(self, session: MirroredSession | None) -> None:
        """Mirror ``session`` from now on (a first copy at once); None hides the pane and stops
        asking. The same session again asks again, even if it had ended."""
        self.display = session is not None
        if session != self.session:
            self.session, self._screen, self._problem = session, None, ""
            self._follow = True
            self._set_lines([], "copying the session's window…" if session else "")
        self._ended = self._told = False
        self._update_border()
        self._set_polling(session is not None)
        self._poll()

    def _set_polling(self, on: bool) -> None:
        self._polling = on
        if self._timer is None:
            return
        if on:
            self._timer.resume()
        else:
            self._timer.pause()

    def _poll(self) -> None:
        if not self._polling or self._busy or self.app.screen is not self.screen:
            return
        self._busy = True
        self.captures += 1
        self._capture(self.session, self._screen)

    @work(thread=True, group=_GROUP, exit_on_error=False)
    def _capture(self, session: MirroredSession, previous: str | None) -> Capture:
        return take_capture(session, previous)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group != _GROUP or not worker.is_finished:
            return
        self._busy = False
        if self.session is None:
            return
        if event.state == WorkerState.SUCCESS:
            capture = worker.result
        else:  # a bug, not the session: say it, keep asking
            capture = Capture(self.session, error=f"capture failed: {worker.error!r}")
        if capture.session != self.session:
            self._poll()  # another session was selected meanwhile: its first copy now
            return
        self._apply(capture)

    def _apply(self, capture: Capture) -> None:
        if capture.ended:
            self._ended = True
            self._set_polling(False)
            self._screen, self._problem = None, ""
            self._set_lines([], f"session {clean(capture.session.name)} has ended")
            self.post_message(self.Seen(capture.session, ended=True))
        elif capture.error is not None:
            self._problem = clean(capture.error)
        else:
            if not self._told:
                self._told = True
                self.post_message(self.Seen(capture.session, ended=False))
            self._problem = ""
            if capture.lines is not None:
                self._screen = capture.screen
                self._set_lines(capture.lines, "")
        self._update_border()

    def _set_lines(self, lines: list[Text], note: str) -> None:
        resized = len(lines) != len(self._lines)
        self._lines, self._note = lines, note
        self._strips.clear()
        width = max((line.cell_len for line in lines), default=cell_len(note))
        self.virtual_size = Size(width, max(1, len(lines)))
        self.refresh(layout=resized)
        self._keep_bottom()

    def _keep_bottom(self) -> None:
        if self._follow:
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        """The user scrolling up stops keeping the bottom in view; scrolling back to it
        resumes."""
        super().watch_scroll_y(old_value, new_value)
        self._follow = new_value >= self.max_scroll_y

    def on_resize(self) -> None:
        """A terminal made smaller cuts the view from below: the bottom rows come back into
        it (the window's newest text), or the pane shows old rows as the window now."""
        self._keep_bottom()

    def _update_border(self) -> None:
        session = self.session
        if session is None:
            return
        self.border_title = Text.assemble(
            (clean(session.name), "bold"), (f" {session.backend} · the window now", "dim")
        )
        if self._ended:
            self.border_subtitle = "ended"
        elif self._problem:
            self.border_subtitle = self._problem
        else:
            self.border_subtitle = f"live, every {POLL_SECONDS:g} s · a attaches"

    # -- rendering ------------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        style = self.rich_style
        if index >= len(self._lines):
            if index == 0 and self._note:
                return note_strip(self._note, width, style)
            return Strip.blank(width, style)
        strip = self._strips.get(index)
        if strip is None:
            line = self._lines[index]
            segments = Segment.apply_style(line.render(self.app.console), style)
            strip = self._strips[index] = Strip(segments, line.cell_len)
        return strip.crop_extend(scroll_x, scroll_x + width, style)
