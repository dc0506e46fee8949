"""orch-tui core: the runner, its event stream and command API. Never imports tui/ or textual."""

__version__ = "0.1.0"
