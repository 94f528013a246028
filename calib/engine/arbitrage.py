"""Static-arbitrage checks of a vol surface on a grid (pure numpy, no I/O).

A surface is given per listed expiry as total variance ``w = sigma^2 T`` on a
log-moneyness grid ``x = ln(K/F)`` (rows: expiries in increasing T; NaN pads a
row's unused points). Two checks:

* butterfly: undiscounted call prices in forward units, ``c(k) = N(d1) - k N(d2)``,
  must be non-increasing in strike and convex (no point above the chord of its
  neighbours), i.e. Durrleman's ``g(k) >= 0`` discretised on the grid;
* calendar: total variance must not decrease in T at fixed log-moneyness
  between consecutive listed expiries.

A violation counts only beyond `PRICE_TOL` (forward units; 1 % of Deribit's
0.0001 coin tick, far above rounding) or `VARIANCE_TOL`: a real butterfly
or calendar spread cannot be traded for less. The grid is the caller's: the
checks see what can be traded between its strikes, so a kink in the smile
breaks convexity only when it is steep against the grid spacing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from calib._typing import FloatArray
from calib.numerics.normal import norm_cdf

PRICE_TOL = 1e-6  # forward units: a hundredth of the 0.0001 coin tick
VARIANCE_TOL = 1e-7  # total variance (vol^2 x years): 0.01 vol point at 30 % and 7 days is ~1.2e-5


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    kind: str  # "butterfly_convexity", "butterfly_monotonic" or "calendar"
    expiry_index: int  # row of the grid (calendar: the shorter expiry of the pair)
    x: float  # log-moneyness ln(K/F) of the offending point
    size: float  # how far beyond the tolerance: coin per forward (butterfly) or total variance (calendar)


@dataclass(frozen=True, slots=True, kw_only=True)
class ArbitrageCheck:
    """Counts of violations on a grid, the first (by expiry, then strike) and the worst (largest size)."""

    checked_points: int
    butterfly_violations: int
    calendar_violations: int
    first: Violation | None = None
    worst: Violation | None = None
    worst_butterfly: Violation | None = None
    worst_calendar: Violation | None = None

    @property
    def violations(self) -> int:
        return self.butterfly_violations + self.calendar_violations


def call_prices(x: FloatArray, w: FloatArray) -> FloatArray:
    """Undiscounted Black-76 call in forward units at log-moneyness `x` and total variance `w`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.sqrt(w)
        d1 = -x / v + 0.5 * v
        c = norm_cdf(d1) - np.exp(x) * norm_cdf(d1 - v)
    return np.where(v > 0, c, np.maximum(1.0 - np.exp(x), 0.0))


