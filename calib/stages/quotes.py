"""Quote preparation: one exclusion reason per row (counted in `QuoteTally`), the usable rows as engine arrays with RV and IV."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import polars as pl

from calib._typing import FloatArray
from calib.config import DAYS_PER_YEAR, CalibrationConfig
from calib.data.quality import (
    check_units,
    row_reason_code_expr,
)
from calib.data.reader import (
    TS_TYPE,
)
from calib.engine.model import ROW_FIELDS, SNAP_DTYPE, QuoteArrays, SnapshotTable
from calib.engine.result import (
    DataQualityIssue,
)
from calib.numerics.implied_vol import implied_vol
from calib.numerics.normal import norm_cdf
from calib.numerics.stats import distinct, median
from calib.stages.common import (
    KERNEL_BLOCK,
    REASON_CODES,
    ROW_REASONS,
    UNIT_CHECK_SAMPLE,
    US_PER_YEAR,
    USABLE,
)
from calib.stages.rv import RvLookup


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
    mismatch_jobs: list[Future[int]] = field(default_factory=list)  # `iv_mismatch` counts still running

    def settle(self) -> None:
        """Add the counts of `mismatch_jobs` to `iv_mismatch` (waits for them)."""
        jobs, self.mismatch_jobs = self.mismatch_jobs, []
        self.iv_mismatch += sum(j.result() for j in jobs)

    def merge(self, other: QuoteTally) -> None:
        self.rows += other.rows
        for k, v in other.excluded.items():
            self.excluded[k] = self.excluded.get(k, 0) + v
        self.inverted += other.inverted
        self.iv_checked += other.iv_checked
        self.iv_mismatch += other.iv_mismatch
        self.mismatch_jobs.extend(other.mismatch_jobs)
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


def iter_chunk_arrays(
    chunks: Iterable[pl.LazyFrame],
    lookup: Callable[[], RvLookup] | RvLookup,
    config: CalibrationConfig,
    *,
    has_mark_iv: bool,
    timings: dict[str, float] | None = None,
    count: bool = True,
) -> Iterator[tuple[QuoteTally, QuoteArrays]]:
    """One exclusion reason per row (counted), then the usable rows as arrays with RV and IV, for
    each of `chunks`, reading chunk i+1 while chunk i is processed (see `iter_coded_frames`).

    When counting with mark_iv, chunk i's reprice (`mark_iv_mismatches`) runs on a
    helper thread while chunk i+1 is read and prepared; chunk i is yielded with
    its count settled, so the caller's tallies are complete as they arrive.
    """
    timings = timings if timings is not None else {}
    frames = iter_coded_frames(chunks, lookup, config, has_mark_iv=has_mark_iv, timings=timings)
    if not (has_mark_iv and count):
        for frame, rv in frames:
            yield frame_arrays(frame, rv, config, has_mark_iv=has_mark_iv, timings=timings, count=count)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="calib-check") as pool:
        held: tuple[QuoteTally, QuoteArrays] | None = None
        for frame, rv in frames:
            part = frame_arrays(frame, rv, config, has_mark_iv=True, timings=timings, pool=pool)
            del frame
            if held is not None:
                yield _settled(held, timings)
            held = part
        if held is not None:
            yield _settled(held, timings)


def _settled(part: tuple[QuoteTally, QuoteArrays], timings: dict[str, float]) -> tuple[QuoteTally, QuoteArrays]:
    """`part` once its tally's pending counts are in."""
    _settle_timed(part[0], timings)
    return part


def _settle_timed(tally: QuoteTally, timings: dict[str, float]) -> None:
    """`tally.settle()`, the wait counted in data_quality."""
    t = time.perf_counter()
    tally.settle()
    timings["data_quality"] = timings.get("data_quality", 0.0) + time.perf_counter() - t


