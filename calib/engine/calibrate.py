"""Quotes in, metrics out: the one engine behind harvested and live runs (no I/O)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any, TypeVar

import numpy as np

from calib._typing import FloatArray
from calib.config import DAYS_PER_YEAR, CalibrationConfig
from calib.engine.bootstrap import multiplier_interval, resampling_units
from calib.engine.expiries import ModelSurface, chain_view
from calib.engine.fit import MultiplierFit, SortedQuotes, fit_multiplier
from calib.engine.joint_fit import joint_fit
from calib.engine.metrics import (
    EMPTY,
    ErrorMapSums,
    MetricSums,
    add_to_groups,
    error_map_edges,
    quote_errors,
)
from calib.engine.model import (
    FitInputs,
    QuoteArrays,
    fit_inputs,
    model_inputs,
    skew_ratio,
)
from calib.engine.result import BandMetrics, GlobalMetrics, OptionTypeMetrics
from calib.engine.skew import (
    SkewFit,
    _hat_weights,
    nearest_anchor_counts,
)
from calib.numerics.stats import distinct, median

JOINT_FIT_SAMPLE = 100_000
_A = TypeVar("_A")
_R = TypeVar("_R")
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
    beyond_anchors: dict[str, Any] | None = None  # `wings_summary` at the recommended multiplier
    arbitrage: dict[str, Any] | None = None  # static-arbitrage checks of the newest chain (`chain_view`)
    expiries: tuple[dict[str, Any], ...] = ()  # per listed expiry: ATM IVs, smile (`chain_view`)
    error_map: dict[str, Any] | None = None  # errors by DTE x z bucket (`ErrorMapSums.to_dict`)


def calibrate_quotes(q: QuoteArrays, config: CalibrationConfig) -> EngineOutput:
    """Fit multiplier and skew jointly, score the model globally, per band and per type.

    The recommended multiplier comes with the recommended skew (when
    `fit_skew`): metrics "at recommended" use both, metrics "at tested" use the
    tested multiplier with the current skew, i.e. what the trader runs today.
    Band multipliers are fitted with the recommended skew. `q` holds every usable quote whose DTE falls in the run's range or in any
    band's range; the global metrics use the run's `[min_dte, max_dte]`, each
    band its own range.

    Two stages: `fit_engine` (multipliers, skew) and `score_engine` (error sums,
    block by block). The chunked path of `calib.streaming` runs the same two
    stages, the first on a bounded sample and the second partition by partition.
    """
    fit = fit_engine(q, config)
    t0 = time.perf_counter()
    scores = score_engine(q, fit, config)
    return assemble_engine(fit, scores, config, timings_s={**fit.timings_s, "metrics": time.perf_counter() - t0})


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineFit:
    """The fit stage: recommended multipliers and skew, RV and ATM IV now, the surface (no error metrics)."""

    fit: MultiplierFit  # global, with the recommended skew when fitted
    skew: SkewFit | None
    ratios: FloatArray  # recommended skew ratios (the current ones when the skew is not fitted)
    band_fits: tuple[MultiplierFit, ...]  # one per config band
    # What the live policy applies: the engine keeps its current skew until the trader
    # edits it, so the multiplier it should use is the one fitted with that skew.
    fit_current_skew: MultiplierFit | None = None
    band_fits_current_skew: tuple[MultiplierFit, ...] = ()
    ci: tuple[float | None, float | None] = (None, None)  # bootstrap interval of `fit.multiplier`
    band_cis: tuple[tuple[float | None, float | None], ...] = ()
    rv_7d_pct: float | None
    atm_iv_pct: float | None
    recommended_surface: dict[str, Any] | None
    timings_s: dict[str, float] = field(default_factory=dict)
    chain: dict[str, Any] | None = None  # `chain_view` of the newest snapshot


def fit_engine(q: QuoteArrays, config: CalibrationConfig) -> EngineFit:
    """Global joint multiplier+skew fit on the run's DTE range, then one multiplier per band.

    Like the joint fit, the global multiplier with the current skew and each
    band's multiplier are fitted on a deterministic, evenly spaced sample of at
    most `JOINT_FIT_SAMPLE` of their quotes (a one-parameter least-squares fit
    moves by ~1e-5 relative between 300k quotes and all of them); every quote
    is scored afterwards.
    """
    t0 = time.perf_counter()
    anchors = np.asarray(config.skew.anchors_z, dtype=np.float64)
    current = np.asarray(config.skew.current_ratios, dtype=np.float64)
    bounds = config.multiplier_bounds
    m_tested = config.multiplier_tested_value
    ext = config.skew.extrapolation

    # Membership of every quote, computed block by block (no full-length DTE temporary).
    *band_masks, g_mask = _dte_masks(q, [(b.dte_min, b.dte_max, False) for b in config.bands]
                                     + [(config.min_dte, config.max_dte, True)])

    def bands_current_skew() -> tuple[list[FitInputs], list[SortedQuotes], list[MultiplierFit],
                                      list[tuple[np.ndarray, np.ndarray]]]:
        positions = [_stride_positions(m, JOINT_FIT_SAMPLE) for m in band_masks]  # same sampling as the joint fit
        inputs = [fit_inputs(q, p) for p in positions]
        sorted_inputs = [SortedQuotes(bi) for bi in inputs]  # sorted once, fitted with both skews
        return inputs, sorted_inputs, [
            fit_multiplier(sq, anchors_z=anchors, ratios=current, bounds=bounds, extrapolation=ext)
            for sq in sorted_inputs], [_units(q, p) for p in positions]

    # The band fits with the current skew do not depend on the joint fit: on a second
    # thread they run while it does (numpy releases the GIL in its kernels).
    parallel = len(q) >= PARALLEL_MIN_QUOTES and ENGINE_THREADS >= 2
    with ThreadPoolExecutor(max_workers=1) if parallel else contextlib.nullcontext() as pool:
        pending = pool.submit(bands_current_skew) if pool is not None else None
        # The fits read the global range's sample and its newest snapshot only: inputs for
        # all of its quotes (~440 k at 14 days) would cost fresh memory and time for nothing.
        s_pos = _stride_positions(g_mask, JOINT_FIT_SAMPLE)
        sample, s_snap = fit_inputs(q, s_pos), q.snapshots_at(s_pos)
        n_pos = _newest_positions(q.snap, g_mask)  # the table is in time order
        newest, n_snap = fit_inputs(q, n_pos), q.snapshots_at(n_pos)
        fit = fit_multiplier(sample, anchors_z=anchors, ratios=current, bounds=bounds, extrapolation=ext)
        fit_current_skew = fit
        ratios = current
        skew: SkewFit | None = None
        if config.fit_skew and fit.multiplier is not None:
            smile = (newest, n_snap) if len(newest) >= SMILE_MIN_QUOTES else None
            fit, skew = joint_fit(sample, s_snap, fit, anchors, current, bounds, smile_from=smile,
                                   extrapolation=ext)
            ratios = np.asarray(skew.recommended, dtype=np.float64)
        t_fit = time.perf_counter()
        b_inputs, b_sorted, band_fits_cs, b_units = (pending.result() if pending is not None
                                                     else bands_current_skew())
    m_rec = fit.multiplier
    if ratios is current:
        band_fits = list(band_fits_cs)
    else:
        band_fits = _parallel_map(
            lambda sq: fit_multiplier(sq, anchors_z=anchors, ratios=ratios, bounds=bounds, extrapolation=ext),
            b_sorted, parallel=parallel)
    # Bootstrap intervals of the recommended multipliers (each with the skew it was fitted with).
    ci, *band_cis = _parallel_map(
        lambda job: multiplier_interval(job[0], job[1], anchors_z=anchors, ratios=ratios, multiplier=job[2],
                                        extrapolation=ext),
        [(sample, _units(q, s_pos), m_rec), *zip(b_inputs, b_units, [f.multiplier for f in band_fits], strict=True)],
        parallel=parallel)
    rv_now, atm_iv = _rv_and_atm(newest, n_snap, m_rec or m_tested)
    surface = None
    if config.emit_recommended_vol_surface and m_rec is not None and rv_now is not None:
        band_mult = {b.name: f.multiplier for b, f in zip(config.bands, band_fits, strict=True)}
        surface = recommended_surface(rv_now / 100, m_rec, band_mult, config, anchors, ratios)
    t_chain = time.perf_counter()
    chain = _chain(q, n_pos, config, m_rec, band_fits, anchors, current, ratios)
    t_end = time.perf_counter()
    return EngineFit(fit=fit, skew=skew, ratios=ratios, band_fits=tuple(band_fits), rv_7d_pct=rv_now,
                     fit_current_skew=fit_current_skew, band_fits_current_skew=tuple(band_fits_cs),
                     atm_iv_pct=atm_iv, recommended_surface=surface, ci=ci, band_cis=tuple(band_cis), chain=chain,
                     timings_s={"fit_and_skew": t_fit - t0, "band_fit": t_chain - t_fit, "chain": t_end - t_chain})


def _chain(q: QuoteArrays, n_pos: np.ndarray, config: CalibrationConfig, m_rec: float | None,
           band_fits: Sequence[MultiplierFit], anchors: np.ndarray, current: np.ndarray,
           ratios: np.ndarray) -> dict[str, Any] | None:
    """`chain_view` of every expiry at the global range's newest snapshot (all its quotes, any DTE).

    The current surface is the tested multiplier with the current skew (the model as run
    today); the recommended one the band multipliers (global outside the bands) with the
    recommended skew.
    """
    if n_pos.size == 0:
        return None
    snap = int(q.snap[n_pos[0]])
    pos = np.flatnonzero(q.snap == snap)
    rv = float(q.table.rv[snap])
    if not rv > 0:
        return None
    cur = ModelSurface(rv=rv, multiplier=config.multiplier_tested_value, anchors_z=anchors, ratios=current)
    rec = None
    if m_rec is not None:
        rec = ModelSurface(rv=rv, multiplier=m_rec, anchors_z=anchors, ratios=ratios, bands=config.bands,
                           band_multipliers=[f.multiplier for f in band_fits])
    return chain_view(q.take(pos), current=cur, recommended=rec, as_of_us=int(q.table.ts_us[snap]))


@dataclass(slots=True, kw_only=True)
class EngineScores:
    """Error sums of the score stage; `merge` adds another chunk's."""

    tested: MetricSums  # global range, tested multiplier, current skew
    at_recommended: MetricSums  # global range, recommended multiplier and skew
    by_type: MetricSums  # at recommended, one group per config option type
    band_tested: MetricSums  # one group per band
    band_recommended: MetricSums
    anchor_counts: np.ndarray  # global quotes per nearest skew anchor at the recommended multiplier
    snapshots_us: list[np.ndarray]  # distinct snapshots of the global range, per chunk
    wings: MetricSums  # global range at recommended: group 0 beyond the outer anchors, group 1 within
    map_recommended: ErrorMapSums  # every scored quote at its band's multiplier, recommended skew
    map_tested: ErrorMapSums  # every scored quote at the tested multiplier, current skew

    @classmethod
    def zeros(cls, config: CalibrationConfig) -> EngineScores:
        nb = len(config.bands)
        dte_edges, z_edges = error_map_edges(
            config.skew.anchors_z, [config.min_dte, config.max_dte, *(e for b in config.bands
                                                                      for e in (b.dte_min, b.dte_max))])
        return cls(tested=MetricSums.zeros(), at_recommended=MetricSums.zeros(),
                   by_type=MetricSums.zeros(len(config.option_types)), band_tested=MetricSums.zeros(nb),
                   band_recommended=MetricSums.zeros(nb), anchor_counts=np.zeros(len(config.skew.anchors_z), np.int64),
                   snapshots_us=[], wings=MetricSums.zeros(2), map_recommended=ErrorMapSums.zeros(dte_edges, z_edges),
                   map_tested=ErrorMapSums.zeros(dte_edges, z_edges))

    def merge(self, other: EngineScores) -> None:
        for name in ("tested", "at_recommended", "by_type", "band_tested", "band_recommended", "wings",
                     "map_recommended", "map_tested"):
            getattr(self, name).merge(getattr(other, name))
        self.anchor_counts += other.anchor_counts
        self.snapshots_us.extend(other.snapshots_us)

    def n_snapshots(self) -> int:
        return int(distinct(np.concatenate(self.snapshots_us)).size) if self.snapshots_us else 0


