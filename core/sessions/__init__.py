"""Multiplexer sessions (GNU screen, tmux) for `type: session` steps and `orch-tui sessions`.

backend = get_backend("screen")          # or get_backend("tmux", socket="work")
backend.create("web", log_path=Path("logs/web.log"), env={"ORCH_RUN_ID": run_id})
backend.send("web", "python -m http.server")
argv = backend.attach_argv("web")         # exec it with the terminal handed over
"""

from core.sessions.base import (
    RUN_ID_ENV,
    SessionBackend,
    SessionError,
    SessionInfo,
    get_backend,
    list_sessions,
    validate_session_name,
)
from core.sessions.step import run_session_step

BACKENDS = ("screen", "tmux")

__all__ = [
    "BACKENDS",
    "RUN_ID_ENV",
    "SessionBackend",
    "SessionError",
    "SessionInfo",
    "get_backend",
    "list_sessions",
    "run_session_step",
    "validate_session_name",
]
