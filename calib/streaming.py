"""Chunked calibration: windows of any length in bounded memory.

`run_historical_calibration_from_harvest` switches here when the window's
Parquet footers count more rows than `CHUNKED_THRESHOLD_ROWS`. The result is
the same `CalibrationResult`, graded by the same rules (`build_result`); only
the order of work changes:

1. the index series of the whole window (2 columns, one partition at a time)
   gives RV_7d at every snapshot up front;
2. pass 1 prepares one partition at a time (`iter_chunk_arrays`: exclusion
   reasons, RV, IV, vega), adds its data-quality counts to a `QuoteTally`,
   and keeps a bounded, deterministic sample of the usable quotes for the
   fit (`HashSampler` of `calib.stages.sampler`: the quotes whose keyed
   hash is under 2^64 / 2^level, the level rising whenever the sample would
   pass `max_fit_samples`), plus every quote of
   the newest snapshot (RV now, ATM IV and the smile come from it, as in
   memory);
3. the fit stage (`fit_engine`: joint multiplier + skew, band multipliers)
   runs once on that sample;
4. pass 2 reads the partitions again and adds each one's exact error sums at
   the tested and the recommended multipliers (`score_engine`): counts,
   sum |err %|, sum v |err %|, sum v, sum err %, sum |err vol pts| per band
   and per option type, quotes per skew anchor, distinct snapshots.

With `max_samples` set, the first pass also finds the hash threshold of the
subsample (`BottomK`: the `max_samples` smallest hashes) and a second pass
gathers those quotes, so the chunked run selects the same quotes the
in-memory run would (`sample_mask`), whatever the chunking or row order. Memory is one partition plus the fit sample
(`max_fit_samples` x ~45 bytes); time is linear in rows (two reads).
When the sample holds every usable quote (small windows), the fit sees the
same quotes in the same order as in memory and the result matches it up to
floating-point summation order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from calib.config import CalibrationConfig
from calib.data.quality import required_columns_present
from calib.data.reader import HarvestFiles, names_parse_more, partition_groups, scan_quotes
from calib.engine.calibrate import (
    EngineOutput,
    EngineScores,
    assemble_engine,
    fit_engine,
    score_engine,
)
from calib.engine.model import QuoteArrays
from calib.engine.result import CalibrationResult, DataQualityIssue
from calib.stages import (
    Progress,
    QuoteTally,
    RvState,
    WindowFacts,
    build_result,
    iter_chunk_arrays,
)
from calib.stages.sampler import BottomK, HashSampler, kept, quote_hashes

MAX_FIT_SAMPLES = 2_000_000  # usable quotes kept for the fit stage (~90 MB)
SCORE_BATCH = 1 << 19  # quotes scored together in the second pass (~40 MB, two parallel parts)


@dataclass(slots=True)
class _Newest:
    """Every usable quote of the newest snapshot with a quote in the run's DTE range."""

    snap: int = -1  # index into the window's snapshot table (in time order)
    hashes: np.ndarray | None = None  # the quotes' `quote_hashes`
    rows: QuoteArrays | None = None

    def add(self, q: QuoteArrays, hashes: np.ndarray, config: CalibrationConfig) -> None:
        in_g = (q.dte_days >= config.min_dte) & (q.dte_days <= config.max_dte)
        if not in_g.any():
            return
        newest = int(q.snap[in_g].max())
        if newest < self.snap:
            return
        idx = np.flatnonzero(q.snap == newest)
        if newest > self.snap or self.rows is None or self.hashes is None:
            self.snap, self.hashes, self.rows = newest, hashes[idx], q.take(idx)
        else:  # the same snapshot in two chunks (files outside partitions)
            self.hashes = np.concatenate([self.hashes, hashes[idx]])
            self.rows = QuoteArrays.concat([self.rows, q.take(idx)])


