"""The headless front end: what ``orch-tui RECIPE --no-ui`` prints (reporter.py), the echo of
the steps' output (echo.py), the final summary (summary.py, table.py), the non-blocking writer
and plain printer (terminal.py), and, on a terminal only, Rich's live view (live.py)."""

from tui.headless.reporter import HeadlessReporter

__all__ = ["HeadlessReporter"]
