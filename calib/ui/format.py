"""Display formatting: one place for decimals, units, timestamps and status words.

Multipliers and ratios get 4 decimals, percents and vol points 2; a missing
value (None, NaN, a column an old file lacks) is shown as "-".
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, Final

MISSING: Final = "-"

STATUS_LABEL: Final = {"ok": "OK", "degraded": "Degraded", "failed": "Failed"}
# One palette for badges and charts: OK green, Degraded orange, Failed red.
STATUS_COLOUR: Final = {"ok": "#1e8e3e", "degraded": "#e8710a", "failed": "#d93025"}
STATUS_ICON: Final = {"ok": "✓", "degraded": "!", "failed": "⚠"}
DECISION_LABEL: Final = {"applied": "Applied", "skipped": "Skipped"}
DECISION_COLOUR: Final = {"applied": "#1a73e8", "skipped": "#5f6368"}
UNKNOWN_COLOUR: Final = "#80868b"


def as_number(x: Any) -> float | None:
    """A finite float, or None for None, bools, NaN, inf and non-numbers."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt_mult(x: Any) -> str:
    """A multiplier or skew ratio: 4 decimals."""
    v = as_number(x)
    return MISSING if v is None else f"{v:.4f}"


def fmt_pct(x: Any, *, unit: bool = False) -> str:
    """A percent value (already x100): 2 decimals; `unit` appends " %"."""
    v = as_number(x)
    if v is None:
        return MISSING
    return f"{v:.2f} %" if unit else f"{v:.2f}"


def fmt_signed(x: Any, digits: int = 4) -> str:
    """A signed difference, e.g. +0.0123."""
    v = as_number(x)
    return MISSING if v is None else f"{v:+.{digits}f}"


def fmt_int(x: Any) -> str:
    """A count with thousands separators."""
    v = as_number(x)
    return MISSING if v is None else f"{round(v):,}"


def fmt_num(x: Any) -> str:
    """A plain number without trailing zeros (days, z anchors): 14, 0.5, -2."""
    v = as_number(x)
    return MISSING if v is None else f"{v:g}"


def fmt_range(lo: Any, hi: Any) -> str:
    """A DTE range in days, e.g. 3-10."""
    a, b = as_number(lo), as_number(hi)
    return MISSING if a is None or b is None else f"{a:g}–{b:g}"


def to_utc(x: Any) -> datetime | None:
    """A datetime or ISO-8601 string as an aware UTC datetime (naive = UTC)."""
    if x is None:
        return None
    if isinstance(x, str):
        try:
            x = datetime.fromisoformat(x.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(x, datetime):
        return None
    return x.replace(tzinfo=UTC) if x.tzinfo is None else x.astimezone(UTC)


def fmt_ts(x: Any, *, seconds: bool = False) -> str:
    """A timestamp in UTC: 2026-11-21 20:22 (the column header says UTC)."""
    ts = to_utc(x)
    if ts is None:
        return MISSING
    return ts.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def fmt_age(delta: timedelta) -> str:
    """How old a chain is: 35 min, 5.2 h, 13.5 days."""
    minutes = delta.total_seconds() / 60
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h" if minutes < 2880 else f"{minutes / 1440:.1f} days"


def status_label(status: Any) -> str:
    return STATUS_LABEL.get(str(status), MISSING if status is None else str(status).title())


def decision_label(decision: Any) -> str:
    return DECISION_LABEL.get(str(decision), MISSING if decision is None else str(decision).title())


def text(x: Any) -> str:
    """Free text (reasons, ids); missing becomes "-"."""
    return MISSING if x is None or (isinstance(x, str) and not x.strip()) else str(x)