def calibrate_chunked(
    hf: HarvestFiles,
    config: CalibrationConfig,
    *,
    extra_issues: list[DataQualityIssue] | None = None,
    progress: Progress | None = None,
    t_start: float | None = None,
    est_rows: int | None = None,
    max_fit_samples: int = MAX_FIT_SAMPLES,
) -> CalibrationResult:
    """Calibrate the window of `hf` one partition at a time (see the module docstring).

    Records `engine_path = "chunked"`, `fit_sample_size`, `fit_sample_stride`,
    `chunks` and `passes` in the data-quality extras.
    """
    t0 = time.perf_counter() if t_start is None else t_start
    timings: dict[str, float] = {"scan": time.perf_counter() - t0}
    rv = RvState(hf, timings)
    has_mark_iv = "mark_iv" in hf.columns_present
    groups = partition_groups(hf.quote_files())
    required_ok = required_columns_present(hf.columns_present)

    def chunks(parse_names: bool, count: bool = True) -> Iterator[tuple[QuoteTally, QuoteArrays]]:
        return iter_chunk_arrays((scan_quotes(hf, g, parse_names=parse_names) for g in groups), rv.lookup, config,
                             has_mark_iv=has_mark_iv, timings=timings, count=count)

    parse_names = False
    passes = 0
    selection: _Selection | None = None
    tally = QuoteTally()
    sampler = HashSampler(max_fit_samples)
    newest = _Newest()
    while True:  # pass 1 (again with name parsing if rows had null expiry/strike/type)
        passes += 1
        tally, sampler, newest = QuoteTally(), HashSampler(max_fit_samples), _Newest()
        bottom = BottomK(config.max_samples or 0)
        n_usable = 0
        for i, (part, arrays) in enumerate(chunks(parse_names)):
            tally.merge(part)
            hashes = quote_hashes(arrays)
            if config.max_samples is None:
                sampler.add(arrays, hashes)
                newest.add(arrays, hashes, config)
            else:
                bottom.add(hashes)
            n_usable += len(arrays)
            if progress and (i + 1) % 30 == 0:
                progress(f"pass {passes}: {i + 1}/{len(groups)} partitions, {tally.rows:,} rows")
        if parse_names or not tally.excluded.get("unparsable_instrument") or not names_parse_more(hf.quote_files()):
            break  # (files without the parsed columns had their names parsed already: no second pass for them)
        parse_names = True

    if required_ok and config.max_samples is not None and n_usable > config.max_samples:
        # The same subsample as in memory: the `max_samples` quotes with the smallest hashes.
        selection = _Selection(bottom.threshold())
    if required_ok and config.max_samples is not None:
        passes += 1
        n_selected = 0

        def keep(q: QuoteArrays, hashes: np.ndarray | None) -> None:
            assert hashes is not None
            nonlocal n_selected
            n_selected += len(q)
            sampler.add(q, hashes)
            newest.add(q, hashes, config)

        _stream(chunks(parse_names, count=False), selection, keep)
        if selection is not None:
            tally.excluded["sampled_out"] = n_usable - n_selected

    engine: EngineOutput | None = None
    stride = sampler.stride
    # Every quote of the newest snapshot joins the sample (RV now, ATM IV and the smile come from it).
    sample = sampler.sample(None if newest.hashes is None or newest.rows is None else (newest.hashes, newest.rows))
    if required_ok and tally.rows and sample is not None:
        if progress:
            progress(f"fitting on a sample of {len(sample):,} quotes (stride {stride})")
        fit = fit_engine(sample, config)
        timings.update(fit.timings_s)
        fit_size = len(sample)
        del sample
        scores = EngineScores.zeros(config)
        timings["metrics"] = 0.0
        batch: list[QuoteArrays] = []

        def score(q: QuoteArrays | None, _pos: np.ndarray | None = None) -> None:
            # Partitions are scored in batches of >= SCORE_BATCH quotes, enough to use every core.
            if q is not None:
                batch.append(q)
            if batch and (q is None or sum(len(b) for b in batch) >= SCORE_BATCH):
                t = time.perf_counter()
                score_engine(QuoteArrays.concat(batch) if len(batch) > 1 else batch[0], fit, config, scores=scores)
                timings["metrics"] += time.perf_counter() - t
                batch.clear()

        passes += 1
        _stream(chunks(parse_names, count=False), selection, score, hashes_needed=False)
        score(None)
        engine = assemble_engine(fit, scores, config, timings_s=timings)
    else:
        fit_size = 0
    timings["scan"] += timings.pop("collect", 0.0)
    rv.lookup()  # read even when no quote file was in the window
    return build_result(
        tally, engine, rv.index, config, facts=WindowFacts.of(hf),
        extra_issues=list(extra_issues or []), rv_issues=rv.issues, timings=timings,
        extra_dq={"engine_path": "chunked", "fit_sample_size": fit_size, "fit_sample_stride": stride,
                  "chunks": len(groups), "passes": passes, "estimated_rows": est_rows},
    )


@dataclass(frozen=True, slots=True)
class _Selection:
    """The `max_samples` subsample: the quotes whose hash is under `threshold` (`bottom_k_threshold`)."""

    threshold: np.uint64 | None


def _stream(chunks: Iterator[tuple[QuoteTally, QuoteArrays]], selection: _Selection | None,
            sink: Callable[[QuoteArrays, np.ndarray | None], object], *, hashes_needed: bool = True) -> None:
    """Feed every chunk's usable quotes (only the selected ones, if any) and their hashes to `sink`."""
    for _, arrays in chunks:
        if selection is None and not hashes_needed:
            sink(arrays, None)
            continue
        hashes = quote_hashes(arrays)
        if selection is None:
            sink(arrays, hashes)
        else:
            idx = np.flatnonzero(kept(hashes, selection.threshold))
            if idx.size:
                sink(arrays.take(idx), hashes[idx])


__all__ = ["MAX_FIT_SAMPLES", "calibrate_chunked"]
