"""The newest snapshot's chain per listed expiry: smiles, ATM term structure and arbitrage checks (no I/O).

Everything here reads one snapshot (a few thousand quotes), so it costs
milliseconds; the aggregates it returns are what the app's term-structure,
smile and arbitrage views draw, stored in the run's result JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from calib._typing import FloatArray
from calib.config import DAYS_PER_YEAR, Band
from calib.engine import arbitrage as arb
from calib.engine.model import QuoteArrays, skew_ratio

GRID_POINTS = 41  # strikes per expiry on the model's check grid (uniform in ln K/F over the quoted range)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSurface:
    """sigma(x, T) = RV x m(T) x skew(x / (RV m(T) sqrt T)) with a multiplier per DTE band."""

    rv: float  # RV_7d now, fraction
    multiplier: float  # outside every band (or a band without a fitted multiplier)
    anchors_z: FloatArray
    ratios: FloatArray
    bands: Sequence[Band] = ()
    band_multipliers: Sequence[float | None] = ()

    def multiplier_at(self, t_years: FloatArray) -> FloatArray:
        """m per expiry: its band's multiplier ([min, max), the last band owns its upper edge)."""
        dte = np.asarray(t_years, dtype=np.float64) * DAYS_PER_YEAR
        m = np.full(dte.shape, self.multiplier)
        last = self.bands[-1] if self.bands else None
        for band, bm in zip(self.bands, self.band_multipliers, strict=True):
            if bm is None:
                continue
            inside = (dte >= band.dte_min) & (dte < band.dte_max)
            if band is last:
                inside |= dte == band.dte_max
            m[inside] = bm
        return m

    def sigma(self, x: FloatArray, t_years: FloatArray) -> FloatArray:
        """Model vol (fraction) at log-moneyness `x` (E, G) and expiry `t_years` (E,)."""
        t = np.asarray(t_years, dtype=np.float64)[:, None]
        m = self.multiplier_at(t[:, 0])[:, None]
        s = self.rv * m * np.sqrt(t)
        return self.rv * m * skew_ratio(x / s, self.anchors_z, self.ratios)

    def total_variance(self, x: FloatArray, t_years: FloatArray) -> FloatArray:
        sig = self.sigma(x, t_years)
        return sig * sig * np.asarray(t_years, dtype=np.float64)[:, None]


def _model_check(model: ModelSurface, t: FloatArray, x_lo: FloatArray,
                 x_hi: FloatArray) -> tuple[arb.ArbitrageCheck, int]:
    """Butterfly on a uniform ln(K/F) grid over each expiry's quoted strikes within the skew's outer anchors;
    calendar at the shorter expiry's grid. Also the butterfly count on the whole quoted range.

    Beyond its outer anchors the skew is flat, so the smile has a concave kink at each
    of them whenever a wing slopes: a butterfly across an outer anchor always shows
    it, on every run. That is the extrapolation's convention, not something a fit
    changes, so it is counted apart (the second value) and does not grade the run.
    """
    s = model.rv * model.multiplier_at(t) * np.sqrt(t)  # x per unit z
    lo = np.clip(model.anchors_z[0] * s, x_lo, x_hi)
    hi = np.clip(model.anchors_z[-1] * s, x_lo, x_hi)
    frac = np.linspace(0.0, 1.0, GRID_POINTS)[None, :]
    x = lo[:, None] + (hi - lo)[:, None] * frac
    w = model.total_variance(x, t)
    w_next = model.total_variance(x[:-1], t[1:]) if t.size >= 2 else None
    inside = arb.check_grid(x, w, w_next)
    x_all = x_lo[:, None] + (x_hi - x_lo)[:, None] * frac
    whole = arb.check_grid(x_all, model.total_variance(x_all, t))
    return inside, whole.butterfly_violations


