"""Times as the dashboard meets them: epoch seconds in the ctx, ISO dates in the ctx or from the
axis, local wall time on the axis.

plotly's date axis has no time zone: it shows a number of milliseconds as that UTC time. To show
the user's local wall time, x goes out shifted by the local UTC offset (:func:`axis_ms`), and
what the axis sends back (a zoom range) is shifted back (:func:`axis_to_epoch`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any


def iso_to_epoch(text: str, *, as_utc: bool) -> float | None:
    """An ISO 8601 date, or date and time, as epoch seconds; None when it is not one.

    Without an offset in the text it is local time (a person's timestamp in a ctx row), or UTC
    with ``as_utc`` (the axis's own text, see the module's docstring).
    """
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if as_utc and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):  # outside what the platform's time can hold
        return None


def axis_ms(epoch: Any, tz_offset_s: int) -> Any:
    """Epoch seconds (a number or a numpy array) as the date axis's milliseconds of local time."""
    return epoch * 1000.0 + tz_offset_s * 1000.0


def axis_to_epoch(value: Any, tz_offset_s: int) -> float | None:
    """A date-axis value from plotly (``"2024-06-10 12:34:56.789"`` or milliseconds) as epoch
    seconds, undoing :func:`axis_ms`."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        ms = float(value)
    elif isinstance(value, str):
        shown = iso_to_epoch(value, as_utc=True)
        if shown is None:
            return None
        ms = shown * 1000.0
    else:
        return None
    if not math.isfinite(ms):
        return None
    return ms / 1000.0 - tz_offset_s


def format_time(epoch: float | None) -> str:
    """Epoch seconds as local ``YYYY-MM-DD HH:MM:SS.mmm`` for the status line; ``-`` for none."""
    if epoch is None or not math.isfinite(epoch):
        return "-"
    try:
        return datetime.fromtimestamp(epoch).isoformat(sep=" ", timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return f"{epoch:g}"
