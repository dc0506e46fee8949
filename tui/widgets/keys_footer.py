"""The footer: the keys that apply now, rebuilt only when they change.

Textual's Footer removes and mounts a widget per key (each restyled, the footer laid out again)
every time the screen publishes its bindings: at every focus change, screen resume and
``refresh_bindings``, changed or not. As the app starts that is four rebuilds within a few
hundred ms, 15-90 ms of the event loop each on a busy machine, right after the first paint,
where the first keys a user presses waited behind them.
"""

from __future__ import annotations

from typing import Any

from textual.widgets import Footer


class KeysFooter(Footer):
    """A Footer that skips a rebuild which would show what it shows already."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._keys_shown: tuple[Any, ...] | None = None  # what the keys were built from

    async def recompose(self) -> None:
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
