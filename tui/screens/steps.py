"""The app's own screen (the step tree, the logs, the ctx): Textual's default screen, without
the layouts a Resize of the size it already has would cost.

Textual hands the screen every Resize the terminal sends, including those of the size it has:
two right after the first paint (the app's own at start and the driver's), one on each tmux
client's attach. Each was a full layout and repaint of the screen (10-40 ms with a big tree)
while the user's first key waited behind them. Only a new size needs a new layout. The one
time a whole repaint at the same size is needed, back from a session the app handed the
terminal to, the app asks for it itself (``OrchApp.attach``).
"""

from __future__ import annotations

from textual import events
from textual.screen import Screen


class StepsScreen(Screen[None]):
    async def _on_resize(self, event: events.Resize) -> None:
        if event.size == self._compositor.size:
            event.prevent_default()  # laid out at this size already: Screen's handler not run
            event.stop()