SCORE_BLOCK = 1 << 17  # quotes per block: temporaries stay in cache and memory stays flat
SCORE_PART_BLOCKS = 1  # blocks per unit of parallel work (1 and 2 measured the same; finer parts balance the threads)
PARALLEL_MIN_QUOTES = 1 << 19  # below this, threads cost more than they save
ENGINE_THREADS = min(4, os.cpu_count() or 1)


def score_engine(q: QuoteArrays, fit: EngineFit, config: CalibrationConfig, *,
                 scores: EngineScores | None = None, block: int = SCORE_BLOCK) -> EngineScores:
    """Add the errors of `q` at the tested and the recommended multipliers to `scores` (new if None).

    Large inputs are scored in parts of `SCORE_PART_BLOCKS` blocks on a few
    threads (numpy releases the GIL in its kernels); parts merge in order,
    so the sums are the same on any number of cores.
    """
    out = scores if scores is not None else EngineScores.zeros(config)
    step = block * SCORE_PART_BLOCKS
    bounds = [(i, min(i + step, len(q))) for i in range(0, len(q), step)]
    parts = _parallel_map(lambda b: _score_part(q.slice(*b), fit, config, block=block), bounds,
                          parallel=len(q) >= PARALLEL_MIN_QUOTES)
    for part in parts:
        out.merge(part)
    return out