def iter_coded_frames(
    chunks: Iterable[pl.LazyFrame],
    lookup: Callable[[], RvLookup] | RvLookup,
    config: CalibrationConfig,
    *,
    has_mark_iv: bool,
    timings: dict[str, float],
) -> Iterator[tuple[pl.DataFrame, RvLookup]]:
    """Collected `coded_frame`s of `chunks` with the RV lookup, reading the next chunks while one is used.

    Chunks are read `READ_BATCH` at a time (one `collect_all`). Polars reads on
    its own threads, numpy works on this one, so the two overlap. `lookup` may be a callable, called once after the first read
    has started (so the index read overlaps it too). `timings["collect"]`
    counts only the time spent waiting for a read.
    """
    it = iter(chunks)
    exprs = quote_exprs(config, has_mark_iv=has_mark_iv)

    def read_batch() -> Future[list[pl.DataFrame]] | None:
        plans = [coded_frame(c, config, has_mark_iv=has_mark_iv, exprs=exprs)
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


def coded_frame(quotes: pl.LazyFrame, config: CalibrationConfig, *, has_mark_iv: bool,
                exprs: QuoteExprs | None = None) -> pl.LazyFrame:
    """The narrow frame `frame_arrays` needs: reason code per row and the engine's columns.

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
    """The expressions of `coded_frame` (building them costs ~3 ms: once per window, not per chunk)."""
    dte_max_read = max([config.max_dte, *(b.dte_max for b in config.bands)])
    t_years = (pl.col("expiry_ts") - pl.col("snapshot_ts")).dt.total_microseconds() / US_PER_YEAR
    k_rel = pl.col("k_rel")
    is_call = pl.col("option_type") == "C"
    intrinsic = pl.when(is_call).then((1 - k_rel).clip(lower_bound=0)).otherwise((k_rel - 1).clip(lower_bound=0))
    code = row_reason_code_expr(has_mark_iv=has_mark_iv, option_types=tuple(config.option_types),
                                dte_max_read=dte_max_read, min_tick_coin=config.min_tick_coin, th=config.quality,
                                codes=REASON_CODES, usable=USABLE)
    return QuoteExprs(
        first=(t_years.alias("t_years"), is_call.fill_null(False).alias("is_call"),
               (pl.col("strike") / pl.col("underlying_price")).alias("k_rel")),
        second=((pl.col("t_years") * DAYS_PER_YEAR).alias("dte_days"), intrinsic.alias("intrinsic_coin")),
        out=(pl.col("snapshot_ts").dt.epoch("us").alias("snapshot_us"), code,
             *_engine_columns(has_mark_iv), *([] if has_mark_iv else [pl.col("mark_iv")])),
    )


def _engine_columns(has_mark_iv: bool) -> list[str]:
    return ["k_rel", "t_years", "is_call", "mark_price", *(["mark_iv"] if has_mark_iv else [])]


def frame_arrays(
    frame: pl.DataFrame,
    lookup: RvLookup,
    config: CalibrationConfig,
    *,
    has_mark_iv: bool,
    timings: dict[str, float] | None = None,
    count: bool = True,
    out: dict[str, np.ndarray] | None = None,
    offset: int = 0,
    pool: ThreadPoolExecutor | None = None,
) -> tuple[QuoteTally, QuoteArrays]:
    """Counts, unit medians and snapshots of a collected `coded_frame`; the usable rows as arrays.

    With `count=False` (a second pass over data already counted) the tally
    holds only the row count and the per-row exclusions found here. With
    `out` (arrays per `QuoteArrays` field, room for `frame.height` rows from
    `offset`), the usable rows are written there and the result views them:
    a window's rows land in their final place with one copy. With `pool`,
    the mark_iv reprice (`mark_iv_mismatches`, the costliest check) runs on
    it while the caller goes on: the count is in `tally.mismatch_jobs` until
    `QuoteTally.settle` (the rows are moved in place only after it is done).
    """
    timings = timings if timings is not None else {}
    t = time.perf_counter()
    tally = QuoteTally(rows=frame.height)
    # Column by column as the frame's chunks (zero-copy views): no copy of a whole column into one buffer.
    code_parts = _column_chunks(frame["reason_code"])
    starts = np.cumsum([0, *(p.size for p in code_parts)])
    if count:
        counts = sum((np.bincount(p, minlength=USABLE + 1) for p in code_parts), np.zeros(USABLE + 1, np.int64))
        tally.excluded = {ROW_REASONS[i]: int(n) for i, n in enumerate(counts[:len(ROW_REASONS)]) if n}
        step = -(-frame.height // UNIT_CHECK_SAMPLE)  # every step-th row of the frame
        for name, target in (("mark_price", tally.mark_medians), ("mark_iv", tally.iv_medians)):
            parts = _column_chunks(frame[name])
            if not frame.height:
                continue
            at = np.cumsum([0, *(p.size for p in parts)])  # this column's own chunk starts
            sample = np.concatenate([p[(-int(a)) % step::step] for p, a in zip(parts, at, strict=False)])
            with np.errstate(invalid="ignore"):
                n_pos = sum(int(np.count_nonzero(p > 0)) for p in parts)
                sample = sample[sample > 0]
            if n_pos and sample.size:
                target.append((median(sample), n_pos))
    snap_parts = _column_chunks(frame["snapshot_us"])
    if count and frame.height:
        tally.snapshots_us.append(distinct(snap_parts[0]) if len(snap_parts) == 1 else
                                  distinct(np.concatenate([distinct(p) for p in snap_parts])))
    # The usable rows go from the frame's buffers (zero-copy views where polars allows) straight into
    # numpy arrays (or `out`): no filtered polars frame in between.
    rows = np.concatenate([np.flatnonzero(p == USABLE) + int(a) for p, a in zip(code_parts, starts, strict=False)])
    m = int(rows.size)
    if out is None:
        out = {f: np.empty(m, dtype=_DTYPES[f]) for f in _FIELDS}
        offset = 0
    dst = {f: out[f][offset:offset + m] for f in _FIELDS}
    for name, col in _FRAME_COLUMNS.items():
        _take_rows(frame[col], rows, dst[name])
    if has_mark_iv:
        _take_rows(frame["mark_iv"], rows, dst["iv"])
        dst["iv"] /= 100.0
        if count:
            tally.iv_checked = m
            args = (dst["mark_coin"], dst["k_rel"], dst["t_years"], dst["iv"], dst["is_call"], config)
            if pool is None:
                tally.iv_mismatch = mark_iv_mismatches(*args)
            else:
                tally.mismatch_jobs.append(pool.submit(mark_iv_mismatches, *args))
    del frame
    timings["data_quality"] = timings.get("data_quality", 0.0) + time.perf_counter() - t

    # Each quote keeps an index into the window's snapshot table, not its own RV and time.
    t = time.perf_counter()
    found = [lookup.find(p) for p in snap_parts]
    np.take(found[0] if len(found) == 1 else np.concatenate(found), rows, out=dst["snap"], mode="clip")
    n_no_rv = int(np.count_nonzero(dst["snap"] < 0))
    if n_no_rv:  # rare: keep the rows with an RV, in place
        tally.settle()  # the reprice reads these rows
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
        tally.settle()
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
    tick_tol = q.mark_iv_tolerance_ticks * config.min_tick_coin
    pct = q.mark_iv_tolerance_pct / 100
    bad = 0
    for i in range(0, n, KERNEL_BLOCK):
        s = slice(i, min(i + KERNEL_BLOCK, n))
        model = _unit_forward_price(k_rel[s], t_years[s], iv[s], is_call[s])
        mark = mark_coin[s]
        tol = np.multiply(mark, pct)
        np.maximum(tol, tick_tol, out=tol)
        model -= mark
        np.abs(model, out=model)
        with np.errstate(invalid="ignore"):
            bad += int(np.count_nonzero(model > tol))
    return bad


def _unit_forward_price(k_rel: FloatArray, t_years: FloatArray, sigma: FloatArray, is_call: np.ndarray) -> FloatArray:
    """``black76_price_coin(1.0, k_rel, t_years, sigma, is_call)``, the same operations in place (bit for bit).

    With F = 1 the kernel's ``K/F`` is `k_rel` itself; its ``ln(F/K)`` is ``ln(1/k)``
    (kept, not ``-ln k``); the intrinsic value is only built when some
    total vol is not positive. tests/test_issue15_identity.py checks it against the kernel.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tv = np.sqrt(t_years)
        tv *= sigma  # sigma sqrt(T), as `_d1_d2`
        d1 = np.divide(1.0, k_rel)
        np.log(d1, out=d1)
        half = tv * 0.5  # 0.5 * tv * tv in the kernel's order
        half *= tv
        d1 += half
        d1 /= tv
        d2 = np.subtract(d1, tv, out=half)
        omega = np.where(is_call, 1.0, -1.0)
        d1 *= omega
        d2 *= omega
        price = norm_cdf(d1)
        n2 = norm_cdf(d2)
        n2 *= k_rel
        price -= n2
        price *= omega
    np.maximum(price, 0.0, out=price)
    positive = tv > 0
    if not positive.all():
        price = np.where(positive, price, np.maximum(omega * (1.0 - k_rel), 0.0))
    return price


def _column_chunks(column: pl.Series) -> list[np.ndarray]:
    """The chunks of `column` as numpy arrays (zero-copy where polars allows), in order."""
    return [column.to_numpy()] if column.n_chunks() == 1 else [c.to_numpy() for c in column.get_chunks()]


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


def window_arrays(
    chunks: Iterable[pl.LazyFrame],
    lookup: Callable[[], RvLookup] | RvLookup,
    config: CalibrationConfig,
    *,
    has_mark_iv: bool,
    capacity: int,
    timings: dict[str, float] | None = None,
) -> tuple[QuoteTally, QuoteArrays]:
    """`iter_chunk_arrays` chunk by chunk (e.g. one partition each) into one set of arrays.

    Polars memory stays at one chunk; the usable rows are written straight into
    arrays allocated once for `capacity` rows (an upper bound, e.g. from the
    files' sizes; pages never written are never touched, so a generous bound
    costs address space, not memory).
    """
    timings = timings if timings is not None else {}
    tally = QuoteTally()
    # The mark_iv reprice of each chunk runs on a helper thread while the next chunk is prepared;
    # the counts are settled on the normal path only (an error while reading is not masked by the wait).
    with (ThreadPoolExecutor(max_workers=1, thread_name_prefix="calib-check") if has_mark_iv
          else nullcontext()) as checks:
        arrays = _window_arrays(chunks, lookup, config, has_mark_iv=has_mark_iv, capacity=capacity,
                                timings=timings, tally=tally, pool=checks)
        _settle_timed(tally, timings)
    return tally, arrays


def _window_arrays(
    chunks: Iterable[pl.LazyFrame],
    lookup: Callable[[], RvLookup] | RvLookup,
    config: CalibrationConfig,
    *,
    has_mark_iv: bool,
    capacity: int,
    timings: dict[str, float],
    tally: QuoteTally,
    pool: ThreadPoolExecutor | None,
) -> QuoteArrays:
    buf: dict[str, np.ndarray] = {f: np.empty(max(capacity, 0), dtype=_DTYPES[f]) for f in _FIELDS}
    n = 0
    table = EMPTY_TABLE
    for frame, rv in iter_coded_frames(chunks, lookup, config, has_mark_iv=has_mark_iv, timings=timings):
        table = rv.table
        if n + frame.height > buf["mark_coin"].size:  # capacity was too small: grow geometrically
            size = max(2 * buf["mark_coin"].size, n + frame.height)
            grown = {f: np.empty(size, dtype=a.dtype) for f, a in buf.items()}
            for f, a in buf.items():
                grown[f][:n] = a[:n]
            buf = grown
        part, arrays = frame_arrays(frame, rv, config, has_mark_iv=has_mark_iv, timings=timings, out=buf,
                                    offset=n, pool=pool)
        del frame
        tally.merge(part)
        n += len(arrays)
    return QuoteArrays(**{f: buf[f][:n] for f in _FIELDS}, table=table)


_FIELDS: tuple[str, ...] = ROW_FIELDS
_DTYPES: dict[str, type] = {f: bool if f == "is_call" else SNAP_DTYPE if f == "snap" else np.float64
                            for f in _FIELDS}
EMPTY_TABLE = SnapshotTable(ts_us=np.zeros(0, np.int64), rv=np.zeros(0))
# QuoteArrays fields copied from `coded_frame` columns as they are (iv and snap are computed).
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
