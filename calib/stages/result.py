"""The graded result of a run: run id, window facts, the data-quality and realism grade, arbitrage and stale-chain verdicts, `build_result`."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from calib._typing import Status
from calib.config import CalibrationConfig
from calib.data.quality import (
    INVALID_REASONS,
    check_coverage,
    check_schema,
    grade,
    mark_iv_issue,
)
from calib.data.reader import (
    HarvestFiles,
    HarvestRead,
    SkippedFile,
)
from calib.engine.arbitrage import describe as describe_violation
from calib.engine.calibrate import EngineOutput, recommended_surface
from calib.engine.guardrails import (
    BAND_FAILED,
    BAND_OK,
    BAND_TOO_FEW,
    assess_calibration_realism,
    band_problems,
)
from calib.engine.metrics import EMPTY
from calib.engine.result import (
    CalibrationResult,
    DataQuality,
    DataQualityIssue,
    GlobalMetrics,
    OptionTypeMetrics,
)
from calib.stages.quotes import QuoteTally
from calib.stages.rv import RV_SHORT_HISTORY_DAYS, rv_source


def new_run_id(underlying: str, now: datetime) -> str:
    return f"{underlying}-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowFacts:
    """What a window's files say, whatever the engine path: columns, unreadable files, the window itself."""

    columns_present: frozenset[str]
    columns_missing_somewhere: frozenset[str]
    skipped: tuple[SkippedFile, ...]
    files_total: int
    window_start: datetime
    window_end: datetime
    coverage_applies: bool

    @classmethod
    def of(cls, src: HarvestFiles | HarvestRead, *, coverage_applies: bool = True) -> WindowFacts:
        return cls(columns_present=src.columns_present, columns_missing_somewhere=src.columns_missing_somewhere,
                   skipped=src.skipped, files_total=src.files_total, window_start=src.window_start,
                   window_end=src.window_end, coverage_applies=coverage_applies)


def wings_issue(beyond: dict[str, Any], config: CalibrationConfig) -> list[DataQualityIssue]:
    """`wings_beyond_anchors`: quotes beyond the outer skew anchors (a warning, so degraded, above the vega share)."""
    n, vega = beyond.get("n_quotes") or 0, beyond.get("vega_share_pct")
    if not n or vega is None:
        return []
    limit = config.quality.wings_beyond_anchors_vega_pct
    a = config.skew.anchors_z
    errors = ""
    if beyond.get("vmae_pct") is not None:
        errors = f" (vMAE there {beyond['vmae_pct']:.2f}%"
        if beyond.get("inside_vmae_pct") is not None:
            errors += f", within the anchors {beyond['inside_vmae_pct']:.2f}%"
        errors += ")"
    message = (f"{n} quotes ({beyond['quote_share_pct']:.1f}% of quotes, {vega:.1f}% of vega) lie beyond the outer "
               f"skew anchors z = {a[0]:g} / {a[-1]:g}, where the skew is extrapolated {config.skew.extrapolation}"
               + errors)
    if vega > limit:
        message += f"; more than {limit:g}% of vega: widen the anchors (skew.suggested_anchors_z)"
    return [DataQualityIssue(code="wings_beyond_anchors", severity="warning" if vega > limit else "info",
                             message=message, count=int(n))]


def bound_cause(gm: GlobalMetrics, config: CalibrationConfig) -> str:
    """Which multiplier sits on which hard bound (`multiplier_bounds`), for the failed reason."""
    lo, hi = config.multiplier_bounds

    def edge(m: float | None) -> str | None:
        if m is None:
            return None
        if m <= lo * (1 + 1e-6):
            return f"lower bound {lo:g}"
        if m >= hi * (1 - 1e-6):
            return f"upper bound {hi:g}"
        return None

    rec, cs = gm.recommended_iv_multiplier, gm.recommended_iv_multiplier_current_skew
    parts = []
    if edge(rec):
        parts.append(f"recommended multiplier {rec:.4f} at the hard {edge(rec)}")
    if cs is not None and cs != rec and edge(cs):
        parts.append(f"current-skew multiplier {cs:.4f} at the hard {edge(cs)}"
                     + (f": the current skew is far from the market's (with the fitted skew, {rec:.4f})"
                        if rec is not None and not edge(rec) else ""))
    return "; ".join(parts) or "a multiplier at a hard bound"