def _score_part(q: QuoteArrays, fit: EngineFit, config: CalibrationConfig, *, block: int) -> EngineScores:
    """Error sums of `q`, block by block.

    Blocks of `block` quotes keep temporaries small and in cache. All quotes are
    priced at the tested multiplier (current skew) and at their band's
    multiplier (recommended skew); the global range's quotes, gathered by
    index, also at the recommended multiplier. Group sums are masked dot
    products, so no block is copied per group. The sums do not depend on how
    the quotes are split into blocks or chunks (up to summation order).
    """
    anchors = np.asarray(config.skew.anchors_z, dtype=np.float64)
    current = np.asarray(config.skew.current_ratios, dtype=np.float64)
    m_tested = config.multiplier_tested_value
    m_rec = fit.fit.multiplier
    ext = config.skew.extrapolation
    out = EngineScores.zeros(config)
    bands = config.bands
    band_m = [f.multiplier for f in fit.band_fits]
    disjoint = all(a.dte_max <= b.dte_min for a, b in pairwise(sorted(bands, key=lambda b: b.dte_min)))
    g_mask = _in_global(q, config)
    types = config.option_types
    for i in range(0, len(q), block):
        qb = q.slice(i, i + block)
        mb = model_inputs(qb)
        dte = qb.dte_days
        in_b = [(dte >= b.dte_min) & (dte < b.dte_max) for b in bands]
        z_tested = mb.z1 / m_tested  # priced and bucketed: computed once
        err_tested = quote_errors(mb, m_tested, anchors, current, ext, z=z_tested)
        abs_tested = add_to_groups(err_tested, mb.vega_coin,
                                   [(out.tested, [g_mask[i:i + block]]), (out.band_tested, in_b)])
        rows = out.map_tested.dte_rows(dte)  # the same for both maps (same edges)
        out.map_tested.add(err_tested, dte, z_tested, rows=rows, abs_errors=abs_tested)
        # Each quote at its own band's multiplier (the global recommended one outside the bands);
        # with overlapping bands the last one wins, for the error map only.
        m_quote = np.full(len(qb), m_rec if m_rec is not None else m_tested)
        for mask, m in zip(in_b, band_m, strict=True):
            if m is not None:
                m_quote[mask] = m
        z_quote = mb.z1 / m_quote
        err_quote = quote_errors(mb, m_quote, anchors, fit.ratios, ext, z=z_quote)
        abs_quote = None
        if disjoint:  # one pricing pass: each quote at its own band's multiplier
            # Bands without a multiplier are summed at the global one but never reported.
            abs_quote = out.band_recommended.add(err_quote, mb.vega_coin, in_b)
        else:
            for b, (mask, m) in enumerate(zip(in_b, band_m, strict=True)):
                if m is not None and mask.any():
                    bq = mb.take(np.flatnonzero(mask))
                    masks: list[np.ndarray | None] = [np.zeros(len(bq), bool)] * len(bands)
                    masks[b] = np.ones(len(bq), bool)
                    out.band_recommended.add(quote_errors(bq, m, anchors, fit.ratios, ext), bq.vega_coin, masks)
        if m_rec is not None:
            out.map_recommended.add(err_quote, dte, z_quote, rows=rows, abs_errors=abs_quote)
        gi = np.flatnonzero(g_mask[i:i + block])
        if gi.size == 0:
            continue
        out.snapshots_us.append(qb.table.ts_us.take(distinct(qb.snap.take(gi))))
        if m_rec is None:
            continue
        gm = mb.take(gi)
        z_rec = gm.z1 / m_rec
        err_rec = quote_errors(gm, m_rec, anchors, fit.ratios, ext, z=z_rec)
        z_lim = (anchors[0] * m_rec, anchors[-1] * m_rec)  # z = z1 / m beyond the outer anchors
        beyond = (gm.z1 < z_lim[0]) | (gm.z1 > z_lim[1])
        add_to_groups(err_rec, gm.vega_coin, [(out.at_recommended, [None]), (out.wings, [beyond, ~beyond])])
        call = gm.omega > 0
        out.by_type.add(err_rec, gm.vega_coin, [call if t == "C" else ~call for t in types])
        if fit.skew is not None:
            left, frac = _hat_weights(z_rec, anchors, ext)
            out.anchor_counts += nearest_anchor_counts(left, frac, anchors.size)
    return out


