"""The RV_7d series of a window: its warm-up state and the per-snapshot lookup quotes take their RV from."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from calib._typing import FloatArray
from calib.data.reader import (
    HarvestFiles,
    read_index_series,
)
from calib.engine.model import SNAP_DTYPE, SnapshotTable
from calib.engine.result import (
    DataQualityIssue,
)
from calib.numerics.realized_vol import trailing_realized_vol

RV_SHORT_HISTORY_DAYS = 3.5  # median RV history below this degrades the run


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


def rv_source(index: pl.DataFrame) -> str:
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
