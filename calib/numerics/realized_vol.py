"""Trailing realized volatility from an index price series, with no look-ahead."""

from __future__ import annotations

import numpy as np

from calib._typing import FloatArray

SECONDS_PER_YEAR = 365.0 * 86400.0


def trailing_realized_vol(
    ts_seconds: FloatArray,
    index_usd: FloatArray,
    *,
    window_seconds: float = 7 * 86400.0,
    min_span_seconds: float = 86400.0,
    min_returns: int = 12,
) -> tuple[FloatArray, FloatArray]:
    """Annualized trailing realized volatility at every observation.

    Parameters
    ----------
    ts_seconds : strictly increasing observation times, seconds (UTC epoch).
    index_usd : index price at those times, USD.
    window_seconds : trailing window length (7 days for ``RV_7d``).
    min_span_seconds : shortest history that yields a value; less gives NaN.
    min_returns : fewest returns in the window that yield a value (one weekly
        return is not a volatility estimate); fewer gives NaN.

    Returns
    -------
    rv : annualized realized vol as a fraction (NaN where history is too short).
    span_seconds : the history actually used at each point (< window while warming up).

    Notes
    -----
    ``RV(t_j) = sqrt(sum r_i^2 / span_years)`` over the log returns
    ``r_i = ln(S_i / S_{i-1})`` that end inside ``[t_j - W, t_j]`` and start at
    or after ``t_j - W``; ``span`` is the time those returns cover. Dividing by
    the covered span (not by W) keeps the estimate unbiased across harvest
    gaps: a return over a gap carries the gap's variance. Years are 365 days.
    Computed with cumulative sums and ``searchsorted``: O(n log n), no loop.
    """
    ts = np.asarray(ts_seconds, dtype=np.float64)
    px = np.asarray(index_usd, dtype=np.float64)
    n = ts.size
    if n == 0:
        return np.empty(0), np.empty(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.diff(np.log(px))
    r = np.where(np.isfinite(r), r, 0.0)
    cum = np.concatenate(([0.0, 0.0], np.cumsum(r * r)))  # cum[j+1] = sum of r_1..r_j
    first = np.searchsorted(ts, ts - window_seconds, side="left")  # earliest point in window
    j = np.arange(n)
    sum_sq = cum[j + 1] - cum[first + 1]
    span = ts - ts[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        rv = np.sqrt(sum_sq / (span / SECONDS_PER_YEAR))
    n_returns = j - first
    rv = np.where((span >= min_span_seconds) & (n_returns >= min_returns), rv, np.nan)
    return rv, span