def assemble_engine(fit: EngineFit, scores: EngineScores, config: CalibrationConfig, *,
                    timings_s: dict[str, float]) -> EngineOutput:
    """EngineOutput from the fit stage and the (merged) score sums."""
    m_rec = fit.fit.multiplier
    at_rec = scores.at_recommended.metrics() if m_rec is not None else EMPTY
    type_metrics = tuple(
        OptionTypeMetrics(option_type=t, metrics=scores.by_type.metrics(i) if m_rec is not None else EMPTY)
        for i, t in enumerate(config.option_types)
    )
    bands = tuple(
        BandMetrics(name=band.name, dte_min=band.dte_min, dte_max=band.dte_max,
                    n_samples=int(scores.band_tested.n[b]), recommended_iv_multiplier=bfit.multiplier,
                    recommended_iv_multiplier_current_skew=(
                        fit.band_fits_current_skew[b].multiplier if fit.band_fits_current_skew else bfit.multiplier),
                    at_bound=bfit.at_bound,
                    metrics=scores.band_recommended.metrics(b) if bfit.multiplier is not None else EMPTY,
                    tested=scores.band_tested.metrics(b),
                    ci_low=fit.band_cis[b][0] if fit.band_cis else None,
                    ci_high=fit.band_cis[b][1] if fit.band_cis else None)
        for b, (band, bfit) in enumerate(zip(config.bands, fit.band_fits, strict=True))
    )
    beyond = wings_summary(scores.wings) if m_rec is not None else None
    skew = fit.skew
    if skew is not None:
        skew = replace(skew, n_per_anchor=tuple(int(c) for c in scores.anchor_counts), beyond_anchors=beyond)
    gm = GlobalMetrics(multiplier_tested=config.multiplier_tested_value, recommended_iv_multiplier=m_rec,
                       at_bound=fit.fit.at_bound, at_recommended=at_rec, tested=scores.tested.metrics(),
                       rv_7d_pct=fit.rv_7d_pct, atm_iv_pct=fit.atm_iv_pct, ci_low=fit.ci[0], ci_high=fit.ci[1],
                       recommended_iv_multiplier_current_skew=(
                           fit.fit_current_skew.multiplier if fit.fit_current_skew else m_rec))
    chain = fit.chain or {}
    error_map = None
    if int(scores.map_tested.n.sum()):
        error_map = {**scores.map_recommended.to_dict(), "multiplier": "recommended",
                     "tested": scores.map_tested.to_dict()} if m_rec is not None else {
            **scores.map_tested.to_dict(), "multiplier": "tested", "tested": scores.map_tested.to_dict()}
    return EngineOutput(
        global_metrics=gm, bands=bands, option_type_metrics=type_metrics, skew=skew,
        recommended_surface=fit.recommended_surface, n_samples=int(scores.tested.n[0]),
        n_snapshots=scores.n_snapshots(), timings_s=timings_s, beyond_anchors=beyond, arbitrage=chain.get("arbitrage"),
        expiries=tuple(chain.get("expiries") or ()), error_map=error_map,
    )


