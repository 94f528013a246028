"""Confidence interval of a fitted multiplier: a bootstrap over whole snapshots and expiries.

Quotes of one snapshot share its RV_7d and move together, and quotes of one
expiry share its IV level for as long as it lives, so neither are independent
draws: each resample redraws whole snapshots and, independently, whole
expiries (a two-way "pigeonhole" bootstrap, Owen 2007); a quote's weight is
the product of its snapshot's and its expiry's counts. Resamples reweight
per-(snapshot, expiry) sums of the fit's closed form, never the quotes, so a
thousand resamples are a few small matrix products.
"""

from __future__ import annotations

import numpy as np

from calib._typing import Extrapolation, FloatArray
from calib.config import DAYS_PER_YEAR
from calib.engine.model import FitInputs, curve_pieces
from calib.numerics.stats import quantiles

CI_LEVEL = 0.90
BOOTSTRAP_RESAMPLES = 500  # the 5 % and 95 % quantiles to ~0.1 of the half-width; 1000 cost 2x the time
BOOTSTRAP_SEED = 16  # fixed: the same quotes always give the same interval, on any engine
MAX_SNAPSHOT_UNITS = 256  # more snapshots than this are merged into contiguous runs (blocks in time)
MAX_EXPIRY_UNITS = 64  # more expiries than this are merged into runs of neighbouring expiries
GRID_STEP = 0.02  # the cell sums are taken at multiplier x (1 -+ GRID_STEP)
_DRAWS_PER_CHUNK = 1 << 21  # resample draws held in memory at once


def resampling_units(snapshot_us: np.ndarray, t_years: FloatArray) -> tuple[np.ndarray, np.ndarray]:
    """Each quote's snapshot unit and expiry unit (both 0-based, in time order).

    The expiry is the snapshot time plus the time to expiry, rounded to the
    minute (no instrument name needed). More than `MAX_SNAPSHOT_UNITS`
    snapshots (`MAX_EXPIRY_UNITS` expiries) are merged into that many
    contiguous runs.
    """
    snap_us = np.asarray(snapshot_us, dtype=np.int64)
    expiry_min = np.round(snap_us / 60e6 + np.asarray(t_years, dtype=np.float64) * DAYS_PER_YEAR * 1440.0)
    if snap_us.size and bool((snap_us[1:] >= snap_us[:-1]).all()):  # the fit samples are in time order
        snaps = np.concatenate(([0], np.cumsum(snap_us[1:] != snap_us[:-1])))
    else:
        snaps = np.unique(snap_us, return_inverse=True)[1].astype(np.int64)
    expiries = np.unique(expiry_min.astype(np.int64), return_inverse=True)[1].astype(np.int64)
    return _merged(snaps, MAX_SNAPSHOT_UNITS), _merged(expiries, MAX_EXPIRY_UNITS)


def _merged(units: np.ndarray, most: int) -> np.ndarray:
    """Units 0..n-1 mapped onto at most `most` contiguous runs (keeps the resample's tables small)."""
    n = int(units.max()) + 1 if units.size else 0
    return units * most // n if n > most else units


