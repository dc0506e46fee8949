"""The app's widgets, one per module."""

from tui.widgets.ctx_inspector import CtxInspector
from tui.widgets.keys_footer import KeysFooter
from tui.widgets.log_pane import LogPane
from tui.widgets.resource_meter import ResourceMeter
from tui.widgets.run_header import RunHeader
from tui.widgets.session_mirror import SessionMirror
from tui.widgets.step_tree import StepTree

__all__ = [
    "CtxInspector",
    "KeysFooter",
    "LogPane",
    "ResourceMeter",
    "RunHeader",
    "SessionMirror",
    "StepTree",
]
