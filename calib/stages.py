"""The stages of a calibration run that both drivers share (in memory: `calib.calibration`,
chunked: `calib.streaming`): the RV series of a window, quote preparation (one exclusion reason
per row, counted; the usable rows as arrays with RV and IV) and the graded result.

Both drivers import these from here and nothing from each other, so there is no import cycle.
Nothing here writes the history store.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from calib._typing import FloatArray, Status
from calib.config import DAYS_PER_YEAR, CalibrationConfig
from calib.data.quality import (
    FILTER_REASONS,
    INVALID_REASONS,
    check_coverage,
    check_schema,
    check_units,
    grade,
    mark_iv_issue,
    row_reason_code_expr,
)
from calib.data.reader import (
    TS_TYPE,
    HarvestFiles,
    HarvestRead,
    SkippedFile,
    read_index_series,
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
from calib.engine.model import ROW_FIELDS, SNAP_DTYPE, QuoteArrays, SnapshotTable
from calib.engine.result import (
    CalibrationResult,
    DataQuality,
    DataQualityIssue,
    GlobalMetrics,
    OptionTypeMetrics,
)
from calib.numerics.black76 import black76_price_coin
from calib.numerics.implied_vol import implied_vol
from calib.numerics.realized_vol import trailing_realized_vol
from calib.numerics.stats import distinct, median


def new_run_id(underlying: str, now: datetime) -> str:
    return f"{underlying}-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"

Progress = Callable[[str], None]
_US_PER_YEAR = DAYS_PER_YEAR * 86400e6
RV_SHORT_HISTORY_DAYS = 3.5  # median RV history below this degrades the run
# Row exclusion reasons as codes (quality.py's order); USABLE marks rows without one.
ROW_REASONS: tuple[str, ...] = tuple(dict.fromkeys((*INVALID_REASONS, *FILTER_REASONS)))
USABLE = 255
_REASON_CODES = {r: i for i, r in enumerate(ROW_REASONS)}
UNIT_CHECK_SAMPLE = 16_384  # values per chunk behind the unit check's medians
KERNEL_BLOCK = 1 << 17  # quotes per IV kernel call: small temporaries, no fresh-memory faults


class RvState:
    """The window's index series and RV lookup, read on first use (so the read can overlap a quote read)."""

    def __init__(self, hf: HarvestFiles, timings: dict[str, float]) -> None:
        self._hf, self._timings = hf, timings
        self._lookup: RvLookup | None = None
        self._index: pl.DataFrame | None = None
        self.issues: list[DataQualityIssue] = []

    def lookup(self) -> RvLookup:
        if self._lookup is None:
            t = time.perf_counter()
            self._index = read_index_series(self._hf)
            t1 = time.perf_counter()
            self._lookup, self.issues = rv_lookup(self._index)
            self._timings["scan"] = self._timings.get("scan", 0.0) + t1 - t
            self._timings["rv"] = self._timings.get("rv", 0.0) + time.perf_counter() - t1
        return self._lookup

    @property
    def index(self) -> pl.DataFrame:
        self.lookup()
        assert self._index is not None
        return self._index


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
               "rv_source": _rv_source(index),
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


def _rv_source(index: pl.DataFrame) -> str:
    if index.height == 0:
        return "none"
    sources = set(index["index_source"].drop_nulls().unique().to_list())
    return "index_price" if sources == {"index_price"} else ("nearest_forward" if sources else "none")


