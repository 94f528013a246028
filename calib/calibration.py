"""Calibration runs: harvested windows and live chains through one code path.

`run_historical_calibration_from_harvest` reads a lookback window of
harvested snapshots; `run_calibration_extended` (in `calib.live`) hands one
current chain to the same `calibrate_harvest_read`. Both grade data quality,
run the engine, apply the realism guardrails and return a CalibrationResult.
Nothing here writes the history store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from calib.config import DAYS_PER_YEAR, CalibrationConfig
from calib.data.quality import (
    INVALID_REASONS,
    DataQuality,
    DataQualityIssue,
    check_coverage,
    check_schema,
    check_units,
    grade,
    row_reason_expr,
)
from calib.data.reader import HarvestRead, default_window, read_harvest
from calib.engine.calibrate import EngineOutput, calibrate_quotes
from calib.engine.guardrails import assess_calibration_realism
from calib.engine.metrics import EMPTY
from calib.engine.model import QuoteArrays
from calib.engine.result import CalibrationResult, GlobalMetrics, OptionTypeMetrics
from calib.numerics.black76 import black76_vega_coin
from calib.numerics.implied_vol import implied_vol
from calib.numerics.realized_vol import trailing_realized_vol

Progress = Callable[[str], None]
_US_PER_YEAR = DAYS_PER_YEAR * 86400e6
RV_SHORT_HISTORY_DAYS = 3.5  # median RV history below this degrades the run


def new_run_id(underlying: str, now: datetime) -> str:
    return f"{underlying}-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def run_historical_calibration_from_harvest(
    config: CalibrationConfig, *, progress: Progress | None = None
) -> CalibrationResult:
    """Calibrate on the harvested window ending at `harvest.end_time` (default: now).

    The window is `[end - lookback_days, end]`; the index is read from 7 days
    earlier so every snapshot has a trailing RV_7d with no look-ahead. With no
    end time and a harvest that stopped in the past, the window ends at the
    newest snapshot and the result says so (issue `window_clamped`).
    """
    t0 = time.perf_counter()
    h = config.harvest
    lookback = timedelta(days=config.lookback_days)
    clamped = False
    if h.start_time is not None and h.end_time is not None:
        start, end = h.start_time, h.end_time
    else:
        start, end, clamped = default_window(h.data_root, config.underlying, lookback=lookback, as_of=h.end_time)
    read = read_harvest(h.data_root, config.underlying, window_start=start, window_end=end,
                        warmup=h.rv_warmup, progress=progress)
    extra: list[DataQualityIssue] = []
    if clamped:
        age_d = (datetime.now(UTC) - end).total_seconds() / 86400
        extra.append(DataQualityIssue(
            code="window_clamped", severity="info",
            message=(f"newest harvested snapshot is {age_d:.1f} days old; the window ends at it "
                     f"({end:%Y-%m-%d %H:%M}Z). Pass --as-of to choose the end explicitly")))
    return calibrate_harvest_read(read, config, coverage_applies=True, extra_issues=extra,
                                  scan_s=time.perf_counter() - t0, progress=progress)


def calibrate_harvest_read(
    read: HarvestRead,
    config: CalibrationConfig,
    *,
    coverage_applies: bool,
    extra_issues: list[DataQualityIssue] | None = None,
    scan_s: float = 0.0,
    progress: Progress | None = None,
) -> CalibrationResult:
    """The shared path: quality, RV, IV, engine, guardrails -> CalibrationResult."""
    timings = {"scan": scan_s}
    t = time.perf_counter()
    issues = check_schema(read.columns_present, read.columns_missing_somewhere)
    issues += list(extra_issues or [])
    if read.skipped:
        names = ", ".join(s.path.rsplit("/", 1)[-1] for s in read.skipped[:3])
        issues.append(DataQualityIssue(
            code="files_skipped", severity="warning",
            message=f"{len(read.skipped)} unreadable file(s) skipped: {names}"
            + (" ..." if len(read.skipped) > 3 else ""), count=len(read.skipped)))
    has_mark_iv = "mark_iv" in read.columns_present
    quotes = read.quotes
    rows_scanned = quotes.height
    required_ok = not any(i.code == "missing_required_column" for i in issues)

    coverage = expected = None
    present = quotes["snapshot_ts"].n_unique() if rows_scanned else 0
    step_min = gap_min = None
    if coverage_applies:
        cov = check_coverage(quotes["snapshot_ts"], window_start=read.window_start,
                             window_end=read.window_end, step=config.harvest.snapshot_step)
        coverage, expected, present, step_min, gap_min, cov_issues = cov
        issues += cov_issues
    elif rows_scanned:
        coverage = 100.0
    if rows_scanned:
        issues += check_units(quotes, config.quality)
    timings["data_quality"] = time.perf_counter() - t

    # RV_7d per snapshot from the index series (trailing, no look-ahead).
    t = time.perf_counter()
    rv_frame, rv_issues = _rv_per_snapshot(read.index)
    issues += rv_issues
    timings["rv"] = time.perf_counter() - t

    t = time.perf_counter()
    dte_max_read = max([config.max_dte, *(b.dte_max for b in config.bands)])
    if required_ok and rows_scanned:
        prepared = _prepare(quotes, rv_frame, config, has_mark_iv=has_mark_iv, dte_max_read=dte_max_read)
    else:
        prepared = None
    excluded: dict[str, int] = {}
    arrays: QuoteArrays | None = None
    inverted = 0
    if prepared is not None:
        counts = prepared.group_by("exclude_reason").len()
        excluded = {r: int(n) for r, n in counts.iter_rows() if r is not None}
        usable = prepared.filter(pl.col("exclude_reason").is_null())
        arrays, inv_fail, inverted = _to_arrays(usable, has_mark_iv=has_mark_iv)
        if inv_fail:
            excluded["iv_inversion_failed"] = inv_fail
        if config.max_samples is not None and len(arrays) > config.max_samples:
            keep = _sample_mask(len(arrays), config.max_samples)
            excluded["sampled_out"] = int((~keep).sum())
            arrays = arrays.subset(keep)
        rv_span = prepared.filter(pl.col("exclude_reason").is_null())["rv_span_days"].median()
        if rv_span is not None and rv_span < RV_SHORT_HISTORY_DAYS:  # type: ignore[operator]
            issues.append(DataQualityIssue(
                code="rv_short_history", severity="warning",
                message=(f"RV_7d warm-up incomplete: median history {rv_span:.1f} d of 7 d "
                         "(harvest the week before the window for a full estimate)")))
    if excluded.get("no_rv"):
        issues.append(DataQualityIssue(
            code="rv_unavailable", severity="warning",
            message=(f"{excluded['no_rv']} quotes have no RV_7d: fewer than 12 index observations "
                     "(or < 6 h of history) in the 7 days before their snapshot"),
            count=excluded["no_rv"]))
    if inverted:
        issues.append(DataQualityIssue(code="iv_inverted_rows", severity="info",
                                       message=f"{inverted} implied vols inverted from mark_price",
                                       count=inverted))
    for reason in ("zero_mark", "min_tick"):
        if excluded.get(reason):
            issues.append(DataQualityIssue(
                code=reason, severity="info",
                message=f"{excluded[reason]} quotes at zero or at the 0.0001 coin floor excluded from fits",
                count=excluded[reason]))
    invalid = sum(excluded.get(r, 0) for r in INVALID_REASONS)
    invalid_pct = 100.0 * invalid / rows_scanned if rows_scanned else 0.0
    if invalid:
        detail = ", ".join(f"{r}={excluded[r]}" for r in INVALID_REASONS if excluded.get(r))
        issues.append(DataQualityIssue(code="invalid_row_reasons", severity="info",
                                       message=f"invalid rows by reason: {detail}", count=invalid))
    timings["pricing"] = time.perf_counter() - t

    engine: EngineOutput | None = None
    if arrays is not None and len(arrays):
        if progress:
            progress(f"calibrating {len(arrays):,} quotes")
        engine = calibrate_quotes(arrays, config)
        timings.update(engine.timings_s)
    n_global = engine.n_samples if engine else 0
    status_dq, issues = grade(issues, coverage_pct=coverage, invalid_pct=invalid_pct, rows_used=n_global,
                              files_skipped=len(read.skipped), th=config.quality)
    dq = DataQuality(
        status=status_dq, issues=tuple(issues), rows_scanned=rows_scanned, rows_used=n_global,
        excluded=excluded, coverage_pct=coverage, snapshots_expected=expected, snapshots_present=present,
        snapshot_step_minutes=step_min, largest_gap_minutes=gap_min, files_total=read.files_total,
        files_skipped=len(read.skipped), invalid_pct=invalid_pct,
        extra={"iv_source": "mark_iv" if has_mark_iv else "inverted",
               "rv_source": _rv_source(read.index),
               "skipped_files": [s.path for s in read.skipped]},
    )
    gm = engine.global_metrics if engine else GlobalMetrics(
        multiplier_tested=config.multiplier_tested, recommended_iv_multiplier=None, at_bound=False,
        at_recommended=EMPTY, tested=EMPTY, rv_7d_pct=None, atm_iv_pct=None)
    failed_codes = [i.code for i in issues if i.severity == "error"]
    status, reason = assess_calibration_realism(
        gm.recommended_iv_multiplier, gm.at_recommended.mae_pct, gm.at_recommended.vega_weighted_mae_pct,
        status_dq, at_bound=gm.at_bound, data_quality_issues=failed_codes, thresholds=config.realism)
    now = datetime.now(UTC)
    return CalibrationResult(
        run_id=new_run_id(config.underlying, now), created_at=now, source=config.source,
        underlying=config.underlying, status=status, reason=reason, applied=False,
        dte_min=config.min_dte, dte_max=config.max_dte,
        lookback_days=config.lookback_days if config.source == "harvested" else None,
        n_samples=n_global, n_snapshots=engine.n_snapshots if engine else 0, global_metrics=gm,
        bands=engine.bands if engine else (),
        option_type_metrics=engine.option_type_metrics if engine else tuple(
            OptionTypeMetrics(option_type=t, metrics=EMPTY) for t in config.option_types),
        skew=engine.skew if engine else None,
        recommended_surface=engine.recommended_surface if engine else None,
        data_quality=dq,
        window={"start": read.window_start, "end": read.window_end,
                "newest_snapshot": read.newest_snapshot_ts, "data_root": str(config.harvest.data_root)},
        timings_s=timings, replay=config.replay,
    )


def _rv_source(index: pl.DataFrame) -> str:
    if index.height == 0:
        return "none"
    sources = set(index["index_source"].drop_nulls().unique().to_list())
    return "index_price" if sources == {"index_price"} else ("nearest_forward" if sources else "none")


def _rv_per_snapshot(index: pl.DataFrame) -> tuple[pl.DataFrame, list[DataQualityIssue]]:
    issues: list[DataQualityIssue] = []
    idx = index.filter(pl.col("index_usd").is_not_null() & (pl.col("index_usd") > 0))
    ts_us = idx["snapshot_ts"].dt.epoch("us").to_numpy().astype(np.float64)
    rv, span = trailing_realized_vol(ts_us / 1e6, idx["index_usd"].to_numpy(), min_span_seconds=6 * 3600.0)
    fallback = int((idx["index_source"] == "nearest_forward").sum())
    if fallback and "rv_fallback" not in {i.code for i in issues}:
        issues.append(DataQualityIssue(
            code="rv_fallback", severity="warning",
            message=f"index_price missing on {fallback} snapshot(s): RV from the nearest-expiry forward",
            count=fallback))
    # NaN compares greater than everything in polars: make "no RV" a null.
    frame = pl.DataFrame({"snapshot_ts": idx["snapshot_ts"], "rv": rv, "rv_span_days": span / 86400.0}).with_columns(
        pl.col("rv").fill_nan(None))
    return frame, issues


def _prepare(quotes: pl.DataFrame, rv_frame: pl.DataFrame, config: CalibrationConfig, *,
             has_mark_iv: bool, dte_max_read: float) -> pl.DataFrame:
    t_years = (pl.col("expiry_ts") - pl.col("snapshot_ts")).dt.total_microseconds() / _US_PER_YEAR
    k_rel = pl.col("strike") / pl.col("underlying_price")
    is_call = pl.col("option_type") == "C"
    intrinsic = pl.when(is_call).then((1 - k_rel).clip(lower_bound=0)).otherwise((k_rel - 1).clip(lower_bound=0))
    reason = row_reason_expr(has_mark_iv=has_mark_iv, option_types=config.option_types,
                             dte_max_read=dte_max_read, min_tick_coin=config.min_tick_coin, th=config.quality)
    return (
        quotes.lazy()
        .with_columns(t_years.alias("t_years"), is_call.alias("is_call"))
        .with_columns((pl.col("t_years") * DAYS_PER_YEAR).alias("dte_days"), intrinsic.alias("intrinsic_coin"))
        .join(rv_frame.lazy(), on="snapshot_ts", how="left", maintain_order="left")
        .with_columns(reason)
        .with_columns(
            pl.when(pl.col("exclude_reason").is_null() & (pl.col("rv").is_null() | (pl.col("rv") <= 0)))
            .then(pl.lit("no_rv"))
            .otherwise(pl.col("exclude_reason"))
            .alias("exclude_reason")
        )
        .collect()
    )


def _to_arrays(usable: pl.DataFrame, *, has_mark_iv: bool) -> tuple[QuoteArrays, int, int]:
    """Numpy views of the usable rows; inverts IVs when the data has none."""
    f = usable["underlying_price"].to_numpy()
    k = usable["strike"].to_numpy()
    t = usable["t_years"].to_numpy()
    c = usable["is_call"].to_numpy()
    mark = usable["mark_price"].to_numpy()
    inverted = 0
    if has_mark_iv:
        iv = usable["mark_iv"].to_numpy() / 100.0
    else:
        iv, _ = implied_vol(mark, f, k, t, c)
        inverted = int(np.isfinite(iv).sum())
    ok = np.isfinite(iv) & (iv > 0)
    vega = black76_vega_coin(f, k, t, np.where(ok, iv, 0.0))
    arrays = QuoteArrays(
        forward_usd=f, strike_usd=k, t_years=t, is_call=c, mark_coin=mark, iv=iv,
        rv=usable["rv"].to_numpy(), vega_coin=vega, dte_days=usable["dte_days"].to_numpy(),
        snapshot_us=usable["snapshot_ts"].dt.epoch("us").to_numpy(),
    )
    n_fail = int((~ok).sum())
    if n_fail:
        arrays = arrays.subset(ok)
    return arrays, n_fail, inverted


def _sample_mask(n: int, max_samples: int) -> np.ndarray:
    """Deterministic, evenly spaced subset: the same data always gives the same sample."""
    keep = np.zeros(n, dtype=bool)
    keep[np.linspace(0, n - 1, max_samples).round().astype(np.int64)] = True
    return keep
