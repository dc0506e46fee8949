"""The footer: the keys that apply now, rebuilt only when they change, and every one whole.

Textual's Footer removes and mounts a widget per key (each restyled, the footer laid out again)
every time the screen publishes its bindings: at every focus change, screen resume and
``refresh_bindings``, changed or not. As the app starts that is four rebuilds within a few
hundred ms, 15-90 ms of the event loop each on a busy machine, right after the first paint,
where the first keys a user presses waited behind them.

Textual's footer also cuts whatever does not fit: at 80 columns a failed session step's keys
ended in ``p Pin log S S▏^p palette``. Here narrow terminals get the compact drawing.
"""

from __future__ import annotations

from typing import Any

from textual import events
from textual.widgets import Footer

#: Under this many columns the keys are drawn compact (no padding around each) and the command
#: palette's key gives them its room (ctrl+p still opens it; the help lists it). The most keys
#: the steps screen offers at once (the log pane's end, /, n and w, or a failed session step's s,
#: r and a; then q, d, ?, p and S) take 99 columns drawn in full, 77 compact.
COMPACT_BELOW = 100


class KeysFooter(Footer):
    """A Footer that skips a rebuild which would show what it shows already."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._keys_shown: tuple[Any, ...] | None = None  # what the keys were built from

    def on_mount(self) -> None:
        self._fit(self.app.size.width)  # before the keys are first built: not built twice

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width)

    def _fit(self, width: int) -> None:
        """Compact, and without the palette's key, under ``COMPACT_BELOW`` columns."""
        narrow = width < COMPACT_BELOW
        self.compact = narrow  # the keys follow it (data_bind), no rebuild
        if self.show_command_palette == narrow:
            self.show_command_palette = not narrow
            if self._keys_shown is not None:  # built already: once more, with or without it
                self.call_after_refresh(self.recompose)

    async def recompose(self) -> None:
        if not self.is_attached:  # a rebuild asked for just before its screen was popped
            return
        shown = self._shown_keys()
        if shown == self._keys_shown:
            return
        self._keys_shown = shown
        await super().recompose()

    def _shown_keys(self) -> tuple[Any, ...]:
        """Everything ``Footer.compose`` reads: each binding of the screen with whether it is
        enabled, its tooltip and the key as displayed (the keymap may change it); the command
        palette's key."""
        app = self.app
        return (
            self.show_command_palette and app.ENABLE_COMMAND_PALETTE,
            tuple(
                (binding, enabled, tooltip, app.get_key_display(binding))
                for _, binding, enabled, tooltip in self.screen.active_bindings.values()
            ),
        )
