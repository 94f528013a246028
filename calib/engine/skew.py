"""Skew fit: the anchor ratios the market implies, against the trader's current ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from calib._typing import Extrapolation, FloatArray
from calib.engine.model import FitInputs, ModelInputs, QuoteArrays, as_fit_inputs, skew_ratio

SKEW_BLOCK = 1 << 16  # quotes per block of the full skew fit's sums
MIN_ANCHOR_WEIGHT_SHARE = 1e-4  # below this share of total weight an anchor keeps its current ratio


@dataclass(frozen=True, slots=True, kw_only=True)
class SkewFit:
    anchors: tuple[float, ...]
    current: tuple[float, ...]
    recommended: tuple[float, ...]
    n_per_anchor: tuple[int, ...]
    misfit: float | None  # RMS of (recommended - current) over anchors with data
    max_abs_diff: float | None
    largest_diff_anchor: float | None
    smile: dict[str, list[Any]]
    extrapolation: str = "flat"
    # Quotes beyond the outer anchors at the recommended multiplier (`wings_summary`): shares and errors.
    beyond_anchors: dict[str, Any] | None = None
    # An anchor grid covering the data (`calib.engine.joint_fit.suggest_anchors`) and its joint fit.
    suggested_anchors_z: tuple[float, ...] | None = None
    suggested_anchors_ratios: tuple[float, ...] | None = None
    suggested_iv_multiplier: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "anchors": list(self.anchors),
            "current": list(self.current),
            "recommended": list(self.recommended),
            "n_per_anchor": list(self.n_per_anchor),
            "misfit": self.misfit,
            "max_abs_diff": self.max_abs_diff,
            "largest_diff_anchor": self.largest_diff_anchor,
            "smile": self.smile,
            "extrapolation": self.extrapolation,
            "beyond_anchors": self.beyond_anchors,
            "suggested_anchors_z": list(self.suggested_anchors_z) if self.suggested_anchors_z else None,
            "suggested_anchors_ratios": list(self.suggested_anchors_ratios) if self.suggested_anchors_ratios else None,
            "suggested_iv_multiplier": self.suggested_iv_multiplier,
        }


def _hat_weights(z: FloatArray, anchors: FloatArray,
                 extrapolation: Extrapolation = "flat") -> tuple[np.ndarray, FloatArray]:
    """Linear-interpolation weights: each z splits between its two neighbouring anchors.

    `left` counts the inner anchors at or below the clipped z (a compare per
    inner anchor: faster than a binary search for a handful of anchors).
    With "linear" extrapolation z is not clipped: beyond an outer anchor the
    outer segment's weights continue (``frac`` below 0 or above 1).
    """
    zc = z if extrapolation == "linear" else np.clip(z, anchors[0], anchors[-1])
    left = np.zeros(zc.shape, dtype=np.intp)
    for a in anchors[1:-1]:
        left += zc >= a
    frac = zc - anchors.take(left)
    frac *= (1.0 / np.diff(anchors)).take(left)
    return left, frac


def nearest_anchor_counts(left: np.ndarray, frac: FloatArray, size: int) -> np.ndarray:
    """Quotes per nearest anchor, from the hat weights."""
    return np.bincount(left + (frac >= 0.5), minlength=size).astype(np.int64)


def fit_skew(
    q: QuoteArrays | ModelInputs | FitInputs, multiplier: float, *, anchors_z: FloatArray, current: FloatArray,
    snapshot_us: np.ndarray | None = None, smile_bin: float = 0.25,
    smile_from: tuple[ModelInputs | FitInputs, np.ndarray] | None = None, extrapolation: Extrapolation = "flat",
) -> SkewFit:
    """Weighted least squares of the piecewise-linear ratio curve on observed IV / (RV m).

    Notes
    -----
    The observed ratio of a quote is ``IV / (RV_7d m)`` at ``z(m)``. The curve
    is linear in its anchor values (hat basis), so the fit is a small
    ``A x A`` normal-equation solve built from weighted sums; the ATM anchor
    is held at 1.0 (the multiplier carries the level). Weights are vegas.
    Anchors with (almost) no weight keep their current ratio. With
    `ModelInputs` or `FitInputs`, `snapshot_us` gives the quotes' snapshots (for the smile).
    `smile_from` (quotes, snapshots) draws the smile from other quotes, e.g. all of
    the newest snapshot when `q` is a sample.
    """
    a = anchors_z.size
    atm = int(np.flatnonzero(anchors_z == 0.0)[0])
    if len(q) == 0:
        return SkewFit(anchors=tuple(anchors_z.tolist()), current=tuple(current.tolist()),
                       recommended=tuple(current.tolist()), n_per_anchor=(0,) * a, misfit=None,
                       max_abs_diff=None, largest_diff_anchor=None, smile=_empty_smile(),
                       extrapolation=extrapolation)
    mi = as_fit_inputs(q)
    snaps = q.snapshot_us if isinstance(q, QuoteArrays) else snapshot_us
    if snaps is None:
        raise ValueError("fit_skew: ModelInputs need `snapshot_us`")
    # The normal-equation sums block by block: temporaries stay small on ~400 k quotes.
    totals: list[Any] = [np.zeros(a), np.zeros(a - 1), np.zeros(a), np.zeros(a), np.zeros(a, np.int64)]
    for i in range(0, len(mi), SKEW_BLOCK):
        b = slice(i, i + SKEW_BLOCK)
        parts = skew_sums(mi.z1[b] / multiplier, mi.iv[b] / (mi.rv[b] * multiplier), mi.vega_coin[b], anchors_z,
                          extrapolation=extrapolation)
        for total, part in zip(totals, parts, strict=True):
            total += part
    diag, off, rhs, support, counts = totals
    rec, free = solve_from_sums(diag, off, rhs, support, anchors_z, current)
    has_data = free | (np.arange(a) == atm)
    diff = rec - current
    misfit: float | None = None
    max_abs: float | None = None
    largest: float | None = None
    if has_data.any():
        d = np.abs(diff[has_data])
        misfit = float(np.sqrt(np.mean(diff[has_data] ** 2)))
        k = int(np.flatnonzero(has_data)[np.argmax(d)])
        max_abs, largest = float(d.max()), float(anchors_z[k])
    smile_q, smile_snaps = smile_from if smile_from is not None else (mi, snaps)
    smile = _smile(smile_q, smile_snaps, multiplier, anchors_z, current, rec, smile_bin, extrapolation)
    return SkewFit(anchors=tuple(anchors_z.tolist()), current=tuple(current.tolist()),
                   recommended=tuple(float(x) for x in rec), n_per_anchor=tuple(int(c) for c in counts),
                   misfit=misfit, max_abs_diff=max_abs, largest_diff_anchor=largest, smile=smile,
                   extrapolation=extrapolation)


def skew_sums(
    z: FloatArray, ratio: FloatArray, w: FloatArray, anchors_z: FloatArray,
    *, hat: tuple[np.ndarray, FloatArray] | None = None, with_counts: bool = True,
    extrapolation: Extrapolation = "flat",
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, np.ndarray | None]:
    """The hat-basis sums of the skew fit (Gram diagonal and off-diagonal, rhs, support, counts); additive over quotes.

    The fit minimizes ``sum w (curve(z) - ratio)^2``. The Gram matrix is
    tridiagonal and built with `bincount` (no Python loop, no `np.add.at`);
    sums over a quote's right anchor are its left anchor's sums shifted by one.
    `hat` passes `_hat_weights(z, anchors_z)` already computed.
    """
    a = anchors_z.size
    left, frac = _hat_weights(z, anchors_z, extrapolation) if hat is None else hat
    wr = w * frac
    wl = w - wr

    def by_left(weights: FloatArray) -> FloatArray:
        return np.bincount(left, weights=weights, minlength=a).astype(np.float64, copy=False)

    def by_right(weights: FloatArray) -> FloatArray:
        return np.concatenate(([0.0], by_left(weights)[:-1]))

    wl_frac = wl * frac
    diag = by_left(wl - wl_frac) + by_right(wr * frac)
    off = by_left(wl_frac)[: a - 1]
    rhs = by_left(wl * ratio) + by_right(wr * ratio)
    if extrapolation == "linear":  # support counts data near an anchor: the clipped weights (extended ones go negative)
        wr_c = w * np.clip(frac, 0.0, 1.0)
        support = by_left(w - wr_c) + by_right(wr_c)
    else:
        support = by_left(wl) + by_right(wr)
    counts = nearest_anchor_counts(left, frac, a) if with_counts else None
    return diag, off, rhs, support, counts


def solve_from_sums(diag: FloatArray, off: FloatArray, rhs: FloatArray, support: FloatArray,
                    anchors_z: FloatArray, current: FloatArray) -> tuple[FloatArray, np.ndarray]:
    """Anchor ratios with the ATM anchor at 1.0 from the `skew_sums` (returns ratios, fitted-anchor mask).

    `diag`, `off` (tridiagonal Gram matrix), `rhs` and `support` (weight per
    anchor) are sums over quotes of the hat-basis products; they add up over
    any split of the quotes.
    """
    a = anchors_z.size
    atm = int(np.flatnonzero(anchors_z == 0.0)[0])
    gram = np.diag(diag) + np.diag(off, 1) + np.diag(off, -1)
    free = (support > MIN_ANCHOR_WEIGHT_SHARE * support.sum()) & (np.arange(a) != atm)
    fixed_vals = current.astype(np.float64).copy()
    fixed_vals[atm] = 1.0
    rec = fixed_vals.copy()
    if free.any():
        g_ff = gram[np.ix_(free, free)]
        b_f = rhs[free] - gram[np.ix_(free, ~free)] @ fixed_vals[~free]
        try:
            rec[free] = np.linalg.solve(g_ff + 1e-12 * np.eye(int(free.sum())), b_f)
        except np.linalg.LinAlgError:
            rec[free] = np.linalg.lstsq(g_ff, b_f, rcond=None)[0]
    return np.clip(rec, 0.2, 5.0), free


def _empty_smile() -> dict[str, list[Any]]:
    return {"z": [], "n": [], "market_iv_pct": [], "model_iv_pct": [], "recommended_iv_pct": []}


def _smile(q: ModelInputs | FitInputs, snapshot_us: np.ndarray, m: float, anchors: FloatArray,
           current: FloatArray, rec: FloatArray, width: float,
           extrapolation: Extrapolation = "flat") -> dict[str, list[Any]]:
    """Market vs model IV by z bin, for the newest snapshot (all snapshots if it is thin)."""
    newest = snapshot_us == snapshot_us.max()
    sel = newest if newest.sum() >= 20 else np.ones_like(newest)
    zs, iv, rv = q.z1[sel] / m, q.iv[sel], q.rv[sel]
    lo, hi = anchors[0] - width, anchors[-1] + width
    keep = (zs >= lo) & (zs <= hi)
    zs, iv, rv = zs[keep], iv[keep], rv[keep]
    if zs.size == 0:
        return _empty_smile()
    bins = np.round(zs / width).astype(np.int64)
    uniq, inv = np.unique(bins, return_inverse=True)
    n = np.bincount(inv)
    mkt = np.bincount(inv, weights=iv) / n
    rv_b = np.bincount(inv, weights=rv) / n
    zc = uniq * width
    return {
        "z": [float(x) for x in zc],
        "n": [int(x) for x in n],
        "market_iv_pct": [float(x) for x in mkt * 100],
        "model_iv_pct": [float(x) for x in rv_b * m * skew_ratio(zc, anchors, current, extrapolation) * 100],
        "recommended_iv_pct": [float(x) for x in rv_b * m * skew_ratio(zc, anchors, rec, extrapolation) * 100],
    }
