"""Quotes in, metrics out: the one engine behind harvested and live runs (no I/O)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from calib.config import CalibrationConfig
from calib.engine.fit import MultiplierFit, fit_multiplier
from calib.engine.metrics import EMPTY, ErrorMetrics, quote_errors, summarize
from calib.engine.model import QuoteArrays, skew_ratio, standardized_moneyness
from calib.engine.result import BandMetrics, GlobalMetrics, OptionTypeMetrics
from calib.engine.skew import SkewFit, fit_skew, solve_skew_ratios

JOINT_FIT_SAMPLE = 300_000
SURFACE_TENORS_DAYS: tuple[float, ...] = (1, 3, 7, 14, 30, 60, 90, 180)


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOutput:
    global_metrics: GlobalMetrics
    bands: tuple[BandMetrics, ...]
    option_type_metrics: tuple[OptionTypeMetrics, ...]
    skew: SkewFit | None
    recommended_surface: dict[str, Any] | None
    n_samples: int
    n_snapshots: int
    timings_s: dict[str, float] = field(default_factory=dict)


def calibrate_quotes(q: QuoteArrays, config: CalibrationConfig) -> EngineOutput:
    """Fit multiplier and skew jointly, score the model globally, per band and per type.

    The recommended multiplier comes with the recommended skew (when
    `fit_skew`): metrics "at recommended" use both, metrics "at tested" use the
    tested multiplier with the current skew, i.e. what the trader runs today.
    Band multipliers are fitted with the recommended skew. `q` holds every usable quote whose DTE falls in the run's range or in any
    band's range; the global metrics use the run's `[min_dte, max_dte]`, each
    band its own range.
    """
    t0 = time.perf_counter()
    anchors = np.asarray(config.skew.anchors_z, dtype=np.float64)
    current = np.asarray(config.skew.current_ratios, dtype=np.float64)
    bounds = config.multiplier_bounds
    m_tested = config.multiplier_tested

    in_global = (q.dte_days >= config.min_dte) & (q.dte_days <= config.max_dte)
    g = q.subset(in_global)
    fit = fit_multiplier(g, anchors_z=anchors, ratios=current, bounds=bounds, start=m_tested)
    ratios = current
    skew: SkewFit | None = None
    if config.fit_skew and fit.multiplier is not None:
        fit, skew = _joint_fit(g, fit, anchors, current, bounds)
        ratios = np.asarray(skew.recommended, dtype=np.float64)
    t_fit = time.perf_counter()

    m_rec = fit.multiplier
    err_tested = quote_errors(g, m_tested, anchors, current)
    tested = summarize(err_tested, g.vega_coin)
    if m_rec is not None:
        err_rec = quote_errors(g, m_rec, anchors, ratios)
        at_rec = summarize(err_rec, g.vega_coin)
        is_call = g.is_call
        type_metrics = tuple(
            OptionTypeMetrics(option_type=t, metrics=summarize(err_rec, g.vega_coin, is_call == (t == "C")))
            for t in config.option_types
        )
    else:
        at_rec = EMPTY
        type_metrics = tuple(OptionTypeMetrics(option_type=t, metrics=EMPTY) for t in config.option_types)

    bands = []
    band_mult: dict[str, float | None] = {}
    for band in config.bands:
        mask = (q.dte_days >= band.dte_min) & (q.dte_days < band.dte_max)
        bq = q.subset(mask)
        bfit = fit_multiplier(bq, anchors_z=anchors, ratios=ratios, bounds=bounds, start=m_rec or m_tested)
        b_tested = summarize(quote_errors(bq, m_tested, anchors, current), bq.vega_coin) if len(bq) else EMPTY
        b_rec: ErrorMetrics = EMPTY
        if bfit.multiplier is not None:
            b_rec = summarize(quote_errors(bq, bfit.multiplier, anchors, ratios), bq.vega_coin)
        band_mult[band.name] = bfit.multiplier
        bands.append(BandMetrics(name=band.name, dte_min=band.dte_min, dte_max=band.dte_max,
                                 n_samples=len(bq), recommended_iv_multiplier=bfit.multiplier,
                                 at_bound=bfit.at_bound, metrics=b_rec, tested=b_tested))
    t_bands = time.perf_counter()
    rv_now, atm_iv = _rv_and_atm(g, m_rec or m_tested)
    surface = None
    if config.emit_recommended_vol_surface and m_rec is not None and rv_now is not None:
        surface = recommended_surface(rv_now / 100, m_rec, band_mult, config, anchors, ratios)

    gm = GlobalMetrics(multiplier_tested=m_tested, recommended_iv_multiplier=m_rec, at_bound=fit.at_bound,
                       at_recommended=at_rec, tested=tested, rv_7d_pct=rv_now, atm_iv_pct=atm_iv)
    return EngineOutput(
        global_metrics=gm, bands=tuple(bands), option_type_metrics=type_metrics, skew=skew,
        recommended_surface=surface, n_samples=len(g), n_snapshots=int(np.unique(g.snapshot_us).size),
        timings_s={"fit_and_skew": t_fit - t0, "metrics": t_bands - t_fit},
    )


def _profile_objective(g: QuoteArrays, anchors: np.ndarray, current: np.ndarray, m: float) -> tuple[float, np.ndarray]:
    """J(m) = min over skew of sum v (RV m skew(z(m)) - IV)^2, and that skew."""
    z = standardized_moneyness(g, m)
    base = g.rv * m
    ratios, *_ = solve_skew_ratios(z, g.iv / base, g.vega_coin, anchors, current)
    resid = base * skew_ratio(z, anchors, ratios) - g.iv
    return float(np.dot(g.vega_coin, resid * resid)), ratios


def _joint_fit(g: QuoteArrays, fit: MultiplierFit, anchors: np.ndarray, current: np.ndarray,
               bounds: tuple[float, float]) -> tuple[MultiplierFit, SkewFit]:
    """Multiplier and skew that fit together: minimize the profile J(m) over m.

    Notes
    -----
    The skew's z depends on m and the level m depends on the skew. For a given
    m the best skew is a linear solve, so the joint least-squares problem is a
    1-D minimization of the profile ``J(m)`` (bounded Brent). Fixed-point
    iteration of "best m given skew, best skew given m" is not used: it can stop
    at a stationary point that is not a minimum (seen on real ETH chains, where
    thin ATM data lets a tiny m with inflated ratios satisfy both equations).
    The search stays within a factor 2 of the multiplier fitted with the
    current skew, and runs on a deterministic sample of at most
    `JOINT_FIT_SAMPLE` quotes (metrics afterwards use every quote).
    """
    lo, hi = bounds
    m_cs = float(fit.multiplier)  # type: ignore[arg-type]
    sample = g if len(g) <= JOINT_FIT_SAMPLE else g.subset(_stride_mask(len(g), JOINT_FIT_SAMPLE))
    a, b = max(lo, m_cs / 2), min(hi, m_cs * 2)
    if b - a > 1e-9:
        opt = minimize_scalar(lambda m: _profile_objective(sample, anchors, current, m)[0], bounds=(a, b),
                              method="bounded", options={"xatol": 1e-10})
        m_star = float(opt.x)
    else:
        m_star = m_cs
    at_bound = m_star <= lo * (1 + 1e-6) or m_star >= hi * (1 - 1e-6)
    joint = MultiplierFit(multiplier=m_star, unclipped=m_star, at_bound=at_bound or fit.at_bound, iterations=0)
    return joint, fit_skew(g, m_star, anchors_z=anchors, current=current)


def _stride_mask(n: int, k: int) -> np.ndarray:
    keep = np.zeros(n, dtype=bool)
    keep[np.linspace(0, n - 1, k).round().astype(np.int64)] = True
    return keep


def _rv_and_atm(g: QuoteArrays, m: float) -> tuple[float | None, float | None]:
    """RV_7d at the newest snapshot and the vega-weighted market IV near the money there."""
    if len(g) == 0:
        return None, None
    newest = g.snapshot_us == g.snapshot_us.max()
    rv_now = float(np.median(g.rv[newest])) * 100
    k = np.abs(g.log_moneyness[newest]) / (g.rv[newest] * m * np.sqrt(g.t_years[newest]))
    near = k <= 0.25
    if not near.any():
        near = k <= np.min(k) * 1.5 + 1e-12
    w = g.vega_coin[newest][near]
    iv = g.iv[newest][near]
    if iv.size == 0:
        return rv_now, None
    atm = float(np.dot(w, iv) / w.sum()) * 100 if w.sum() > 0 else float(np.mean(iv)) * 100
    return rv_now, atm


def recommended_surface(rv_now: float, m_global: float, band_mult: dict[str, float | None],
                        config: CalibrationConfig, anchors: np.ndarray, ratios: np.ndarray) -> dict[str, Any]:
    """IV (percent) on a tenor x z grid: RV_7d now x band multiplier x recommended skew."""
    rows = []
    mults = []
    for tenor in SURFACE_TENORS_DAYS:
        m = m_global
        for band in config.bands:
            if band.dte_min <= tenor < band.dte_max and band_mult.get(band.name) is not None:
                m = band_mult[band.name]  # type: ignore[assignment]
        mults.append(m)
        rows.append([rv_now * m * float(r) * 100 for r in skew_ratio(anchors, anchors, ratios)])
    return {
        "rv_7d_pct": rv_now * 100,
        "global_multiplier": m_global,
        "band_multipliers": band_mult,
        "tenors_days": list(SURFACE_TENORS_DAYS),
        "multiplier_by_tenor": mults,
        "moneyness_z": anchors.tolist(),
        "skew_ratios": [float(r) for r in ratios],
        "iv_pct": rows,
    }