def chain_view(q: QuoteArrays, *, current: ModelSurface, recommended: ModelSurface | None,
               as_of_us: int | None) -> dict[str, Any]:
    """Per-expiry smiles and ATM IVs of the quotes `q` (one snapshot), and the arbitrage checks.

    Returns ``{"expiries": [...], "arbitrage": {...}}``: each expiry with its
    strikes (K/F, mean mark IV of its call and put), z and the model IV at the
    current and the recommended surface, and the ATM IV interpolated at
    ln(K/F) = 0; `arbitrage` holds the checks of the recommended surface (its
    top-level fields), of the current surface (`current`) and of the marks
    (`market`, a data-quality count: a few crossed marks are normal).
    """
    if len(q) == 0:
        return {"expiries": [], "arbitrage": None}
    # One point per (expiry, strike): the call's and the put's mark IVs averaged.
    key = np.column_stack([q.t_years, q.k_rel])
    uniq, inv = np.unique(key, axis=0, return_inverse=True)  # sorted by T, then strike
    inv = inv.ravel()
    n_pts = np.bincount(inv)
    iv = np.bincount(inv, weights=q.iv) / n_pts
    t_all, k_all = uniq[:, 0], uniq[:, 1]
    t, first, per_exp = np.unique(t_all, return_index=True, return_counts=True)
    n_exp, width = t.size, int(per_exp.max())
    col = np.arange(t_all.size) - np.repeat(first, per_exp)
    row = np.repeat(np.arange(n_exp), per_exp)
    xm = np.full((n_exp, width), np.nan)
    ivm = np.full((n_exp, width), np.nan)
    xm[row, col] = np.log(k_all)
    ivm[row, col] = iv
    x_lo, x_hi = np.nanmin(xm, axis=1), np.nanmax(xm, axis=1)
    quotes_per_exp = np.bincount(row, weights=n_pts, minlength=n_exp).astype(np.int64)

    wm = ivm * ivm * t[:, None]
    market = arb.check_grid(xm, wm, arb.interp_rows(xm[:-1], xm[1:], wm[1:]) if n_exp >= 2 else None)
    cur_check, cur_wing = _model_check(current, t, x_lo, x_hi)
    sig_cur = current.sigma(xm, t)
    m_cur = current.multiplier_at(t)
    atm_cur = current.sigma(np.zeros((n_exp, 1)), t)[:, 0]
    rec_check, rec_wing = None, 0
    if recommended is not None:
        rec_check, rec_wing = _model_check(recommended, t, x_lo, x_hi)
        sig_rec = recommended.sigma(xm, t)
        m_rec = recommended.multiplier_at(t)
        atm_rec = recommended.sigma(np.zeros((n_exp, 1)), t)[:, 0]
        z = xm / (recommended.rv * m_rec[:, None] * np.sqrt(t)[:, None])
    else:
        sig_rec = np.full_like(xm, np.nan)
        m_rec = atm_rec = np.full(n_exp, np.nan)
        z = xm / (current.rv * m_cur[:, None] * np.sqrt(t)[:, None])

    expiries = []
    for i in range(n_exp):  # one entry per listed expiry (a dozen), arrays inside are vectorized
        n = int(per_exp[i])
        ok = np.isfinite(ivm[i, :n])
        atm_mkt = float(np.interp(0.0, xm[i, :n][ok], ivm[i, :n][ok])) if ok.any() else None
        expiries.append({
            "expiry": arb.expiry_label(float(t[i]), as_of_us),
            "t_years": float(t[i]),
            "dte_days": float(t[i] * DAYS_PER_YEAR),
            "n_quotes": int(quotes_per_exp[i]),
            "atm_market_iv_pct": _r(atm_mkt * 100) if atm_mkt is not None else None,
            "atm_current_iv_pct": _r(atm_cur[i] * 100),
            "atm_recommended_iv_pct": _r(atm_rec[i] * 100),
            "multiplier_current": float(m_cur[i]),
            "multiplier_recommended": float(m_rec[i]),
            "strike_rel": np.round(np.exp(xm[i, :n]), 6).tolist(),
            "z": np.round(z[i, :n], 4).tolist(),
            "market_iv_pct": np.round(ivm[i, :n] * 100, 4).tolist(),
            "current_iv_pct": np.round(sig_cur[i, :n] * 100, 4).tolist(),
            "recommended_iv_pct": np.round(sig_rec[i, :n] * 100, 4).tolist(),
        })
    arbitrage = None
    if rec_check is not None:
        arbitrage = {**arb.check_dict(rec_check, t, as_of_us), "surface": "recommended",
                     "butterfly_violations_whole_range": rec_wing}
    else:
        arbitrage = {"checked_points": 0, "butterfly_violations": 0, "calendar_violations": 0, "worst": None,
                     "first": None, "worst_calendar": None, "surface": "recommended"}
    arbitrage["current"] = {**arb.check_dict(cur_check, t, as_of_us), "butterfly_violations_whole_range": cur_wing}
    arbitrage["market"] = arb.check_dict(market, t, as_of_us)
    arbitrage["expiries_checked"] = int(n_exp)
    arbitrage["grid_points_per_expiry"] = GRID_POINTS
    return {"expiries": expiries, "arbitrage": arbitrage}


def _r(v: float | None, digits: int = 4) -> float | None:
    """Rounded for a compact result JSON (NaN stays NaN: the JSON writer turns it into null)."""
    return None if v is None else round(float(v), digits)