@dataclass(frozen=True, slots=True)
class RvLookup:
    """RV_7d per snapshot, sorted by time, for vectorized lookups by `snapshot_us`."""

    ts_us: np.ndarray  # int64 epoch microseconds, increasing
    rv: FloatArray  # annualized fraction, NaN where undefined
    span_days: FloatArray  # history the estimate used
    table: SnapshotTable = field(init=False)  # what the window's QuoteArrays index (one object per window)

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", SnapshotTable(ts_us=self.ts_us, rv=self.rv))

    def find(self, snapshot_us: np.ndarray) -> np.ndarray:
        """Each row's index into the table, -1 where the snapshot is unknown or has no RV (int32)."""
        if self.ts_us.size == 0 or snapshot_us.size == 0:
            return np.full(snapshot_us.size, -1, SNAP_DTYPE)
        # Rows come grouped by snapshot: look up and check each run once, then repeat.
        starts = np.flatnonzero(np.r_[True, snapshot_us[1:] != snapshot_us[:-1]])
        keys = snapshot_us[starts]
        pos = np.minimum(np.searchsorted(self.ts_us, keys), self.ts_us.size - 1)
        with np.errstate(invalid="ignore"):
            ok = (self.ts_us[pos] == keys) & (self.rv[pos] > 0)
        return np.repeat(np.where(ok, pos, -1).astype(SNAP_DTYPE), np.diff(np.r_[starts, snapshot_us.size]))


def rv_lookup(index: pl.DataFrame) -> tuple[RvLookup, list[DataQualityIssue]]:
    """Trailing RV_7d (no look-ahead) at every snapshot of the index series."""
    issues: list[DataQualityIssue] = []
    idx = index.filter(pl.col("index_usd").is_not_null() & (pl.col("index_usd") > 0))
    ts_us = idx["snapshot_ts"].dt.epoch("us").to_numpy()
    rv, span = trailing_realized_vol(ts_us.astype(np.float64) / 1e6, idx["index_usd"].to_numpy(),
                                     min_span_seconds=6 * 3600.0)
    fallback = int((idx["index_source"] == "nearest_forward").sum())
    if fallback:
        issues.append(DataQualityIssue(
            code="rv_fallback", severity="warning",
            message=f"index_price missing on {fallback} snapshot(s): RV from the nearest-expiry forward",
            count=fallback))
    return RvLookup(ts_us=np.asarray(ts_us, dtype=np.int64), rv=rv, span_days=span / 86400.0), issues


@dataclass(slots=True, kw_only=True)
class QuoteTally:
    """What data quality needs from the quotes of a window; chunks `merge` into one.

    Counts are exact over any split. The unit check (coin vs USD marks, percent
    vs fraction IVs: orders of magnitude apart) judges the count-weighted median
    of per-chunk medians, each over the positive values among an evenly spaced
    sample of at most `UNIT_CHECK_SAMPLE` rows.
    """

    rows: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    inverted: int = 0
    iv_checked: int = 0  # usable rows whose mark was repriced from their own mark_iv
    iv_mismatch: int = 0  # of those, off by more than the tolerance (`mark_iv_mismatches`)
    snapshots_us: list[np.ndarray] = field(default_factory=list)
    mark_medians: list[tuple[float, int]] = field(default_factory=list)  # (median, positive values) per chunk
    iv_medians: list[tuple[float, int]] = field(default_factory=list)
    span_days: FloatArray | None = None  # RvLookup.span_days
    span_counts: np.ndarray | None = None  # usable quotes per RvLookup entry

    def merge(self, other: QuoteTally) -> None:
        self.rows += other.rows
        for k, v in other.excluded.items():
            self.excluded[k] = self.excluded.get(k, 0) + v
        self.inverted += other.inverted
        self.iv_checked += other.iv_checked
        self.iv_mismatch += other.iv_mismatch
        self.snapshots_us.extend(other.snapshots_us)
        self.mark_medians.extend(other.mark_medians)
        self.iv_medians.extend(other.iv_medians)
        if other.span_counts is not None:
            if self.span_counts is None:
                self.span_days, self.span_counts = other.span_days, other.span_counts.copy()
            else:
                self.span_counts += other.span_counts

    def snapshot_series(self) -> pl.Series:
        us = distinct(np.concatenate(self.snapshots_us)) if self.snapshots_us else np.empty(0, np.int64)
        # From a list, not the array: polars' numpy path imports numpy.ma (~10 ms) for a few thousand values.
        return pl.Series("snapshot_ts", us.tolist(), dtype=pl.Int64).cast(TS_TYPE)

    def newest_snapshot(self) -> datetime | None:
        s = self.snapshot_series()
        return s.max() if s.len() else None  # type: ignore[return-value]

    def unit_issues(self, config: CalibrationConfig) -> list[DataQualityIssue]:
        """`check_units` on the medians (issue counts are all rows, as on the full frame)."""
        one_row = pl.DataFrame({"mark_price": [_weighted_median(self.mark_medians)],
                                "mark_iv": [_weighted_median(self.iv_medians)]},
                               schema={"mark_price": pl.Float64, "mark_iv": pl.Float64})
        return [replace(i, count=self.rows) for i in check_units(one_row, config.quality)]

    def rv_span_median_days(self) -> float | None:
        """Median RV history over usable quotes (weighted by quotes per snapshot: exact)."""
        if self.span_counts is None or self.span_days is None or not self.span_counts.any():
            return None
        return _median_of_counts(self.span_days, self.span_counts)


