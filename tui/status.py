"""How statuses and durations look, shared by every widget (one place to change a colour)."""

from __future__ import annotations

from core.state import Status

STATUS_ICON = {
    Status.PENDING: "○",
    Status.BLOCKED: "⊘",
    Status.RUNNING: "▶",
    Status.READY: "●",
    Status.SUCCEEDED: "✓",
    Status.FAILED: "✗",
    Status.TIMED_OUT: "⏱",
    Status.SKIPPED: "↷",
    Status.CANCELLED: "■",
    Status.STOPPED: "■",
}

STATUS_STYLE = {
    Status.PENDING: "dim",
    Status.BLOCKED: "red dim",
    Status.RUNNING: "bold yellow",
    Status.READY: "bold cyan",
    Status.SUCCEEDED: "green",
    Status.FAILED: "bold red",
    Status.TIMED_OUT: "bold red",
    Status.SKIPPED: "dim",
    Status.CANCELLED: "magenta",
    Status.STOPPED: "cyan",
}


def status_icon(status: Status) -> str:
    return STATUS_ICON.get(status, "?")


def format_duration(seconds: float) -> str:
    """0.4s, 12s, 3m05s, 1h02m: short enough for a tree label."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_bytes_short(n: float | None) -> str:
    """1.4G, 512M, 3.0K: for the meter's narrow column."""
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G"):
        if abs(n) < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit in ("B", "M") and n >= 100 else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"