def butterfly_sizes(x: FloatArray, w: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per grid point, how far the call curve breaks convexity and monotonicity (<= 0: no arbitrage).

    Returns ``(convexity, monotonic)`` of shape (E, G): convexity at interior
    points is the call price above the chord of its two neighbours; monotonic
    at points 1.. is the rise of the call price from the previous strike.
    NaN where a point or a neighbour is missing.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    k = np.exp(x)
    c = call_prices(x, w)
    conv = np.full(c.shape, np.nan)
    mono = np.full(c.shape, np.nan)
    if c.shape[1] >= 2:
        mono[:, 1:] = c[:, 1:] - c[:, :-1]
    if c.shape[1] >= 3:
        k0, k1, k2 = k[:, :-2], k[:, 1:-1], k[:, 2:]
        with np.errstate(divide="ignore", invalid="ignore"):
            chord = ((k2 - k1) * c[:, :-2] + (k1 - k0) * c[:, 2:]) / (k2 - k0)
        conv[:, 1:-1] = c[:, 1:-1] - chord
    return conv, mono


def check_grid(x: FloatArray, w: FloatArray, w_next: FloatArray | None = None) -> ArbitrageCheck:
    """Butterfly checks on every row of (`x`, `w`), calendar checks against `w_next`.

    `x`, `w`: (E, G), each row one expiry in increasing T, strikes increasing
    along the row (NaN pads). `w_next`: (E - 1, G), the total variance of
    expiry i + 1 at row i's log-moneyness (None: no calendar check).
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    valid = np.isfinite(x) & np.isfinite(w)
    conv, mono = butterfly_sizes(x, w)
    conv_bad = np.nan_to_num(conv, nan=-np.inf) > PRICE_TOL
    mono_bad = np.nan_to_num(mono, nan=-np.inf) > PRICE_TOL
    found: list[tuple[str, np.ndarray, FloatArray]] = [("butterfly_convexity", conv_bad, conv),
                                                      ("butterfly_monotonic", mono_bad, mono)]
    n_cal = 0
    if w_next is not None and w.shape[0] >= 2:
        drop = w[:-1] - np.atleast_2d(np.asarray(w_next, dtype=np.float64))
        cal_bad = np.nan_to_num(drop, nan=-np.inf) > VARIANCE_TOL
        n_cal = int(np.count_nonzero(cal_bad))
        found.append(("calendar", cal_bad, drop))
    butterfly_bad = conv_bad | mono_bad  # one point is one violation, whichever way it breaks
    first = worst = worst_b = worst_c = None
    for kind, bad, size in found:
        if not bad.any():
            continue
        rows, cols = np.nonzero(bad)  # row-major: by expiry, then strike
        j = int(np.argmax(size[rows, cols]))
        v_worst = Violation(kind=kind, expiry_index=int(rows[j]), x=float(x[rows[j], cols[j]]),
                            size=float(size[rows[j], cols[j]]))
        v_first = Violation(kind=kind, expiry_index=int(rows[0]), x=float(x[rows[0], cols[0]]),
                            size=float(size[rows[0], cols[0]]))
        if kind == "calendar":
            worst_c = v_worst
        elif worst_b is None or v_worst.size > worst_b.size:
            worst_b = v_worst
        if first is None or (v_first.expiry_index, v_first.x) < (first.expiry_index, first.x):
            first = v_first
    # Sizes of the two kinds are in different units: the worst is the butterfly one when there is one.
    worst = worst_b or worst_c
    return ArbitrageCheck(checked_points=int(np.count_nonzero(valid)),
                          butterfly_violations=int(np.count_nonzero(butterfly_bad)), calendar_violations=n_cal,
                          first=first, worst=worst, worst_butterfly=worst_b, worst_calendar=worst_c)


def interp_rows(x_at: FloatArray, x: FloatArray, w: FloatArray) -> FloatArray:
    """Row i of `w` (on row i of `x`, NaN padded) linearly interpolated at row i of `x_at` (NaN outside).

    A loop over expiries (a dozen rows), not over points.
    """
    out = np.full(np.shape(x_at), np.nan)
    for i in range(len(out)):
        ok = np.isfinite(x[i]) & np.isfinite(w[i])
        if np.count_nonzero(ok) >= 2:
            out[i] = np.interp(x_at[i], x[i][ok], w[i][ok], left=np.nan, right=np.nan)
    return out


def violation_dict(v: Violation | None, t_years: FloatArray, as_of_us: int | None) -> dict[str, Any] | None:
    """A violation as JSON: kind, expiry (date, DTE), strike as K/F and ln(K/F), size."""
    if v is None:
        return None
    t = float(t_years[v.expiry_index])
    out: dict[str, Any] = {"kind": v.kind, "expiry": expiry_label(t, as_of_us), "dte_days": t * 365.0,
                           "strike_rel": float(np.exp(v.x)), "log_moneyness": v.x, "size": v.size}
    if v.kind == "calendar" and v.expiry_index + 1 < len(t_years):
        t2 = float(t_years[v.expiry_index + 1])
        out["next_expiry"] = expiry_label(t2, as_of_us)
        out["next_dte_days"] = t2 * 365.0
    return out


def expiry_label(t_years: float, as_of_us: int | None) -> str:
    """The expiry's date (as-of + T, rounded to the hour), or its DTE when the as-of time is unknown."""
    if as_of_us is None:
        return f"{t_years * 365.0:.1f}d"
    at = datetime.fromtimestamp(as_of_us / 1e6, UTC) + timedelta(days=t_years * 365.0)
    return (at + timedelta(minutes=30)).replace(minute=0, second=0, microsecond=0).strftime("%Y-%m-%d %H:%MZ")


def check_dict(check: ArbitrageCheck, t_years: FloatArray, as_of_us: int | None) -> dict[str, Any]:
    """`arbitrage` JSON of one surface."""
    return {"checked_points": check.checked_points, "butterfly_violations": check.butterfly_violations,
            "calendar_violations": check.calendar_violations,
            "worst": violation_dict(check.worst, t_years, as_of_us),
            "first": violation_dict(check.first, t_years, as_of_us),
            "worst_calendar": violation_dict(check.worst_calendar, t_years, as_of_us)}


def describe(v: dict[str, Any]) -> str:
    """One phrase naming a violation's expiry and strike (for a run's reason)."""
    what = "calendar" if v["kind"] == "calendar" else "butterfly"
    where = f"expiry {v['expiry']} ({v['dte_days']:.1f} d), K/F {v['strike_rel']:.4f}"
    if v["kind"] == "calendar" and v.get("next_expiry"):
        where += f" vs {v['next_expiry']}"
    return f"{what} arbitrage at {where}"