def build_result(
    tally: QuoteTally,
    engine: EngineOutput | None,
    index: pl.DataFrame,
    config: CalibrationConfig,
    *,
    facts: WindowFacts,
    extra_issues: list[DataQualityIssue],
    rv_issues: list[DataQualityIssue],
    timings: dict[str, float],
    extra_dq: dict[str, Any],
) -> CalibrationResult:
    """Data-quality issues and grade, guardrails, CalibrationResult (both engine paths end here)."""
    columns_present, columns_missing_somewhere = facts.columns_present, facts.columns_missing_somewhere
    skipped, files_total, coverage_applies = facts.skipped, facts.files_total, facts.coverage_applies
    window_start, window_end = facts.window_start, facts.window_end
    t = time.perf_counter()
    if tally.rows == 0:
        # Nothing in the window: say that, not "columns missing" about files that were never there.
        where = f"{window_start:%Y-%m-%d %H:%M}Z -> {window_end:%Y-%m-%d %H:%M}Z"
        issues = [DataQualityIssue(
            code="no_data_in_window", severity="error",
            message=(f"no readable quotes for {config.underlying} in {where} under {config.harvest.data_root}"
                     + (f" ({len(skipped)} unreadable file(s))" if skipped else "")
                     + "; check --data-dir and --as-of/--lookback-days"), count=0)]
    else:
        issues = check_schema(columns_present, columns_missing_somewhere)
    required_ok = not any(i.code == "missing_required_column" for i in issues)
    issues += extra_issues
    if skipped:
        names = ", ".join(s.path.rsplit("/", 1)[-1] for s in skipped[:3])
        issues.append(DataQualityIssue(
            code="files_skipped", severity="warning",
            message=f"{len(skipped)} unreadable file(s) skipped: {names}"
            + (" ..." if len(skipped) > 3 else ""), count=len(skipped)))
    has_mark_iv = "mark_iv" in columns_present
    rows_scanned = tally.rows
    snapshots = tally.snapshot_series()
    coverage = expected = None
    present = snapshots.len()
    step_min = gap_min = None
    if coverage_applies and rows_scanned == 0:
        coverage, expected = 0.0, None
    elif coverage_applies:
        cov = check_coverage(snapshots, window_start=window_start, window_end=window_end,
                             step=config.harvest.snapshot_step)
        coverage, expected, present, step_min, gap_min, cov_issues = cov
        issues += cov_issues
    elif rows_scanned:
        coverage = 100.0
    if rows_scanned:
        issues += tally.unit_issues(config)
        mm = mark_iv_issue(tally.iv_checked, tally.iv_mismatch, config.quality)
        if mm is not None:
            issues.append(mm)
    if any(i.code == "rv_fallback" for i in rv_issues):  # one rv_fallback, with the snapshot count
        issues = [i for i in issues if i.code != "rv_fallback"]
    issues += rv_issues
    if config.source == "live":
        stale = stale_chain_issue(tally.newest_snapshot(), config)
        if stale is not None:
            issues.append(stale)
    excluded = dict(tally.excluded) if required_ok else {}
    if required_ok and rows_scanned:
        rv_span = tally.rv_span_median_days()
        if rv_span is not None and rv_span < RV_SHORT_HISTORY_DAYS:
            issues.append(DataQualityIssue(
                code="rv_short_history", severity="warning",
                message=(f"RV_7d warm-up incomplete: median history {rv_span:.1f} d of 7 d "
                         "(harvest the week before the window for a full estimate)")))
    drift = next((j for j, i in enumerate(issues) if i.code == "schema_drift" and i.severity == "warning"), None)
    if drift is not None and excluded.get("missing_value"):
        i = issues[drift]
        issues[drift] = replace(i, message=f"{i.message}: {excluded['missing_value']:,} rows excluded (missing_value)")
    if excluded.get("no_rv"):
        issues.append(DataQualityIssue(
            code="rv_unavailable", severity="warning",
            message=(f"{excluded['no_rv']} quotes have no RV_7d: fewer than 12 index observations "
                     "(or < 6 h of history) in the 7 days before their snapshot"),
            count=excluded["no_rv"]))
    inverted = tally.inverted if required_ok else 0
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

    n_global = engine.n_samples if engine else 0
    if engine is not None and engine.beyond_anchors is not None:
        issues += wings_issue(engine.beyond_anchors, config)
    status_dq, issues, deciding = grade(issues, coverage_pct=coverage, invalid_pct=invalid_pct, rows_used=n_global,
                                        files_skipped=len(skipped), th=config.quality, excluded=excluded,
                                        rows_scanned=rows_scanned)
    dq = DataQuality(
        status=status_dq, issues=tuple(issues), rows_scanned=rows_scanned, rows_used=n_global,
        excluded=excluded, coverage_pct=coverage, snapshots_expected=expected, snapshots_present=present,
        snapshot_step_minutes=step_min, largest_gap_minutes=gap_min, files_total=files_total,
        files_skipped=len(skipped), invalid_pct=invalid_pct,
        extra={"iv_source": "mark_iv" if has_mark_iv else "inverted",
               "rv_source": rv_source(index),
               "skipped_files": [s.path for s in skipped], "mark_iv_checked": tally.iv_checked, **extra_dq},
    )
    gm = engine.global_metrics if engine else GlobalMetrics(
        multiplier_tested=config.multiplier_tested_value, recommended_iv_multiplier=None, at_bound=False,
        at_recommended=EMPTY, tested=EMPTY, rv_7d_pct=None, atm_iv_pct=None)
    bands = engine.bands if engine else ()
    skew_fit = engine.skew if engine else None
    surface = engine.recommended_surface if engine else None
    if status_dq == "failed":
        # Numbers fitted on data that failed its checks mean nothing: stored as NULL, shown as a dash.
        gm = replace(gm, recommended_iv_multiplier=None, recommended_iv_multiplier_current_skew=None,
                     at_bound=False, at_recommended=EMPTY, tested=EMPTY, ci_low=None, ci_high=None, atm_iv_pct=None)
        bands = tuple(replace(b, recommended_iv_multiplier=None, recommended_iv_multiplier_current_skew=None,
                              at_bound=False, metrics=EMPTY, tested=EMPTY, ci_low=None, ci_high=None,
                              status=BAND_TOO_FEW if b.n_samples < config.realism.min_band_samples else BAND_FAILED)
                      for b in bands)
        skew_fit, surface = None, None
    else:
        bands = tuple(replace(b, status=band_problems(b, config.realism)[0]) for b in bands)
        if surface is not None and any(b.status != BAND_OK for b in bands):
            # A band that is never applied does not shape the recommended surface either: its tenors
            # take the global multiplier.
            surface = recommended_surface(
                surface["rv_7d_pct"] / 100, surface["global_multiplier"],
                {b.name: b.recommended_iv_multiplier if b.status == BAND_OK else None for b in bands}, config,
                np.asarray(surface["moneyness_z"], dtype=np.float64), np.asarray(surface["skew_ratios"]))
    # The deciding issues first: the reason names the root cause, then any other error.
    failed_codes = list(dict.fromkeys([*(i.code for i in deciding if status_dq == "failed"),
                                       *(i.code for i in issues if i.severity == "error")]))
    dq_cause = (deciding[0].message if status_dq == "failed" and deciding
                else "; ".join(dict.fromkeys(i.code for i in deciding)) if deciding else None)
    status, reason = assess_calibration_realism(
        gm.recommended_iv_multiplier, gm.at_recommended.mae_pct, gm.at_recommended.vega_weighted_mae_pct,
        status_dq, at_bound=gm.at_bound, data_quality_issues=failed_codes, thresholds=config.realism,
        n_samples=n_global, n_snapshots=engine.n_snapshots if engine else 0, source=config.source,
        multiplier_current_skew=gm.recommended_iv_multiplier_current_skew, bands=bands,
        data_quality_reason=dq_cause)
    if gm.at_bound and status == "failed":
        reason += f" ({bound_cause(gm, config)})"
    arbitrage = engine.arbitrage if engine else None
    status, reason = arbitrage_grade(status, reason, arbitrage)
    timings["data_quality"] = timings.get("data_quality", 0.0) + time.perf_counter() - t
    now = datetime.now(UTC)
    return CalibrationResult(
        run_id=new_run_id(config.underlying, now), created_at=now, source=config.source,
        underlying=config.underlying, status=status, reason=reason, applied=False,
        dte_min=config.min_dte, dte_max=config.max_dte,
        lookback_days=config.lookback_days if config.source == "harvested" else None,
        n_samples=n_global, n_snapshots=engine.n_snapshots if engine else 0, global_metrics=gm,
        bands=bands,
        option_type_metrics=engine.option_type_metrics if engine and status_dq != "failed" else tuple(
            OptionTypeMetrics(option_type=t, metrics=EMPTY) for t in config.option_types),
        skew=skew_fit,
        recommended_surface=surface,
        data_quality=dq,
        window={"start": window_start, "end": window_end,
                "newest_snapshot": tally.newest_snapshot(), "data_root": str(config.harvest.data_root)},
        timings_s=timings, replay=config.replay, arbitrage=arbitrage,
        error_map=engine.error_map if engine else None, expiries=engine.expiries if engine else (),
    )


