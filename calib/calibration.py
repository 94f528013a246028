"""Calibration runs: harvested windows and live chains through one code path.

`run_historical_calibration_from_harvest` reads a lookback window of
harvested snapshots; `run_calibration_extended` (in `calib.live`) hands one
current chain to the same `calibrate_read`. Both grade data quality,
run the engine, apply the realism guardrails and return a CalibrationResult.
Nothing here writes the history store.

Large windows (more rows than `CHUNKED_THRESHOLD_ROWS` by the Parquet
footers) run through `calib.streaming` partition by partition in bounded
memory; the pieces both paths share live below both in `calib.stages`
(`iter_chunk_arrays`, `QuoteTally`, `build_result`), so `calib.streaming` needs
nothing from this module (no import cycle).
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from calib.config import CalibrationConfig, history_path
from calib.data.quality import (
    required_columns_present,
)
from calib.data.reader import (
    HarvestFiles,
    HarvestRead,
    default_window,
    estimate_rows,
    find_harvest_files,
    max_rows,
    names_parse_more,
    partition_groups,
    reading,
    relisting,
    scan_quotes,
    window_snapshots,
    without_corrupt_files,
)
from calib.engine.calibrate import EngineOutput, calibrate_quotes
from calib.engine.model import QuoteArrays
from calib.engine.result import (
    CalibrationResult,
    DataQualityIssue,
)
from calib.stages import (
    Progress,
    QuoteTally,
    RvState,
    WindowFacts,
    build_result,
    rv_lookup,
    window_arrays,
)
from calib.stages.sampler import sample_mask

CHUNKED_THRESHOLD_ROWS = 20_000_000  # quote rows (Parquet footers) above which a window streams




def run_historical_calibration_from_harvest(
    config: CalibrationConfig,
    *,
    progress: Progress | None = None,
    chunk_threshold_rows: int | None = None,
    db_path: Path | None = None,
) -> CalibrationResult:
    """Calibrate on the harvested window ending at `harvest.end_time` (default: now).

    The window is `[end - lookback_days, end]`; the index is read from 7 days
    earlier so every snapshot has a trailing RV_7d with no look-ahead. With no
    end time and a harvest that stopped in the past, the window ends at the
    newest snapshot and the result says so (issue `window_clamped`).

    Windows with more quote rows than `chunk_threshold_rows` (default
    `CHUNKED_THRESHOLD_ROWS`, counted from the Parquet footers when the file
    sizes do not already rule it out) run chunked,
    one partition group at a time (`calib.streaming`); the result records the
    path in `data_quality.engine_path`.

    `multiplier_tested` None is the applied global multiplier of the history
    file `db_path` (the caller's, e.g. `--db`), else 1.0; the run never looks
    for a history file of its own.
    """
    t0 = time.perf_counter()
    config = resolve_multiplier_tested(config, db_path)
    h = config.harvest
    lookback = timedelta(days=config.lookback_days)
    clamped = False
    if h.start_time is not None and h.end_time is not None:
        start, end = h.start_time, h.end_time
        config = replace(config, lookback_days=(end - start).total_seconds() / 86400)
    elif h.start_time is not None:  # a start alone: the lookback runs forward from it
        start, end = h.start_time, h.start_time + lookback
    else:
        start, end, clamped = default_window(h.data_root, config.underlying, lookback=lookback, as_of=h.end_time)
    extra: list[DataQualityIssue] = []
    if clamped:
        age_d = (datetime.now(UTC) - end).total_seconds() / 86400
        extra.append(DataQualityIssue(
            code="window_clamped", severity="info",
            message=(f"newest harvested snapshot is {age_d:.1f} days old; the window ends at it "
                     f"({end:%Y-%m-%d %H:%M}Z). Pass --as-of to choose the end explicitly")))
    threshold = CHUNKED_THRESHOLD_ROWS if chunk_threshold_rows is None else chunk_threshold_rows

    def once() -> CalibrationResult:
        hf = find_harvest_files(h.data_root, config.underlying, window_start=start, window_end=end,
                                warmup=h.rv_warmup, progress=progress)
        if h.max_snapshots is not None:
            # Keep the newest `max_snapshots` snapshots: the window starts at the oldest kept one
            # (coverage is then judged on that shorter window; RV still warms up before it).
            snaps = window_snapshots(hf)
            if len(snaps) > h.max_snapshots:
                hf = find_harvest_files(h.data_root, config.underlying, window_start=snaps[-h.max_snapshots],
                                        window_end=end, warmup=h.rv_warmup, progress=progress)
        try:
            return calibrate_listing(hf)
        except (pl.exceptions.PolarsError, OSError):
            # A file with an intact footer but corrupt pages: find it, skip it, report it.
            cleaned = without_corrupt_files(hf)
            if cleaned is None:
                raise
            return calibrate_listing(cleaned)

    def calibrate_listing(hf: HarvestFiles) -> CalibrationResult:
        files = hf.quote_files()
        est_rows = max_rows(files)  # the sizes bound the rows: most windows need no footer count
        if est_rows > threshold:
            with reading(hf):
                est_rows = estimate_rows(files)
        if est_rows > threshold:
            from calib.streaming import calibrate_chunked  # only windows past the threshold stream

            return calibrate_chunked(hf, config, extra_issues=extra, progress=progress, t_start=t0,
                                     est_rows=est_rows)
        with reading(hf):
            return _calibrate_in_memory(hf, config, extra_issues=extra, progress=progress, t_start=t0,
                                        est_rows=est_rows)

    return relisting(once)


def _calibrate_in_memory(hf: HarvestFiles, config: CalibrationConfig, *, extra_issues: list[DataQualityIssue],
                         progress: Progress | None, t_start: float, est_rows: int) -> CalibrationResult:
    timings = {"scan": time.perf_counter() - t_start}
    rv = RvState(hf, timings)
    has_mark_iv = "mark_iv" in hf.columns_present
    groups = partition_groups(hf.quote_files())

    def prepare(parse_names: bool, timings: dict[str, float]) -> tuple[QuoteTally, QuoteArrays]:
        chunks = (scan_quotes(hf, g, parse_names=parse_names) for g in groups)
        return window_arrays(chunks, rv.lookup, config, has_mark_iv=has_mark_iv, capacity=est_rows,
                              timings=timings)

    prep_timings: dict[str, float] = {}
    tally, arrays = prepare(False, prep_timings)
    if tally.excluded.get("unparsable_instrument") and names_parse_more(hf.quote_files()):
        # Null expiry/strike/type inside files that have those columns: parse the names (slow path).
        prep_timings = {}
        tally, arrays = prepare(True, prep_timings)
    timings["scan"] += prep_timings.pop("collect", 0.0)
    for k, v in prep_timings.items():
        timings[k] = timings.get(k, 0.0) + v
    rv.lookup()  # read even when no quote file was in the window
    return calibrate_arrays(
        tally, arrays, rv.index, config, facts=WindowFacts.of(hf), extra_issues=extra_issues, rv_issues=rv.issues, timings=timings, progress=progress,
        extra_dq={"engine_path": "in_memory"},
    )


def resolve_multiplier_tested(config: CalibrationConfig, db_path: Path | None, *,
                              for_write: bool = False) -> CalibrationConfig:
    """Fill `multiplier_tested` when None: the applied global multiplier of the history file, else 1.0
    (SPEC section 3). The file is `db_path`, the caller's (`--db` of the command that records the run);
    a library caller that passes none gets the user's history file (`calib.config.history_path`:
    `$CALIB_DB`, else the default), as the CLI would.

    `for_write`: the run will be recorded in that file, so refuse now (StoreError, before any
    work) a file it could not be written to; check and read share one connection."""
    if config.multiplier_tested is not None and not for_write:
        return config
    from calib.store.applied import applied_global
    from calib.store.connection import check_writable

    path = history_path(db_path)
    if config.multiplier_tested is not None:
        check_writable(path)
        return config
    tested = applied_global(path, config.underlying, for_write=for_write)
    return replace(config, multiplier_tested=tested if tested is not None else 1.0)


def calibrate_read(
    read: HarvestRead,
    config: CalibrationConfig,
    *,
    coverage_applies: bool,
    extra_issues: list[DataQualityIssue] | None = None,
    scan_s: float = 0.0,
    progress: Progress | None = None,
    db_path: Path | None = None,
) -> CalibrationResult:
    """The shared path: quality, RV, IV, engine, guardrails -> CalibrationResult (`db_path`: as
    `run_historical_calibration_from_harvest`)."""
    config = resolve_multiplier_tested(config, db_path)
    timings = {"scan": scan_s}
    t = time.perf_counter()
    lookup, rv_issues = rv_lookup(read.index)
    timings["rv"] = time.perf_counter() - t
    tally, arrays = window_arrays([read.quotes.lazy()], lookup, config, has_mark_iv="mark_iv" in read.columns_present,
                                   capacity=read.quotes.height, timings=timings)
    timings["scan"] += timings.pop("collect", 0.0)
    return calibrate_arrays(
        tally, arrays, read.index, config, facts=WindowFacts.of(read, coverage_applies=coverage_applies),
        extra_issues=list(extra_issues or []), rv_issues=rv_issues,
        timings=timings, progress=progress, extra_dq={"engine_path": "in_memory"},
    )


def calibrate_arrays(
    tally: QuoteTally,
    arrays: QuoteArrays,
    index: pl.DataFrame,
    config: CalibrationConfig,
    *,
    facts: WindowFacts,
    extra_issues: list[DataQualityIssue],
    rv_issues: list[DataQualityIssue],
    timings: dict[str, float],
    progress: Progress | None,
    extra_dq: dict[str, Any],
) -> CalibrationResult:
    """Sample (`max_samples`), run the engine on the usable quotes and build the result."""
    required_ok = required_columns_present(facts.columns_present)
    engine: EngineOutput | None = None
    if required_ok and tally.rows:
        if config.max_samples is not None and len(arrays) > config.max_samples:
            keep = sample_mask(arrays, config.max_samples)
            tally.excluded["sampled_out"] = int((~keep).sum())
            arrays = arrays.subset(keep)
        if len(arrays):
            if progress:
                progress(f"calibrating {len(arrays):,} quotes")
            engine = calibrate_quotes(arrays, config)
            timings.update(engine.timings_s)
    return build_result(tally, engine, index, config, facts=facts, extra_issues=extra_issues, rv_issues=rv_issues,
                        timings=timings, extra_dq=extra_dq)
