"""Quotes in, metrics out: the one engine behind harvested and live runs (no I/O)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calib.config import CalibrationConfig
from calib.engine.fit import fit_multiplier
from calib.engine.metrics import EMPTY, ErrorMetrics, quote_errors, summarize
from calib.engine.model import QuoteArrays, skew_ratio
from calib.engine.result import BandMetrics, GlobalMetrics, OptionTypeMetrics
from calib.engine.skew import SkewFit, fit_skew

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
    """Fit the multiplier (global and per band), score the model, fit the skew.

    `q` holds every usable quote whose DTE falls in the run's range or in any
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
    t_fit = time.perf_counter()

    m_rec = fit.multiplier
    err_tested = quote_errors(g, m_tested, anchors, current)
    tested = summarize(err_tested, g.vega_coin)
    if m_rec is not None:
        err_rec = quote_errors(g, m_rec, anchors, current)
        at_rec = summarize(err_rec, g.vega_coin)
        is_call = g.is_call
        type_metrics = tuple(
            OptionTypeMetrics(option_type=t, metrics=summarize(err_rec, g.vega_coin, is_call == (t == "C")))
            for t in config.option_types
        )
    else:
        at_rec = EMPTY
        type_metrics = tuple(OptionTypeMetrics(option_type=t, metrics=EMPTY) for t in config.option_types)
    t_metrics = time.perf_counter()

    bands = []
    band_mult: dict[str, float | None] = {}
    for band in config.bands:
        mask = (q.dte_days >= band.dte_min) & (q.dte_days < band.dte_max)
        bq = q.subset(mask)
        bfit = fit_multiplier(bq, anchors_z=anchors, ratios=current, bounds=bounds, start=m_rec or m_tested)
        b_tested = summarize(quote_errors(bq, m_tested, anchors, current), bq.vega_coin) if len(bq) else EMPTY
        b_rec: ErrorMetrics = EMPTY
        if bfit.multiplier is not None:
            b_rec = summarize(quote_errors(bq, bfit.multiplier, anchors, current), bq.vega_coin)
        band_mult[band.name] = bfit.multiplier
        bands.append(BandMetrics(name=band.name, dte_min=band.dte_min, dte_max=band.dte_max,
                                 n_samples=len(bq), recommended_iv_multiplier=bfit.multiplier,
                                 at_bound=bfit.at_bound, metrics=b_rec, tested=b_tested))
    t_bands = time.perf_counter()

    skew = None
    if config.fit_skew and m_rec is not None:
        skew = fit_skew(g, m_rec, anchors_z=anchors, current=current)
    t_skew = time.perf_counter()

    rv_now, atm_iv = _rv_and_atm(g, m_rec or m_tested)
    surface = None
    if config.emit_recommended_vol_surface and m_rec is not None and rv_now is not None:
        ratios = np.asarray(skew.recommended if skew else current)
        surface = recommended_surface(rv_now / 100, m_rec, band_mult, config, anchors, ratios)

    gm = GlobalMetrics(multiplier_tested=m_tested, recommended_iv_multiplier=m_rec, at_bound=fit.at_bound,
                       at_recommended=at_rec, tested=tested, rv_7d_pct=rv_now, atm_iv_pct=atm_iv)
    return EngineOutput(
        global_metrics=gm, bands=tuple(bands), option_type_metrics=type_metrics, skew=skew,
        recommended_surface=surface, n_samples=len(g), n_snapshots=int(np.unique(g.snapshot_us).size),
        timings_s={"fit": t_fit - t0, "metrics": t_metrics - t_fit + (t_bands - t_metrics), "skew": t_skew - t_bands},
    )


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