def multiplier_interval(
    g: FitInputs,
    units: tuple[np.ndarray, np.ndarray],
    *,
    anchors_z: FloatArray,
    ratios: FloatArray,
    multiplier: float | None,
    level: float = CI_LEVEL,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    extrapolation: Extrapolation = "flat",
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval `(low, high)` around `multiplier`, fitted on `g` with skew `ratios`.

    Parameters
    ----------
    g : the fit's quotes (z at m = 1, RV, market IV, vega weights).
    units : each quote's snapshot unit and expiry unit (`resampling_units`).
    multiplier : the reported estimate; None (nothing fitted) gives ``(None, None)``.
    level : two-sided coverage, 0.90 for the 5 % and 95 % quantiles.

    Notes
    -----
    The fit minimizes ``f(m) = sum v (RV m skew(z1 / m) - IV)^2``; on the curve's
    piece ``c + s z`` a quote's model vol is ``alpha m + beta`` with
    ``alpha = RV c``, ``beta = RV s z1`` (`calib.engine.fit.SortedQuotes`), so
    ``f'(m) = 0`` reads ``m = A(m) / B(m)`` with ``A = sum v alpha (IV - beta)``,
    ``B = sum v alpha^2``, the pieces taken at m. Both sums
    split by (snapshot, expiry) cell, so cell sums ``A_se(m_k), B_se(m_k)`` at
    two multipliers bracketing the estimate are sufficient statistics:
    a resample with snapshot counts ``c`` and expiry counts ``d`` has
    ``A*(m) = sum_se c_s d_e A_se(m)``, and its estimate is the root of
    ``A*(m) / B*(m) - m``, interpolated linearly between the two (the map is
    smooth and contracting; a root outside them is extrapolated). The interval is the bootstrap distribution of
    ``m* / m_hat`` (``m_hat`` the root at unit weights) scaled to `multiplier`,
    so it also fits a multiplier fitted jointly with its skew, conditional on
    that skew (Efron & Tibshirani 1993, ch. 13, percentile interval).
    Resampling whole snapshots and expiries, not quotes: quotes within a
    snapshot share its RV and market moves, and an expiry's IV offset persists
    across the snapshots it lives in (on a flat synthetic harvest a
    snapshot-only bootstrap covered the true multiplier in 1 step of 16).
    """
    snaps, expiries = units
    if multiplier is None or len(g) == 0:
        return None, None
    n_s, n_e = int(snaps.max()) + 1, int(expiries.max()) + 1
    if n_s * n_e < 2:
        return None, None
    grid = multiplier * (1.0 + GRID_STEP * np.array([-1.0, 1.0]))
    cell = snaps * n_e + expiries
    # Cell sums as (snapshot, expiry x grid), A and B side by side: one product per resample chunk.
    sums = np.empty((n_s, n_e, 2, grid.size))
    knots, c, s = curve_pieces(anchors_z, ratios, extrapolation)
    for k, m in enumerate(grid):
        # Model vol RV (c m + s z1) on each quote's piece at m: the objective's stationarity sums.
        piece = np.searchsorted(knots, g.z1 / m, side="right")
        alpha = g.rv * c.take(piece)
        va = g.vega_coin * alpha
        sums[:, :, 0, k] = np.bincount(cell, weights=va * (g.iv - g.rv * s.take(piece) * g.z1),
                                       minlength=n_s * n_e).reshape(n_s, n_e)
        sums[:, :, 1, k] = np.bincount(cell, weights=va * alpha, minlength=n_s * n_e).reshape(n_s, n_e)
    total = sums.sum(axis=(0, 1))
    m_hat = _roots(total[0][None, :], total[1][None, :], grid)[0]
    if not np.isfinite(m_hat) or m_hat <= 0:
        return None, None
    rng = np.random.default_rng(seed)
    flat = sums.reshape(n_s, -1)
    chunk = max(1, _DRAWS_PER_CHUNK // (n_s + n_e))
    roots = []
    for start in range(0, n_resamples, chunk):
        r = min(chunk, n_resamples - start)
        c_s, c_e = _counts(rng, r, n_s), _counts(rng, r, n_e)
        by_e = (c_s @ flat).reshape(r, n_e, 2, grid.size)
        ab = np.einsum("re,rejk->rjk", c_e, by_e)
        roots.append(_roots(ab[:, 0], ab[:, 1], grid))
    ratio = np.concatenate(roots) / m_hat
    ratio = ratio[np.isfinite(ratio)]
    if ratio.size == 0:
        return None, None
    tail = (1.0 - level) / 2.0
    lo, hi = quantiles(ratio, [tail, 1.0 - tail])  # = np.quantile, without its numpy.ma import
    return float(multiplier * lo), float(multiplier * hi)


def _counts(rng: np.random.Generator, r: int, n: int) -> np.ndarray:
    """`r` bootstrap draws of `n` units: how often each unit was drawn, float (r x n)."""
    draws = rng.integers(0, n, size=(r, n))
    counts = np.bincount((draws + (np.arange(r) * n)[:, None]).ravel(), minlength=r * n)
    return counts.reshape(r, n).astype(np.float64)


def _roots(a: np.ndarray, b: np.ndarray, grid: FloatArray) -> FloatArray:
    """Per row, the root of ``a / b - m`` (rows x 2 sums at the two `grid` multipliers), linear in m."""
    with np.errstate(divide="ignore", invalid="ignore"):
        h = a / b - grid[None, :]
        return grid[0] + h[:, 0] * (grid[1] - grid[0]) / (h[:, 0] - h[:, 1])
