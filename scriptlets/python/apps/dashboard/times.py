"""Times as the dashboard meets them: epoch seconds in the ctx, ISO dates in the ctx or from the
axis, local wall time on the axis.

plotly's date axis has no time zone: it shows a number of milliseconds as that UTC time. To show
the user's local wall time, x goes out shifted by the local UTC offset (:func:`axis_ms`), and
what the axis sends back (a zoom range) is shifted back (:func:`axis_to_epoch`).
"""

from __future__ import annotations

import calendar
import math
import re
from datetime import datetime
from typing import Any

_ISO_RE = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?\s*$"
)


def iso_to_epoch(text: str, *, as_utc: bool) -> float | None:
    """``YYYY-MM-DD[ HH[:MM[:SS[.f]]]]`` to epoch seconds (local time unless ``as_utc``)."""
    m = _ISO_RE.match(text)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(g) if g else 0 for g in m.groups()[:6])
    frac = float("0." + m.group(7)) if m.group(7) else 0.0
    try:
        if as_utc:
            return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) + frac
        return datetime(y, mo, d, h, mi, s).timestamp() + frac
    except (ValueError, OverflowError):
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