def wings_summary(wings: MetricSums) -> dict[str, Any]:
    """Share of quotes and of vega beyond the outer anchors, and the errors there and within, at recommended."""
    n_out, n_in = (int(x) for x in wings.n)
    w_out, w_in = (float(x) for x in wings.w)
    out, inside = wings.metrics(0), wings.metrics(1)
    n, w = n_out + n_in, w_out + w_in
    return {
        "n_quotes": n_out,
        "quote_share_pct": 100.0 * n_out / n if n else None,
        "vega_share_pct": 100.0 * w_out / w if w > 0 else None,
        "vmae_pct": out.vega_weighted_mae_pct,
        "mae_pct": out.mae_pct,
        "inside_vmae_pct": inside.vega_weighted_mae_pct,
        "inside_mae_pct": inside.mae_pct,
    }


def _units(q: QuoteArrays, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap's resampling units of the quotes at `pos`: their snapshot and their expiry."""
    return resampling_units(q.snapshots_at(pos), q.t_years.take(pos))


def _dte_masks(q: QuoteArrays, ranges: Sequence[tuple[float, float, bool]],
               block: int = SCORE_BLOCK) -> list[np.ndarray]:
    """One mask per `(lo, hi, hi_inclusive)` DTE range over all quotes, block by block."""
    masks = [np.empty(len(q), dtype=bool) for _ in ranges]
    for i in range(0, len(q), block):
        dte = q.t_years[i:i + block] * DAYS_PER_YEAR  # = QuoteArrays.dte_days, bit for bit
        for mask, (lo, hi, closed) in zip(masks, ranges, strict=True):
            np.logical_and(dte >= lo, (dte <= hi) if closed else (dte < hi), out=mask[i:i + block])
    return masks


def _in_global(q: QuoteArrays, config: CalibrationConfig) -> np.ndarray:
    return (q.dte_days >= config.min_dte) & (q.dte_days <= config.max_dte)


def _parallel_map(fn: Callable[[_A], _R], items: Sequence[_A], *, parallel: bool) -> list[_R]:
    """`[fn(x) for x in items]`, on up to `ENGINE_THREADS` threads when `parallel` (results in order)."""
    if not parallel or ENGINE_THREADS < 2 or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(ENGINE_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


def _stride_positions(mask: np.ndarray, k: int, block: int = SCORE_BLOCK) -> np.ndarray:
    """Positions of the selected quotes of `mask`, thinned to an evenly spaced `k` when there are more.

    The same positions as ``flatnonzero(mask)[linspace(0, n - 1, k).round()]``, found block by
    block so the full list of positions (~8 bytes per selected quote) is never built.
    """
    n = int(np.count_nonzero(mask))
    if n <= k:
        return np.flatnonzero(mask)
    ranks = np.linspace(0, n - 1, k).round().astype(np.int64)
    out = np.empty(k, dtype=np.int64)
    done = seen = 0
    for i in range(0, mask.size, block):
        pos = np.flatnonzero(mask[i:i + block])
        upto = int(np.searchsorted(ranks, seen + pos.size, side="left"))
        out[done:upto] = pos[ranks[done:upto] - seen] + i
        done, seen = upto, seen + pos.size
    return out


def _newest_positions(snapshot: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Positions of the quotes of `mask` at its newest snapshot (no masked copy of the snapshots).

    `snapshot` is any integer key in time order: epoch microseconds or an index into a table.
    """
    if not mask.any():
        return np.zeros(0, np.int64)
    newest = snapshot.max(where=mask, initial=np.iinfo(snapshot.dtype).min)
    return np.flatnonzero((snapshot == newest) & mask)


SMILE_MIN_QUOTES = 20  # a newest snapshot thinner than this: the smile is drawn from the whole sample


def _rv_and_atm(g: FitInputs, snapshot_us: np.ndarray, m: float) -> tuple[float | None, float | None]:
    """RV_7d at the newest snapshot and the vega-weighted market IV near the money there."""
    if len(g) == 0:
        return None, None
    newest = snapshot_us == snapshot_us.max()
    rv_now = median(g.rv[newest]) * 100
    k = np.abs(g.z1[newest]) / m  # |ln K/F| / (RV m sqrt T)
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
        last = config.bands[-1] if config.bands else None
        for band in config.bands:
            # Bands are [min, max); the last band also owns its upper edge (180 d is quarterly).
            inside = band.dte_min <= tenor < band.dte_max or (band is last and tenor == band.dte_max)
            if inside and band_mult.get(band.name) is not None:
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
