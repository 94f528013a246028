"""Chunked calibration: windows of any length in bounded memory.

`run_historical_calibration_from_harvest` switches here when the window's
Parquet footers count more rows than `CHUNKED_THRESHOLD_ROWS`. The result is
the same `CalibrationResult`, graded by the same rules (`build_result`); only
the order of work changes:

1. the index series of the whole window (2 columns, one partition at a time)
   gives RV_7d at every snapshot up front;
2. pass 1 prepares one partition at a time (`iter_prepared`: exclusion
   reasons, RV, IV, vega), adds its data-quality counts to a `QuoteTally`,
   and keeps a bounded, deterministic sample of the usable quotes for the
   fit (`StrideSampler`: every k-th quote in stream order, k doubling
   whenever the sample would pass `max_fit_samples`), plus every quote of
   the newest snapshot (RV now, ATM IV and the smile come from it, as in
   memory);
3. the fit stage (`fit_engine`: joint multiplier + skew, band multipliers)
   runs once on that sample;
4. pass 2 reads the partitions again and adds each one's exact error sums at
   the tested and the recommended multipliers (`score_engine`): counts,
   sum |err %|, sum v |err %|, sum v, sum err %, sum |err vol pts| per band
   and per option type, quotes per skew anchor, distinct snapshots.

With `max_samples` set, an extra counting pass first fixes which quotes the
evenly spaced subsample keeps, so the chunked run selects the same quotes
the in-memory run would. Memory is one partition plus the fit sample
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
from calib.data.reader import HarvestFiles, partition_groups, scan_quotes
from calib.engine.calibrate import (
    EngineOutput,
    EngineScores,
    assemble_engine,
    fit_engine,
    score_engine,
)
from calib.engine.model import ROW_FIELDS, QuoteArrays, SnapshotTable
from calib.engine.result import CalibrationResult, DataQualityIssue
from calib.stages import (
    Progress,
    QuoteTally,
    RvState,
    WindowFacts,
    build_result,
    iter_prepared,
)

MAX_FIT_SAMPLES = 2_000_000  # usable quotes kept for the fit stage (~90 MB)
SCORE_BATCH = 1 << 19  # quotes scored together in the second pass (~40 MB, two parallel parts)

_FIELDS: tuple[str, ...] = ROW_FIELDS


class StrideSampler:
    """Every k-th item of a stream (by global position), k doubling to stay within `cap`.

    Deterministic: the kept positions are exactly the multiples of the final
    stride, whatever the chunk sizes, so a rerun keeps the same quotes. The
    sample holds between cap/2 and cap items once the stream passes `cap`
    (all of them before that).
    """

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError(f"`cap` must be positive; got {cap}")
        self.cap = cap
        self.stride = 1
        self._pieces: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self._size = 0
        self._table: SnapshotTable | None = None  # the window's (every chunk shares it)

    def add(self, q: QuoteArrays, positions: np.ndarray) -> None:
        """Offer quotes `q` whose global stream positions are `positions` (increasing)."""
        self._table = q.table
        keep = positions % self.stride == 0
        if keep.any():
            idx = None if keep.all() else np.flatnonzero(keep)
            self._pieces.append((positions if idx is None else positions[idx],
                                 {f: getattr(q, f) if idx is None else getattr(q, f)[idx] for f in _FIELDS}))
            self._size += int(keep.sum())
        while self._size > self.cap:
            self.stride *= 2
            pieces, self._pieces, self._size = self._pieces, [], 0
            while pieces:  # thin one piece at a time, so memory does not double
                pos, cols = pieces.pop(0)
                idx = np.flatnonzero(pos % self.stride == 0)
                if idx.size:
                    self._pieces.append((pos[idx], {f: a[idx] for f, a in cols.items()}))
                    self._size += idx.size

    def sample(self, extra: tuple[np.ndarray, QuoteArrays] | None = None) -> tuple[np.ndarray, QuoteArrays | None]:
        """Kept positions and quotes in stream order, then the `extra` quotes the stride did not keep.

        Consumes the sampler: pieces are released field by field while the
        sample is assembled, so the peak is one sample plus one field.
        """
        pos_parts = [p for p, _ in self._pieces]
        extra_idx = None
        if extra is not None:
            extra_idx = np.flatnonzero(extra[0] % self.stride != 0)
            pos_parts.append(extra[0][extra_idx])
        if not self._pieces and (extra_idx is None or not extra_idx.size):
            return np.empty(0, np.int64), None
        positions = np.concatenate(pos_parts)
        out: dict[str, np.ndarray] = {}
        for f in _FIELDS:
            parts = [cols.pop(f) for _, cols in self._pieces]
            if extra is not None and extra_idx is not None:
                parts.append(getattr(extra[1], f)[extra_idx])
            out[f] = np.concatenate(parts)
            del parts
        self._pieces, self._size = [], 0
        table = self._table if self._table is not None or extra is None else extra[1].table
        assert table is not None  # pieces or extra quotes were added above
        return positions, QuoteArrays(**out, table=table)


@dataclass(slots=True)
class _Newest:
    """Every usable quote of the newest snapshot with a quote in the run's DTE range."""

    snap: int = -1  # index into the window's snapshot table (in time order)
    pos: np.ndarray | None = None
    rows: QuoteArrays | None = None

    def add(self, q: QuoteArrays, positions: np.ndarray, config: CalibrationConfig) -> None:
        in_g = (q.dte_days >= config.min_dte) & (q.dte_days <= config.max_dte)
        if not in_g.any():
            return
        newest = int(q.snap[in_g].max())
        if newest < self.snap:
            return
        idx = np.flatnonzero(q.snap == newest)
        if newest > self.snap or self.rows is None or self.pos is None:
            self.snap, self.pos, self.rows = newest, positions[idx], q.take(idx)
        else:  # the same snapshot in two chunks (files outside partitions)
            self.pos = np.concatenate([self.pos, positions[idx]])
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
        return iter_prepared((scan_quotes(hf, g, parse_names=parse_names) for g in groups), rv.lookup, config,
                             has_mark_iv=has_mark_iv, timings=timings, count=count)

    parse_names = False
    passes = 0
    selection: _Selection | None = None
    tally = QuoteTally()
    sampler = StrideSampler(max_fit_samples)
    newest = _Newest()
    while True:  # pass 1 (again with name parsing if rows had null expiry/strike/type)
        passes += 1
        tally, sampler, newest = QuoteTally(), StrideSampler(max_fit_samples), _Newest()
        n_usable = 0
        for i, (part, arrays) in enumerate(chunks(parse_names)):
            tally.merge(part)
            if config.max_samples is None:
                pos = np.arange(n_usable, n_usable + len(arrays))
                sampler.add(arrays, pos)
                newest.add(arrays, pos, config)
            n_usable += len(arrays)
            if progress and (i + 1) % 30 == 0:
                progress(f"pass {passes}: {i + 1}/{len(groups)} partitions, {tally.rows:,} rows")
        if parse_names or not tally.excluded.get("unparsable_instrument") or "instrument_name" not in hf.columns_present:
            break
        parse_names = True

    if required_ok and config.max_samples is not None and n_usable > config.max_samples:
        # Same evenly spaced subsample as in memory: positions fixed by the usable count.
        selection = _Selection(np.linspace(0, n_usable - 1, config.max_samples).round().astype(np.int64))
        tally.excluded["sampled_out"] = n_usable - int(np.unique(selection.positions).size)
    if required_ok and config.max_samples is not None:
        passes += 1
        def keep(q: QuoteArrays, pos: np.ndarray) -> None:
            sampler.add(q, pos)
            newest.add(q, pos, config)

        _stream(chunks(parse_names, count=False), selection, keep)

    engine: EngineOutput | None = None
    stride = sampler.stride
    # Every quote of the newest snapshot joins the sample (RV now, ATM IV and the smile come from it).
    _, sample = sampler.sample(None if newest.pos is None or newest.rows is None else (newest.pos, newest.rows))
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
        _stream(chunks(parse_names, count=False), selection, score)
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
    """Global positions of the usable quotes a `max_samples` subsample keeps (sorted)."""

    positions: np.ndarray

    def local(self, start: int, n: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.positions, [start, start + n])
        return np.unique(self.positions[lo:hi]) - start


def _stream(chunks: Iterator[tuple[QuoteTally, QuoteArrays]], selection: _Selection | None,
            sink: Callable[[QuoteArrays, np.ndarray], object]) -> None:
    """Feed every chunk's usable quotes (only the selected ones, if any) and their positions to `sink`."""
    offset = 0
    for _, arrays in chunks:
        n = len(arrays)
        if selection is None:
            sink(arrays, np.arange(offset, offset + n))
        else:
            idx = selection.local(offset, n)
            if idx.size:
                sink(arrays.take(idx), idx + offset)
        offset += n


__all__ = ["MAX_FIT_SAMPLES", "StrideSampler", "calibrate_chunked"]