def _weighted_median(pairs: list[tuple[float, int]]) -> float | None:
    pairs = [(m, n) for m, n in pairs if n > 0 and m is not None]
    if not pairs:
        return None
    if len(pairs) == 1:
        return pairs[0][0]
    return _median_of_counts(np.array([m for m, _ in pairs]), np.array([n for _, n in pairs]))


def _median_of_counts(values: FloatArray, counts: np.ndarray) -> float:
    """Median of `values[i]` repeated `counts[i]` times (mean of the two middle ones when even)."""
    order = np.argsort(values, kind="stable")
    v, c = values[order], counts[order]
    cum = np.cumsum(c)
    n = int(cum[-1])
    lo = v[np.searchsorted(cum, (n - 1) // 2, side="right")]
    hi = v[np.searchsorted(cum, n // 2, side="right")]
    return float(lo + hi) / 2.0


def iter_prepared(
    chunks: Iterable[pl.LazyFrame],
    lookup: Callable[[], RvLookup] | RvLookup,
    config: CalibrationConfig,
    *,
    has_mark_iv: bool,
    timings: dict[str, float] | None = None,
    count: bool = True,
) -> Iterator[tuple[QuoteTally, QuoteArrays]]:
    """One exclusion reason per row (counted), then the usable rows as arrays with RV and IV, for
    each of `chunks`, reading chunk i+1 while chunk i is processed (see `iter_frames`)."""
    timings = timings if timings is not None else {}
    for frame, rv in iter_frames(chunks, lookup, config, has_mark_iv=has_mark_iv, timings=timings):
        yield process_quote_frame(frame, rv, config, has_mark_iv=has_mark_iv, timings=timings, count=count)


def iter_frames(
    chunks: Iterable[pl.LazyFrame],
    lookup: Callable[[], RvLookup] | RvLookup,
    config: CalibrationConfig,
    *,
    has_mark_iv: bool,
    timings: dict[str, float],
) -> Iterator[tuple[pl.DataFrame, RvLookup]]:
    """Collected `quote_frame`s of `chunks` with the RV lookup, reading the next chunks while one is used.

    Chunks are read `READ_BATCH` at a time (one `collect_all`). Polars reads on
    its own threads, numpy works on this one, so the two overlap. `lookup` may be a callable, called once after the first read
    has started (so the index read overlaps it too). `timings["collect"]`
    counts only the time spent waiting for a read.
    """
    it = iter(chunks)
    exprs = quote_exprs(config, has_mark_iv=has_mark_iv)

    def read_batch() -> Future[list[pl.DataFrame]] | None:
        plans = [quote_frame(c, config, has_mark_iv=has_mark_iv, exprs=exprs)
                 for c in itertools.islice(it, READ_BATCH)]
        return pool.submit(pl.collect_all, plans) if plans else None

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="calib-read") as pool:
        pending = read_batch()
        if pending is None:
            return
        rv = lookup() if callable(lookup) else lookup
        while pending is not None:
            t = time.perf_counter()
            frames = pending.result()
            timings["collect"] = timings.get("collect", 0.0) + time.perf_counter() - t
            pending = read_batch()
            while frames:
                yield frames.pop(0), rv


READ_BATCH = 2  # chunks per polars collect: a pair keeps both cores busier than one (~10% less wall at 14 days)


def quote_frame(quotes: pl.LazyFrame, config: CalibrationConfig, *, has_mark_iv: bool,
                exprs: QuoteExprs | None = None) -> pl.LazyFrame:
    """The narrow frame `process_quote_frame` needs: reason code per row and the engine's columns.

    `exprs` (from `quote_exprs`) saves rebuilding the same expressions for every chunk.
    """
    e = exprs if exprs is not None else quote_exprs(config, has_mark_iv=has_mark_iv)
    return quotes.with_columns(*e.first).with_columns(*e.second).select(*e.out)


@dataclass(frozen=True, slots=True)
class QuoteExprs:
    first: tuple[pl.Expr, ...]
    second: tuple[pl.Expr, ...]
    out: tuple[pl.Expr | str, ...]


def quote_exprs(config: CalibrationConfig, *, has_mark_iv: bool) -> QuoteExprs:
    """The expressions of `quote_frame` (building them costs ~3 ms: once per window, not per chunk)."""
    dte_max_read = max([config.max_dte, *(b.dte_max for b in config.bands)])
    t_years = (pl.col("expiry_ts") - pl.col("snapshot_ts")).dt.total_microseconds() / _US_PER_YEAR
    k_rel = pl.col("k_rel")
    is_call = pl.col("option_type") == "C"
    intrinsic = pl.when(is_call).then((1 - k_rel).clip(lower_bound=0)).otherwise((k_rel - 1).clip(lower_bound=0))
    code = row_reason_code_expr(has_mark_iv=has_mark_iv, option_types=tuple(config.option_types),
                                dte_max_read=dte_max_read, min_tick_coin=config.min_tick_coin, th=config.quality,
                                codes=_REASON_CODES, usable=USABLE)
    return QuoteExprs(
        first=(t_years.alias("t_years"), is_call.fill_null(False).alias("is_call"),
               (pl.col("strike") / pl.col("underlying_price")).alias("k_rel")),
        second=((pl.col("t_years") * DAYS_PER_YEAR).alias("dte_days"), intrinsic.alias("intrinsic_coin")),
        out=(pl.col("snapshot_ts").dt.epoch("us").alias("snapshot_us"), code,
             *_engine_columns(has_mark_iv), *([] if has_mark_iv else [pl.col("mark_iv")])),
    )


def _engine_columns(has_mark_iv: bool) -> list[str]:
    return ["k_rel", "t_years", "is_call", "mark_price", *(["mark_iv"] if has_mark_iv else [])]


def process_quote_frame(
    frame: pl.DataFrame,
    lookup: RvLookup,
    config: CalibrationConfig,
    *,
    has_mark_iv: bool,
    timings: dict[str, float] | None = None,
    count: bool = True,
    out: dict[str, np.ndarray] | None = None,
    offset: int = 0,
) -> tuple[QuoteTally, QuoteArrays]:
    """Counts, unit medians and snapshots of a collected `quote_frame`; the usable rows as arrays.

    With `count=False` (a second pass over data already counted) the tally
    holds only the row count and the per-row exclusions found here. With
    `out` (arrays per `QuoteArrays` field, room for `frame.height` rows from
    `offset`), the usable rows are written there and the result views them:
    a window's rows land in their final place with one copy.
    """
    timings = timings if timings is not None else {}
    t = time.perf_counter()
    tally = QuoteTally(rows=frame.height)
    codes = frame["reason_code"].to_numpy()
    if count:
        counts = np.bincount(codes, minlength=USABLE + 1)
        tally.excluded = {ROW_REASONS[i]: int(n) for i, n in enumerate(counts[:len(ROW_REASONS)]) if n}
        for name, target in (("mark_price", tally.mark_medians), ("mark_iv", tally.iv_medians)):
            values = frame[name].to_numpy()
            sample = values[::-(-values.size // UNIT_CHECK_SAMPLE)] if values.size else values
            with np.errstate(invalid="ignore"):
                n_pos = int(np.count_nonzero(values > 0))
                sample = sample[sample > 0]
            if n_pos and sample.size:
                target.append((median(sample), n_pos))
    snap_all = frame["snapshot_us"].to_numpy()
    if count and snap_all.size:
        tally.snapshots_us.append(distinct(snap_all))
    # The usable rows go from the frame's buffers (zero-copy views where polars allows) straight into
    # numpy arrays (or `out`): no filtered polars frame in between.
    usable = codes == USABLE
    m = int(np.count_nonzero(usable))
    if out is None:
        out = {f: np.empty(m, dtype=_DTYPES[f]) for f in _FIELDS}
        offset = 0
    dst = {f: out[f][offset:offset + m] for f in _FIELDS}
    rows = np.flatnonzero(usable)
    for name, col in _FRAME_COLUMNS.items():
        _take_rows(frame[col], rows, dst[name])
    if has_mark_iv:
        _take_rows(frame["mark_iv"], rows, dst["iv"])
        dst["iv"] /= 100.0
        if count:
            tally.iv_checked = m
            tally.iv_mismatch = mark_iv_mismatches(dst["mark_coin"], dst["k_rel"], dst["t_years"], dst["iv"],
                                                   dst["is_call"], config)
    del frame
    timings["data_quality"] = timings.get("data_quality", 0.0) + time.perf_counter() - t

    # Each quote keeps an index into the window's snapshot table, not its own RV and time.
    t = time.perf_counter()
    np.take(lookup.find(snap_all), rows, out=dst["snap"], mode="clip")
    n_no_rv = int(np.count_nonzero(dst["snap"] < 0))
    if n_no_rv:  # rare: keep the rows with an RV, in place
        has_rv = dst["snap"] >= 0
        tally.excluded["no_rv"] = n_no_rv
        kept = m - n_no_rv
        for name in _FIELDS:
            dst[name][:kept] = dst[name][has_rv]
            dst[name] = dst[name][:kept]
        m = kept
    tally.span_days = lookup.span_days
    tally.span_counts = np.bincount(dst["snap"], minlength=lookup.ts_us.size)
    timings["rv"] = timings.get("rv", 0.0) + time.perf_counter() - t

    t = time.perf_counter()
    k_rel, t_y, call, mark = (dst[x] for x in ("k_rel", "t_years", "is_call", "mark_coin"))
    iv = dst["iv"]
    if not has_mark_iv:
        # Coin prices depend on K and F only through K/F: invert on a unit forward.
        _blocked(lambda s: implied_vol(mark[s], 1.0, k_rel[s], t_y[s], call[s])[0], m, out=iv)
        tally.inverted = int(np.isfinite(iv).sum())
    ok = np.isfinite(iv) & (iv > 0)
    n_fail = int(ok.size - np.count_nonzero(ok))
    if n_fail:
        tally.excluded["iv_inversion_failed"] = n_fail
    arrays = QuoteArrays(**dst, table=lookup.table)
    if n_fail:
        arrays = _compact_in_place(arrays, ok)
    timings["pricing"] = timings.get("pricing", 0.0) + time.perf_counter() - t
    return tally, arrays


def mark_iv_mismatches(mark_coin: FloatArray, k_rel: FloatArray, t_years: FloatArray, iv: FloatArray,
                       is_call: np.ndarray, config: CalibrationConfig) -> int:
    """Rows whose mark is not the Black-76 coin price of their own mark_iv.

    Off by more than max(`mark_iv_tolerance_ticks` ticks, `mark_iv_tolerance_pct` % of the
    mark): USD marks, scaled marks or an IV column from another row all show here while
    each value alone looks plausible. Coin prices depend on K and F only through K/F,
    so the reprice is on a unit forward (as the IV inversion).
    """
    q = config.quality
    n = mark_coin.size

    def off(s: slice) -> FloatArray:
        with np.errstate(invalid="ignore"):
            model = black76_price_coin(1.0, k_rel[s], t_years[s], iv[s], is_call[s])
            tol = np.maximum(q.mark_iv_tolerance_ticks * config.min_tick_coin, q.mark_iv_tolerance_pct / 100 * mark_coin[s])
            return (np.abs(model - mark_coin[s]) > tol).astype(np.float64)

    return int(_blocked(off, n).sum()) if n else 0


def _take_rows(column: pl.Series, rows: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = column[rows]`` (`rows` increasing), chunk by chunk: no copy of a multi-chunk column.

    A collected frame usually holds a few chunks per column; `to_numpy` on the whole
    column would first copy them into one buffer (~2 MB per column and day here).
    ``mode="clip"`` writes into `out` directly (the default mode buffers a copy of
    `out`); the rows are in range.
    """
    if column.n_chunks() == 1:
        np.take(column.to_numpy(), rows, out=out, mode="clip")
        return
    start = lo = 0
    for chunk in column.get_chunks():
        end = start + chunk.len()
        hi = int(np.searchsorted(rows, end))
        if hi > lo:
            np.take(chunk.to_numpy(), rows[lo:hi] - start, out=out[lo:hi], mode="clip")
        start, lo = end, hi


def _compact_in_place(q: QuoteArrays, keep: np.ndarray) -> QuoteArrays:
    """The rows of `q` where `keep`, moved to the front of the same arrays."""
    k = int(np.count_nonzero(keep))
    out = {}
    for f in _FIELDS:
        a = getattr(q, f)
        a[:k] = a[keep]
        out[f] = a[:k]
    return q.with_rows(out)


def prepare_window(
    chunks: Iterable[pl.LazyFrame],
    lookup: Callable[[], RvLookup] | RvLookup,
    config: CalibrationConfig,
    *,
    has_mark_iv: bool,
    capacity: int,
    timings: dict[str, float] | None = None,
) -> tuple[QuoteTally, QuoteArrays]:
    """`iter_prepared` chunk by chunk (e.g. one partition each) into one set of arrays.

    Polars memory stays at one chunk; the usable rows are written straight into
    arrays allocated once for `capacity` rows (an upper bound, e.g. from the
    files' sizes; pages never written are never touched, so a generous bound
    costs address space, not memory).
    """
    timings = timings if timings is not None else {}
    tally = QuoteTally()
    buf: dict[str, np.ndarray] = {f: np.empty(max(capacity, 0), dtype=_DTYPES[f]) for f in _FIELDS}
    n = 0
    table = EMPTY_TABLE
    for frame, rv in iter_frames(chunks, lookup, config, has_mark_iv=has_mark_iv, timings=timings):
        table = rv.table
        if n + frame.height > buf["mark_coin"].size:  # capacity was too small: grow geometrically
            size = max(2 * buf["mark_coin"].size, n + frame.height)
            grown = {f: np.empty(size, dtype=a.dtype) for f, a in buf.items()}
            for f, a in buf.items():
                grown[f][:n] = a[:n]
            buf = grown
        part, arrays = process_quote_frame(frame, rv, config, has_mark_iv=has_mark_iv, timings=timings, out=buf,
                                           offset=n)
        del frame
        tally.merge(part)
        n += len(arrays)
    return tally, QuoteArrays(**{f: buf[f][:n] for f in _FIELDS}, table=table)


_FIELDS: tuple[str, ...] = ROW_FIELDS
_DTYPES: dict[str, type] = {f: bool if f == "is_call" else SNAP_DTYPE if f == "snap" else np.float64
                            for f in _FIELDS}
EMPTY_TABLE = SnapshotTable(ts_us=np.zeros(0, np.int64), rv=np.zeros(0))
# QuoteArrays fields copied from `quote_frame` columns as they are (iv and snap are computed).
_FRAME_COLUMNS: dict[str, str] = {
    "k_rel": "k_rel", "t_years": "t_years", "is_call": "is_call", "mark_coin": "mark_price",
}


def _blocked(kernel: Callable[[slice], FloatArray], n: int, block: int = KERNEL_BLOCK, *,
             out: FloatArray | None = None) -> FloatArray:
    """`kernel` over slices of `block` elements into one float64 array of length n (`out` if given)."""
    out = np.empty(n) if out is None else out
    for i in range(0, n, block):
        s = slice(i, min(i + block, n))
        out[s] = kernel(s)
    return out