def stale_chain_issue(newest: datetime | None, config: CalibrationConfig,
                      now: datetime | None = None) -> DataQualityIssue | None:
    """`stale_chain` for a live run whose chain is older than `realism.max_chain_age_minutes`."""
    if newest is None:
        return None
    age_min = ((now or datetime.now(UTC)) - newest).total_seconds() / 60.0
    limit = config.realism.max_chain_age_minutes
    if age_min <= limit:
        return None
    return DataQualityIssue(
        code="stale_chain", severity="warning",
        message=(f"chain time {newest:%Y-%m-%d %H:%M}Z is {_age_text(age_min)} old "
                 f"(live runs allow {_age_text(limit)})" + ("; replay of a harvested snapshot" if config.replay else "")))


def _age_text(minutes: float) -> str:
    if minutes < 120:
        return f"{minutes:.0f} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.1f} days"


def arbitrage_grade(status: Status, reason: str, arbitrage: dict[str, Any] | None) -> tuple[Status, str]:
    """At most `degraded` when the recommended surface has static arbitrage, naming its first violation."""
    first = (arbitrage or {}).get("first")
    if status == "failed" or not first:
        return status, reason
    n_b, n_c = arbitrage.get("butterfly_violations", 0), arbitrage.get("calendar_violations", 0)  # type: ignore[union-attr]
    what = (f"Recommended surface has static arbitrage ({n_b} butterfly, {n_c} calendar point(s)); "
            f"first: {describe_violation(first)}")
    return "degraded", what if status == "ok" else f"{reason}; {what}"
